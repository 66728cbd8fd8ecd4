"""A Starlette app: routing, path params, JSON, form-free POST echo, lifespan state.

fasterapi-asgi examples.starlette_app:app
uvicorn examples.starlette_app:app
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"visits": 0}


async def homepage(request: Request) -> Response:
    return PlainTextResponse("Hello from Starlette")


async def user(request: Request) -> Response:
    return JSONResponse({"user_id": request.path_params["user_id"], "query": dict(request.query_params)})


async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(body, media_type=request.headers.get("content-type", "application/octet-stream"))


async def info(request: Request) -> Response:
    return JSONResponse(
        {
            "client": list(request.client) if request.client else None,
            "scheme": request.url.scheme,
            "root_path": request.scope.get("root_path", ""),
            "path": request.url.path,
        }
    )


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/users/{user_id:int}", user),
        Route("/echo", echo, methods=["POST"]),
        Route("/info", info),
    ],
    lifespan=lifespan,
)
