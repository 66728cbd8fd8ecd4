"""The HTTP connection scope an app sees, against fasterapi-asgi and uvicorn (and compared between them)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StartServer
from harness import RawClient, ServerProcess, decode_jsonable, launch_server, request

pytestmark = pytest.mark.timeout(30)

SCOPE_HEADERS = [
    ("X-Dup", "1"),
    ("X-Mixed-Case", "Value With Spaces"),
    ("x-dup", "2"),
    ("X-Latin", "caf\xe9"),
    ("X-Empty", ""),
]


def raw_scope(server: ServerProcess, raw: bytes) -> tuple[dict[str, Any], int]:
    """Send one raw request to a scope-reporting path; return the decoded scope and the client port."""
    with RawClient(server.port) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 200, r.head
        return decode_jsonable(r.json()), c.local_port


def test_scope_fields(server: ServerProcess) -> None:
    scope, client_port = raw_scope(
        server, request("GET", "/scope/a%20b/c%2Fd%C3%A9?x=1&y=%20&x=2", SCOPE_HEADERS)
    )
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert re.fullmatch(r"2\.\d+", scope["asgi"]["spec_version"])
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope/a b/c/dé"
    assert scope["raw_path"] == b"/scope/a%20b/c%2Fd%C3%A9"
    assert scope["query_string"] == b"x=1&y=%20&x=2"
    assert scope["root_path"] == ""
    assert scope["headers"] == [
        [b"host", b"127.0.0.1"],
        [b"x-dup", b"1"],
        [b"x-mixed-case", b"Value With Spaces"],
        [b"x-dup", b"2"],
        [b"x-latin", b"caf\xe9"],
        [b"x-empty", b""],
    ]
    assert scope["client"] == ["127.0.0.1", client_port]
    assert scope["server"] == ["127.0.0.1", server.port]
    assert scope["state"] == {"started": True, "counter": 0, "shared_list": []}
    # Exact Python types: apps test `(b"host", b"x") in scope["headers"]` and index tuples.
    assert scope["$types"] == {
        "client": "tuple",
        "server": "tuple",
        "client_port": "int",
        "server_port": "int",
        "headers": "list",
        "header_items": ["tuple"],
        "header_parts": ["bytes"],
        "raw_path": "bytes",
        "query_string": "bytes",
    }


def test_scope_without_query(server: ServerProcess) -> None:
    scope, _ = raw_scope(server, request("GET", "/scope/plain"))
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/scope/plain", b"/scope/plain", b"")
    scope, _ = raw_scope(server, request("GET", "/scope/empty-query?"))
    assert (scope["path"], scope["query_string"]) == ("/scope/empty-query", b"")


def test_scope_http10(server: ServerProcess) -> None:
    scope, _ = raw_scope(server, b"GET /scope/old?v=1 HTTP/1.0\r\nX-Old: yes\r\n\r\n")
    assert scope["http_version"] == "1.0"
    assert scope["headers"] == [[b"x-old", b"yes"]]
    assert scope["query_string"] == b"v=1"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "GET"])
def test_scope_method(server: ServerProcess, method: str) -> None:
    with httpx.Client(base_url=server.url) as client:
        r = client.request(method, "/scope/method")
    assert r.status_code == 200
    assert r.json()["method"] == method


def test_root_path(kind: str, start_server: StartServer) -> None:
    # uvicorn prefixes root_path to both path and raw_path (the proxy strips the prefix).
    srv = start_server(kind, "raw_app:app", "--root-path", "/api")
    scope, _ = raw_scope(srv, request("GET", "/scope/x%20y?q=1"))
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/scope/x y"
    assert scope["raw_path"] == b"/api/scope/x%20y"
    assert scope["query_string"] == b"q=1"
    scope, _ = raw_scope(srv, request("GET", "/api/scope/x"))
    assert scope["path"] == "/api/api/scope/x"


def test_state_is_shallow_copied_per_request(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "raw_app:app", "--lifespan", "on")
    with httpx.Client(base_url=srv.url) as client:
        first = client.get("/state-mutate").json()
        assert first == {"started": True, "counter": 1, "leak": True, "shared_list": [0]}
        second = client.get("/state-mutate").json()
        # A key set by one request does not leak into the next; a shared object mutated in place does.
        assert second == {"started": True, "counter": 1, "leak": True, "shared_list": [0, 1]}
        state = client.get("/scope/state").json()["state"]
        assert state == {"started": True, "counter": 0, "shared_list": [0, 1]}


def test_scope_asgi_dict_is_per_request(server: ServerProcess) -> None:
    """An app that writes to scope["asgi"] changes only its own request's scope (as uvicorn: a new dict)."""
    with httpx.Client(base_url=server.url) as client:
        first = client.get("/asgi-mutate").json()
        assert "mutated" not in first, first
        second = client.get("/asgi-mutate").json()
        assert "mutated" not in second, f"scope['asgi'] written by an earlier request: {second}"
        assert second["version"] == "3.0"


