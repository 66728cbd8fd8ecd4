"""FastAPI app with one GET route behind ``@app.middleware("http")`` (Starlette's BaseHTTPMiddleware), as in
FastAPI's tutorial: the pattern very many apps use for timing or request-id headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.middleware("http")
async def add_process_header(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers["X-Process"] = "1"
    return response


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, object]:
    return {"item_id": item_id, "q": q, "name": "widget", "price": 12.5}
