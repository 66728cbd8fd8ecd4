"""``--native native_routes:routes``: a native.Routes collection added to any app (here raw_app)."""

from __future__ import annotations

from fasterapi_asgi import native

routes = native.Routes()
routes.get("/cli/plain", native.text("from --native"))
routes.get("/cli/health", native.health("alive"))
routes.post("/cli/json", native.json({"ok": True}))

not_routes = {"/cli/plain": "not a Routes object"}
