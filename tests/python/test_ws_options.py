"""The WebSocket command-line options (--ws, --ws-max-size, --ws-ping-interval/--ws-ping-timeout,
--ws-max-queue; --ws-per-message-deflate is in test_ws_deflate.py), differential against uvicorn where both
servers behave alike."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
import websockets
from conftest import StartServer
from harness import KINDS, RawClient, app_events, request
from websockets.exceptions import ConnectionClosed
from ws_wire import Frame
from ws_wire import connect as wire_connect

UPGRADE = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
]


@pytest.mark.parametrize("kind", ["fasterapi", "uvicorn"])
def test_ws_none_answers_upgrades_as_http(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "ws_raw:app", "--ws", "none")
    with RawClient(srv.port) as c:
        c.send(request("GET", "/echo", UPGRADE))
        status = c.read_head()[1]
    assert status != 101  # never switched protocols: the request reached the app as plain HTTP


@pytest.mark.parametrize("kind", ["fasterapi", "uvicorn"])
def test_ws_max_size_closes_with_1009(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "ws_raw:app", "--ws-max-size", "1000")

    async def scenario() -> int | None:
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}/echo", max_size=None) as ws:
            await ws.send("x" * 500)
            assert await ws.recv() == "x" * 500  # below the limit: echoed
            await ws.send("y" * 5000)
            try:
                await ws.recv()
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd is not None else None
        return None

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == 1009


# ---------------------------------------------------------------------------------------------
# Keepalive pings


PINGS = ("--ws-ping-interval", "0.5", "--ws-ping-timeout", "0.5")


@pytest.mark.parametrize("kind", KINDS)
def test_answered_pings_keep_the_session_open(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "ws_raw:app", *PINGS)
    with wire_connect(srv.port) as c:
        assert c.status == 101
        pings = []
        end = time.monotonic() + 3
        while (left := end - time.monotonic()) > 0:
            try:
                frame = c.read_frame(timeout=left)
            except TimeoutError:
                break
            assert frame.opcode == 0x9, frame  # pings only: no close
            pings.append(frame.payload)
            c.send_frame(0xA, frame.payload)
        assert 4 <= len(pings) <= 8  # every 0.5 s
        assert len(set(pings)) == len(pings)  # each ping has its own payload
        c.send_frame(0x1, b"still open")
        while (frame := c.read_frame()).opcode == 0x9:  # a ping may come first
            c.send_frame(0xA, frame.payload)
        assert frame == Frame(True, False, 0x1, b"still open")


@pytest.mark.parametrize("kind", KINDS)
def test_unanswered_ping_closes_with_1011(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "ws_raw:app", *PINGS)
    eid = f"keepalive-{kind}-{time.monotonic_ns()}"
    with wire_connect(srv.port, f"/echo?id={eid}") as c:
        start = time.monotonic()
        assert c.read_frame(timeout=3).opcode == 0x9  # never answered
        close = c.read_until_close(timeout=3, answer_pings=False)
        elapsed = time.monotonic() - start
        assert close.close_code == 1011
        assert 0.8 <= elapsed <= 2.0  # the ping at 0.5 s, its deadline at 1.0 s
        c.assert_eof()
    if kind == "fasterapi":
        # The app is told why (uvicorn's app sees 1005, the stream being closed under it).
        assert app_events(srv, eid) == [{"disconnect": 1011}]


@pytest.mark.parametrize("kind", KINDS)
def test_ping_interval_zero_sends_no_pings(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "ws_raw:app", "--ws-ping-interval", "0", "--ws-ping-timeout", "0.2")
    with wire_connect(srv.port) as c:
        with pytest.raises(TimeoutError):
            c.read_frame(timeout=1.5)
        c.send_frame(0x1, b"no pings")
        assert c.read_frame() == Frame(True, False, 0x1, b"no pings")


# ---------------------------------------------------------------------------------------------
# --ws-max-queue


@pytest.mark.parametrize("queue", [1, 4, 32], ids=["1", "4", "default-32"])
def test_max_queue_stops_reading_until_the_app_receives(queue: int, start_server: StartServer) -> None:
    """The server parses the client's frames only while fewer than --ws-max-queue messages wait for the app:
    a ping sent after them is answered only once the app has taken them. (uvicorn's default implementation
    does not apply --ws-max-queue, so this is fasterapi-asgi only.)"""
    srv = start_server("fasterapi", "ws_raw:app", *(() if queue == 32 else ("--ws-max-queue", str(queue))))
    eid = f"hold-{queue}-{time.monotonic_ns()}"
    with wire_connect(srv.port, f"/hold?id={eid}") as c:
        assert c.status == 101
        # One message less than the queue holds: still reading.
        for i in range(queue - 1):
            c.send_frame(0x1, str(i).encode())
        c.send_frame(0x9, b"before")
        assert c.read_frame(timeout=3) == Frame(True, False, 0xA, b"before")
        # The queue is full: nothing more is parsed, the ping waits.
        c.send_frame(0x1, str(queue - 1).encode())
        c.send_frame(0x9, b"after")
        with pytest.raises(TimeoutError):
            c.read_frame(timeout=0.7)
        # The app receives: reading resumes.
        assert httpx.get(f"{srv.url}/release", params={"id": eid}).text == "released"
        assert c.read_frame(timeout=3) == Frame(True, False, 0xA, b"after")
        c.send_frame(0x1, b"end")
        assert c.read_frame(timeout=3) == Frame(True, False, 0x1, str(queue).encode())
    assert app_events(srv, eid) == [str(i) for i in range(queue)]  # every message, in order


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--ws-max-queue", "0"),
        ("--ws-ping-interval", "-1"),
        ("--ws-ping-timeout", "-0.5"),
        ("--ws-ping-timeout", "nan"),
    ],
)
def test_cli_refuses_out_of_range_values(flag: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fasterapi_asgi", "ws_raw:app", flag, value],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"Invalid value for '{flag}'" in result.stderr


CORE_CHECKS = textwrap.dedent(
    """
    import asyncio, json, uvloop
    from fasterapi_asgi import _core
    from fasterapi_asgi.server import _bind_libuv

    async def main():
        _bind_libuv(_core)
        out = []
        for kwargs in [{"ws_max_queue": 0}, {"ws_ping_interval": -1.0}, {"ws_ping_timeout": float("nan")},
                       {"ws_ping_timeout": "20"}, {"ws_ping_interval": None, "ws_ping_timeout": None,
                        "ws_max_queue": 1, "ws_per_message_deflate": False}]:
            try:
                _core.Server(asyncio.get_running_loop(), None, error_log=None, **kwargs).close()
                out.append("ok")
            except (TypeError, ValueError) as exc:
                out.append(f"{type(exc).__name__}: {exc}")
        print(json.dumps(out))

    uvloop.run(main())
    """
)


def test_core_refuses_out_of_range_values() -> None:
    """_core.Server checks what it is given (the Python API can bypass the CLI's ranges)."""
    result = subprocess.run([sys.executable, "-c", CORE_CHECKS], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        "ValueError: ws_max_queue must be >= 1 (messages buffered for the app), got 0",
        "ValueError: ws_ping_interval must be >= 0 seconds or None, got -1.0",
        "ValueError: ws_ping_timeout must be >= 0 seconds or None, got nan",
        "TypeError: ws_ping_timeout must be a number of seconds or None",
        "ok",
    ]
