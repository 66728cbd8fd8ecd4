"""FastAPI WebSocket test application (served by fasterapi-asgi and uvicorn from the same tests).

- ``/ws/{room}?id=ID``: accept, send ``{"room": ..., "q": ...}``, then echo text as ``room:text`` and JSON
  messages (``{"json": ...}`` sent as text) back as JSON; the WebSocketDisconnect code is recorded under ID.
- ``/reject``: ``websocket.close(code=1008)`` before accept (HTTP 403).
- ``/events?id=ID``: the recorded events (HTTP).
- ``/``: plain HTTP JSON.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.middleware.httpsredirect import HTTPSRedirectMiddleware
from fastapi.responses import PlainTextResponse

app = FastAPI()
EVENTS: dict[str, list[Any]] = {}


@app.get("/")
async def root() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/events")
async def events(id: str) -> list[Any]:
    return EVENTS.get(id, [])


@app.websocket("/ws/{room}")
async def room(websocket: WebSocket, room: str, q: str = "", id: str = "") -> None:
    await websocket.accept()
    await websocket.send_json({"room": room, "q": q})
    try:
        while True:
            text = await websocket.receive_text()
            if text.startswith("{"):
                await websocket.send_json({"echo": json.loads(text)})
            elif text == "bye":
                await websocket.close(code=4000, reason="bye")
                return
            else:
                await websocket.send_text(f"{room}:{text}")
    except WebSocketDisconnect as exc:
        EVENTS.setdefault(id, []).append({"disconnect": exc.code})


@app.websocket("/reject")
async def reject(websocket: WebSocket) -> None:
    await websocket.close(code=1008)


@app.websocket("/deny-http")
async def deny_http(websocket: WebSocket) -> None:
    # An HTTPException before accept: with the websocket.http.response extension, a real 401 with the body.
    raise HTTPException(status_code=401, detail="nope")


@app.websocket("/deny-response")
async def deny_response(websocket: WebSocket) -> None:
    await websocket.send_denial_response(
        PlainTextResponse("go away", status_code=418, headers={"x-why": "test"})
    )


redirect_app = FastAPI()
redirect_app.add_middleware(HTTPSRedirectMiddleware)


@redirect_app.websocket("/ws")
async def redirected(websocket: WebSocket) -> None:
    await websocket.accept()
