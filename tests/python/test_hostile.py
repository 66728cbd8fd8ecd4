"""Hostile clients: request smuggling, strict RFC 9112 rules, and the time and memory bounds per connection.

Every attack runs over real sockets against a real server process; where uvicorn behaves as required the
test is differential. While an attack holds its connection, other clients must be served normally.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import httpx
import pytest
from conftest import StartServer
from harness import RawClient, ServerProcess, request

pytestmark = pytest.mark.timeout(60)

HELLO = b"hello, world"


def rss_mb(server: ServerProcess) -> float:
    with open(f"/proc/{server.proc.pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def assert_serving(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        r = client.get("/")
        assert (r.status_code, r.content) == (200, HELLO)


# ---- request smuggling -------------------------------------------------------------------------------------


def test_http10_transfer_encoding_closes_after_response(server: ServerProcess) -> None:
    """RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing: answer, close, never read on."""
    raw = (
        b"POST /echo HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    with RawClient(server.port) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 200
        rest = c.read_to_eof(5)
    assert b"HTTP/1." not in rest, f"the request behind the HTTP/1.0 chunked one was answered: {rest!r}"
    assert "/smuggled" not in server.log()


# ---- strict where RFC 9112 says MUST -----------------------------------------------------------------------

STRICT_400 = {
    "no-host": b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "invalid-host": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
}


@pytest.mark.parametrize("raw", STRICT_400.values(), ids=STRICT_400.keys())
def test_host_rules(fasterapi: ServerProcess, raw: bytes) -> None:
    with RawClient(fasterapi.port) as c:
        c.send_tolerant(raw + request("GET", "/"))
        r = c.read_response()
        assert r.status == 400
        assert b"HTTP/1." not in c.read_to_eof(5)
    assert_serving(fasterapi)


@pytest.mark.parametrize("line", [b"GET /x", b"GET / HTTP/2.0", b"GET / HTTP/1.2"])
def test_unsupported_versions(fasterapi: ServerProcess, line: bytes) -> None:
    with RawClient(fasterapi.port) as c:
        c.send_tolerant(line + b"\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert r.status in (400, 505)
        assert c.wait_closed(3)
    assert_serving(fasterapi)


def test_http10_without_host_is_served(server: ServerProcess) -> None:
    with RawClient(server.port) as c:
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.body) == (200, HELLO)


def test_fragment_not_in_path(server: ServerProcess) -> None:
    with RawClient(server.port) as c:
        c.send(request("GET", "/scope/p?q=1#frag"))
        scope = c.read_response().json()
    assert scope["path"] == "/scope/p"
    assert scope["query_string"] == {"$bytes": "q=1"}


# ---- time bounds -------------------------------------------------------------------------------------------


def test_partial_head_is_closed_after_header_timeout(fresh_server: StartServer) -> None:
    srv = fresh_server("fasterapi", "raw_app:app", "--timeout-request-header", "1", "--log-level", "debug")
    with RawClient(srv.port, timeout=10) as slow:
        slow.send(b"G")
        started = time.monotonic()
        assert_serving(srv)  # others are served meanwhile
        assert slow.wait_closed(5), "a connection with one byte of a head was kept"
        assert time.monotonic() - started < 4
        assert b"408 Request Timeout" in bytes(slow.buf)
    srv.wait_for_log("header timeout")
    assert_serving(srv)


def test_slowloris_head_one_byte_at_a_time(fresh_server: StartServer) -> None:
    srv = fresh_server("fasterapi", "raw_app:app", "--timeout-request-header", "1.5")
    head = request("GET", "/")
    with RawClient(srv.port, timeout=10) as slow:
        started = time.monotonic()
        closed = False
        for b in head:
            try:
                slow.sock.sendall(bytes([b]))
            except OSError:
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > 4:
                break
        assert closed or slow.wait_closed(3), "a head trickling in was never cut off"
        assert time.monotonic() - started < 6
    assert_serving(srv)


def test_stalled_body_is_closed_and_the_app_sees_disconnect(fresh_server: StartServer) -> None:
    srv = fresh_server("fasterapi", "raw_app:app", "--timeout-request-body", "1", "--log-level", "debug")
    with RawClient(srv.port, timeout=10) as slow:
        slow.send(request("POST", "/wait-disconnect?id=stall", [("Content-Length", "100")]) + b"abc")
        assert_serving(srv)
        assert slow.wait_closed(5)
    srv.wait_for_log("body timeout")
    with httpx.Client(base_url=srv.url) as client:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            events = client.get("/events?id=stall").json()
            if "http.disconnect" in events:
                break
            time.sleep(0.05)
        assert "http.disconnect" in events, events


def test_client_that_does_not_read_is_closed_after_send_timeout(fresh_server: StartServer) -> None:
    srv = fresh_server("fasterapi", "raw_app:app", "--timeout-send", "1", "--log-level", "debug")
    s = socket.create_connection(("127.0.0.1", srv.port))
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(request("GET", "/big?size=20000000"))
        before = rss_mb(srv)
        assert_serving(srv)
        srv.wait_for_log("send timeout", timeout=10)
        assert rss_mb(srv) - before < 64
    finally:
        s.close()
    assert_serving(srv)


# ---- memory bounds -----------------------------------------------------------------------------------------


def test_pipelined_flood_without_reading_is_bounded(kind: str, start_server: StartServer) -> None:
    """300 pipelined requests for 1 MB each, never read: the server must stop taking up requests (the bug:
    it ran all 300 and grew by ~300 MB)."""
    srv = start_server(kind, "raw_app:app")
    assert_serving(srv)
    before = rss_mb(srv)
    s = socket.create_connection(("127.0.0.1", srv.port))
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"".join(request("GET", "/cl?declared=1000000&actual=1000000") for _ in range(300)))
        time.sleep(3)
        grown = rss_mb(srv) - before
        assert_serving(srv)
        assert grown < 48, f"{kind}: RSS grew by {grown:.0f} MB for one connection that does not read"
    finally:
        s.close()
    assert_serving(srv)


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    return header + mask + masked


def test_websocket_pings_to_a_client_that_does_not_read_are_bounded(
    fasterapi_kind: str, start_server: StartServer
) -> None:
    srv = start_server(fasterapi_kind, "ws_raw:app")
    s = socket.create_connection(("127.0.0.1", srv.port))
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        time.sleep(0.3)
        before = rss_mb(srv)
        ping = _ws_frame(0x9, b"p" * 125) * 512  # 64 KiB of pings per send
        sent = 0
        stop = threading.Event()

        def flood() -> None:
            nonlocal sent
            s.settimeout(2)
            try:
                while not stop.is_set() and sent < 100 * 1024 * 1024:
                    s.sendall(ping)
                    sent += len(ping)
            except OSError:
                pass

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        t.join(8)
        stop.set()
        grown = rss_mb(srv) - before
        assert grown < 48, f"RSS grew by {grown:.0f} MB after {sent >> 20} MB of pings to a non-reader"
    finally:
        s.close()
    with httpx.Client(base_url=srv.url, timeout=5) as client:
        assert client.get("/").content == b"ok"
