"""Reports which uvloop and libuv the serving process runs on (tests/python/test_uvloop_versions.py).

Any path: JSON with uvloop's version and file, the running loop's class, the libuv version the core bound
(``_core.libuv_bind`` is idempotent: it returns the bound ``uv_version()``), the headers' version and the size
of the request body received. ``/big``: 4 MiB in one ``http.response.body`` (more than a socket buffer takes
at once, so libuv queues a write and the core watches ``write_queue_size``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvloop
import uvloop.loop

from fasterapi_asgi import _core


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    received = 0
    while True:
        message = await receive()
        received += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    loop = asyncio.get_running_loop()
    body = (
        b"x" * (4 << 20)
        if scope["path"] == "/big"
        else json.dumps(
            {
                "uvloop": uvloop.__version__,
                "uvloop_file": uvloop.loop.__file__,
                "loop": f"{type(loop).__module__}.{type(loop).__qualname__}",
                "libuv": _core.libuv_bind(uvloop.loop.__file__),
                "libuv_headers": _core.LIBUV_HEADER_VERSION,
                "received": received,
            }
        ).encode()
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
