"""Raw ASGI 3 app for the benchmark suite: plain text, JSON, and a 64 KB streamed response."""

from __future__ import annotations

import json
from typing import Any

PLAIN = b"Hello, World!"
JSON_BODY = json.dumps({"message": "Hello, World!"}).encode()
CHUNK = b"x" * 4096
CHUNKS = 16  # 16 x 4 KB = 64 KB

_TEXT = [(b"content-type", b"text/plain")]
_JSON = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/json":
        headers = [*_JSON, (b"content-length", str(len(JSON_BODY)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": JSON_BODY})
    elif path == "/stream":
        # no content-length: chunked transfer encoding, 16 body messages
        await send({"type": "http.response.start", "status": 200, "headers": _TEXT})
        for i in range(CHUNKS):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": i < CHUNKS - 1})
    elif path in ("/", "/plaintext"):
        headers = [*_TEXT, (b"content-length", str(len(PLAIN)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": PLAIN})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": _TEXT})
        await send({"type": "http.response.body", "body": b"Not Found"})
