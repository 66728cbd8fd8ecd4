"""The native route index (fasterapi_asgi/route_index.py, csrc/bindings/route_index.cc) never changes which
endpoint answers: the same requests to fasterapi-asgi with the index, without it (--no-route-index) and to
uvicorn give the same status, the same routing headers and the same endpoint, for convertors, 405s,
redirect_slashes, mounts with middleware, hosts, an included router, WebSockets, root_path, and routes
added, removed and replaced while the server runs. In-process, every request of a randomised walk over the
same app is checked: each route the index leaves out must answer Match.NONE."""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StartServer
from harness import APP_DIR, REPO_ROOT

from fasterapi_asgi import _core, route_index

APP = "routing_app:app"
VARIANTS = (("fasterapi", ()), ("fasterapi", ("--no-route-index",)), ("uvicorn", ()))

# (method, path, host header): each answered the same way by every variant.
REQUESTS: list[tuple[str, str, str | None]] = [
    ("GET", "/", None),
    ("GET", "/items/5", None),
    ("GET", "/items/special", None),
    ("GET", "/items/other", None),
    ("POST", "/items/5", None),
    ("DELETE", "/items/5", None),
    ("PUT", "/items/special", None),
    ("GET", "/items/5/", None),
    ("GET", "/items", None),
    ("GET", "/items/", None),
    ("GET", "/items/5%0A", None),  # `$` matches before a final newline: Starlette's regexes let it through
    ("GET", "/only-post", None),
    ("GET", "/only-post/", None),
    ("GET", "/files/a/b/c.txt", None),
    ("GET", "/files/", None),
    ("GET", "/files", None),
    ("GET", "/uuid/12345678-1234-5678-1234-567812345678", None),
    ("GET", "/uuid/not-a-uuid", None),
    ("GET", "/float/1.5", None),
    ("GET", "/float/1e5", None),
    ("GET", "/hex/ff", None),
    ("GET", "/hex/FF", None),
    ("GET", "/trailing", None),
    ("GET", "/trailing/", None),
    ("GET", "/no-trailing/", None),
    ("GET", "/caf%C3%A9/1", None),
    ("GET", "/CAF%C3%89/1", None),
    ("GET", "/api/v1/users/7", None),
    ("GET", "/api/v1/users/me", None),
    ("GET", "/api/v1/users/", None),
    ("POST", "/api/v1/users/7", None),
    ("GET", "/mount", None),
    ("GET", "/mount/", None),
    ("GET", "/mount/things/3", None),
    ("GET", "/mount/things/x", None),
    ("PUT", "/mount/things/x", None),
    ("GET", "/mount/deep/a/b", None),
    ("GET", "/mountain", None),
    ("GET", "/users/u1", "admin.example.com"),
    ("GET", "/", "admin.example.com"),
    ("GET", "/users/u1", None),
    ("GET", "/nothing/here", None),
    ("GET", "//items/5", None),
    ("GET", "/items/5?x=1", None),
    ("GET", "/late/1", None),
]


def fetch(base: str, method: str, path: str, host: str | None) -> tuple[int, dict[str, str], Any]:
    headers = {"host": host} if host else {}
    with httpx.Client(base_url=base, timeout=10.0) as client:
        r = client.request(method, path, headers=headers, follow_redirects=False)
    seen = {k: r.headers[k] for k in ("allow", "location", "x-mounted") if k in r.headers}
    if "location" in seen:
        seen["location"] = re.sub(r"//[^/]+", "//HOST", seen["location"], count=1)
    try:
        body: Any = r.json()
    except ValueError:
        body = r.text
    return r.status_code, seen, body


def answers(start_server: StartServer, *flags: str) -> list[list[tuple[int, dict[str, str], Any]]]:
    """The answers of every variant to REQUESTS, one list per variant."""
    out = []
    for kind, extra in VARIANTS:
        srv = start_server(kind, APP, *flags, *extra)
        out.append([fetch(srv.url, m, p, h) for m, p, h in REQUESTS])
    return out


def assert_same(results: list[list[tuple[int, dict[str, str], Any]]]) -> None:
    reference = results[-1]  # uvicorn
    for (kind, extra), got in zip(VARIANTS, results, strict=True):
        for req, mine, ref in zip(REQUESTS, got, reference, strict=True):
            assert mine == ref, f"{kind} {' '.join(extra)}: {req}: {mine} != uvicorn's {ref}"


