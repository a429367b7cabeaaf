# The product image: `tungsten` with the example models. docker-compose.yml runs it as
# Redis + API + worker(s). Build: docker build -t tungsten-serving .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TUNGSTEN_HOME=/var/lib/tungsten

WORKDIR /opt/tungsten
# torch in a layer of its own, before the code, so that editing the code does not download
# it again. From PyPI on x86_64 Linux it is the CUDA build: what a GPU worker needs. The pin
# is the one of the `examples` extra in pyproject.toml (a test keeps the two equal).
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY tungstenkit/ tungstenkit/
COPY app/ app/
COPY worker/ worker/
COPY cli/ cli/
RUN pip install ".[examples]"
COPY examples/ examples/

EXPOSE 3000
ENTRYPOINT ["tungsten"]
# Alone, the image serves the example with an embedded Redis, like `make serve`.
CMD ["serve", "examples/text_to_image", "--port", "3000"]
