"""The known HTTP/2 attacks, each bounded (issue: rapid reset, CONTINUATION flood, HPACK bomb, SETTINGS and
PING floods, zero-window stall). Every test checks the bound over a real socket *and* that the server goes on
serving other clients afterwards.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time

import hpack
import httpx
import pytest
from h2_wire import H2Client
from harness import ServerProcess
from test_http2_rfc9113 import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PING,
    RST_STREAM,
    Peer,
    frame,
    goaway,
    response_status,
    settings,
)

ENHANCE_YOUR_CALM = 0xB


@pytest.fixture
def srv(start_server: object) -> ServerProcess:
    return start_server("fasterapi", "raw_app:app", "--http2")  # type: ignore[operator]


def still_serving(srv: ServerProcess) -> None:
    with H2Client(srv.port) as c:
        assert c.get("/").body == b"hello, world"
    assert httpx.get(srv.url + "/", trust_env=False, timeout=5).status_code == 200


def test_rapid_reset_is_stopped(fresh_server: object) -> None:
    """CVE-2023-44487: requests opened and reset at once, each starting an app that would run for seconds. The
    connection gets GOAWAY(ENHANCE_YOUR_CALM) after at most 2 x max_concurrent_streams of them, so the apps a
    client can start this way are bounded; nghttp2's own reset limit stops the pure RST flood too."""
    srv = fresh_server("fasterapi", "raw_app:app", "--http2")  # type: ignore[operator]
    p = Peer(srv.port)
    try:
        burst = []
        for i in range(1000):
            sid = 1 + 2 * i
            burst.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, p.headers(f"/slow?delay=5&id=r{i}")))
            burst.append(frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))  # CANCEL
        try:
            p.send(*burst)
        except OSError:
            pass  # the server may close before taking it all
        frames = p.read(5.0)
    finally:
        p.close()
    g = goaway(frames)
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM, frames[-3:]
    time.sleep(0.3)
    started = len(re.findall(r"APP-SLOW-START r\d+", srv.log()))
    assert started <= 2 * 100 + 50, f"{started} apps started by a reset flood"
    still_serving(srv)


def test_continuation_flood_is_stopped(srv: ServerProcess) -> None:
    """CVE-2024-27316 and relatives: a header block that never ends, in many CONTINUATION frames. The
    connection is closed after a handful of them (nghttp2's max_continuations), not after the client gives up.
    """
    p = Peer(srv.port)
    try:
        p.send(frame(HEADERS, 0, 1, p.headers()[:3]))
        closed_after = None
        for i in range(5000):
            try:
                p.send(frame(CONTINUATION, 0, 1, b"\x00" * 64))
            except OSError:
                closed_after = i
                break
        frames = p.read(3.0)
    finally:
        p.close()
    assert closed_after is not None or frames.closed, "the server kept taking CONTINUATION frames"
    still_serving(srv)


def test_hpack_bomb_is_431_not_memory(srv: ServerProcess) -> None:
    """A 4 KB header in the dynamic table, then referenced 2,000 times by 1-byte indexes: 8 MB of header list
    from 2 KB on the wire. The header list bound (64 KiB) answers 431; nothing is stored past it."""
    p = Peer(srv.port)
    try:
        enc = hpack.Encoder()
        base = [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"), (":path", "/")]
        first = enc.encode([*base, ("x-bomb", "b" * 4000)])  # adds x-bomb to the dynamic table
        p.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, first))
        # 0xbe: indexed field 62, the newest dynamic-table entry (x-bomb) — one byte per 4 KB header.
        bomb = enc.encode(base) + b"\xbe" * 2000
        p.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, bomb))
        ended: set[int] = set()

        def both_ended(f: object) -> bool:
            if getattr(f, "type", None) == DATA and "END_STREAM" in f.flags:  # type: ignore[attr-defined]
                ended.add(f.stream_id)  # type: ignore[attr-defined]
            return ended == {1, 3}

        frames = p.read(3.0, until=both_ended)
    finally:
        p.close()
    assert response_status(frames, 1) == 200
    assert response_status(frames, 3) == 431
    still_serving(srv)


@pytest.mark.parametrize(
    ("kind", "one"),
    [("SETTINGS", settings((0x3, 100))), ("PING", frame(PING, 0, 0, b"floodfld"))],
    ids=["settings", "ping"],
)
def test_control_frame_flood_is_stopped(srv: ServerProcess, kind: str, one: bytes) -> None:
    """Each SETTINGS or PING frame owes an ACK: a client that sends thousands and reads none is cut off
    (nghttp2's bound on queued ACKs) instead of the server queueing them without end."""
    p = Peer(srv.port)
    try:
        p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent_all = True
        try:
            for _ in range(20):
                p.send(one * 1000)
        except OSError:
            sent_all = False
        frames = p.read(3.0)
    finally:
        p.close()
    assert not sent_all or frames.closed, f"20,000 unread {kind} ACKs were queued"
    still_serving(srv)


