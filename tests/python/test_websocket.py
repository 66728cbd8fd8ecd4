"""WebSocket (ASGI websocket protocol over RFC 6455), differential against uvicorn.

Every test runs against both servers (``kind``) with the same apps: ``apps/ws_raw.py`` (raw ASGI) and
``apps/ws_fastapi.py`` (FastAPI ``@app.websocket``). The client is the ``websockets`` library; framing
edge cases use a raw socket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets
from harness import RawClient, ServerProcess, app_events
from websockets.exceptions import ConnectionClosed, InvalidStatus

RAW = "ws_raw:app"
FASTAPI = "ws_fastapi:app"

StartServer = Callable[..., ServerProcess]


def ws_url(srv: ServerProcess, path: str) -> str:
    return f"ws://127.0.0.1:{srv.port}{path}"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


@pytest.fixture
def raw(kind: str, start_server: StartServer) -> ServerProcess:
    return start_server(kind, RAW)


@pytest.fixture
def fapi(kind: str, start_server: StartServer) -> ServerProcess:
    return start_server(kind, FASTAPI)


# ---------------------------------------------------------------------------------------------
# Raw-socket helpers


def handshake(port: int, path: str = "/echo", extra: bytes = b"") -> tuple[socket.socket, bytes]:
    key = base64.b64encode(os.urandom(16))
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return sock, head


def client_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", b0, mask_bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    b0, b1 = recv_exact(sock, 2)
    assert b1 & 0x80 == 0, "server frames must not be masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", recv_exact(sock, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", recv_exact(sock, 8))
    return b0 & 0x0F, recv_exact(sock, n)


def read_close_code(sock: socket.socket) -> int | None:
    """Read frames until the close frame; its code (None for an empty close payload)."""
    while True:
        opcode, payload = read_frame(sock)
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0] if payload else None


def assert_closed(sock: socket.socket) -> None:
    sock.settimeout(5)
    try:
        assert sock.recv(1) == b""
    except ConnectionResetError:
        pass


# ---------------------------------------------------------------------------------------------
# Messages


def test_echo_text_and_bytes(raw: ServerProcess) -> None:
    async def go() -> list[Any]:
        async with websockets.connect(ws_url(raw, "/echo")) as ws:
            out = []
            for msg in ["hello", b"\x00\x01\xff", "", b"", "héllo wörld ✓"]:
                await ws.send(msg)
                out.append(await ws.recv())
            return out

    assert run(go()) == ["hello", b"\x00\x01\xff", "", b"", "héllo wörld ✓"]


def test_large_messages(raw: ServerProcess) -> None:
    text = "x" * (1 << 20)
    data = os.urandom(1 << 20) + b"tail"

    async def go() -> tuple[Any, Any]:
        async with websockets.connect(ws_url(raw, "/echo"), max_size=None) as ws:
            await ws.send(text)
            got_text = await ws.recv()
            await ws.send(data)
            return got_text, await ws.recv()

    got_text, got_data = run(go())
    assert got_text == text
    assert got_data == data


def test_many_messages_in_order_both_ways(raw: ServerProcess) -> None:
    async def go() -> tuple[list[Any], list[Any]]:
        async with websockets.connect(ws_url(raw, "/echo")) as ws:
            for i in range(500):
                await ws.send(f"m{i}")
            echoed = [await ws.recv() for _ in range(500)]
        async with websockets.connect(ws_url(raw, "/count?n=2000")) as ws:
            counted = [m async for m in ws]
        return echoed, counted

    echoed, counted = run(go())
    assert echoed == [f"m{i}" for i in range(500)]
    assert counted == [str(i) for i in range(2000)]


def test_receive_backpressure_slow_app(raw: ServerProcess) -> None:
    # 300 messages of 4 KiB sent while the app does not read: more than the queue limits, so reading pauses.
    async def go() -> Any:
        async with websockets.connect(ws_url(raw, "/batch?n=300")) as ws:
            for i in range(300):
                payload = f"{i}:".encode().ljust(4096, b"x")
                await ws.send(payload if i % 2 else payload.decode())
            return json.loads(await ws.recv())

    assert run(go()) == [300, 300 * 4096, True]


def test_send_backpressure_slow_client(raw: ServerProcess) -> None:
    # 300 messages of 64 KiB (19 MiB) to a client that starts reading late: send() must wait for the socket.
    async def go() -> list[Any]:
        async with websockets.connect(ws_url(raw, "/count?n=300&size=65536"), max_size=None) as ws:
            await asyncio.sleep(0.5)
            return [m async for m in ws]

    got = run(go())
    assert len(got) == 300
    assert all(len(m) == 65536 and m.startswith(f"{i}.") for i, m in enumerate(got))


def test_fragmented_message_and_ping_in_between(raw: ServerProcess) -> None:
    sock, head = handshake(raw.port)
    with sock:
        assert head.startswith(b"HTTP/1.1 101 ")
        sock.sendall(
            client_frame(0x1, b"Hel", fin=False)
            + client_frame(0x9, b"ping!")
            + client_frame(0x0, "lo ✓".encode(), fin=False)
            + client_frame(0x0, b"!")
        )
        assert read_frame(sock) == (0xA, b"ping!")
        assert read_frame(sock) == (0x1, "Hello ✓!".encode())
        sock.sendall(client_frame(0x8, struct.pack("!H", 1000)))
        assert read_close_code(sock) == 1000
        assert_closed(sock)


def test_ping_pong(raw: ServerProcess) -> None:
    async def go() -> float:
        async with websockets.connect(ws_url(raw, "/echo")) as ws:
            latency = await (await ws.ping(b"abc"))
            await ws.send("after ping")
            assert await ws.recv() == "after ping"
            return latency

    assert run(go()) >= 0


# ---------------------------------------------------------------------------------------------
# Handshake


def test_subprotocol_negotiation(raw: ServerProcess) -> None:
    async def go() -> tuple[Any, Any]:
        async with websockets.connect(ws_url(raw, "/echo"), subprotocols=["chat", "superchat"]) as ws:
            chosen = ws.subprotocol
        async with websockets.connect(ws_url(raw, "/echo")) as ws:
            none = ws.subprotocol
        return chosen, none

    assert run(go()) == ("chat", None)


def test_scope(raw: ServerProcess) -> None:
    async def go() -> dict[str, Any]:
        async with websockets.connect(
            ws_url(raw, "/scope?a=1&b=%20"), subprotocols=["p1", "p2"], additional_headers={"X-Test": "yes"}
        ) as ws:
            return json.loads(await ws.recv())

    scope = run(go())
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == {"$bytes": "/scope"}
    assert scope["query_string"] == {"$bytes": "a=1&b=%20"}
    assert scope["root_path"] == ""
    assert scope["subprotocols"] == ["p1", "p2"]
    assert scope["server"] == ["127.0.0.1", raw.port]
    assert scope["client"][0] == "127.0.0.1"
    assert [{"$bytes": "x-test"}, {"$bytes": "yes"}] in scope["headers"]
    # uvicorn's key order, "extensions" (websocket.http.response) included.
    assert scope["keys"] == [
        "type", "asgi", "http_version", "scheme", "server", "client", "root_path", "path", "raw_path",
        "query_string", "headers", "subprotocols", "state", "extensions",
    ]  # fmt: skip


def test_proxy_headers_apply_to_websocket_scope(raw: ServerProcess) -> None:
    async def go() -> dict[str, Any]:
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
        async with websockets.connect(ws_url(raw, "/scope"), additional_headers=headers) as ws:
            return json.loads(await ws.recv())

    scope = run(go())
    assert scope["scheme"] == "wss"
    assert scope["client"][0] == "203.0.113.7"


def test_accept_headers(raw: ServerProcess) -> None:
    sock, head = handshake(raw.port, "/headers")
    with sock:
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0] == "HTTP/1.1 101 Switching Protocols"
        fields = {ln.split(":", 1)[0].lower(): ln.split(":", 1)[1].strip() for ln in lines[1:] if ln}
        assert fields["upgrade"].lower() == "websocket"
        assert fields["connection"].lower() == "upgrade"
        assert fields["x-extra"] == "yes"
        assert "date" in fields
        assert "server" in fields


def test_accept_key_rfc_example(raw: ServerProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", raw.port), timeout=5)
    with sock:
        sock.sendall(
            b"GET /echo HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head


def test_close_before_accept_is_403(raw: ServerProcess) -> None:
    async def go() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(ws_url(raw, "/reject")):
                pass
        return info.value.response.status_code

    assert run(go()) == 403


def test_app_error_before_accept_is_500(raw: ServerProcess) -> None:
    async def go() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(ws_url(raw, "/fail")):
                pass
        return info.value.response.status_code

    assert run(go()) == 500
    raw.wait_for_log("app failed before accept")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n", 400),
        (
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 8\r\n",
            400,
        ),
        (
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\n"
            b"Sec-WebSocket-Version: 13\r\n",
            400,
        ),
    ],
    ids=["missing-key", "bad-version", "bad-key"],
)
def test_invalid_handshake(raw: ServerProcess, headers: bytes, status: int) -> None:
    sock = socket.create_connection(("127.0.0.1", raw.port), timeout=5)
    with sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(f"HTTP/1.1 {status} ".encode()), data[:200]
    assert b"Failed to open a WebSocket connection" in data


# ---------------------------------------------------------------------------------------------
# Closing


def test_client_close_code_delivered_to_app(raw: ServerProcess) -> None:
    async def go() -> None:
        async with websockets.connect(ws_url(raw, "/echo?id=client-close")) as ws:
            await ws.send("x")
            await ws.recv()
            await ws.close(code=4002, reason="done")
            assert ws.close_code == 4002  # echoed by the server

    run(go())
    assert app_events(raw, "client-close") == [{"disconnect": 4002}]


def test_client_close_without_code(raw: ServerProcess) -> None:
    sock, _ = handshake(raw.port, "/echo?id=no-code")
    with sock:
        sock.sendall(client_frame(0x8, b""))
        assert read_close_code(sock) is None  # the empty close frame is echoed
        assert_closed(sock)
    assert app_events(raw, "no-code") == [{"disconnect": 1005}]


def test_tcp_loss_delivered_to_app(raw: ServerProcess) -> None:
    sock, _ = handshake(raw.port, "/echo?id=tcp-loss")
    sock.close()
    assert app_events(raw, "tcp-loss") == [{"disconnect": 1005}]


def test_server_close_code_seen_by_client(raw: ServerProcess) -> None:
    async def go() -> tuple[Any, Any]:
        async with websockets.connect(ws_url(raw, "/echo?id=server-close")) as ws:
            await ws.send("close:4001")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            rcvd = info.value.rcvd
            return rcvd.code if rcvd else None, rcvd.reason if rcvd else None

    assert run(go()) == (4001, "bye")
    # After its own close, the app's receive() gets the disconnect with its code and reason.
    assert app_events(raw, "server-close") == [
        {"after_close": {"type": "websocket.disconnect", "code": 4001, "reason": "bye"}}
    ]


def test_server_closes_tcp_after_close_handshake(raw: ServerProcess) -> None:
    sock, _ = handshake(raw.port, "/echo")
    with sock:
        sock.sendall(client_frame(0x1, b"close:4001"))
        assert read_close_code(sock) == 4001
        sock.sendall(client_frame(0x8, struct.pack("!H", 4001)))
        sock.settimeout(3)  # well below the 10 s close timeout: the reply completes the handshake
        assert sock.recv(1) == b""


def test_send_after_close_raises(raw: ServerProcess) -> None:
    async def go() -> Any:
        async with websockets.connect(ws_url(raw, "/send-after-close?id=late")) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd.code if info.value.rcvd else None

    assert run(go()) == 1000
    assert app_events(raw, "late") == [{"send_after_close": "RuntimeError"}]


def test_app_return_closes_stream(raw: ServerProcess) -> None:
    async def go() -> Any:
        async with websockets.connect(ws_url(raw, "/return")) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd

    assert run(go()) is None  # no close frame: abnormal closure for the client


# ---------------------------------------------------------------------------------------------
# Protocol errors (raw frames)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(0x1, b"unmasked", masked=False), 1002),
        (client_frame(0x1, b"\xff\xfe invalid utf-8"), 1007),
        (client_frame(0x1, b"rsv", rsv=4), 1002),
        (client_frame(0x0, b"continuation without start"), 1002),
        (client_frame(0x9, b"x" * 126), 1002),
        (client_frame(0x8, b"\x03\xe8\xff"), 1007),  # 1000 with an invalid UTF-8 reason
        (client_frame(0x8, struct.pack("!H", 999)), 1002),
        # A frame header announcing 17 MiB (> the 16 MiB default limit); the payload is never sent.
        (bytes([0x82, 0xFF]) + struct.pack("!Q", 17 << 20) + b"\x00\x00\x00\x00", 1009),
    ],
    ids=[
        "unmasked",
        "bad-utf8",
        "rsv",
        "bad-continuation",
        "long-ping",
        "close-bad-utf8",
        "close-bad-code",
        "too-big",
    ],
)
def test_protocol_errors_close_the_connection(raw: ServerProcess, frame: bytes, code: int) -> None:
    sock, head = handshake(raw.port)
    with sock:
        assert head.startswith(b"HTTP/1.1 101 ")
        sock.sendall(frame)
        assert read_close_code(sock) == code
        assert_closed(sock)


# ---------------------------------------------------------------------------------------------
# Server behaviour around sessions


def test_http_still_served_alongside(raw: ServerProcess) -> None:
    async def go() -> None:
        async with websockets.connect(ws_url(raw, "/echo")) as ws:
            async with httpx.AsyncClient() as client:
                r = await client.get(raw.url + "/")
                assert (r.status_code, r.text) == (200, "ok")
            await ws.send("still open")
            assert await ws.recv() == "still open"

    run(go())
    assert httpx.get(raw.url + "/").text == "ok"


def test_loop_asyncio(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, RAW, "--loop", "asyncio")

    async def go() -> list[Any]:
        async with websockets.connect(ws_url(srv, "/echo"), max_size=None) as ws:
            out = []
            for msg in ["a", b"b" * 100_000]:
                await ws.send(msg)
                out.append(await ws.recv())
        async with websockets.connect(ws_url(srv, "/count?n=50")) as ws:
            out.append(len([m async for m in ws]))
        return out

    assert run(go()) == ["a", b"b" * 100_000, 50]


def test_keep_alive_timeout_does_not_close_websocket(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, RAW, "--timeout-keep-alive", "1")

    async def go() -> None:
        async with websockets.connect(ws_url(srv, "/echo"), ping_interval=None) as ws:
            await asyncio.sleep(2.2)
            await ws.send("alive")
            assert await ws.recv() == "alive"

    run(go())


def test_graceful_shutdown_sends_1012(kind: str, fresh_server: StartServer) -> None:
    srv = fresh_server(kind, RAW)

    async def go() -> Any:
        async with websockets.connect(ws_url(srv, "/echo")) as ws:
            await ws.send("x")
            await ws.recv()
            srv.signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd.code if info.value.rcvd else None

    assert run(go()) == 1012
    # uvicorn 0.54 re-raises the captured SIGTERM after a graceful shutdown (as fasterapi-asgi does).
    assert srv.wait(10) == -signal.SIGTERM
    assert "Traceback" not in srv.log()


# ---------------------------------------------------------------------------------------------
# FastAPI


def test_fastapi_websocket_route(fapi: ServerProcess) -> None:
    async def go() -> list[Any]:
        async with websockets.connect(ws_url(fapi, "/ws/lobby?q=hi&id=fa")) as ws:
            out = [json.loads(await ws.recv())]
            await ws.send("hello")
            out.append(await ws.recv())
            await ws.send(json.dumps({"n": [1, 2]}))
            out.append(json.loads(await ws.recv()))
            await ws.close(code=4003)
            return out

    assert run(go()) == [{"room": "lobby", "q": "hi"}, "lobby:hello", {"echo": {"n": [1, 2]}}]
    assert app_events(fapi, "fa") == [{"disconnect": 4003}]
    assert httpx.get(fapi.url + "/").json() == {"hello": "world"}


def test_fastapi_server_close_and_reject(fapi: ServerProcess) -> None:
    async def go() -> tuple[Any, int]:
        async with websockets.connect(ws_url(fapi, "/ws/r")) as ws:
            await ws.recv()
            await ws.send("bye")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            closed = (info.value.rcvd.code, info.value.rcvd.reason) if info.value.rcvd else None
        with pytest.raises(InvalidStatus) as rejected:
            async with websockets.connect(ws_url(fapi, "/reject")):
                pass
        return closed, rejected.value.response.status_code

    assert run(go()) == ((4000, "bye"), 403)


def test_fastapi_unknown_websocket_path(fapi: ServerProcess) -> None:
    async def go() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(ws_url(fapi, "/nope")):
                pass
        return info.value.response.status_code

    assert run(go()) == 403


# ---------------------------------------------------------------------------------------------
# Denial responses: the websocket.http.response extension


def denial(srv: ServerProcess, path: str) -> tuple[int, bytes, str | None]:
    async def go() -> tuple[int, bytes, str | None]:
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(ws_url(srv, path)):
                pass
        response = info.value.response
        return response.status_code, response.body or b"", response.headers.get("x-why")

    return run(go())


def test_denial_by_http_exception(fapi: ServerProcess) -> None:
    status, body, _ = denial(fapi, "/deny-http")
    assert status == 401
    assert b"nope" in body


def test_denial_response(fapi: ServerProcess) -> None:
    assert denial(fapi, "/deny-response") == (418, b"go away", "test")


def test_denial_by_https_redirect(kind: str, start_server: StartServer) -> None:
    # Over a raw socket: the websockets client would follow the redirect to wss://.
    srv = start_server(kind, "ws_fastapi:redirect_app")
    with RawClient(srv.port) as c:
        c.send(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        r = c.read_response()
    assert r.status == 307
    assert (r.header("location") or "").startswith("wss://127.0.0.1")


def test_websocket_scope_offers_the_denial_extension(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, RAW)

    async def go() -> Any:
        async with websockets.connect(ws_url(srv, "/scope")) as ws:
            return json.loads(await ws.recv())

    assert run(go())["extensions"] == {"websocket.http.response": {}}  # the app's own view of it


def test_rejection_403_carries_no_server_headers(kind: str, start_server: StartServer) -> None:
    """As uvicorn: a handshake refused with websocket.close gets a bare 403 (date, no server/--header lines);
    an accepted one gets the --header values."""
    srv = start_server(kind, RAW, "--header", "x-test:1")
    handshake = (
        b"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with RawClient(srv.port) as c:
        c.send(b"GET /reject HTTP/1.1\r\n" + handshake)
        r = c.read_response()
    assert r.status == 403
    assert r.header("x-test") is None and r.header("server") is None
    assert r.header("date") is not None
    with RawClient(srv.port) as c:
        c.send(b"GET /echo HTTP/1.1\r\n" + handshake)
        _, status, _, headers, _ = c.read_head()
    assert status == 101
    assert ("x-test", "1") in [(k.lower(), v) for k, v in headers]
