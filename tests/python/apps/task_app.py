"""A raw ASGI app that reports what a request's Task looks like from inside: asyncio.current_task() (the same
Task before and after a suspension, a new one per request), contextvars (each request starts from the
server's context; a value one request sets is not seen by the next or by a concurrent one), and errors."""

from __future__ import annotations

import asyncio
import contextvars
import json
from typing import Any

request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")
lifespan_var: contextvars.ContextVar[str] = contextvars.ContextVar("lifespan_var", default="unset")
seen_tasks: list[asyncio.Task[Any] | None] = []  # kept alive, so identity means something


async def respond(send: Any, payload: dict[str, Any], status: int = 200) -> None:
    body = json.dumps(payload).encode()
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/task":
        before = asyncio.current_task()
        inherited = request_var.get()
        request_var.set(scope["query_string"].decode() or "set")
        await asyncio.sleep(0.05)  # a real suspension: concurrent requests interleave here
        after = asyncio.current_task()
        new_task = all(task is not before for task in seen_tasks)
        seen_tasks.append(before)
        await respond(
            send,
            {
                "is_task": isinstance(before, asyncio.Task),
                "same_task": before is after,
                "inherited": inherited,
                "mine": request_var.get(),
                "new_task": new_task,
            },
        )
    elif path == "/gc":
        import gc
        import weakref

        class Node:
            pass

        node = Node()
        node.self = node  # type: ignore[attr-defined]  # a cycle: only the cyclic collector frees it
        ref = weakref.ref(node)
        del node
        gc.collect()
        await respond(send, {"frozen": gc.get_freeze_count(), "cycle_collected": ref() is None})
    elif path == "/modules":
        import sys

        await respond(send, {name: name in sys.modules for name in ("starlette", "fastapi")})
    elif path == "/plain":
        await respond(send, {"ok": True})
    elif path == "/boom-first-step":
        raise RuntimeError("failed in the first step")
    else:
        await respond(send, {"path": path}, status=404)
