"""FastAPI app with 300 routes ``/r{i}/items/{item_id}`` (an ordinary production size): the benchmark
requests the last one, where Starlette's plain scan tries every route's regular expression first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI

ROUTES = 300
app = FastAPI()


def _endpoint(i: int) -> Callable[[int], Awaitable[dict[str, int]]]:
    async def read_item(item_id: int) -> dict[str, int]:
        return {"route": i, "item_id": item_id}

    read_item.__name__ = f"read_item_{i}"
    return read_item


for _i in range(ROUTES):
    app.get(f"/r{_i}/items/{{item_id}}")(_endpoint(_i))
