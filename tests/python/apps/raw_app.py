"""Raw ASGI 3 test application used by the HTTP behaviour tests.

Served by both fasterapi-asgi and uvicorn from the same test body, so it only relies on the ASGI
spec.  Routes are chosen by the path with ``root_path`` stripped (as Starlette does); every route is
documented next to its handler.  Markers printed to stderr let tests follow the app from the
server's captured output.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Events recorded per request id (?id=...), read back by GET /events?id=... on another connection.
EVENTS: dict[str, list[Any]] = {}


def marker(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


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


def _query(scope: Scope) -> dict[str, str]:
    parsed = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes = b"text/plain", extra: list[Any] | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers.extend(extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, payload: Any, status: int = 200) -> None:
    await _respond(send, status, json.dumps(payload).encode(), b"application/json")


async def _read_body(receive: Receive) -> tuple[bytes, list[bool], list[str]]:
    """Read the whole request body; return it, the more_body flags and the message types seen."""
    chunks: list[bytes] = []
    flags: list[bool] = []
    types: list[str] = []
    while True:
        message = await receive()
        types.append(message["type"])
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        flags.append(bool(message.get("more_body", False)))
        if not message.get("more_body", False):
            break
    return b"".join(chunks), flags, types


def scope_snapshot(scope: Scope) -> dict[str, Any]:
    snap = {k: _jsonable(v) for k, v in scope.items() if k != "state"}
    snap["state"] = _jsonable(dict(scope["state"])) if "state" in scope else None
    snap["$keys"] = sorted(scope.keys())
    snap["$types"] = {
        "client": type(scope.get("client")).__name__,
        "server": type(scope.get("server")).__name__,
        "client_port": type(scope["client"][1]).__name__ if scope.get("client") else None,
        "server_port": type(scope["server"][1]).__name__ if scope.get("server") else None,
        "headers": type(scope["headers"]).__name__,
        "header_items": sorted({type(h).__name__ for h in scope["headers"]}),
        "header_parts": sorted({type(p).__name__ for h in scope["headers"] for p in h}),
        "raw_path": type(scope.get("raw_path")).__name__,
        "query_string": type(scope.get("query_string")).__name__,
    }
    return snap


async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if "state" in scope:
                scope["state"]["started"] = True
                scope["state"]["counter"] = 0
                scope["state"]["shared_list"] = []
            marker("APP-LIFESPAN-STARTUP")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            marker("APP-LIFESPAN-SHUTDOWN")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:  # noqa: C901, PLR0912, PLR0915
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    assert scope["type"] == "http"
    root = scope.get("root_path", "")
    path: str = scope["path"]
    route = path[len(root) :] if root and path.startswith(root) else path
    q = _query(scope)

    if route == "/":
        # Fixed small body with a Content-Length; HEAD gets the same headers (server strips the body).
        await _respond(send, 200, b"hello, world")
    elif route == "/app-close":
        # The app asks for the connection to be closed with a response header.
        await _respond(send, 200, b"bye", extra=[(b"connection", b"close")])
    elif route == "/echo":
        # Echo the body; x-messages = number of http.request messages, x-more-body = their flags.
        body, flags, _ = await _read_body(receive)
        extra = [
            (b"x-messages", str(len(flags)).encode()),
            (b"x-more-body", ",".join("1" if f else "0" for f in flags).encode()),
        ]
        await _respond(send, 200, body, b"application/octet-stream", extra)
    elif route == "/digest":
        # Large uploads: return only the length, sha256 and number of messages; ?delay=S sleeps
        # before reading the body (the server must stop reading from the socket meanwhile).
        await asyncio.sleep(float(q.get("delay", "0")))
        body, flags, _ = await _read_body(receive)
        payload = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(), "messages": len(flags)}
        await _json(send, payload)
    elif route == "/big":
        # ?size=N bytes of a repeating pattern, in 64 KiB messages; ?chunked=1 omits Content-Length;
        # ?id=X records the number of bytes send() has accepted so far (GET /events?id=X).
        size = int(q.get("size", "0"))
        pattern = bytes(range(256)) * 256
        headers = [(b"content-type", b"application/octet-stream")]
        if q.get("chunked") != "1":
            headers.append((b"content-length", str(size).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        sent = 0
        progress = EVENTS.setdefault(q["id"], [0]) if "id" in q else [0]
        while sent < size:
            n = min(len(pattern), size - sent)
            await send({"type": "http.response.body", "body": pattern[:n], "more_body": True})
            sent += n
            progress[0] = sent
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif route == "/stream":
        # No Content-Length: chunked on the wire (except HEAD); an empty part in the middle.
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for part in (b"part1-", b"part2-", b"", b"part3"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif route == "/status":
        # ?code=N with no Content-Length and an empty body (204/304 must carry no framing).
        code = int(q.get("code", "200"))
        await send(
            {"type": "http.response.start", "status": code, "headers": [(b"x-status", str(code).encode())]}
        )
        await send({"type": "http.response.body", "body": b""})
    elif route == "/cl":
        # Declares Content-Length ?declared, sends ?actual bytes (in ?parts messages).
        declared = int(q["declared"])
        actual = int(q["actual"])
        parts = int(q.get("parts", "1"))
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(declared).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"X" * actual
        step = max(1, -(-actual // parts))
        pieces = [body[i : i + step] for i in range(0, actual, step)] or [b""]
        for i, piece in enumerate(pieces):
            await send({"type": "http.response.body", "body": piece, "more_body": i < len(pieces) - 1})
    elif route == "/inject":
        # An invalid response header: ?where=name|value, ?char=crlf|lf|cr|nul.
        char = {"crlf": b"\r\n", "lf": b"\n", "cr": b"\r", "nul": b"\x00"}[q.get("char", "crlf")]
        if q.get("where", "value") == "name":
            header = (b"x-bad" + char + b"x-injected", b"1")
        else:
            header = (b"x-bad", b"ok" + char + b"x-injected: 1")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"2"), header],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})
    elif route == "/two-cl":
        # Two different Content-Length values: send() refuses the head; the app's error follows.
        headers = [(b"content-length", b"2"), (b"content-length", b"3")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
    elif route == "/raise-before":
        raise RuntimeError("APP-RAISED-BEFORE-START")
    elif route == "/raise-after":
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"100")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("APP-RAISED-AFTER-START")
    elif route == "/no-response":
        return
    elif route == "/no-read":
        # Answers without ever calling receive().
        await _respond(send, 200, b"answered without reading")
    elif route == "/wait-disconnect":
        # Read the body, then wait for http.disconnect; then check that send() is a no-op.
        rid = q["id"]
        events = EVENTS.setdefault(rid, [])
        _, _, types = await _read_body(receive)
        events.extend(types)
        marker(f"APP-BODY-READ {rid}")
        message = await receive()
        events.append(message["type"])
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"too late"})
            events.append("send-ok")
        except Exception as exc:  # noqa: BLE001 - recorded for the test to see
            events.append(f"send-raised:{type(exc).__name__}")
    elif route == "/after-response":
        # Complete the response, then receive(): must be http.disconnect without waiting.
        rid = q["id"]
        await _respond(send, 200, b"done")
        message = await asyncio.wait_for(receive(), 5)
        EVENTS.setdefault(rid, []).append(message["type"])
    elif route == "/events":
        await _json(send, EVENTS.get(q["id"], []))
    elif route == "/state-mutate":
        # Rebinding keys must not leak (the scope state is a copy); in-place mutation of a shared
        # object does (it is a shallow copy).
        state = scope["state"]
        state["counter"] = state.get("counter", 0) + 1
        state["leak"] = True
        state.setdefault("shared_list", []).append(len(state["shared_list"]))
        await _json(send, _jsonable(dict(state)))
    elif route == "/asgi-mutate":
        # Reports scope["asgi"] as this request received it, then writes to it.
        seen = dict(scope["asgi"])
        scope["asgi"]["mutated"] = True
        await _json(send, seen)
    elif route == "/receive-timeouts":
        # The body, then three receive() calls that time out (each cancelled by wait_for): none may leave a
        # pending receive behind.
        await receive()
        timeouts = 0
        for _ in range(3):
            try:
                await asyncio.wait_for(receive(), 0.01)
            except asyncio.TimeoutError:
                timeouts += 1
        await _json(send, {"timeouts": timeouts})
    elif route == "/receive-timeout-then-body":
        # A receive() cancelled before the body arrives; the body sent after it must still be delivered.
        try:
            message = await asyncio.wait_for(receive(), 0.2)
            first = "early:" + message["type"]
        except asyncio.TimeoutError:
            first = "timeout"
        body, _, _ = await _read_body(receive)
        await _json(send, {"first": first, "body": body.decode()})
    elif route == "/log-lines":
        # An app logging through uvicorn's logger, as apps written for uvicorn do.
        logging.getLogger("uvicorn.error").info("APP-INFO-LINE")
        logging.getLogger("uvicorn.error").warning("APP-WARNING-LINE")
        await _respond(send, 200, b"logged")
    elif route == "/trailers":
        # ASGI's http.response.trailers extension where the scope offers it (HTTP/2); ?bad=1 sends body after
        # the body was complete instead of the trailers.
        offered = "http.response.trailers" in scope.get("extensions", {})
        if not offered:
            await _respond(send, 200, b"no trailers")
            return
        start = {"type": "http.response.start", "status": 200, "trailers": True}
        await send({**start, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"part1-", "more_body": True})
        await send({"type": "http.response.body", "body": b"part2", "more_body": False})
        if q.get("bad") == "1":
            await send({"type": "http.response.body", "body": b"late", "more_body": False})
        trailers = "http.response.trailers"
        await send({"type": trailers, "headers": [(b"x-digest", b"abc")], "more_trailers": True})
        await send({"type": trailers, "headers": [(b"X-Count", b"2")], "more_trailers": False})
    elif route == "/slow":
        delay = float(q.get("delay", "1"))
        marker(f"APP-SLOW-START {q.get('id', '')}")
        await asyncio.sleep(delay)
        await _respond(send, 200, b"slow done")
        marker(f"APP-SLOW-END {q.get('id', '')}")
    else:
        # Everything else (/scope/..., arbitrary paths): the scope as JSON.
        await _json(send, scope_snapshot(scope))