def test_lifespan_off(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "raw_app:app", "--lifespan", "off")
    with httpx.Client(base_url=srv.url) as client:
        assert client.get("/scope/x").json()["state"] == {}
    assert "APP-LIFESPAN-STARTUP" not in srv.log()


def test_asgi2_app(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "asgi2_app:app")
    with httpx.Client(base_url=srv.url) as client:
        r = client.post("/two/x", content=b"hi")
    assert r.status_code == 200
    assert r.json() == {"asgi": {"version": "2.0", "spec_version": "2.3"}, "path": "/two/x", "body": "hi"}


def _normalised(scope: dict[str, Any], server: ServerProcess) -> dict[str, Any]:
    """A scope with the connection-specific port numbers masked."""
    scope = dict(scope)
    assert scope["client"][1] > 0 and scope["server"][1] == server.port
    scope["client"] = [scope["client"][0], "<port>"]
    scope["server"] = [scope["server"][0], "<port>"]
    return scope


COMPARED_REQUESTS = {
    "fields": request("GET", "/scope/a%20b/c%2Fd?x=1&y=%20", SCOPE_HEADERS),
    "http10": b"GET /scope/old HTTP/1.0\r\nX-Old: yes\r\n\r\n",
    "absolute-form": request("GET", "http://example.com/scope/abs?q=1"),
    "post": request("POST", "/scope/post", [("Content-Type", "text/plain")], b"body"),
    "encoded-query": request("GET", "/scope/q?a=%2F&b=%E2%82%AC&c"),
    "dot-segments": request("GET", "/scope/../scope/./dots"),
    "double-slash": request("GET", "//scope//double"),
}


@pytest.mark.parametrize("flags", [(), ("--root-path", "/mount")], ids=["default", "root-path"])
@pytest.mark.parametrize("only", ["fasterapi"])
def test_scope_identical_to_reference(start_server: StartServer, only: str, flags: tuple[str, ...]) -> None:
    ours = start_server(only, "raw_app:app", *flags)
    reference = start_server("uvicorn", "raw_app:app", *flags)
    for name, raw in COMPARED_REQUESTS.items():
        mine = _normalised(raw_scope(ours, raw)[0], ours)
        theirs = _normalised(raw_scope(reference, raw)[0], reference)
        missing = set(theirs["$keys"]) - set(mine["$keys"])
        assert not missing, f"{name}: scope keys missing compared with uvicorn: {missing}"
        for key in theirs:
            if key != "$keys":
                assert mine[key] == theirs[key], f"{name}: scope[{key!r}] differs from uvicorn"


def test_unix_socket_scope_server_and_client(kind: str, tmp_path: Path) -> None:
    """--uds: scope["server"] is [path, None] and scope["client"] as uvicorn reports them."""
    path = str(tmp_path / f"{kind}.sock")
    srv = launch_server(kind, "raw_app:app", ("--uds", path), tmp_path)
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        transport = httpx.HTTPTransport(uds=path)
        with httpx.Client(transport=transport, base_url="http://local", trust_env=False) as client:
            scope = decode_jsonable(client.get("/scope/uds").json())
    finally:
        srv.stop()
    assert scope["server"] == [path, None]
    assert scope["client"] is None


def test_header_values_lose_surrounding_whitespace(kind: str, start_server: StartServer) -> None:
    """RFC 9110 5.5: a field value excludes the whitespace around it. uvicorn's h11 parser strips it (its
    httptools parser keeps the trailing part: the stricter answer is the RFC's and h11's)."""
    server = start_server(kind, "raw_app:app", *(("--http", "h11") if kind == "uvicorn" else ()))
    raw = (
        b"GET /scope/ows HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"X-A:   padded   \r\nX-T: t\t\r\nX-M:  a  b \t \r\nX-E:   \r\nContent-Type: text/plain \r\n\r\n"
    )
    scope, _ = raw_scope(server, raw)
    assert scope["headers"][1:] == [
        [b"x-a", b"padded"],
        [b"x-t", b"t"],
        [b"x-m", b"a  b"],
        [b"x-e", b""],
        [b"content-type", b"text/plain"],
    ]
