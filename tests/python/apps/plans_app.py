"""FastAPI routes of the shapes route plans compile (fasterapi_asgi/route_plans.py), and two they do not:
served with plans, without them (--no-compile-routes) and by uvicorn, every answer must be the same bytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import (
    APIRouter,
    BackgroundTasks,
    Cookie,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Query,
    Request,
    Security,
)
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordBearer, SecurityScopes
from pydantic import BaseModel
from starlette.background import BackgroundTask

from fasterapi_asgi import route_plans

app = FastAPI()


class Item(BaseModel):
    id: int
    name: str
    secret: str = "s"
    note: str | None = None


class Oops(Exception):
    pass


@app.exception_handler(Oops)
async def oops_handler(request: Request, exc: Oops) -> JSONResponse:
    return JSONResponse({"oops": str(exc), "path": request.url.path}, status_code=418)


class Relayed(Exception):
    pass


@app.exception_handler(Relayed)
async def relayed_handler(request: Request, exc: Relayed) -> JSONResponse:
    # The route's exception wrapper calls this; the HTTPException it raises is answered one layer out.
    raise HTTPException(status_code=409, detail=f"relayed {exc}")


class Filter(BaseModel):
    limit: int = 10
    tags: list[str] = []


@app.get("/items/{item_id}")
async def read_item(
    item_id: int, q: str | None = None, n: Annotated[list[int] | None, Query()] = None
) -> dict[str, object]:
    return {"item_id": item_id, "q": q, "n": n}


@app.get("/plain/{name}")
async def plain(name: str, flag: bool = False):  # no return annotation: jsonable_encoder and JSONResponse
    return {"name": name, "flag": flag, "unicode": "café ✓", "float": 1.5}


@app.get(
    "/model/{item_id}",
    response_model=Item,
    response_model_exclude={"secret"},
    response_model_exclude_none=True,
)
async def model(item_id: int) -> dict[str, object]:
    return {"id": item_id, "name": "x", "secret": "hidden"}


@app.get("/headers")
async def headers(
    x_token: str = Header(),
    user_agent: str | None = Header(default=None),
    session: str | None = Cookie(default=None),
) -> dict[str, object]:
    return {"token": x_token, "agent": user_agent, "session": session}


@app.post("/created", status_code=201)
async def created() -> dict[str, bool]:
    return {"ok": True}


@app.delete("/nothing", status_code=204)
async def nothing() -> None:
    return None


@app.get("/html", response_class=HTMLResponse)
async def html() -> str:
    return "<p>hi</p>"


@app.get("/text", response_class=PlainTextResponse)
async def text(v: float) -> str:
    return f"v={v}"


@app.get("/raw")
async def raw() -> Response:
    return Response(b"raw", media_type="application/x-raw", headers={"x-a": "1"})


@app.get("/http-error/{code}")
async def http_error(code: int) -> None:
    raise HTTPException(status_code=code, detail="nope", headers={"x-why": "test"})


@app.get("/custom-error")
async def custom_error() -> None:
    raise Oops("custom")


@app.get("/bad-response", response_model=Item)
async def bad_response() -> dict[str, object]:
    return {"id": "not-an-int"}


@app.get("/unhandled")
async def unhandled() -> dict[str, int]:
    raise RuntimeError("boom")  # no handler: Starlette's 500, and the server logs it


@app.get("/relayed")
async def relayed() -> None:
    raise Relayed("x")


@app.get("/late-error")
async def late_error() -> Response:
    def fail() -> None:
        raise RuntimeError("after the response")

    return Response(b"sent", background=BackgroundTask(fail))  # the response has started when it raises


@app.get("/query-model")
async def query_model(f: Annotated[Filter, Query()]) -> dict[str, object]:
    return {"limit": f.limit, "tags": f.tags}


_made = [0]


def _fresh() -> list[int]:
    _made[0] += 1
    return [_made[0]]


@app.get("/factory")
async def factory(ids: Annotated[list[int], Query(default_factory=_fresh)]) -> dict[str, object]:
    return {"ids": ids, "made": _made[0]}


@app.get("/alias")
async def alias(item_q: Annotated[str, Query(alias="item-query", max_length=5)] = "d") -> dict[str, str]:
    return {"item_q": item_q}


class NewItem(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.post("/new-items", status_code=201)
async def new_item(item: NewItem, dry_run: bool = False) -> dict[str, object]:
    return {"name": item.name, "total": item.price * 2, "tags": item.tags, "dry_run": dry_run}


@app.post("/echo")
async def echo(payload: dict[str, int]) -> dict[str, int]:
    return payload


# Dependencies, tutorial-shaped: a yield "session", an OAuth2 bearer token with a sub-dependency, a header
# parameter in a dependency, a class dependency, use_cache, a sub-response and background tasks.
events: list[str] = []
# Background tasks added and not yet run: a sync task runs in the thread pool after the response was sent, so
# the client's next request can start before it ran (with either server). What reads or appends to ``events``
# waits for them first, so the order is the same on every run.
background_pending = [0]


def background_ran() -> None:
    events.append("background ran")
    background_pending[0] -= 1


async def background_done() -> None:
    for _ in range(1000):
        if not background_pending[0]:
            return
        await asyncio.sleep(0.005)


def background_done_sync() -> None:  # for a sync dependency (it runs in the thread pool)
    for _ in range(1000):
        if not background_pending[0]:
            return
        time.sleep(0.005)


async def get_session() -> AsyncIterator[dict[str, object]]:
    await background_done()
    session = {"open": True, "n": len(events)}
    events.append("session open")
    try:
        yield session
    except Relayed:
        events.append("session saw the error")
        raise
    finally:
        events.append("session closed")


def sync_session() -> Iterator[str]:
    background_done_sync()
    events.append("sync session open")
    yield "sync"
    events.append("sync session closed")


oauth2 = OAuth2PasswordBearer(tokenUrl="token", scopes={"items": "read items"})


async def current_user(
    security_scopes: SecurityScopes, token: Annotated[str, Depends(oauth2)], x_tenant: str = Header("t0")
) -> dict[str, object]:
    if token == "bad":
        raise HTTPException(status_code=401, detail="bad token", headers={"WWW-Authenticate": "Bearer"})
    return {"user": token, "tenant": x_tenant, "scopes": security_scopes.scopes}


class Pager:
    def __init__(self, skip: int = 0, limit: int = 3) -> None:
        self.skip, self.limit = skip, limit


calls = {"counted": 0}


def counted() -> int:
    calls["counted"] += 1
    return calls["counted"]


class PublicItem(BaseModel):
    id: int
    name: str


@app.get("/me/items", response_model=list[PublicItem])
async def my_items(
    user: Annotated[dict[str, object], Security(current_user, scopes=["items"])],
    session: Annotated[dict[str, object], Depends(get_session)],
    pager: Annotated[Pager, Depends()],
    response: Response,
    tasks: BackgroundTasks,
    a: Annotated[int, Depends(counted)],
    b: Annotated[int, Depends(counted)],
    c: Annotated[int, Depends(counted, use_cache=False)],
) -> list[dict[str, object]]:
    response.headers["x-user"] = str(user["user"])
    response.set_cookie("seen", "1")
    background_pending[0] += 1
    tasks.add_task(background_ran)
    items = [{"id": i, "name": f"item{i}", "secret": "s", "session": session["open"]} for i in range(10)]
    return [*items[pager.skip : pager.skip + pager.limit], {"id": a * 100 + b * 10 + c, "name": "calls"}]


@app.get("/me")
async def me(
    user: Annotated[dict[str, object], Depends(current_user)], request: Request
) -> dict[str, object]:
    return {**user, "path": request.url.path}


@app.get("/status-from-dependency")
async def status_from_dependency(
    response: Response, s: Annotated[str, Depends(sync_session)]
) -> dict[str, str]:
    response.status_code = 202
    return {"s": s}


@app.get("/dependency-error")
async def dependency_error(session: Annotated[dict[str, object], Depends(get_session)]) -> None:
    raise Relayed("in the endpoint")  # the yield dependency sees it; the handler answers 409


@app.get("/events")
async def get_events() -> list[str]:
    await background_done()
    return events


class LoggedRoute(APIRoute):
    """A route class of the app's own: its routes keep FastAPI's handler."""


custom = APIRouter(route_class=LoggedRoute)


@custom.get("/custom-class")
async def custom_class() -> dict[str, str]:
    return {"route": "custom"}


app.include_router(custom)


# An included router with a prefix and a router-level dependency: FastAPI serves its routes through effective
# route contexts, which get plans too.
def router_tag(x_router: str = Header("none")) -> str:
    background_done_sync()
    events.append(f"router dependency {x_router}")
    return x_router


shop = APIRouter(dependencies=[Depends(router_tag)])


@shop.get("/products/{pid}", response_model=PublicItem)
async def product(pid: int, tag: Annotated[str, Depends(router_tag)]) -> dict[str, object]:
    return {"id": pid, "name": f"product {tag}", "secret": "s"}


app.include_router(shop, prefix="/shop", tags=["shop"])


# A sync endpoint (compiled: run in the thread pool, as FastAPI does), and one a plan does not serve (a
# Request).
@app.get("/with-request")
async def with_request(request: Request) -> dict[str, str]:
    return {"path": request.url.path}


def request_caches(request: Request) -> dict[str, object]:
    """What the Request a dependency gets has already cached: FastAPI's solve_dependencies has read the
    query parameters, the headers and the cookies for every dependant before any dependency runs."""
    cached = {name: name in vars(request) for name in ("_query_params", "_headers", "_cookies")}
    return {
        "cached": cached,
        "query": list(request._query_params.multi_items()) if cached["_query_params"] else None,
        "cookies": request._cookies if cached["_cookies"] else None,
    }


@app.get("/request-caches")
async def read_request_caches(caches: Annotated[dict[str, object], Depends(request_caches)]) -> object:
    return caches


@app.get("/sync")
def sync() -> dict[str, bool]:
    return {"sync": True}


@app.get("/__plans")
async def plans() -> dict[str, int]:
    answered, handed_back, _ = route_plans.plan_counters()
    return {"answered": answered, "handed_back": handed_back}
