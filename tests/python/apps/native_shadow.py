"""A FastAPI app whose own /health route is shadowed by a native /health (reported at start-up)."""

from __future__ import annotations

from fastapi import FastAPI

from fasterapi_asgi import native

app = FastAPI()


@app.get("/health")
async def app_health() -> dict[str, str]:
    return {"status": "from the app"}


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


native.get(app, "/health", native.health())
native.get(app, "/items/{item_id:int}", native.text("native item"))
native.get(app, "/unshadowed", native.text("alone"))
