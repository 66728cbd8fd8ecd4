"""A raw ASGI app that installs asyncio's eager task factory at startup (Python 3.12+).

With eager tasks, ``loop.create_task`` runs the request's first step before it returns, so a request
answered in that step is complete before the server gets its Task back. ``/live`` reports how many
request objects are still alive, so a test can see whether completed requests were released.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

Scope = dict[str, Any]


def eager_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    """asyncio.eager_task_factory's behaviour, spelled out: uvloop 0.23 passes ``eager_start`` to the task
    factory, which Python 3.13.0's ``eager_task_factory`` does not accept (under uvicorn too)."""
    kwargs.pop("eager_start", None)
    return asyncio.Task(coro, loop=loop, eager_start=True, **kwargs)  # type: ignore[call-arg]


def _live(kind: str) -> int:
    gc.collect()
    if kind == "tasks":
        return sum(1 for o in gc.get_objects() if isinstance(o, asyncio.Task) and o.done())
    # The server's per-request ``send`` objects (fasterapi-asgi's type is fasterapi_asgi._core.Send).
    return sum(
        1
        for o in gc.get_objects()
        if type(o).__module__ == "fasterapi_asgi._core" and type(o).__name__ == "Send"
    )


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                asyncio.get_running_loop().set_task_factory(eager_factory)
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path.startswith("/live/"):
        body = str(_live(path[len("/live/") :])).encode()
    elif path == "/echo":
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
    elif path == "/sleep":
        await asyncio.sleep(0.01)
        body = b"slept"
    else:
        body = b"eager " + (b"task" if asyncio.current_task() is not None else b"none")
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