def test_same_endpoint_as_uvicorn_and_as_the_plain_scan(start_server: StartServer) -> None:
    results = answers(start_server)
    assert_same(results)
    # The requests reach real endpoints of every kind (not a wall of 404s).
    endpoints = {body.get("endpoint") for _, _, body in results[0] if isinstance(body, dict)}
    assert {"item_by_int", "item_special", "item_by_name", "files", "api_user"} <= endpoints
    assert {"starlette:/things/{n:int}", "starlette:/users/{u}", "by_hex", "unicode_route"} <= endpoints
    statuses = {status for status, _, _ in results[0]}
    assert {200, 307, 404, 405} <= statuses


def test_same_endpoint_with_root_path(start_server: StartServer) -> None:
    assert_same(answers(start_server, "--root-path", "/base"))


def test_startup_log_counts_the_indexed_routes(start_server: StartServer) -> None:
    srv = start_server("fasterapi", APP)
    line = srv.wait_for_log("Route index:")
    found = re.search(r"Route index: (\d+) of (\d+) routes in (\d+) routers indexed natively", line)
    assert found, line
    indexed, routes, routers = map(int, found.groups())
    assert 20 <= indexed < routes  # the Host route and the included router stay candidates for every path
    assert routers >= 3  # the app's router, the mount's and the host's
    off = start_server("fasterapi", APP, "--no-route-index")
    fetch(off.url, "GET", "/", None)
    assert "Route index" not in off.log()


def test_routes_changed_while_serving(fresh_server: StartServer) -> None:
    """Routes added in front, replaced in place and removed at run time are seen at once, by both servers."""
    results = []
    for kind, extra in VARIANTS:
        srv = fresh_server(kind, APP, *extra)
        steps = [fetch(srv.url, "GET", "/late/1", None), fetch(srv.url, "GET", "/", None)]
        fetch(srv.url, "POST", "/admin/add-route", None)
        steps += [fetch(srv.url, "GET", "/late/1", None), fetch(srv.url, "GET", "/items/5", None)]
        fetch(srv.url, "POST", "/admin/replace-root", None)
        steps.append(fetch(srv.url, "GET", "/", None))
        fetch(srv.url, "POST", "/admin/remove-route", None)
        steps.append(fetch(srv.url, "GET", "/late/1", None))
        results.append(steps)
    for (kind, extra), got in zip(VARIANTS, results, strict=True):
        assert got == results[-1], f"{kind} {extra}"
    late = [body.get("endpoint") if isinstance(body, dict) else None for _, _, body in results[0]]
    assert late == [None, "root", "late", "item_by_int", "late", None]


def test_raw_app_imports_no_framework(kind: str, start_server: StartServer) -> None:
    """The index costs nothing for an app without Starlette: it never imports Starlette or FastAPI itself
    (their import alone is tens of megabytes of RSS per worker)."""
    srv = start_server(kind, "task_app:app")
    modules = httpx.get(srv.url + "/modules", timeout=10).json()
    assert modules == {"starlette": False, "fastapi": False}


@pytest.mark.parametrize("kind,extra", VARIANTS, ids=["index", "no-index", "uvicorn"])
def test_websocket_route(kind: str, extra: tuple[str, ...], start_server: StartServer) -> None:
    import websockets.sync.client

    srv = start_server(kind, APP, *extra)
    with websockets.sync.client.connect(f"ws://127.0.0.1:{srv.port}/ws/blue") as ws:
        assert ws.recv(timeout=5) == '{"endpoint":"ws_room","room":"blue"}'


