"""A FastAPI app whose routing exercises everything Starlette's router decides: convertors (built-in and
custom), static routes after parameterised ones, 405 with Allow, redirect_slashes, mounts (with their own
middleware), hosts, an included APIRouter with a prefix, WebSocket routes, and routes added and removed
while serving. Each endpoint answers with its name, its path parameters and the scope's root_path, so that
two servers can be compared on which endpoint answered."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request, WebSocket
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Host, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send


class HexConvertor(Convertor[int]):
    regex = "[0-9a-f]+"

    def convert(self, value: str) -> int:
        return int(value, 16)

    def to_string(self, value: int) -> str:
        return format(value, "x")


register_url_convertor("hex", HexConvertor())


def answer(name: str, request: StarletteRequest) -> dict[str, Any]:
    params = {k: str(v) for k, v in request.path_params.items()}
    return {"endpoint": name, "params": params, "root_path": request.scope.get("root_path", "")}


async def starlette_endpoint(request: StarletteRequest) -> JSONResponse:
    return JSONResponse(answer(f"starlette:{request.scope['route'].path}", request))


class TagMiddleware:
    """Router-level middleware of the mounted Starlette app: adds a header, so it is seen to run."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tagged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-mounted", b"1")]
            await send(message)

        await self.app(scope, receive, tagged)


mounted = Starlette(
    routes=[
        Route("/", starlette_endpoint),
        Route("/things/{n:int}", starlette_endpoint),
        Route("/things/{name}", starlette_endpoint, methods=["PUT"]),
        Mount("/deep", routes=[Route("/{rest:path}", starlette_endpoint)]),
    ],
    middleware=[Middleware(TagMiddleware)],
)
admin_host = Starlette(routes=[Route("/", starlette_endpoint), Route("/users/{u}", starlette_endpoint)])

app = FastAPI()
api = APIRouter(prefix="/api")


@api.get("/v1/users/{user_id}")
async def api_user(user_id: int, request: Request) -> dict[str, Any]:
    return answer("api_user", request)


@api.get("/v1/users/me")
async def api_me(request: Request) -> dict[str, Any]:
    return answer("api_me", request)


@app.get("/")
async def root(request: Request) -> dict[str, Any]:
    return answer("root", request)


@app.get("/items/{item_id:int}")
async def item_by_int(request: Request) -> dict[str, Any]:
    return answer("item_by_int", request)


@app.get("/items/special")
async def item_special(request: Request) -> dict[str, Any]:
    return answer("item_special", request)


@app.get("/items/{name}")
async def item_by_name(request: Request) -> dict[str, Any]:
    return answer("item_by_name", request)


@app.post("/items/{item_id:int}")
async def item_post(request: Request) -> dict[str, Any]:
    return answer("item_post", request)


@app.post("/only-post")
async def only_post(request: Request) -> dict[str, Any]:
    return answer("only_post", request)


@app.get("/files/{file_path:path}")
async def files(request: Request) -> dict[str, Any]:
    return answer("files", request)


@app.get("/uuid/{u:uuid}")
async def by_uuid(request: Request) -> dict[str, Any]:
    return answer("by_uuid", request)


@app.get("/float/{f:float}")
async def by_float(request: Request) -> dict[str, Any]:
    return answer("by_float", request)


@app.get("/hex/{h:hex}")
async def by_hex(request: Request) -> dict[str, Any]:
    return answer("by_hex", request)


@app.get("/trailing/")
async def trailing(request: Request) -> dict[str, Any]:
    return answer("trailing", request)


@app.get("/no-trailing")
async def no_trailing(request: Request) -> dict[str, Any]:
    return answer("no_trailing", request)


@app.get("/caf\u00e9/{x}")
async def unicode_route(request: Request) -> dict[str, Any]:
    return answer("unicode_route", request)


@app.websocket("/ws/{room}")
async def ws_room(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    await websocket.send_json({"endpoint": "ws_room", "room": room})
    await websocket.close()


async def late_endpoint(request: StarletteRequest) -> JSONResponse:
    return JSONResponse(answer("late", request))


@app.post("/admin/add-route")
async def add_route(request: Request) -> dict[str, Any]:
    """Adds GET /late/{x} in front of every other route (so it must win from now on)."""
    app.router.routes.insert(0, Route("/late/{x}", late_endpoint))
    return {"routes": len(app.router.routes)}


@app.post("/admin/remove-route")
async def remove_route(request: Request) -> dict[str, Any]:
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/late/{x}"]
    return {"routes": len(app.router.routes)}


@app.post("/admin/replace-root")
async def replace_root(request: Request) -> dict[str, Any]:
    """Replaces the route at "/" in place (same table length)."""
    for i, r in enumerate(app.router.routes):
        if getattr(r, "path", None) == "/":
            app.router.routes[i] = Route("/", late_endpoint)
    return {"routes": len(app.router.routes)}


app.include_router(api)
app.router.routes.append(Host("admin.example.com", app=admin_host))
app.mount("/mount", mounted)
