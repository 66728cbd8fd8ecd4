"""``--native stats_routes:routes`` for the --stats tests: a native text route and the metrics route, added to
routing_app (a FastAPI app)."""

from __future__ import annotations

from fasterapi_asgi import native

routes = native.Routes()
routes.get("/native/plain", native.text("native"))
routes.get("/native/metrics", native.metrics())