# ----------------------------------------------------------------------------------------------------
# In process: the index's own checks.
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern,key",
    [
        (r"^/users/(?P<id>[^/]+)$", ("/users/", False)),
        (r"^/users$", ("/users", True)),
        (r"^/users\Z", ("/users", True)),
        (r"^/a\.b/(?P<p>.*)$", ("/a.b/", False)),
        (r"^/ab?c$", ("/a", False)),  # a quantified literal is not part of the key
        (r"^/ab*$", ("/a", False)),
        (r"^/a{2}$", ("/", False)),
        (r"^/a|/b$", ("", False)),  # top-level alternation: no key
        (r"(?i)^/users$", ("", False)),  # case-insensitive: no key
        (r"(?m)^/users$", ("/users", False)),  # multi-line `$` matches before any newline: not exact
        (r"/users$", ("/users", True)),  # .match() anchors at the start anyway
        (r"^/caf\u00e9/(?P<x>[^/]+)$", ("/caf\u00e9/", False)),
        (r"^$", ("", True)),
        (r"^[/]users$", ("/users", True)),  # a one-character class is that character
        (r"^[/x]users$", ("", False)),
    ],
)
def test_pattern_key(pattern: str, key: tuple[str, bool]) -> None:
    assert route_index.pattern_key(re.compile(pattern)) == key


def test_pattern_key_is_a_prefix_of_every_match() -> None:
    """Whatever a pattern matches starts with its key (and is the key, or key + newline, when exact)."""
    rng = random.Random(7)
    samples = ["/a", "/a/", "/ab", "/abc", "/a\n", "/a/b", "/", "", "/a.b/c", "/x", "/aab", "/a\nb"]
    patterns = [r"^/a$", r"^/a/(?P<x>.*)$"]
    patterns += [r"^/ab?c?$", r"^/a.b/(?P<x>.*)$", r"^/a\Z", r"^/a+b$", r"^/a\n?b$"]
    for pattern in patterns:
        key, exact = route_index.pattern_key(re.compile(pattern))
        for _ in range(50):
            path = rng.choice(samples) + rng.choice(["", "b", "/", "\n", "c/d"])
            if re.match(pattern, path):
                assert path.startswith(key), (pattern, path, key)
                if exact:
                    assert path in (key, key + "\n"), (pattern, path, key)


@pytest.fixture
def forced() -> Iterator[None]:
    undo = route_index.force_on_every_router(verify=True)
    try:
        yield
    finally:
        undo()


def _fresh_routing_app() -> Any:
    """routing_app imported anew (inside the forced mode, so every router it builds is indexed)."""
    sys.path.insert(0, str(REPO_ROOT / APP_DIR))
    try:
        sys.modules.pop("routing_app", None)
        import routing_app

        return routing_app.app
    finally:
        sys.path.remove(str(REPO_ROOT / APP_DIR))
        sys.modules.pop("routing_app", None)


def test_random_paths_never_skip_a_matching_route() -> None:
    """A randomised walk over paths made of the app's own path fragments: the verify mode checks, on every
    request, that each route left out answers Match.NONE, and the answers equal those of the same app without
    the index."""
    from starlette.testclient import TestClient

    undo = route_index.force_on_every_router(verify=True)
    try:
        app = _fresh_routing_app()
    finally:
        undo()
    plain_app = _fresh_routing_app()
    assert route_index.indexed_app_of(app.router) is not None
    assert route_index.indexed_app_of(plain_app.router) is None
    fragments = ["", "/", "items", "5", "special", "files", "a", "mount", "things", "deep", "api", "v1"]
    fragments += ["users", "me", "hex", "ff", "float", "1.5", "uuid", "trailing", "no-trailing", "x", "%0A"]
    fragments.append("caf\u00e9")
    rng = random.Random(20261201)
    paths = {"/" + "/".join(rng.choice(fragments) for _ in range(rng.randint(0, 4))) for _ in range(400)}
    before = _core.route_index_counters()[0]
    with TestClient(app) as indexed_client, TestClient(plain_app) as plain_client:
        for p in sorted(paths):
            r = indexed_client.get(p, follow_redirects=False)
            ref = plain_client.get(p, follow_redirects=False)
            assert (r.status_code, r.headers.get("location"), r.content) == (
                ref.status_code,
                ref.headers.get("location"),
                ref.content,
            ), p
    assert _core.route_index_counters()[0] - before >= len(paths)


