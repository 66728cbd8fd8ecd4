"""The container image's default app (Dockerfile): a raw ASGI hello world plus two native routes.

- ``GET /healthz``: ``native.health()``, answered by the C++ core without Python: 200 ``ok`` while serving,
  503 once graceful shutdown has begun. The Dockerfile's HEALTHCHECK and the Kubernetes probes of
  docs/deployment.md point at it.
- ``GET /metrics``: ``native.metrics()``, the server's counters in Prometheus text format.

fasterapi-asgi --app-dir examples container_app:app --host 0.0.0.0 --port 8000
"""

from __future__ import annotations

from typing import Any

from fasterapi_asgi import native

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    body = b"Hello from fasterapi-asgi in a container!\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


native.get(app, HEALTH_PATH, native.health())
native.get(app, METRICS_PATH, native.metrics())
