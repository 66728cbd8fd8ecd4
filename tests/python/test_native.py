"""Native routes (issue 3): built-in handlers, the C++ route table, HTTP semantics, user C handlers, start-up
checks, and behaviour under uvicorn — all over real sockets against server subprocesses.

Handler libraries are built once per module with ``native.build``: examples/native/score.cpp, an echo library
(below) that reflects the whole ``fa_request`` view, and two broken libraries for the start-up checks.
"""

from __future__ import annotations

import json
import mimetypes
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StartServer
from harness import (
    HEADER_SECTION_TOO_LARGE,
    REPO_ROOT,
    RawClient,
    RawResponse,
    ServerProcess,
    chunked,
    launch_server,
    request,
)

from fasterapi_asgi import native

pytestmark = pytest.mark.timeout(60)

APP = "native_app:app"
APPS = REPO_ROOT / "tests" / "python" / "apps"
TEXT = "text/plain; charset=utf-8"

ECHO_CPP = r"""
#include <fasterapi_asgi/native.h>

#include <cstdio>
#include <cstdlib>
#include <string>

extern "C" uint32_t fa_native_abi_version(void) { return FA_NATIVE_ABI_VERSION; }

static void put(std::string& o, fa_str s) {
  o += '"';
  for (size_t i = 0; i < s.len; ++i) {
    const unsigned char c = static_cast<unsigned char>(s.data[i]);
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else {
      o += static_cast<char>(c);
    }
  }
  o += '"';
}

static void put_pairs(std::string& o, const fa_pair* pairs, size_t n) {
  o += '[';
  for (size_t i = 0; i < n; ++i) {
    if (i) o += ',';
    o += '[';
    put(o, pairs[i].name);
    o += ',';
    put(o, pairs[i].value);
    o += ']';
  }
  o += ']';
}

// Any route: the request view as JSON. Also tries three invalid headers and reports add_header's results.
extern "C" int echo(const fa_request* r, fa_response* res, const fa_response_api* api, void*) {
  std::string o = "{\"abi\":" + std::to_string(r->abi_version);
  o += ",\"api_abi\":" + std::to_string(api->abi_version);
  o += ",\"method\":";
  put(o, r->method);
  o += ",\"path\":";
  put(o, r->path);
  o += ",\"query\":";
  put(o, r->query);
  o += ",\"params\":";
  put_pairs(o, r->params, r->param_count);
  o += ",\"headers\":";
  put_pairs(o, r->headers, r->header_count);
  o += ",\"body\":";
  put(o, r->body);
  o += '}';
  const int bad_value = api->add_header(res, "x-bad", 5, "a\r\nb", 4);
  const int bad_length = api->add_header(res, "Content-Length", 14, "1", 1);
  const int bad_name = api->add_header(res, "bad name", 8, "v", 1);
  const std::string rejected =
      std::to_string(bad_value) + "," + std::to_string(bad_length) + "," + std::to_string(bad_name);
  api->add_header(res, "x-rejected", 10, rejected.data(), rejected.size());
  api->add_header(res, "content-type", 12, "application/json", 16);
  api->write(res, o.data(), o.size() / 2);  // two writes: the body is their concatenation
  api->write(res, o.data() + o.size() / 2, o.size() - o.size() / 2);
  return 0;
}

// GET /status/{code:int}: answers that status with the body "body".
extern "C" int status(const fa_request* r, fa_response* res, const fa_response_api* api, void*) {
  const std::string code(fasterapi_asgi::param(r, "code"));
  api->set_status(res, std::atoi(code.c_str()));
  api->write(res, "body", 4);
  return 0;
}
"""

NO_ABI_CPP = r"""
#include <fasterapi_asgi/native.h>
extern "C" int handler(const fa_request*, fa_response*, const fa_response_api*, void*) { return 0; }
"""

WRONG_ABI_CPP = r"""
#include <fasterapi_asgi/native.h>
extern "C" uint32_t fa_native_abi_version(void) { return FA_NATIVE_ABI_VERSION + 41; }
extern "C" int handler(const fa_request*, fa_response*, const fa_response_api*, void*) { return 0; }
"""


# ----------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def libdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("native-libs")
    native.build(REPO_ROOT / "examples" / "native" / "score.cpp", d / "libscore.so")
    (d / "echo.cpp").write_text(ECHO_CPP)
    native.build(d / "echo.cpp", d / "libecho.so")
    return d