def test_indexed_app_keeps_the_router_in_the_scope(forced: None) -> None:
    """Router.app sets scope["router"] to `self`: with the index it is still the router, not the stand-in."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    seen: list[Any] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        seen.append(request.scope["router"])
        return PlainTextResponse(request.url_for("endpoint", n=3).path)

    app = Starlette(routes=[Route("/e/{n:int}", endpoint, name="endpoint"), Route("/other", endpoint)])
    assert route_index.indexed_app_of(app.router) is not None
    with TestClient(app) as client:
        assert client.get("/e/1").text == "/e/3"
    assert seen == [app.router]


def test_plain_scan_for_router_classes_with_their_own_app(forced: None) -> None:
    from starlette.routing import Route, Router

    class CustomRouter(Router):
        async def app(self, scope: Any, receive: Any, send: Any) -> None:
            await super().app(scope, receive, send)

    async def endpoint(request: Any) -> None:
        return None

    assert route_index.indexed_app_of(CustomRouter(routes=[Route("/x", endpoint)])) is None
    assert route_index.indexed_app_of(Router(routes=[Route("/x", endpoint)])) is not None


def test_routing_app_is_importable_from_the_app_dir() -> None:
    assert (Path(REPO_ROOT) / APP_DIR / "routing_app.py").is_file()


def test_router_level_middleware_keeps_running(forced: None) -> None:
    """Router(middleware=...): the index takes the router's place inside the middleware chain, which still
    runs."""
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, Router
    from starlette.testclient import TestClient

    calls: list[str] = []

    class Recorder:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                calls.append(scope["path"])
            await self.app(scope, receive, send)

    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.url.path)

    router = Router(routes=[Route(f"/r{i}/x", endpoint) for i in range(5)], middleware=[Middleware(Recorder)])
    indexed = route_index.indexed_app_of(router)
    assert indexed is not None
    with TestClient(router) as client:
        assert client.get("/r4/x").text == "/r4/x"
        assert client.get("/r9/x").status_code == 404
    assert calls == ["/r4/x", "/r9/x"]
    assert indexed.stats()["lookups"] == 2


# ---- trusted only while proven ----


def test_installed_starlette_functions_are_the_proven_ones() -> None:
    """The fingerprints the index checks are those of the Starlette installed here (a lock that moves
    Starlette to a release whose routing functions changed fails here first, and the index is reviewed)."""
    assert route_index.unproven_starlette_functions() == []


def test_a_starlette_whose_route_matching_changed_is_not_indexed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A Starlette release whose Route.matches decides by more than path_regex (simulated: the function
    replaced by one of the same name that also answers an alias path) must not be indexed: the index would
    skip the route by its pattern. The plain scan routes it, and one INFO line says why."""
    import logging

    from starlette import routing
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.testclient import TestClient

    original = routing.Route.matches

    def matches(self: Any, scope: Any) -> Any:
        if scope["type"] == "http" and scope["path"] == "/alias" and self.path == "/real":
            return routing.Match.FULL, {"endpoint": self.endpoint, "path_params": {}}
        return original(self, scope)

    matches.__qualname__ = "Route.matches"
    monkeypatch.setattr(routing.Route, "matches", matches)

    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.url.path)

    app = Starlette(routes=[routing.Route("/real", endpoint), routing.Route("/other", endpoint)])
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        assert route_index.install(app) == (0, 0, 0)
    assert "Route index off" in caplog.text and "Route.matches" in caplog.text
    assert route_index.indexed_app_of(app.router) is None
    with TestClient(app) as client:
        assert client.get("/alias").status_code == 200


def test_a_python_without_its_regex_parser_module_serves_without_the_index() -> None:
    """re._parser (sre_parse before 3.11) is private: a Python without it must still start the server,
    with the index off."""
    code = (
        "import re, sys\n"
        "if hasattr(re, '_parser'):\n"  # 3.11+; 3.10's re has sre_parse instead
        "    del re._parser\n"
        "sys.modules['re._parser'] = None\n"
        "sys.modules['sre_parse'] = None\n"
        "from starlette.applications import Starlette\n"
        "from starlette.routing import Route\n"
        "from fasterapi_asgi import route_index\n"
        "app = Starlette(routes=[Route('/a', lambda r: None), Route('/b', lambda r: None)])\n"
        "print(route_index.pattern_key(re.compile('^/users/(?P<id>[^/]+)$')), route_index.install(app))\n"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "('', False) (0, 0, 0)"
