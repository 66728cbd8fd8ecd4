"""Request bodies, Expect: 100-continue and http.disconnect, against fasterapi-asgi and uvicorn."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from harness import RawClient, ServerProcess, chunked, request

pytestmark = pytest.mark.timeout(30)


def poll_events(server: ServerProcess, rid: str, until: int, timeout: float = 5.0) -> list[str]:
    """GET /events?id=rid on a new connection until at least ``until`` events are recorded."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url) as client:
        while True:
            events: list[str] = client.get("/events", params={"id": rid}).json()
            if len(events) >= until or time.monotonic() > deadline:
                return events
            time.sleep(0.05)


def flags(r_more_body: str | None) -> list[str]:
    return (r_more_body or "").split(",")


def test_content_length_body(server: ServerProcess) -> None:
    with RawClient(server.port) as c:
        c.send(request("POST", "/echo", body=b"hello body"))
        r = c.read_response()
        assert (r.status, r.body) == (200, b"hello body")
        assert flags(r.header("x-more-body"))[-1] == "0"
        # An empty body is one http.request message with more_body False.
        c.send(request("POST", "/echo", [("Content-Length", "0")]))
        r = c.read_response()
        assert (r.status, r.body, r.header("x-messages"), r.header("x-more-body")) == (200, b"", "1", "0")
        c.send(request("GET", "/echo"))
        r = c.read_response()
        assert (r.status, r.body, r.header("x-messages"), r.header("x-more-body")) == (200, b"", "1", "0")


def test_body_sent_in_pieces_delivered_in_order(server: ServerProcess) -> None:
    pieces = [b"alpha-", b"beta-", b"gamma-", b"delta"]
    with RawClient(server.port) as c:
        c.send(request("POST", "/echo", [("Content-Length", str(sum(map(len, pieces))))]))
        for piece in pieces:
            time.sleep(0.1)
            c.send(piece)
        r = c.read_response()
    assert (r.status, r.body) == (200, b"".join(pieces))
    more = flags(r.header("x-more-body"))
    assert int(r.header("x-messages") or 0) >= 2, "body pieces sent 100 ms apart arrived as one message"
    assert more[-1] == "0" and set(more[:-1]) == {"1"}


def test_chunked_request_body(server: ServerProcess) -> None:
    pieces = [b"one-", b"two-", b"three"]
    with RawClient(server.port) as c:
        c.send(request("POST", "/echo", [("Transfer-Encoding", "chunked")]))
        for piece in pieces:
            time.sleep(0.1)
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        time.sleep(0.1)
        c.send(b"0\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.body) == (200, b"one-two-three")
        more = flags(r.header("x-more-body"))
        assert int(r.header("x-messages") or 0) >= 2
        assert more[-1] == "0" and set(more[:-1]) == {"1"}
        # Chunk extensions and trailers are consumed; the connection stays in sync.
        c.send(
            request("POST", "/echo", [("Transfer-Encoding", "chunked")])
            + b"3;name=value\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
            + request("POST", "/echo", [("Transfer-Encoding", "chunked")], chunked(b"next"))
        )
        assert c.read_response().body == b"abcde"
        assert c.read_response().body == b"next"


@pytest.mark.parametrize("encoding", ["content-length", "chunked"])
def test_large_request_body_streamed(server: ServerProcess, encoding: str) -> None:
    size = 4 * 1024 * 1024 + 3
    body = bytes(i * 7 % 251 for i in range(256)) * (size // 256) + b"end"

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), 100_000):
            yield body[i : i + 100_000]

    content: bytes | Iterator[bytes] = body if encoding == "content-length" else pieces()
    with httpx.Client(base_url=server.url, timeout=20) as client:
        r = client.post("/digest", content=content)
    assert r.status_code == 200
    result = r.json()
    assert result["length"] == len(body)
    assert result["sha256"] == hashlib.sha256(body).hexdigest()
    assert result["messages"] > 1, "a 4 MiB body was delivered as a single message"


def test_unread_body_keeps_connection_in_sync(server: ServerProcess) -> None:
    with RawClient(server.port) as c:
        c.send(request("POST", "/no-read", body=b"x" * 5000) + request("GET", "/"))
        assert c.read_response().body == b"answered without reading"
        assert c.read_response().body == b"hello, world"
        c.send(
            request("POST", "/no-read", [("Transfer-Encoding", "chunked")], chunked(b"abc", b"defg"))
            + request("GET", "/")
        )
        assert c.read_response().body == b"answered without reading"
        assert c.read_response().body == b"hello, world"


