"""Raw ASGI app for benchmarks/stress.py: small and large responses, a body echo, and an endless stream."""

from __future__ import annotations

import asyncio
from typing import Any

PLAIN = b"Hello, World!"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        out = body
    elif path == "/big":
        out = b"x" * int(scope["query_string"] or b"1000000")  # one send: no backpressure inside the app
    elif path == "/stream":
        # 2 s of ticks (clients of disconnect storms leave in the middle; sends after that are no-ops).
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for _ in range(40):
            await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})
        return
    else:
        out = PLAIN
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(out)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out})
