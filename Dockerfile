# The product image: `tungsten` with the example models. docker-compose.yml runs it as
# Redis + API + worker(s). Build: docker build -t tungsten-serving .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TUNGSTEN_HOME=/var/lib/tungsten

WORKDIR /opt/tungsten
# Dependencies first, so editing the code does not reinstall torch.
COPY pyproject.toml README.md ./
COPY tungstenkit/ tungstenkit/
COPY app/ app/
COPY worker/ worker/
COPY cli/ cli/
# torch==2.13.0 from PyPI is the CUDA build on x86_64 Linux: what a GPU worker needs.
RUN pip install ".[examples]"
COPY examples/ examples/

EXPOSE 3000
ENTRYPOINT ["tungsten"]
# Alone, the image serves the example with an embedded Redis, like `make serve`.
CMD ["serve", "examples/text_to_image", "--port", "3000"]
