"""Route plans (fasterapi_asgi/route_plans.py) never change an answer: the same requests to fasterapi-asgi
with plans, without them (--no-compile-routes) and to uvicorn give the same status, headers (in order) and
body bytes, for parameters of every kind, response models, status codes, response classes, returned responses,
HTTP and custom exceptions, response validation errors and validation errors (which a plan hands to FastAPI's
handler). In-process, the same app built with plans forced on answers as FastAPI does and every compiled
request is verified against FastAPI's solve_dependencies (FastAPI's own suite is run the same way:
tests/upstream)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from conftest import StartServer
from fastapi import Body, Depends, FastAPI, Request
from harness import APP_DIR

from fasterapi_asgi import route_plans

pytestmark = pytest.mark.timeout(60)

APP = "plans_app:app"
PROVEN = route_plans.unproven_fastapi() == ""
VARIANTS = (("fasterapi", ()), ("fasterapi", ("--no-compile-routes",)), ("uvicorn", ()))

# (method, path, headers): each answered the same way by every variant.
REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/items/5", {}),
    ("GET", "/items/5?q=hello&n=1&n=2", {}),
    ("GET", "/items/5?q&n=3&&n=4&", {}),  # a name without "=", empty parts: read without QueryParams
    ("GET", "/items/5?q=a=b;c&q=last", {}),  # split at the first "=", the last value wins
    ("GET", "/items/5?q=a+b%21&n=%31", {}),  # escapes: the real QueryParams
    ("GET", "/items/x", {}),  # 422, from FastAPI's handler
    ("GET", "/items/5?n=a", {}),  # 422 on a query list item
    ("GET", "/plain/caf%C3%A9?flag=yes", {}),
    ("GET", "/plain/a?flag=maybe", {}),
    ("GET", "/model/3", {}),
    ("GET", "/headers", {"x-token": "t", "cookie": "session=abc; other=1"}),
    ("GET", "/headers", {}),  # missing required header: 422
    ("POST", "/created", {}),
    ("DELETE", "/nothing", {}),
    ("GET", "/html", {}),
    ("GET", "/text?v=2.5", {}),
    ("GET", "/text?v=nan", {}),
    ("GET", "/text", {}),
    ("GET", "/raw", {}),
    ("GET", "/http-error/404", {}),
    ("GET", "/http-error/409", {}),
    ("GET", "/custom-error", {}),
    ("GET", "/bad-response", {}),
    ("GET", "/with-request", {}),
    ("GET", "/sync", {}),
    ("PUT", "/items/5", {}),  # 405
    ("GET", "/nowhere", {}),  # 404 from the router
    ("GET", "/unhandled", {}),  # 500 from ServerErrorMiddleware
    ("GET", "/relayed", {}),  # a handler's own HTTPException, answered by the outer layer
    ("GET", "/late-error", {}),  # raises after the response started: the 200 stands
    ("GET", "/query-model?limit=3&tags=a&tags=b", {}),
    ("GET", "/query-model?limit=x", {}),
    ("GET", "/factory", {}),
    ("GET", "/factory?ids=7&ids=8", {}),
    ("GET", "/alias?item-query=abc", {}),
    ("GET", "/alias?item-query=toolong", {}),
    ("GET", "/alias", {}),
    ("POST", "/new-items?dry_run=1", {}),  # no body: 422
    ("GET", "/me/items", {"authorization": "Bearer alice", "x-tenant": "t1"}),
    ("GET", "/me/items?skip=2&limit=2", {"authorization": "Bearer bob"}),
    ("GET", "/me/items?limit=x", {"authorization": "Bearer bob"}),  # 422 before any dependency ran
    ("GET", "/me/items", {}),  # 401 from the bearer scheme
    ("GET", "/me/items", {"authorization": "Bearer bad"}),  # 401 from the dependency
    ("GET", "/me", {"authorization": "Bearer carol"}),
    ("GET", "/status-from-dependency", {}),
    ("GET", "/dependency-error", {}),
    ("GET", "/shop/products/7", {"x-router": "r1"}),
    ("GET", "/shop/products/x", {}),  # 422
    ("GET", "/events", {}),  # what the dependencies and background tasks did, in order
    ("GET", "/request-caches?a=1&a=2&b&=c", {"cookie": "x=1; y=2"}),  # what the Request has cached
    ("GET", "/request-caches?q=%41+b", {}),
]

# (path, content type, body): JSON bodies a plan reads, and the ones it hands to FastAPI.
BODIES: list[tuple[str, str | None, bytes]] = [
    ("/new-items", "application/json", b'{"name": "a", "price": 2.5, "tags": ["x"]}'),
    ("/new-items?dry_run=true", "application/json", b'{"name": "a", "price": 1}'),
    ("/new-items", "application/json", b'{"name": "a", "price": "x"}'),  # 422
    ("/new-items", "application/json", b'{"name": "a", "price": 1'),  # invalid JSON: 422 json_invalid
    ("/new-items", "application/json", b""),  # empty: 422 missing
    ("/new-items", "text/plain", b'{"name": "a", "price": 1}'),  # not JSON: FastAPI's own answer
    ("/new-items", "application/vnd.api+json", b'{"name": "a", "price": 1}'),  # a +json type
    ("/new-items", None, b'{"name": "a", "price": 1}'),  # no content type
    ("/echo", "application/json", b'{"a": 1, "b": 2}'),
    ("/echo", "application/json", b"[1, 2]"),  # 422
    ("/echo", "application/json", b'{"a": "\\u00e9"}'),  # 422 with a non-ASCII input
    # What json.loads takes and pydantic's JSON parser does not (a byte-order mark, UTF-16, a lone
    # surrogate), and what both take (NaN, 1e400, a repeated key, a big integer): FastAPI's answers.
    ("/new-items", "application/json", b'\xef\xbb\xbf{"name": "a", "price": 1}'),
    ("/new-items", "application/json", '{"name": "a", "price": 1}'.encode("utf-16")),
    ("/new-items", "application/json", b'{"name": "\\ud800", "price": 1}'),
    ("/new-items", "application/json", b'{"name": "\xed\xa0\x80", "price": 1}'),
    ("/new-items", "application/json", b'{"name": "a\x01", "price": 1}'),  # 422: a raw control character
    ("/new-items", "application/json", b'{"name": "a", "price": NaN}'),
    ("/new-items", "application/json", b'{"name": "a", "price": 1e400}'),
    ("/new-items", "application/json", b'{"name": "a", "name": "b", "price": 1234567890123456789012345678}'),
    ("/new-items", "application/json", b'{"name": "\\ud83d\\ude00", "price": "2.5", "tags": ["x", "y"]}'),
]


def fetch(
    base: str, method: str, path: str, headers: dict[str, str]
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    with httpx.Client(base_url=base, timeout=10.0) as client:
        r = client.request(method, path, headers=headers)
    # The date differs between any two responses, the server header between the servers.
    return (
        r.status_code,
        [(k, v) for k, v in r.headers.raw if k.lower() not in (b"date", b"server")],
        r.content,
    )


def post(base: str, path: str, content_type: str | None, body: bytes) -> tuple[int, object, bytes]:
    headers = {} if content_type is None else {"content-type": content_type}
    with httpx.Client(base_url=base, timeout=10.0) as client:
        r = client.post(path, content=body, headers=headers)
    return (
        r.status_code,
        [(k, v) for k, v in r.headers.raw if k.lower() not in (b"date", b"server")],
        r.content,
    )


def test_bodies_are_fastapis(start_server: StartServer) -> None:
    results = {}
    for kind, flags in VARIANTS:
        srv = start_server(kind, APP, *flags)
        results[(kind, flags)] = [post(srv.url, *case) for case in BODIES]
    reference = results[("uvicorn", ())]
    for variant, got in results.items():
        for case, mine, theirs in zip(BODIES, got, reference, strict=True):
            assert mine == theirs, f"{variant} {case}"
    statuses = [status for status, _, _ in reference]
    assert statuses[:11] == [201, 201, 422, 422, 422, 422, 201, 422, 200, 422, 422]
    # json.loads takes a lone surrogate, and the answer, which repeats it, cannot be encoded: FastAPI's 500.
    assert statuses[11:] == [201, 201, 500, 500, 422, 201, 201, 201, 201]


def test_answers_are_fastapis(start_server: StartServer) -> None:
    results = {}
    for kind, flags in VARIANTS:
        srv = start_server(kind, APP, *flags)
        results[(kind, flags)] = [fetch(srv.url, m, p, h) for m, p, h in REQUESTS]
    reference = results[("uvicorn", ())]
    for variant, got in results.items():
        for req, mine, theirs in zip(REQUESTS, got, reference, strict=True):
            assert mine == theirs, f"{variant} {req}"
    statuses = [status for status, _, _ in reference]
    assert statuses == [
        200,
        200,
        200,
        200,
        200,
        422,
        422,
        200,
        422,
        200,
        200,
        422,
        201,
        204,
        200,
        200,
        200,
        422,
        200,
        404,
        409,
        418,
        500,
        200,
        200,
        405,
        404,
        500,
        409,
        200,
        200,
        422,
        200,
        200,
        200,
        422,
        200,
        422,
        200,
        200,
        422,
        401,
        401,
        200,
        202,
        409,
        200,
        422,
        200,
        200,
        200,
    ]


@pytest.mark.skipif(not PROVEN, reason=f"route plans are off here: {route_plans.unproven_fastapi()}")
def test_plans_answer_and_hand_back(start_server: StartServer) -> None:
    srv = start_server("fasterapi", APP)
    line = srv.wait_for_log("Compiled ")
    found = re.search(r"Compiled (\d+) of (\d+) FastAPI routes\.", line)
    assert found, line
    # All but /custom-class (a route class of the app's own, counted as its route and its effective route);
    # an included router's route counts twice: as its APIRoute and as the effective route serving it.
    assert tuple(map(int, found.groups())) == (31, 33)
    with httpx.Client(base_url=srv.url, timeout=10.0) as client:
        before = client.get("/__plans").json()
        assert client.get("/items/1").status_code == 200  # a plan answers
        assert client.get("/items/nope").status_code == 422  # handed to FastAPI's handler
        assert client.get("/custom-class").status_code == 200  # not compiled: neither
        after = client.get("/__plans").json()
    assert after["answered"] - before["answered"] == 2  # /items/1 and the second /__plans
    assert after["handed_back"] - before["handed_back"] == 1
    off = start_server("fasterapi", APP, "--no-compile-routes")
    assert httpx.get(off.url + "/__plans", timeout=10).json() == {"answered": 0, "handed_back": 0}
    assert "Compiled " not in off.log()


def test_why_routes_are_not_compiled() -> None:
    from fastapi.routing import APIRoute

    app = FastAPI()

    async def dep() -> int:
        return 1

    @app.get("/a")
    async def a() -> dict[str, int]:
        return {}

    @app.get("/b")
    async def b(request: Request) -> dict[str, int]:
        return {}

    @app.get("/c")
    def c() -> dict[str, int]:
        return {}

    @app.get("/d")
    async def d(x: int = Depends(dep)) -> dict[str, int]:
        return {}

    @app.post("/e")
    async def e(body: dict[str, int]) -> dict[str, int]:
        return body

    @app.get("/f")
    async def f() -> AsyncIterator[dict[str, int]]:
        yield {"a": 1}

    @app.post("/g")
    async def g(a: Annotated[dict[str, int], Body(embed=True)]) -> dict[str, int]:
        return a

    @app.post("/i")
    async def i(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        return a

    reasons = {r.path: route_plans.why_not(r) for r in app.router.routes if isinstance(r, APIRoute)}
    assert reasons == {
        "/a": "",
        "/b": "",
        "/c": "",
        "/d": "",
        "/e": "",
        "/g": "its body parameter is embedded",
        "/i": "it takes more than one body parameter",
        "/f": "its endpoint is a generator",
    }


def test_forms_are_not_compiled() -> None:
    pytest.importorskip("multipart", reason="FastAPI's Form needs python-multipart")
    from fastapi import Form

    app = FastAPI()

    @app.post("/h")
    async def h(name: str = Form()) -> dict[str, str]:  # a default, as this module's annotations are strings
        return {}

    assert route_plans.why_not(app.router.routes[-1]) == "it takes a form"


def test_proven_release_matches_its_fingerprints() -> None:
    """A proven FastAPI release installed here is recognised as proven: its functions' names are the recorded
    ones on every Python the tests run on."""
    import fastapi

    if fastapi.__version__ not in route_plans.PROVEN_FASTAPI:
        pytest.skip(f"FastAPI {fastapi.__version__} is not a proven release")
    assert route_plans.unproven_fastapi() == ""


def test_unproven_fastapi_compiles_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import fastapi

    monkeypatch.setattr(fastapi, "__version__", "0.0.1")
    assert "0.0.1 is not a proven release" in route_plans.unproven_fastapi()
    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, int]:
        return {}

    assert route_plans.install(app) == (0, 1)
    assert not isinstance(app.router.routes[-1].app, route_plans.RoutePlan)


@pytest.mark.skipif(not PROVEN, reason=f"route plans are off here: {route_plans.unproven_fastapi()}")
def test_forced_plans_verified_in_process() -> None:
    """The app built with plans forced on (verify mode) and without: the same answers, most by plans."""
    import importlib
    import sys

    from starlette.testclient import TestClient

    if str(APP_DIR) not in sys.path:
        sys.path.insert(0, str(APP_DIR))
    sys.modules.pop("plans_app", None)
    plain = importlib.import_module("plans_app").app
    sys.modules.pop("plans_app", None)
    undo = route_plans.force_on_every_route(verify=True)
    try:
        compiled = importlib.import_module("plans_app").app
    finally:
        undo()
        sys.modules.pop("plans_app", None)
    assert any(isinstance(r.app, route_plans.RoutePlan) for r in compiled.router.routes if hasattr(r, "app"))
    before = route_plans.plan_counters()
    with (
        TestClient(plain, raise_server_exceptions=False) as a,
        TestClient(compiled, raise_server_exceptions=False) as b,
    ):
        for method, path, headers in REQUESTS:
            ra, rb = a.request(method, path, headers=headers), b.request(method, path, headers=headers)
            assert (ra.status_code, ra.headers.raw, ra.content) == (
                rb.status_code,
                rb.headers.raw,
                rb.content,
            ), path
    answered, handed_back, _ = (
        now - then for now, then in zip(route_plans.plan_counters(), before, strict=True)
    )
    assert answered >= 12 and handed_back >= 5