def test_expect_100_continue_when_app_reads(server: ServerProcess) -> None:
    with RawClient(server.port) as c:
        c.send(request("POST", "/echo", [("Expect", "100-continue"), ("Content-Length", "7")]))
        interim = c.read_response(allow_interim=True)
        assert interim.status == 100
        assert interim.headers == []
        c.send(b"payload")
        r = c.read_response()
        assert (r.status, r.body) == (200, b"payload")
        # The next request without Expect gets no 100.
        c.send(request("POST", "/echo", body=b"again"))
        r = c.read_response(allow_interim=True)
        assert (r.status, r.body) == (200, b"again")


def test_expect_100_continue_not_sent_when_app_answers_first(server: ServerProcess) -> None:
    with RawClient(server.port) as c:
        c.send(request("POST", "/no-read", [("Expect", "100-continue"), ("Content-Length", "7")]))
        r = c.read_response(allow_interim=True)
        assert (r.status, r.body) == (200, b"answered without reading")
        assert b"100 Continue" not in r.head
        assert b"100 Continue" not in c.pending(0.2)


def test_disconnect_delivered_and_send_after_is_noop(server: ServerProcess) -> None:
    rid = uuid.uuid4().hex
    with RawClient(server.port) as c:
        c.send(request("POST", f"/wait-disconnect?id={rid}", body=b"some body"))
        server.wait_for_log(f"APP-BODY-READ {rid}")
        assert c.pending(0.1) == b"", "the app has not answered, nothing may be written"
    events = poll_events(server, rid, until=3)
    assert events == ["http.request", "http.disconnect", "send-ok"]


def test_receive_after_response_returns_disconnect(server: ServerProcess) -> None:
    rid = uuid.uuid4().hex
    with RawClient(server.port) as c:
        c.send(request("GET", f"/after-response?id={rid}"))
        assert c.read_response().body == b"done"
        # Connection still open: receive() must not wait for the client to go away.
        events = poll_events(server, rid, until=1, timeout=3)
        assert events == ["http.disconnect"]
        c.send(request("GET", "/"))
        assert c.read_response().body == b"hello, world"


def test_request_body_backpressure(server: ServerProcess) -> None:
    # The app sleeps 1 s before reading: the server must stop reading from the socket at its
    # high-water mark, so the client can only fill the kernel buffers (at most ~36 MiB here).
    size = 80 * 1024 * 1024
    body = bytes(range(256)) * (size // 256)
    with RawClient(server.port, timeout=20) as c:
        c.send(request("POST", "/digest?delay=1", [("Content-Length", str(size))]))
        c.sock.setblocking(False)
        view = memoryview(body)
        sent = 0
        deadline = time.monotonic() + 0.7
        while sent < size and time.monotonic() < deadline:
            try:
                sent += c.sock.send(view[sent : sent + 1024 * 1024])
            except BlockingIOError:
                time.sleep(0.01)
        assert sent < 48 * 1024 * 1024, f"server buffered {sent} bytes of a body the app was not reading"
        c.sock.settimeout(20)
        c.sock.sendall(view[sent:])
        r = c.read_response()
    assert r.status == 200
    assert r.json()["length"] == size
    assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_response_write_backpressure(server: ServerProcess) -> None:
    # The client reads nothing for a while: send() must block once the write queue is full, so the
    # app cannot have pushed half of 128 MiB into server memory (kernel buffers hold ~36 MiB).
    size = 128 * 1024 * 1024
    rid = uuid.uuid4().hex
    with RawClient(server.port, timeout=20) as c:
        c.send(request("GET", f"/big?size={size}&id={rid}"))
        time.sleep(0.8)
        accepted = poll_events(server, rid, until=1)[0]
        assert 0 < accepted < 64 * 1024 * 1024, f"send() accepted {accepted} bytes with no reader"
        _, status, _, headers, _ = c.read_head()
        assert status == 200
        remaining = size
        while remaining:
            chunk = c.read_exact(min(remaining, 1 << 20))
            remaining -= len(chunk)
    assert poll_events(server, rid, until=1)[0] == size
