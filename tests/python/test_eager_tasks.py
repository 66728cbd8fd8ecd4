"""Apps that install asyncio's eager task factory (Python 3.12+): a request that completes in its first step
finishes inside ``create_task``, before the server has its Task. Nothing may leak or be answered twice."""

from __future__ import annotations

import sys

import httpx
import pytest
from conftest import StartServer
from harness import RawClient, request

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory is Python 3.12+"),
]

REQUESTS = 300


def test_eager_requests_complete_and_release(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "eager_app:app", "--lifespan", "on")
    with httpx.Client(base_url=srv.url) as client:
        assert client.get("/").content == b"eager task"
        for i in range(REQUESTS):
            r = client.get("/" if i % 3 else "/sleep")
            assert r.status_code == 200
            r = client.post("/echo", content=b"x" * (i % 50))
            assert r.content == b"x" * (i % 50)
        tasks = int(client.get("/live/tasks").text)
        assert tasks < 20, f"{tasks} finished request Tasks still referenced after {REQUESTS * 2} requests"
        if kind == "fasterapi":
            sends = int(client.get("/live/send").text)
            assert sends < 20, (
                f"{sends} request objects alive after {REQUESTS * 2} requests (leak per request)"
            )


def test_eager_pipelined_requests_in_order(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "eager_app:app", "--lifespan", "on")
    with RawClient(srv.port) as c:
        c.send(
            b"".join(
                request("GET", "/") if i % 2 else request("POST", "/echo", body=b"%d" % i) for i in range(20)
            )
        )
        for i in range(20):
            r = c.read_response()
            assert r.status == 200
            assert r.body == (b"eager task" if i % 2 else b"%d" % i)
