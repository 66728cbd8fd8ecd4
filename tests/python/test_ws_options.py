"""The WebSocket command-line options (--ws, --ws-max-size), differential against uvicorn."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from conftest import StartServer
from harness import RawClient, request
from websockets.exceptions import ConnectionClosed

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
