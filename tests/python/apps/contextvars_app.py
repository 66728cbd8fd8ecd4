"""--reset-contextvars: what a request sees of context variables set outside it.

``VAR`` is set at import (in the thread's context, before the loop starts) and by every request after it has
read it; ``GET /`` answers the value the request saw. Served by fasterapi-asgi and uvicorn alike.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")
VAR.set("set-at-import")


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                VAR.set("set-in-lifespan")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    seen = VAR.get().encode()
    VAR.set("set-by-a-request")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": seen})
