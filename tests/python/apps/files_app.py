"""Files as responses (ASGI http.response.pathsend), served by fasterapi-asgi and uvicorn alike.

The directory served is ``FA_FILES_DIR``. Starlette routes: ``/static/...`` (``StaticFiles``),
``/file/{name}`` (``FileResponse``). Raw routes (``/raw/...``) send ``http.response.pathsend`` themselves
when the server advertises it: ``/raw/plain/{name}`` with the file's Content-Length, ``/raw/chunked/{name}``
without one, ``/raw/wrong-length/{name}`` with a Content-Length one byte short, ``/raw/missing`` for a file
that does not exist; ``/raw/events`` answers what the raw routes' ``send()`` raised, or ``"sent"`` when it
returned. ``native_routes`` has the native metrics route (``--native files_app:native_routes``).
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fasterapi_asgi import native

DIRECTORY = os.environ.get("FA_FILES_DIR", os.path.dirname(__file__))
EVENTS: list[str] = []


async def file_response(request: Request) -> FileResponse:
    return FileResponse(os.path.join(DIRECTORY, request.path_params["name"]))


async def events(request: Request) -> JSONResponse:
    return JSONResponse(EVENTS)


starlette_app = Starlette(
    routes=[
        Route("/file/{name}", file_response),
        Route("/raw/events", events),
        Mount("/static", StaticFiles(directory=DIRECTORY)),
    ]
)
# fasterapi-asgi only: `--native files_app:native_routes`.
native_routes = native.Routes()
native_routes.get("/metrics", native.metrics())


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path: str = scope["path"]
    if "http.response.pathsend" not in scope.get("extensions", {}):
        await send({"type": "http.response.start", "status": 501, "headers": []})
        await send({"type": "http.response.body", "body": b"no pathsend"})
        return
    kind, _, name = path[len("/raw/") :].partition("/")
    file = os.path.join(DIRECTORY, name) if name else os.path.join(DIRECTORY, "missing-file")
    headers = [(b"content-type", b"application/octet-stream")]
    if kind == "wrong-length":
        headers.append((b"content-length", str(os.path.getsize(file) - 1).encode()))
    elif kind != "chunked" and kind != "missing":
        headers.append((b"content-length", str(os.path.getsize(file)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    try:
        await send({"type": "http.response.pathsend", "path": file})
    except Exception as exc:  # noqa: BLE001 - what send() raised is what the test checks
        EVENTS.append(type(exc).__name__)
        raise
    EVENTS.append("sent")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"].startswith("/raw/") and scope["path"] != "/raw/events":
        await raw(scope, receive, send)
    else:
        await starlette_app(scope, receive, send)
