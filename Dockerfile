# The product image: `tungsten` with the example models. docker-compose.yml runs it as
# Redis + API + worker(s). Build: docker build -t tungsten-serving .
# Alone it serves examples/text_to_image with an embedded Redis, like `make serve`:
#   docker run --rm -p 3000:3000 tungsten-serving
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TUNGSTEN_HOME=/var/lib/tungsten

# The processes run as an unprivileged user, who owns $TUNGSTEN_HOME (the model store and
# the embedded Redis's data).
RUN useradd --create-home --shell /bin/sh tungsten \
    && mkdir -p /var/lib/tungsten && chown tungsten:tungsten /var/lib/tungsten

# torch in a layer of its own, before the code, so that editing the code does not download
# it again. From PyPI on x86_64 Linux it is the CUDA build: what a GPU worker needs. The pin
# is the one of the `examples` extra in pyproject.toml (a test keeps the two equal).
RUN pip install torch==2.13.0
# The package is installed from its sources, which then go: only the installed one remains.
COPY pyproject.toml README.md /tmp/tungstenkit/
COPY tungstenkit/ /tmp/tungstenkit/tungstenkit/
COPY app/ /tmp/tungstenkit/app/
COPY worker/ /tmp/tungstenkit/worker/
COPY cli/ /tmp/tungstenkit/cli/
RUN pip install "/tmp/tungstenkit[examples]" && rm -rf /tmp/tungstenkit
WORKDIR /opt/tungsten
COPY examples/ examples/

USER tungsten
EXPOSE 3000
# The API's readiness (Redis answers and a worker has the model loaded), probed with the
# image's own Python: the slim base image has no curl. Worker-only containers (compose's
# `worker`) serve no HTTP and turn it off.
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request\ntry:\n    sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/health', timeout=4).status != 200)\nexcept Exception as exc:\n    sys.exit(f'unhealthy: {exc}')\n"]
ENTRYPOINT ["tungsten"]
CMD ["serve", "examples/text_to_image", "--port", "3000"]
