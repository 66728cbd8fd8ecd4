"""A FastAPI application served unchanged by fasterapi-asgi and by uvicorn."""

from __future__ import annotations

import httpx
import pytest
from conftest import StartServer
from harness import RawClient, ServerProcess, request

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def fastapi_server(kind: str, start_server: StartServer) -> ServerProcess:
    return start_server(kind, "fastapi_app:app")


def test_path_and_query_parameters(fastapi_server: ServerProcess) -> None:
    with httpx.Client(base_url=fastapi_server.url) as client:
        r = client.get("/items/42", params={"q": "search term"})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"item_id": 42, "q": "search term"}
        assert client.get("/items/7").json() == {"item_id": 7, "q": None}
        r = client.get("/items/not-an-int")
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["path", "item_id"]
        assert client.get("/no/such/route").status_code == 404


def test_sync_endpoint_in_threadpool(fastapi_server: ServerProcess) -> None:
    with httpx.Client(base_url=fastapi_server.url) as client:
        for name in ("a", "b", "c"):
            assert client.get(f"/sync/{name}").json() == {"hello": name}


def test_pydantic_body(fastapi_server: ServerProcess) -> None:
    with httpx.Client(base_url=fastapi_server.url) as client:
        r = client.post("/items", json={"name": "widget", "price": 2.5, "tags": ["x"]})
        assert r.status_code == 201
        assert r.json() == {"name": "widget", "price": 2.5, "tags": ["x"], "total": 5.0}

        r = client.post("/items", json={"name": "widget", "price": "not a number"})
        assert r.status_code == 422
        assert [e["loc"] for e in r.json()["detail"]] == [["body", "price"]]

        r = client.post("/items", json={"price": 1})
        assert r.status_code == 422
        assert [e["loc"] for e in r.json()["detail"]] == [["body", "name"]]

        r = client.post("/items", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422


def test_pydantic_body_chunked_upload(fastapi_server: ServerProcess) -> None:
    body = b'{"name": "chunked", "price": 1.25}'
    with RawClient(fastapi_server.port) as c:
        c.send(
            request(
                "POST",
                "/items",
                [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")],
                b"".join(
                    b"%x\r\n%s\r\n" % (len(body[i : i + 5]), body[i : i + 5]) for i in range(0, len(body), 5)
                )
                + b"0\r\n\r\n",
            )
        )
        r = c.read_response()
    assert r.status == 201
    assert r.json()["total"] == 2.5


def test_streaming_response(fastapi_server: ServerProcess) -> None:
    with RawClient(fastapi_server.port) as c:
        c.send(request("GET", "/stream?n=6"))
        r = c.read_response()
        assert r.status == 200
        assert r.chunked
        assert r.body == b"".join(f"line {i}\n".encode() for i in range(6))
        c.send(request("HEAD", "/items/1"))
        r = c.read_response("HEAD")
        assert r.status in (200, 405)
        c.send(request("GET", "/items/3"))
        assert c.read_response().json() == {"item_id": 3, "q": None}
    with httpx.Client(base_url=fastapi_server.url) as client, client.stream("GET", "/stream") as resp:
        lines = list(resp.iter_lines())
    assert lines == [f"line {i}" for i in range(5)]
