"""ASGI app for the TLS tests (served by fasterapi-asgi and uvicorn alike).

HTTP: ``/scope`` answers the scope's scheme, http_version and the request body's length and sha256 as JSON;
``/big?size=N`` streams N bytes of a repeating pattern in 64 KiB messages; ``/stale-openssl-error`` leaves an
error on the loop thread's OpenSSL error queue (as a careless OpenSSL user on that thread would) and answers
whether it is there.
WebSocket: accept, send ``{"scheme": ...}`` as text, then echo every message until the client leaves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def leave_openssl_error() -> bool:
    """Push an error onto this thread's OpenSSL error queue (through the libcrypto that Python's ssl module
    uses) and leave it there. Returns whether the queue holds it."""
    import _ssl
    import ctypes

    lib = ctypes.CDLL(_ssl.__file__)  # its symbols, and those of the libssl/libcrypto it links
    err_lib_ssl, reason = 20, 100
    try:
        put = lib.ERR_put_error  # OpenSSL 1.1 (3.x keeps it, deprecated)
        put.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        put(err_lib_ssl, 0, reason, b"tls_app.py", 1)
    except AttributeError:
        lib.ERR_new()
        lib.ERR_set_error.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
        lib.ERR_set_error(err_lib_ssl, reason, None)
    lib.ERR_peek_error.restype = ctypes.c_ulong
    return bool(lib.ERR_peek_error())


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps({"scheme": scope["scheme"]})})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if scope["path"] == "/stale-openssl-error":
        data = json.dumps({"left": leave_openssl_error()}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})
        return
    if scope["path"] == "/big":
        size = int(query.get("size", "0"))
        pattern = bytes(range(256)) * 256
        headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        sent = 0
        while sent < size:
            n = min(len(pattern), size - sent)
            await send({"type": "http.response.body", "body": pattern[:n], "more_body": True})
            sent += n
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    payload = {
        "scheme": scope["scheme"],
        "http_version": scope["http_version"],
        "length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})
