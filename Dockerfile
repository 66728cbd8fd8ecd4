# syntax=docker/dockerfile:1
# fasterapi-asgi in a container: a build stage that compiles the wheel, and a runtime stage with only the wheel
# installed (no compiler), running as a non-root user.
#
#   docker build -t fasterapi-asgi .
#   docker run --rm -p 8000:8000 fasterapi-asgi                      # the bundled example app
#   docker run --rm -p 8000:8000 -v "$PWD:/app" fasterapi-asgi --app-dir /app --host 0.0.0.0 --port 8000 main:app
#
# The health check asks the native route GET /healthz (examples/container_app.py: native.health(), answered by the
# C++ core without Python; 503 once graceful shutdown has begun). Kubernetes: docs/deployment.md.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# g++ for the core; OpenSSL's and zlib's headers (the OpenSSL code is the one Python's ssl module loads at run time).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# scikit-build-core brings CMake and Ninja from PyPI when the image has none.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The wheel and its dependencies (uvloop, click) only: no compiler in this stage.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/*.whl \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY examples/container_app.py /app/container_app.py
USER 10001
EXPOSE 8000
# No curl in the slim image: Python's urllib. An HTTP error (503 while shutting down) or a refused connection
# raises, so the command exits 1 (unhealthy).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["fasterapi-asgi"]
CMD ["--app-dir", "/app", "container_app:app", "--host", "0.0.0.0", "--port", "8000"]
