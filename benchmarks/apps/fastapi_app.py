"""FastAPI app for the benchmark suite: a JSON GET with a path parameter and a pydantic-validated POST."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Tag(BaseModel):
    name: str
    weight: float


class Item(BaseModel):
    name: str
    description: str
    price: float
    tax: float | None = None
    quantity: int
    tags: list[Tag]


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, object]:
    return {"item_id": item_id, "q": q, "name": "widget", "price": 12.5}


@app.post("/items")
async def create_item(item: Item) -> dict[str, object]:
    return {"name": item.name, "tags": len(item.tags), "total": item.price * item.quantity}
