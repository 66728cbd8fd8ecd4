"""permessage-deflate (RFC 7692) over real sockets: negotiated by default as uvicorn (websockets) does,
compressed frames both ways on the wire, --ws-per-message-deflate false, the negotiated header compared with
uvicorn's for many offers, and a deflate bomb (a small frame that inflates beyond --ws-max-size).
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import websockets
from harness import KINDS, ServerProcess, app_events
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.sync.client import connect as ws_connect
from ws_wire import TAIL, Frame, deflate_payload
from ws_wire import connect as wire_connect

RAW = "ws_raw:app"
StartServer = Callable[..., ServerProcess]

BROWSER_OFFER = "permessage-deflate; client_max_window_bits"  # browsers and the websockets client send this
UVICORN_ANSWER = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"


def url(srv: ServerProcess, path: str = "/echo") -> str:
    return f"ws://127.0.0.1:{srv.port}{path}"


def test_negotiated_by_default_and_messages_round_trip(start_server: StartServer) -> None:
    srv = start_server("fasterapi", RAW)
    big_text = json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b", "c"]} for i in range(60000)])
    assert len(big_text) > 3_000_000
    messages: list[str | bytes] = ["hello", "", "é✓" * 1000, bytes(range(256)) * 40, big_text, "hello"]
    with ws_connect(url(srv), max_size=None) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"] == UVICORN_ANSWER
        [extension] = ws.protocol.extensions
        assert isinstance(extension, PerMessageDeflate)
        for message in messages:
            ws.send(message)
            assert ws.recv() == message


def test_compressed_frames_on_the_wire(start_server: StartServer) -> None:
    srv = start_server("fasterapi", RAW)
    text = b'{"key": "value", "list": [1, 2, 3]} ' * 10000
    with wire_connect(srv.port, "/echo", [BROWSER_OFFER]) as c:
        assert (c.status, c.header("sec-websocket-extensions")) == (101, UVICORN_ANSWER)
        inflater = zlib.decompressobj(wbits=-12)  # the client's side of the server's 12-bit window
        c.send_frame(0x1, deflate_payload(text), rsv1=True)
        frame = c.read_frame()
        assert (frame.fin, frame.rsv1, frame.opcode) == (True, True, 0x1)
        assert len(frame.payload) < len(text) // 20  # compressed
        assert inflater.decompress(frame.payload + TAIL) == text
        # An uncompressed message from the client is still a message; every answer is compressed (websockets
        # compresses every message), with the context kept from the previous one.
        c.send_frame(0x2, b"plain")
        frame = c.read_frame()
        assert (frame.rsv1, frame.opcode) == (True, 0x2)
        assert inflater.decompress(frame.payload + TAIL) == b"plain"
        # A compressed message in two fragments: RSV1 on the first only.
        payload = deflate_payload(b"fragmented " * 100)
        c.send_frame(0x1, payload[:3], fin=False, rsv1=True)
        c.send_frame(0x0, payload[3:])
        frame = c.read_frame()
        assert inflater.decompress(frame.payload + TAIL) == b"fragmented " * 100
        # RSV1 on a continuation frame is a protocol error.
        c.send_frame(0x1, payload[:3], fin=False, rsv1=True)
        c.send_frame(0x0, payload[3:], rsv1=True)
        assert c.read_until_close().close_code == 1002


def test_client_without_compression(start_server: StartServer) -> None:
    srv = start_server("fasterapi", RAW)
    with ws_connect(url(srv), compression=None, max_size=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        for message in ["abc", "x" * 100_000]:
            ws.send(message)
            assert ws.recv() == message
    with wire_connect(srv.port) as c:  # no offer: plain frames, and RSV1 is a protocol error
        c.send_frame(0x1, b"abc")
        assert c.read_frame() == Frame(True, False, 0x1, b"abc")
        c.send_frame(0x1, deflate_payload(b"abc"), rsv1=True)
        assert c.read_until_close().close_code == 1002


@pytest.mark.parametrize("kind", KINDS)
def test_option_off_does_not_negotiate(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, RAW, "--ws-per-message-deflate", "false")
    with ws_connect(url(srv), max_size=None) as ws:  # the client offers permessage-deflate
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert ws.protocol.extensions == []
        ws.send("y" * 50_000)
        assert ws.recv() == "y" * 50_000
    with wire_connect(srv.port, "/echo", [BROWSER_OFFER, "permessage-deflate; ;;"]) as c:
        assert c.status == 101  # not even parsed when the extension is off
        assert c.header("sec-websocket-extensions") is None
        c.send_frame(0x1, deflate_payload(b"abc"), rsv1=True)
        assert c.read_until_close().close_code == 1002


# Offers and the answers websockets gives with uvicorn's settings (each compared live below).
OFFERS: list[list[str]] = [
    [BROWSER_OFFER],
    ["permessage-deflate"],
    ["permessage-deflate; server_max_window_bits=10"],
    ["permessage-deflate; server_max_window_bits=15; client_max_window_bits=15"],
    ["permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits=9"],
    ["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
    ["permessage-deflate; client_no_context_takeover; client_max_window_bits=10"],
    ["permessage-deflate; foo=1, permessage-deflate"],
    ["permessage-deflate; server_no_context_takeover=1"],
    ["permessage-deflate; client_max_window_bits; client_max_window_bits"],
    ['x-webkit-deflate-frame, permessage-deflate; client_max_window_bits="10"'],
    ["permessage-deflate; server_max_window_bits=7"],
    [",, permessage-deflate ,"],
    ["foo", "permessage-deflate; client_max_window_bits=8"],
    ["permessage-deflate, permessage-deflate; server_no_context_takeover"],
    ["Permessage-Deflate"],
    [";"],
    ["permessage-deflate;"],
    ["permessage-deflate x"],
    ['permessage-deflate; a="b c"'],
    ['permessage-deflate; a="b'],
]


def test_negotiation_matches_uvicorn(start_server: StartServer) -> None:
    servers = [start_server(kind, RAW) for kind in KINDS]
    for offer in OFFERS:
        answers = []
        for srv in servers:
            with wire_connect(srv.port, "/echo", offer) as c:
                body = c.read_body() if c.status != 101 else b""
                answers.append((c.status, c.header("sec-websocket-extensions"), body))
        if answers[1][0] == 500 and answers[0][0] in (101, 400):
            # uvicorn failing on its own (websockets < 17 raises on server_max_window_bits=8, an offer 17
            # accepts with 9): nothing to match; ours must still answer the offer.
            continue
        assert answers[0] == answers[1], offer
    # The answers are not all alike: the comparison covers acceptances, declines and refusals.
    assert answers[0][0] == 400
    assert b"invalid Sec-WebSocket-Extensions header: expected quoted string at 22" in answers[0][2]


def bomb(total: int) -> bytes:
    """A permessage-deflate payload that inflates to `total` zero bytes (16 MiB steps): ~1 KiB per 1 MiB."""
    step = 16 << 20
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(step)
    first = z.compress(zeros) + z.flush(zlib.Z_SYNC_FLUSH)
    again = z.compress(zeros) + z.flush(zlib.Z_SYNC_FLUSH)  # valid after `first` or after itself
    check = zlib.decompressobj(wbits=-15)
    assert len(check.decompress(first + again + again, 1 << 30)) == 3 * step and not check.unconsumed_tail
    return (first + again * (total // step - 1))[:-4]


def peak_rss(srv: ServerProcess) -> int:
    for line in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("kind", KINDS)
def test_deflate_bomb_closes_with_1009(kind: str, fresh_server: Callable[..., ServerProcess]) -> None:
    srv = fresh_server(kind, RAW)  # default --ws-max-size: 16 MiB
    payload = bomb(1 << 30)  # 1 GiB inflated
    assert len(payload) < 2 << 20  # a small frame: its own length passes the 16 MiB check
    with ws_connect(url(srv), max_size=None) as ws:  # warm up: the server's steady state before the bomb
        ws.send("warm-up")
        assert ws.recv() == "warm-up"
    before = peak_rss(srv)
    eid = f"bomb-{kind}-{time.monotonic_ns()}"
    with wire_connect(srv.port, f"/echo?id={eid}", [BROWSER_OFFER]) as c:
        assert c.header("sec-websocket-extensions") == UVICORN_ANSWER
        c.send_frame(0x2, payload, rsv1=True)
        close = c.read_until_close(timeout=20)
        assert close.close_code == 1009
        c.assert_eof()
    assert app_events(srv, eid) == [{"disconnect": 1009}]
    if kind == "fasterapi":
        # Inflated output is bounded by --ws-max-size + 1: the peak grew by that (16 MiB) plus the read
        # buffers, not by the gigabyte the frame would inflate to.
        assert peak_rss(srv) - before < 48 << 20
    # The server is still up and serving.
    assert httpx.get(srv.url + "/").text == "ok"
    with ws_connect(url(srv)) as ws:
        ws.send("after the bomb")
        assert ws.recv() == "after the bomb"


def test_limit_applies_to_the_inflated_size(start_server: StartServer) -> None:
    srv = start_server("fasterapi", RAW, "--ws-max-size", "100000")
    with wire_connect(srv.port, "/echo", [BROWSER_OFFER]) as c:
        # Exactly the limit (about 100 bytes on the wire), then one byte more.
        c.send_frame(0x1, deflate_payload(b"a" * 100000), rsv1=True)
        frame = c.read_frame()
        assert zlib.decompressobj(wbits=-12).decompress(frame.payload + TAIL) == b"a" * 100000
        c.send_frame(0x1, deflate_payload(b"a" * 100001), rsv1=True)
        assert c.read_until_close().close_code == 1009


def test_websockets_client_sees_compressed_large_messages(start_server: StartServer) -> None:
    """The websockets asyncio client with its defaults (compression on) against a server sending 50 large
    messages: every one arrives intact."""
    srv = start_server("fasterapi", RAW)

    async def go() -> list[str]:
        async with websockets.connect(url(srv, "/count?n=50&size=200000"), max_size=None) as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"] == UVICORN_ANSWER
            return [m async for m in ws]  # type: ignore[misc]

    got = asyncio.run(asyncio.wait_for(go(), 30))
    assert len(got) == 50
    assert all(len(m) == 200000 and m.startswith(f"{i}.") for i, m in enumerate(got))