@pytest.fixture(scope="module")
def native_env(libdir: Path) -> Iterator[Path]:
    """Servers started while this is active load the test libraries (native_app reads the variable)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FA_NATIVE_TEST_LIBDIR", str(libdir))
        yield libdir


@pytest.fixture
def fa(native_env: Path, start_server: StartServer) -> ServerProcess:
    return start_server("fasterapi", APP)


@pytest.fixture
def uv(native_env: Path, start_server: StartServer) -> ServerProcess:
    return start_server("uvicorn", APP)


@pytest.fixture
def cli_server(start_server: StartServer) -> ServerProcess:
    """raw_app plus ``--native native_routes:routes``, without the server header."""
    return start_server("fasterapi", "raw_app:app", "--native", "native_routes:routes", "--no-server-header")


def get(server: ServerProcess, target: str, **kw: object) -> RawResponse:
    with RawClient(server.port) as c:
        c.send(request("GET", target, **kw))  # type: ignore[arg-type]
        return c.read_response()


def exchange(c: RawClient, method: str, target: str, **kw: object) -> RawResponse:
    c.send(request(method, target, **kw))  # type: ignore[arg-type]
    return c.read_response(method)


def expected_score(user_id: int) -> dict[str, int]:
    s = 7
    for ch in str(user_id):
        s = (s * 31 + int(ch)) % 2**64
    return {"user_id": user_id, "score": s % 1000}


# ----------------------------------------------------------------------------------------------------------
# Built-in handlers


def test_text_handler(fa: ServerProcess) -> None:
    r = get(fa, "/plain")
    assert (r.status, r.body) == (200, b"Hello, World!")
    assert r.header("content-type") == TEXT
    assert r.header("content-length") == "13"
    assert len(r.header_all("content-length")) == 1
    r = get(fa, "/created")
    assert (r.status, r.reason, r.body) == (201, "Created", b"made")
    assert r.header("x-native") == "yes"


def test_json_handler_is_byte_identical_to_fastapi(fa: ServerProcess) -> None:
    from fastapi.responses import JSONResponse

    app_module = _import_app_module()
    r = get(fa, "/json")
    assert r.status == 200
    assert r.header("content-type") == "application/json"
    assert r.body == JSONResponse(app_module.JSON_CONTENT).body
    assert r.json() == app_module.JSON_CONTENT
    assert r.header("content-length") == str(len(r.body))


def test_bytes_handler(fa: ServerProcess) -> None:
    r = get(fa, "/bytes")
    assert r.status == 200
    assert r.body == bytes(range(256))
    assert r.header("content-type") == "application/x-test"


def test_file_handler(fa: ServerProcess) -> None:
    path = APPS / "native_payload.py"
    r = get(fa, "/file")
    assert r.status == 200
    assert r.body == path.read_bytes()
    assert r.header("content-type") == f"{mimetypes.guess_type(path.name)[0]}; charset=utf-8"


def test_redirect_handler(fa: ServerProcess) -> None:
    with httpx.Client(base_url=fa.url, follow_redirects=False) as client:
        r = client.get("/old")
        assert r.status_code == 307
        assert r.headers["location"] == "/json"
        assert r.content == b""
        assert r.headers["content-length"] == "0"
        r = client.get("/moved")
        assert r.status_code == 301
        assert r.headers["location"] == "https://example.com/new"
        # Followed, the redirect lands on the native JSON route.
        r = client.get("/old", follow_redirects=True)
        assert r.status_code == 200
        assert r.json()["version"] == "1.4.2"


def test_health_is_503_once_graceful_shutdown_began(native_env: Path, fresh_server: StartServer) -> None:
    srv = fresh_server("fasterapi", APP)
    with RawClient(srv.port) as c:
        r = exchange(c, "GET", "/health")
        assert (r.status, r.body, r.header("connection")) == (200, b"ok", None)
        # A request whose head is still arriving keeps its connection open through the shutdown.
        c.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.3)
        srv.signal(signal.SIGTERM)
        srv.wait_for_log("Waiting for connections to close")
        c.send(b"\r\n")
        r = c.read_response()
        assert (r.status, r.body) == (503, b"shutting down"), srv.log_excerpt()
        assert r.header("connection") == "close"
        assert r.header("content-type") == TEXT
        assert c.wait_closed(5)
    assert srv.wait(10) == -signal.SIGTERM  # like uvicorn: SIGTERM re-raised after a graceful shutdown


# ----------------------------------------------------------------------------------------------------------
# Metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Series = tuple[str, tuple[tuple[str, str], ...]]


def parse_prometheus(text: str) -> list[tuple[Series, float]]:
    """Samples of the Prometheus text format, in order; every non-comment line must parse."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = tuple(_LABEL.findall(m.group(2) or ""))
        out.append(((m.group(1), labels), float(m.group(3))))
    return out


def metric_values(text: str) -> dict[Series, float]:
    return dict(parse_prometheus(text))


