"""A raw ASGI app with a native route: fasterapi-asgi serves it, other servers ignore it (no fallback)."""

from __future__ import annotations

from typing import Any

from fasterapi_asgi import native


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"raw app: " + scope["path"].encode()})


native.get(app, "/native", native.text("native answer"))
