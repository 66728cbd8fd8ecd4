"""A FastAPI app that exercises what real apps use.

    fasterapi-asgi examples.fastapi_app:app
    uvicorn examples.fastapi_app:app

Routes: path and query parameters, a pydantic body (422 on invalid input), a dependency, a
background task, a StreamingResponse, a FileResponse, an HTTP middleware, a custom exception
handler, and lifespan state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

# Written by the background task; GET /tasks shows what has run.
completed_tasks: list[str] = []


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    yield {"started_at": time.time(), "greeting": "hello"}


app = FastAPI(title="fasterapi-asgi example", lifespan=lifespan)


class TeapotError(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


@app.exception_handler(TeapotError)
async def teapot_handler(request: Request, exc: TeapotError) -> JSONResponse:
    return JSONResponse(status_code=418, content={"detail": f"{exc.name} is a teapot"})


@app.middleware("http")
async def add_process_time(request: Request, call_next: Any) -> Any:
    start = time.perf_counter()
    response = await call_next(request)
    response.headers["x-process-time"] = f"{time.perf_counter() - start:.6f}"
    return response


class Item(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(gt=0)
    tags: list[str] = []


def get_token(x_token: Annotated[str | None, Header()] = None) -> str:
    if x_token != "secret":
        raise HTTPException(status_code=401, detail="bad token")
    return x_token


@app.get("/")
async def root(request: Request) -> dict[str, Any]:
    return {"message": "Hello, world!", "greeting": request.state.greeting}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None, limit: int = 10) -> dict[str, Any]:
    return {"item_id": item_id, "q": q, "limit": limit}


@app.post("/items")
async def create_item(item: Item, background: BackgroundTasks) -> dict[str, Any]:
    background.add_task(completed_tasks.append, f"created {item.name}")
    return {"name": item.name, "price": item.price, "tags": item.tags}


@app.get("/tasks")
async def tasks() -> list[str]:
    return completed_tasks


@app.get("/private")
async def private(token: Annotated[str, Depends(get_token)]) -> dict[str, str]:
    return {"token": token}


@app.get("/teapot/{name}")
async def teapot(name: str) -> None:
    raise TeapotError(name)


@app.get("/stream")
async def stream(n: int = 5) -> StreamingResponse:
    async def numbers() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"{i}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(numbers(), media_type="text/plain")


@app.get("/file")
async def file() -> FileResponse:
    return FileResponse(Path(__file__), media_type="text/x-python", filename="fastapi_app.py")
