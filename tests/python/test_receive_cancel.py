"""Cancelled receive() calls (timeouts, anyio cancel scopes, Starlette's is_disconnected()) leave no pending
state: the polling loop of SSE and long-poll endpoints works as under uvicorn."""

from __future__ import annotations

import time

import httpx
import pytest
from conftest import StartServer
from harness import RawClient, ServerProcess, request

pytestmark = pytest.mark.timeout(30)


def test_is_disconnected_four_times(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "fastapi_app:app")
    with httpx.Client(base_url=srv.url) as client:
        r = client.get("/disconnected-4")
        assert (r.status_code, r.json()) == (200, [False, False, False, False])


def test_sse_polling_is_disconnected(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "fastapi_app:app")
    with httpx.Client(base_url=srv.url) as client:
        r = client.get("/sse?n=5")
        assert r.status_code == 200
        assert r.text == "".join(f"data: {i}\n\n" for i in range(5))


def test_receive_timeouts_leave_nothing_pending(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url) as client:
        r = client.get("/receive-timeouts")
        assert (r.status_code, r.json()) == (200, {"timeouts": 3})


def test_body_after_a_cancelled_receive_is_delivered(server: ServerProcess) -> None:
    with RawClient(server.port) as c:
        c.send(request("POST", "/receive-timeout-then-body", [("Content-Length", "5")]))
        time.sleep(0.5)  # the app's first receive() times out meanwhile
        c.send(b"hello")
        r = c.read_response()
        assert r.status == 200
        assert r.json() == {"first": "timeout", "body": "hello"}