def route_value(values: dict[Series, float], name: str, route: str, **extra: str) -> float:
    hits = [
        v
        for (n, labels), v in values.items()
        if n == name
        and dict(labels).get("route") == route
        and all(dict(labels).get(k) == x for k, x in extra.items())
    ]
    assert len(hits) == 1, f"{name}{{route={route!r}}}: {hits}"
    return hits[0]


def test_metrics_counts_exactly_the_requests_made(fa: ServerProcess) -> None:
    sent = 0
    received = 0
    with RawClient(fa.port) as c:
        first = request("GET", "/metrics")
        c.send(first)
        m1 = c.read_response()
        assert m1.status == 200
        assert m1.header("content-type") == "text/plain; version=0.0.4; charset=utf-8"
        received += len(m1.head) + len(m1.body)  # written before the second snapshot
        before = metric_values(m1.body.decode())

        plan = [
            ("GET", "/plain", 200),
            ("GET", "/plain", 200),
            ("GET", "/plain?x=1", 200),
            ("GET", "/score/5", 200),
            ("GET", "/score/77", 200),
            ("GET", "/score/13", 500),
            ("POST", "/plain", 405),
            ("GET", "/app/x", 200),
            ("HEAD", "/json", 200),
        ]
        for method, target, status in plan:
            data = request(method, target)
            c.send(data)
            r = c.read_response(method)
            assert r.status == status, (method, target)
            sent += len(data)
            received += len(r.head) + len(r.body)
        last = request("GET", "/metrics")
        c.send(last)
        sent += len(last)
        after = metric_values(c.read_response().body.decode())

    def delta(name: str) -> float:
        return after[(name, ())] - before[(name, ())]

    # The first /metrics request is counted after its own snapshot was rendered, the last one is not yet.
    assert delta("fasterapi_requests_total") == len(plan) + 1
    assert delta("fasterapi_native_requests_total") == len(plan)  # all but /app/x, plus the first /metrics
    assert delta("fasterapi_connections_total") == 0
    assert after[("fasterapi_connections_open", ())] >= 1
    assert delta("fasterapi_bytes_in_total") == sent
    assert delta("fasterapi_bytes_out_total") == received

    def hits(route: str, values: dict[Series, float]) -> float:
        return route_value(values, "fasterapi_route_requests_total", route)

    assert hits("/plain", after) - hits("/plain", before) == 3
    assert hits("/score/{user_id:int}", after) - hits("/score/{user_id:int}", before) == 3
    assert hits("/json", after) - hits("/json", before) == 1
    assert hits("/metrics", after) - hits("/metrics", before) == 1
    assert hits("/bytes", after) - hits("/bytes", before) == 0

    for route in ("/plain", "/score/{user_id:int}", "/json", "/metrics", "/bytes"):
        count = route_value(after, "fasterapi_route_latency_seconds_count", route)
        assert count == hits(route, after)
        buckets = sorted(
            (float(dict(labels)["le"]), v)
            for (n, labels), v in after.items()
            if n == "fasterapi_route_latency_seconds_bucket" and dict(labels)["route"] == route
        )
        assert len(buckets) == 12
        assert buckets[-1] == (float("inf"), count)
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:], strict=False)), buckets
        assert route_value(after, "fasterapi_route_latency_seconds_sum", route) >= 0
    assert route_value(after, "fasterapi_route_latency_seconds_count", "/plain") > 0


def test_metrics_exposition_has_unique_series(fa: ServerProcess) -> None:
    """Prometheus rejects a scrape with two samples of the same series: routes sharing a pattern with
    different methods (GET and PUT /multi; GET and POST /echo/{a}/{b:int}) need distinct label sets."""
    text = get(fa, "/metrics").body.decode()
    samples = parse_prometheus(text)
    families: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            families[name] = families.get(name, 0) + 1
    assert all(n == 1 for n in families.values()), families
    seen: dict[Series, int] = {}
    for series, _ in samples:
        seen[series] = seen.get(series, 0) + 1
    duplicates = sorted(f"{n}{dict(labels)}" for (n, labels), k in seen.items() if k > 1)
    assert duplicates == [], f"{len(duplicates)} duplicated series, e.g. {duplicates[:3]}"


# ----------------------------------------------------------------------------------------------------------
# Router semantics


