"""A small FastAPI application: path/query parameters, a pydantic body and a StreamingResponse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, object]:
    return {"item_id": item_id, "q": q}


@app.get("/sync/{name}")
def read_sync(name: str) -> dict[str, str]:
    # A sync endpoint runs in anyio's thread pool: needs a proper asyncio Task around the app.
    return {"hello": name}


@app.post("/items", status_code=201)
async def create_item(item: Item) -> dict[str, object]:
    return {"name": item.name, "price": item.price, "tags": item.tags, "total": item.price * 2}


@app.get("/stream")
async def stream(n: int = 5) -> StreamingResponse:
    async def numbers() -> AsyncIterator[bytes]:
        for i in range(n):
            await asyncio.sleep(0)
            yield f"line {i}\n".encode()

    return StreamingResponse(numbers(), media_type="text/plain")


@app.get("/disconnected-4")
async def disconnected_four(request: Request) -> list[bool]:
    # The usual polling of SSE and long-poll endpoints: every check is a receive() cancelled at once.
    return [await request.is_disconnected() for _ in range(4)]


@app.get("/sse")
async def sse(request: Request, n: int = 5) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        for i in range(n):
            if await request.is_disconnected():
                return
            yield f"data: {i}\n\n".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(events(), media_type="text/event-stream")
