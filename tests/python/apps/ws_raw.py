"""Raw ASGI 3 WebSocket test application (served by fasterapi-asgi and uvicorn from the same tests).

WebSocket routes (by path):

- ``/echo``: accept (with the first offered subprotocol, if any); echo every text/bytes message; a text
  ``close:CODE`` makes the server close with CODE and reason "bye". The disconnect message the app
  receives is recorded under ``?id=``.
- ``/reject``: ``websocket.close`` before accept (HTTP 403).
- ``/fail``: raise before accept (HTTP 500).
- ``/scope``: accept, send the scope as JSON text, then close with 1000.
- ``/count?n=N&size=S``: accept, send N text messages "0".."N-1" (padded with "." to S characters when S is
  given), then close with 1000.
- ``/batch?n=N``: accept, wait 0.3 s without reading, then receive N messages and answer with one text
  message: their count, total size and whether they arrived in order ("i:" prefixes).
- ``/headers``: accept with an extra response header ``x-extra: yes``.
- ``/send-after-close``: accept, close with 1000, then send again; the exception type is recorded.
- ``/return``: accept and return at once (the stream closes without a close frame).
- ``/hold?id=ID``: accept, then call receive() only once ``/release?id=ID`` was requested; then record every
  message (text) until a text "end", and answer with one text message: the number of messages received.

HTTP routes: ``/`` answers "ok"; ``/events?id=ID`` answers the recorded events of a WebSocket as JSON;
``/release?id=ID`` lets ``/hold?id=ID`` start receiving.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

EVENTS: dict[str, list[Any]] = {}
RELEASE: dict[str, asyncio.Event] = {}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": value.decode("latin-1")}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


async def http(scope: Scope, receive: Receive, send: Send) -> None:
    query = parse_qs(scope["query_string"].decode())
    if scope["path"] == "/events":
        body = json.dumps(EVENTS.get(query.get("id", [""])[0], [])).encode()
        ctype = b"application/json"
    elif scope["path"] == "/release":
        RELEASE.setdefault(query.get("id", [""])[0], asyncio.Event()).set()
        body, ctype = b"released", b"text/plain"
    else:
        body, ctype = b"ok", b"text/plain"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})


async def websocket(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode())
    events = EVENTS.setdefault(query.get("id", [""])[0], [])
    connect = await receive()
    assert connect == {"type": "websocket.connect"}, connect
    if path == "/reject":
        await send({"type": "websocket.close"})
        return
    if path == "/fail":
        raise RuntimeError("app failed before accept")
    if path == "/headers":
        await send({"type": "websocket.accept", "headers": [(b"x-extra", b"yes")]})
    else:
        subprotocols = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": subprotocols[0] if subprotocols else None})
    if path == "/scope":
        keys = list(scope.keys())
        doc = {k: _jsonable(scope[k]) for k in keys if k != "state"}
        doc["keys"] = keys
        await send({"type": "websocket.send", "text": json.dumps(doc)})
        await send({"type": "websocket.close", "code": 1000})
        return
    if path == "/count":
        size = int(query.get("size", ["0"])[0])
        for i in range(int(query.get("n", ["10"])[0])):
            await send({"type": "websocket.send", "text": str(i).ljust(size, ".")})
        await send({"type": "websocket.close", "code": 1000})
        return
    if path == "/batch":
        await asyncio.sleep(0.3)
        n = int(query.get("n", ["10"])[0])
        total, in_order = 0, True
        for i in range(n):
            message = await receive()
            data = message.get("bytes") or message.get("text", "").encode()
            total += len(data)
            in_order = in_order and data.startswith(f"{i}:".encode())
        await send({"type": "websocket.send", "text": json.dumps([n, total, in_order])})
        await receive()
        return
    if path == "/send-after-close":
        await send({"type": "websocket.close", "code": 1000})
        try:
            await send({"type": "websocket.send", "text": "late"})
        except Exception as exc:  # noqa: BLE001 - the type is what the test checks
            events.append({"send_after_close": type(exc).__name__})
        return
    if path == "/return":
        return
    if path == "/hold":
        await RELEASE.setdefault(query.get("id", [""])[0], asyncio.Event()).wait()
        count = 0
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect" or message.get("text") == "end":
                break
            events.append(message.get("text"))
            count += 1
        await send({"type": "websocket.send", "text": str(count)})
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            events.append({"disconnect": message.get("code")})
            return
        text = message.get("text")
        if text is not None and text.startswith("close:"):
            await send({"type": "websocket.close", "code": int(text[6:]), "reason": "bye"})
            after = await receive()
            events.append({"after_close": after})
            return
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await http(scope, receive, send)
    else:
        await websocket(scope, receive, send)