def test_too_many_settings_in_one_frame_is_enhance_your_calm(srv: ServerProcess) -> None:
    p = Peer(srv.port)
    try:
        p.send(settings(*[(0x3, 100)] * 100))
        frames = p.read(2.0)
    finally:
        p.close()
    g = goaway(frames)
    assert g is not None and g.error_code == ENHANCE_YOUR_CALM
    still_serving(srv)


def test_zero_window_stall_is_bounded_by_timeout_send(start_server: object) -> None:
    """A client that opens no window (SETTINGS_INITIAL_WINDOW_SIZE 0) and never sends WINDOW_UPDATE: the app's
    response waits in bounded buffers, and --timeout-send closes the connection."""
    srv = start_server("fasterapi", "raw_app:app", "--http2", "--timeout-send", "1")  # type: ignore[operator]
    p = Peer(srv.port, first=settings((0x4, 0)))
    try:
        p.send(settings(flags=0x1))
        rid = f"stall{time.monotonic_ns()}"
        p.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, p.headers(f"/big?size=5000000&id={rid}")))
        start = time.monotonic()
        time.sleep(0.5)
        # While the connection is stalled, the app's send() waits: it has handed over a bounded amount.
        with H2Client(srv.port) as c:
            sent = json.loads(c.get(f"/events?id={rid}").body)[0]
        assert sent <= 512 * 1024, f"the app could buffer {sent} bytes for a client that reads nothing"
        frames = p.read(5.0)
        elapsed = time.monotonic() - start
    finally:
        p.close()
    assert frames.closed, "the stalled connection was kept"
    assert 0.8 < elapsed < 4.0, elapsed
    assert not any(f.type == DATA for f in frames)  # nothing was sent beyond the (zero) window
    still_serving(srv)


def test_idle_stream_headers_do_not_hold_the_connection(start_server: object) -> None:
    """A client that starts a header block and sends nothing more (HTTP/2 slowloris) is closed at the
    keep-alive bound: a request that has not begun is not work in progress."""
    srv = start_server("fasterapi", "raw_app:app", "--http2", "--timeout-keep-alive", "1")  # type: ignore[operator]
    p = Peer(srv.port)
    try:
        p.send(frame(HEADERS, 0, 1, p.headers()[:4]))  # no END_HEADERS, no CONTINUATION ever
        start = time.monotonic()
        frames = p.read(5.0)
        elapsed = time.monotonic() - start
    finally:
        p.close()
    assert frames.closed and elapsed < 3.5, elapsed
    still_serving(srv)


def test_data_flood_on_many_streams_is_bounded_by_windows(srv: ServerProcess) -> None:
    """100 streams each sending far more than they were granted, to apps that do not read yet: a stream may
    have its window (64 KiB) and the server's read-ahead for its app (64 KiB) in flight, no more. The first
    stream to go past that ends the connection with FLOW_CONTROL_ERROR (nghttp2 treats it as a connection
    error, which RFC 9113 5.4.1 allows); nothing beyond the bound is buffered, and other clients are served
    meanwhile."""
    p = Peer(srv.port)
    try:
        try:
            for i in range(100):
                sid = 1 + 2 * i
                p.send(frame(HEADERS, END_HEADERS, sid, p.headers("/digest?delay=3", "POST")))
                # 12 x 16 KiB = 192 KiB, blindly: more than window + read-ahead.
                p.send(*[frame(DATA, 0, sid, b"z" * 16384) for _ in range(12)])
        except OSError:
            pass  # the server ended the connection while the flood was still being written
        frames = p.read(3.0)
    finally:
        p.close()
    g = goaway(frames)
    resets = {f.stream_id for f in frames if f.type == RST_STREAM and f.error_code == 0x3}
    assert (g is not None and g.error_code == 0x3 and g.last_stream_id == 1) or len(resets) == 100, frames[
        -3:
    ]
    still_serving(srv)


def test_resets_after_app_failures_do_not_count_as_rapid_reset(srv: ServerProcess) -> None:
    """The rapid-reset bound counts the client's resets only. A response the server cannot complete gets its
    stream reset by the server (INTERNAL_ERROR); a client whose requests keep hitting such an app keeps its
    connection (400 such streams in well under a second: twice the bucket, faster than it refills). The
    case where the app is still attached when the server resets is tests/cpp/test_h2_loop.cc's."""
    with H2Client(srv.port, timeout=10) as c:
        for path in ("/cl?declared=10&actual=12", "/raise-after") * 2:
            sids = [c.request("GET", path) for _ in range(100)]
            assert [c.response(sid).reset_code for sid in sids] == [2] * len(sids)
        assert c.terminated() is None and not c.closed
        assert c.get("/").status == 200
    still_serving(srv)