def test_static_routes_and_query_strings(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        assert exchange(c, "GET", "/static/a/b").body == b"static a/b"
        assert exchange(c, "GET", "/static/a/b?x=1&y=%20").body == b"static a/b"
        assert exchange(c, "GET", "/plain?").body == b"Hello, World!"
        # Prefixes and extensions of a static route are not it: the app answers (404 from FastAPI).
        for target in ("/static/a", "/static/a/b/c", "/plainx"):
            r = exchange(c, "GET", target)
            assert r.status == 404, target
            assert r.json() == {"detail": "Not Found"}
        # With a trailing slash it is the app's too: FastAPI redirects to the slash-less path.
        r = exchange(c, "GET", "/static/a/b/")
        assert (r.status, r.header("location")) == (307, "http://127.0.0.1/static/a/b")


def test_typed_int_parameter(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        for uid in (0, 42, 987654321):
            r = exchange(c, "GET", f"/score/{uid}?verbose=1")
            assert r.status == 200
            assert r.header("content-type") == "application/json"
            assert r.json() == expected_score(uid)
        # Not an int: no native match, FastAPI's own /score/{name} answers.
        for name in ("abc", "12a", "-1", "1.5"):
            r = exchange(c, "GET", f"/score/{name}")
            assert (r.status, r.json()) == (200, {"app": name}), name


def test_path_parameters_reach_the_handler(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        r = exchange(c, "GET", "/echo/hello/17?a=1&b=%2F")
        assert r.status == 200
        body = r.json()
        assert body["params"] == [["a", "hello"], ["b", "17"]]
        assert body["path"] == "/echo/hello/17"
        assert body["query"] == "a=1&b=%2F"
        # {b:int} does not match "x": the app answers.
        assert exchange(c, "GET", "/echo/hello/x").status == 404
        # An empty segment is not a parameter value.
        assert exchange(c, "GET", "/echo//17").status == 404
        assert exchange(c, "GET", "/echo/hello/17/more").status == 404


def test_path_parameter_takes_the_rest(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        r = exchange(c, "GET", "/files/a/b/c.txt?q=z")
        assert r.status == 200
        assert r.json()["params"] == [["p", "a/b/c.txt"]]
        assert r.json()["query"] == "q=z"
        assert exchange(c, "GET", "/files/x").json()["params"] == [["p", "x"]]
        assert exchange(c, "GET", "/files/").status == 404  # an empty {p:path} does not match


def test_head_for_get_routes(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        for target in ("/plain", "/json", "/bytes", "/file", "/score/42", "/health", "/old"):
            g = exchange(c, "GET", target)
            h = exchange(c, "HEAD", target)
            assert h.status == g.status, target
            assert h.header("content-length") == g.header("content-length") == str(len(g.body)), target
            assert h.header("content-type") == g.header("content-type"), target
            assert h.body == b""
        # No body bytes leaked into the stream: the connection is still in sync.
        assert exchange(c, "GET", "/plain").body == b"Hello, World!"
        assert c.pending(0.1) == b""


def test_405_with_allow_for_a_known_path(fa: ServerProcess) -> None:
    cases = [
        ("POST", "/plain", "GET, HEAD"),
        ("DELETE", "/json", "GET, HEAD"),
        ("PUT", "/score/5", "GET, HEAD"),
        ("GET", "/reverse", "POST"),
        ("POST", "/multi", "GET, PUT, HEAD"),
    ]
    with RawClient(fa.port) as c:
        for method, target, allow in cases:
            r = exchange(c, method, target, body=b"xyz" if method in ("POST", "PUT") else b"")
            assert r.status == 405, (method, target)
            assert r.header("allow") == allow, (method, target)
            assert r.body == b"Method Not Allowed"
        r = exchange(c, "HEAD", "/reverse")
        assert (r.status, r.header("allow"), r.body) == (405, "POST", b"")
        assert exchange(c, "PUT", "/multi").body == b"multi"
        # A path the table does not hold is the app's, whatever the method.
        r = exchange(c, "DELETE", "/app/x")
        assert r.status == 405  # FastAPI's own 405
        assert r.header("allow") == "GET"


def test_a_method_served_by_another_pattern_is_not_405(fa: ServerProcess) -> None:
    """GET /things/{id:int} and POST /things/{name} both match /things/5: POST goes to the second route."""
    with RawClient(fa.port) as c:
        r = exchange(c, "POST", "/things/5", body=b"b")
        assert r.status == 200, f"{r.status} {r.header('allow')}"
        assert r.json()["params"] == [["name", "5"]]
        assert exchange(c, "GET", "/things/5").json()["params"] == [["id", "5"]]


def test_a_static_path_does_not_hide_a_parameterised_route(fa: ServerProcess) -> None:
    """GET /users/me (static) and DELETE /users/{uid}: DELETE /users/me is the second route's, not 405."""
    with RawClient(fa.port) as c:
        assert exchange(c, "GET", "/users/me").body == b"me"
        assert exchange(c, "DELETE", "/users/42").json()["params"] == [["uid", "42"]]
        r = exchange(c, "DELETE", "/users/me")
        assert r.status == 200, f"{r.status} {r.header('allow')}"
        assert r.json()["params"] == [["uid", "me"]]


def test_fall_through_to_the_app(fa: ServerProcess) -> None:
    with httpx.Client(base_url=fa.url) as client:
        assert client.get("/app/hello").json() == {"app": "hello"}
        r = client.post("/app-echo", json={"k": [1, 2]})
        assert (r.status_code, r.json()) == (200, {"app": {"k": [1, 2]}})
        r = client.get("/does/not/exist")
        assert (r.status_code, r.json()) == (404, {"detail": "Not Found"})
        assert client.get("/slow", params={"delay": 0}).json() == {"slept": 0}


# ----------------------------------------------------------------------------------------------------------
# HTTP semantics on native routes


def test_keep_alive_across_many_requests(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        port = c.local_port
        for i in range(60):
            target = ("/plain", f"/score/{i}", "/json", f"/echo/k/{i}", "/app/x")[i % 5]
            r = exchange(c, "GET", target)
            assert r.status == 200, target
            assert r.header("connection") is None
        assert c.local_port == port
        assert not c.wait_closed(0.1)


def test_pipelining_16_native_requests_in_one_send(fa: ServerProcess) -> None:
    targets = [("/plain", f"/score/{100 + i}", f"/echo/p/{i}", "/bytes")[i % 4] for i in range(16)]
    with RawClient(fa.port) as c:
        c.send(b"".join(request("GET", t) for t in targets))
        for i, t in enumerate(targets):
            r = c.read_response()
            assert r.status == 200, t
            if t == "/plain":
                assert r.body == b"Hello, World!"
            elif t == "/bytes":
                assert r.body == bytes(range(256))
            elif t.startswith("/score/"):
                assert r.json() == expected_score(100 + i)
            else:
                assert r.json()["params"] == [["a", "p"], ["b", str(i)]]
        assert c.pending(0.1) == b""  # exactly 16 responses
        assert exchange(c, "GET", "/plain").status == 200


def test_pipelining_mixes_native_and_app_routes_in_order(fa: ServerProcess) -> None:
    targets = [
        "/plain",
        "/app/1",
        "/slow?delay=0.05",
        "/score/2",
        "/app/3",
        "/plain",
        "/slow?delay=0",
        "/echo/m/7",
    ]
    with RawClient(fa.port) as c:
        c.send(b"".join(request("GET", t) for t in targets))
        c.send(
            request("POST", "/reverse", body=b"abc")
            + request("POST", "/app-echo", body=b'{"n":1}', headers=[("Content-Type", "application/json")])
        )
        bodies = [c.read_response().body for _ in range(len(targets) + 2)]
    assert bodies[0] == b"Hello, World!"
    assert json.loads(bodies[1]) == {"app": "1"}
    assert json.loads(bodies[2]) == {"slept": 0.05}
    assert json.loads(bodies[3]) == expected_score(2)
    assert json.loads(bodies[4]) == {"app": "3"}
    assert bodies[5] == b"Hello, World!"
    assert json.loads(bodies[6]) == {"slept": 0}
    assert json.loads(bodies[7])["params"] == [["a", "m"], ["b", "7"]]
    assert bodies[8] == b"cba"
    assert json.loads(bodies[9]) == {"app": {"n": 1}}


def test_post_body_to_a_user_handler(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        r = exchange(c, "POST", "/reverse", body=b"hello", headers=[("Content-Type", "text/x-test")])
        assert (r.status, r.body, r.header("content-type")) == (201, b"olleh", "text/x-test")
        big = bytes(range(256)) * 400  # 100 KiB: arrives in several reads
        r = exchange(c, "POST", "/reverse", body=big)
        assert (r.status, r.body) == (201, big[::-1])
        c.send(
            request("POST", "/reverse", headers=[("Transfer-Encoding", "chunked")])
            + chunked(b"ab", b"cd", b"e")
        )
        assert c.read_response().body == b"edcba"
        r = exchange(c, "POST", "/reverse")  # no body at all
        assert (r.status, r.body) == (201, b"")
        r = exchange(
            c, "POST", "/echo/b/1", body=b'{"x": "\xff"}', headers=[("Content-Type", "application/json")]
        )
        body = r.json()
        assert body["body"] == '{"x": "\u00ff"}'
        assert body["method"] == "POST"
        assert ["content-type", "application/json"] in body["headers"]


def test_native_body_limit_is_one_mebibyte(fa: ServerProcess) -> None:
    body = b"x" * (1 << 20)
    with RawClient(fa.port) as c:
        r = exchange(c, "POST", "/reverse", body=body)
        assert (r.status, len(r.body)) == (201, 1 << 20)
    with RawClient(fa.port) as c:
        c.send_tolerant(request("POST", "/reverse", body=body + b"y"))
        r = c.read_response()
        assert r.status == 413
        assert r.header("connection") == "close"
        assert c.wait_closed(5)
    assert get(fa, "/plain").status == 200


def test_expect_100_continue_on_a_native_route(fa: ServerProcess) -> None:
    """Like any route, a native POST with ``Expect: 100-continue`` gets a 100 before the body is sent."""
    with RawClient(fa.port, timeout=3) as c:
        c.send(request("POST", "/reverse", headers=[("Content-Length", "5"), ("Expect", "100-continue")]))
        assert c.wait_closed(1.5) is False
        interim = bytes(c.buf)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), (
            f"no 100 Continue within 1.5 s: {interim!r}"
        )
        c.send(b"hello")
        r = c.read_response()
        assert (r.status, r.body) == (201, b"olleh")


def test_connection_close_is_honoured(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        c.send(request("GET", "/plain", headers=[("Connection", "close")]) + request("GET", "/json"))
        r = c.read_response()
        assert (r.status, r.body) == (200, b"Hello, World!")
        assert r.header("connection") == "close"
        assert c.read_to_eof() == b""  # the pipelined request after it is not answered


def test_http10(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        c.send(request("GET", "/plain", version="HTTP/1.0"))
        r = c.read_response()
        assert (r.status, r.body) == (200, b"Hello, World!")
        assert r.header("content-length") == "13"
        assert c.wait_closed(5)


def test_http10_keep_alive_matches_app_routes(fa: ServerProcess) -> None:
    """HTTP/1.0 with ``Connection: keep-alive``: a native route frames the connection like an app route does
    (a 1.0 client treats a response without ``connection: keep-alive`` as the last one)."""
    seen = {}
    for target in ("/app/x", "/plain"):
        with RawClient(fa.port) as c:
            c.send(request("GET", target, version="HTTP/1.0", headers=[("Connection", "keep-alive")]))
            r = c.read_response()
            assert r.status == 200
            seen[target] = (r.header("connection"), c.wait_closed(0.3))
    assert seen["/plain"] == seen["/app/x"]


def test_date_and_server_headers(fa: ServerProcess, cli_server: ServerProcess) -> None:
    r = get(fa, "/plain")
    assert r.header("server") == "fasterapi-asgi"
    date = r.header("date")
    assert date is not None
    time.strptime(date, "%a, %d %b %Y %H:%M:%S GMT")
    r = get(cli_server, "/cli/plain")
    assert r.body == b"from --native"
    assert r.header("server") is None
    assert r.header("date") is not None


def test_access_log_lines_for_native_requests(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        exchange(c, "GET", "/plain?access=log1")
        exchange(c, "POST", "/plain?access=log2")
        exchange(c, "GET", "/score/13?access=log3")
    fa.wait_for_log('"GET /plain?access=log1 HTTP/1.1" 200 OK')
    fa.wait_for_log('"POST /plain?access=log2 HTTP/1.1" 405 Method Not Allowed')
    fa.wait_for_log('"GET /score/13?access=log3 HTTP/1.1" 500 Internal Server Error')


def test_oversized_header_is_still_431(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        c.send_tolerant(request("GET", "/plain", headers=[("X-Big", "a" * HEADER_SECTION_TOO_LARGE)]))
        r = c.read_response()
        assert r.status == 431
        assert c.wait_closed(5)
    assert get(fa, "/plain").status == 200


# ----------------------------------------------------------------------------------------------------------
# User C handlers


def test_user_handler_sees_the_request_view(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        r = exchange(c, "GET", "/echo/v/3?x=%41&y", headers=[("X-Mixed-Case", "Value One")])
        assert r.status == 200
        assert r.header("content-type") == "application/json"
        assert r.header("x-rejected") == "-1,-1,-1"  # CR/LF value, content-length, invalid name
        assert r.header("x-bad") is None
        assert len(r.header_all("content-length")) == 1
        body = r.json()
        assert (body["abi"], body["api_abi"]) == (1, 1)
        assert (body["method"], body["path"], body["query"], body["body"]) == (
            "GET",
            "/echo/v/3",
            "x=%41&y",
            "",
        )
        assert body["headers"] == [["host", "127.0.0.1"], ["x-mixed-case", "Value One"]]


def test_user_handler_status_codes(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        for code in (204, 304):
            r = exchange(c, "GET", f"/status/{code}")
            assert (r.status, r.header("content-length")) == (code, None)
        r = exchange(c, "GET", "/status/404")
        assert (r.status, r.body, r.header("content-length")) == (404, b"body", "4")
        r = exchange(c, "GET", "/status/418")
        assert (r.status, r.body) == (418, b"body")
        for bad in (99, 1000):  # outside 100..999: the server answers 500
            assert exchange(c, "GET", f"/status/{bad}").status == 500
        assert c.pending(0.1) == b""  # 204/304 carried no body


def test_exception_in_user_handler_is_500_and_the_server_keeps_serving(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        for _ in range(3):
            r = exchange(c, "GET", "/score/13")
            assert (r.status, r.body) == (500, b"Internal Server Error")
            assert r.header("content-type") == TEXT
            assert r.header("connection") is None  # the connection stays usable
            assert exchange(c, "GET", "/score/12").json() == expected_score(12)
    assert fa.alive()
    assert get(fa, "/plain").status == 200


def test_non_zero_return_is_500(fa: ServerProcess) -> None:
    with RawClient(fa.port) as c:
        r = exchange(c, "GET", "/fail")
        assert (r.status, r.body) == (500, b"Internal Server Error")
        r = exchange(c, "HEAD", "/fail")
        assert (r.status, r.header("content-length")) == (500, "21")
        assert exchange(c, "GET", "/plain").status == 200


@pytest.fixture(scope="module")
def bad_libdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad-libs")
    for name, source in (("noabi", NO_ABI_CPP), ("wrongabi", WRONG_ABI_CPP)):
        (d / f"{name}.cpp").write_text(source)
        native.build(d / f"{name}.cpp", d / f"lib{name}.so", extra_args=["-O0"])
    return d


@pytest.mark.parametrize(
    ("lib", "symbol", "message"),
    [
        ("libnoabi.so", "handler", "does not export fa_native_abi_version()"),
        ("libwrongabi.so", "handler", "was built for native ABI version 42, this server speaks version 1"),
        ("libscore.so", "no_such_handler", "has no exported symbol 'no_such_handler'"),
        ("libmissing.so", "handler", "cannot load native handler library"),
    ],
    ids=["no-abi-symbol", "wrong-abi", "missing-symbol", "no-library"],
)
def test_bad_library_refuses_to_start(
    lib: str,
    symbol: str,
    message: str,
    bad_libdir: Path,
    libdir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = (libdir if lib == "libscore.so" else bad_libdir) / lib
    monkeypatch.setenv("FA_NATIVE_BAD_LIB", str(path))
    monkeypatch.setenv("FA_NATIVE_BAD_SYMBOL", symbol)
    srv = launch_server("fasterapi", "native_bad:app", (), tmp_path)
    try:
        code = srv.wait(15)
    finally:
        srv.stop()
    log = srv.log()
    assert code == 3, log
    errors = [ln for ln in log.splitlines() if ln.startswith("ERROR:")]
    assert len(errors) == 1, log
    assert message in errors[0], log
    assert str(path) in errors[0]
    assert "Traceback" not in log
    assert "running on" not in log


# ----------------------------------------------------------------------------------------------------------
# --native, shadowing, raw ASGI apps


def test_native_option_adds_routes_to_any_app(cli_server: ServerProcess) -> None:
    with httpx.Client(base_url=cli_server.url) as client:
        r = client.get("/cli/plain")
        assert (r.status_code, r.text) == (200, "from --native")
        r = client.get("/cli/health")
        assert (r.status_code, r.text) == (200, "alive")
        r = client.post("/cli/json")
        assert (r.status_code, r.json()) == (200, {"ok": True})
        assert client.get("/cli/json").status_code == 405
        # Everything else is still raw_app's.
        r = client.get("/cli/other")
        assert r.status_code != 405
        assert "fasterapi-asgi" not in r.headers.get("server", "")
    cli_server.wait_for_log("Serving 3 native routes from C++.")


def test_native_option_with_a_wrong_type_exits_3(tmp_path: Path) -> None:
    srv = launch_server("fasterapi", "raw_app:app", ("--native", "native_routes:not_routes"), tmp_path)
    try:
        code = srv.wait(15)
    finally:
        srv.stop()
    log = srv.log()
    assert code == 3, log
    errors = [ln for ln in log.splitlines() if ln.startswith("ERROR:")]
    assert len(errors) == 1, log
    assert "--native native_routes:not_routes is not a fasterapi_asgi.native.Routes" in errors[0]
    assert "Traceback" not in log


def test_shadowed_app_route_is_reported(start_server: StartServer) -> None:
    srv = start_server("fasterapi", "native_shadow:app")
    log = srv.wait_for_log("running on")
    warnings = [ln for ln in log.splitlines() if ln.startswith("WARNING:")]
    assert any("GET /health" in ln and "shadows the app route GET /health" in ln for ln in warnings), log
    assert not any("/unshadowed" in ln for ln in warnings), log
    r = get(srv, "/health")
    assert (r.status, r.body) == (200, b"ok")  # the native route answers


def test_raw_asgi_app_native_route(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "native_raw:app")
    r = get(srv, "/native")
    if kind == "fasterapi":
        assert (r.status, r.body) == (200, b"native answer")
    else:  # other servers ignore the declaration: the app answers
        assert (r.status, r.body) == (404, b"raw app: /native")
    assert get(srv, "/other").body == b"raw app: /other"


# ----------------------------------------------------------------------------------------------------------
# Under uvicorn: Python fallbacks for the built-in handlers


BUILTIN_TARGETS = [
    ("GET", "/plain"),
    ("GET", "/created"),
    ("GET", "/json"),
    ("GET", "/bytes"),
    ("GET", "/file"),
    ("GET", "/old"),
    ("GET", "/moved"),
    ("GET", "/health"),
    ("GET", "/static/a/b"),
    ("GET", "/multi"),
    ("PUT", "/multi"),
]


def observe(srv: ServerProcess, targets: list[tuple[str, str]]) -> list[tuple[object, ...]]:
    out = []
    with RawClient(srv.port) as c:
        for method, target in targets:
            r = exchange(c, method, target)
            out.append(
                (
                    method,
                    target,
                    r.status,
                    r.body,
                    r.header("content-type"),
                    r.header("content-length"),
                    r.header("location"),
                    r.header("x-native"),
                )
            )
    return out


def test_builtin_handlers_answer_the_same_under_uvicorn(fa: ServerProcess, uv: ServerProcess) -> None:
    native_answers = observe(fa, BUILTIN_TARGETS)
    fallback_answers = observe(uv, BUILTIN_TARGETS)
    for a, b in zip(native_answers, fallback_answers, strict=True):
        assert a == b


def test_head_on_builtin_handlers_is_the_same_under_uvicorn(fa: ServerProcess, uv: ServerProcess) -> None:
    """A native GET route answers HEAD; its Python fallback must too (FastAPI's add_api_route with
    methods=["GET"] does not add HEAD by itself)."""
    targets = [("HEAD", "/plain"), ("HEAD", "/json"), ("HEAD", "/health"), ("HEAD", "/old")]
    native_answers = observe(fa, targets)
    assert [a[2] for a in native_answers] == [200, 200, 200, 307]
    fallback_answers = observe(uv, targets)
    for a, b in zip(native_answers, fallback_answers, strict=True):
        assert a == b


def test_metrics_and_user_handlers_are_absent_under_uvicorn(uv: ServerProcess) -> None:
    with httpx.Client(base_url=uv.url) as client:
        for target in ("/metrics", "/echo/x/1", "/fail", "/files/a", "/status/204"):
            r = client.get(target)
            assert r.status_code == 404, target
            assert r.json() == {"detail": "Not Found"}
        assert client.post("/reverse", content=b"abc").status_code == 404
        # What the native int pattern would have taken is the app's route under uvicorn.
        assert client.get("/score/5").json() == {"app": "5"}
        assert client.get("/app/y").json() == {"app": "y"}
        assert client.get("/health").text == "ok"


def test_include_in_schema(kind: str, native_env: Path, start_server: StartServer) -> None:
    srv = start_server(kind, APP)
    with httpx.Client(base_url=srv.url) as client:
        r = client.get("/openapi.json")
        assert r.status_code == 200, srv.log_excerpt(2000)
        schema = r.json()
    assert "get" in schema["paths"]["/json"]
    assert "/plain" not in schema["paths"]
    assert "/health" not in schema["paths"]
    assert "/app/{name}" in schema["paths"]


# ----------------------------------------------------------------------------------------------------------
# Declaration API (no server)


def test_declaration_errors() -> None:
    routes = native.Routes()
    routes.get("/a/{x:int}", native.text("a"))
    with pytest.raises(ValueError, match="duplicate native route"):
        routes.get("/a/{x:int}", native.text("b"))
    with pytest.raises(ValueError, match="must start with '/'"):
        routes.get("a", native.text("a"))
    with pytest.raises(ValueError, match="malformed path parameter"):
        routes.get("/a/{x:float}", native.text("a"))
    with pytest.raises(ValueError, match="invalid header"):
        native.text("a", headers={"x-a": "b\r\nc"})
    with pytest.raises(ValueError, match="content-length"):
        native.text("a", headers={"Content-Length": "1"})
    with pytest.raises(ValueError, match="not a redirect status"):
        native.redirect("/x", status=200)
    with pytest.raises(TypeError):
        routes.get("/b", "not a handler")  # type: ignore[arg-type]
    assert [r.path for r in routes] == ["/a/{x:int}"]


def _import_app_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_native_app_under_test", APPS / "native_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
