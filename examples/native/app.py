"""A FastAPI app with native C++ routes on the same port (see docs/native-routes.md).

    python -c "from fasterapi_asgi import native; \
               native.build('examples/native/score.cpp', 'build/libscore.so')"
    fasterapi-asgi examples.native.app:app
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from fasterapi_asgi import native

app = FastAPI()

native.get(app, "/health", native.health())
native.get(app, "/version", native.json({"version": "1.4.2"}), include_in_schema=True)
native.get(app, "/plaintext", native.text("Hello, World!"))
native.get(app, "/api/v1/metrics", native.metrics())
native.get(app, "/old", native.redirect("/version"))

LIBRARY = Path(os.environ.get("SCORE_LIBRARY", "build/libscore.so"))
if LIBRARY.exists():
    native.get(app, "/score/{user_id:int}", native.load(LIBRARY, "score"))
    native.post(app, "/reverse", native.load(LIBRARY, "reverse"))


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, object]:
    return {"item_id": item_id, "q": q}
