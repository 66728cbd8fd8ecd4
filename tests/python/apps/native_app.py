"""A FastAPI app with native routes, served by fasterapi-asgi (natively) and uvicorn (Python fallbacks).

User handler libraries are built by the tests; their directory comes from ``FA_NATIVE_TEST_LIBDIR``
(``libscore.so``: examples/native/score.cpp, ``libecho.so``: the echo library in test_native.py).
Without it, only the built-in handlers are declared.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fastapi import FastAPI

from fasterapi_asgi import native

app = FastAPI()

JSON_CONTENT = {"version": "1.4.2", "name": "naïve ✓", "items": [1, 2.5, None, True], "nested": {"a": "b"}}
BYTES_CONTENT = bytes(range(256))
FILE_PATH = Path(__file__).resolve().with_name("native_payload.py")

native.get(app, "/plain", native.text("Hello, World!"))
native.get(app, "/created", native.text("made", status=201, headers={"x-native": "yes"}))
native.get(app, "/json", native.json(JSON_CONTENT), include_in_schema=True)
native.get(app, "/bytes", native.bytes_(BYTES_CONTENT, "application/x-test"))
native.get(app, "/file", native.file(FILE_PATH))
native.get(app, "/old", native.redirect("/json"))
native.get(app, "/moved", native.redirect("https://example.com/new", status=301))
native.get(app, "/health", native.health())
native.get(app, "/metrics", native.metrics())
native.get(app, "/static/a/b", native.text("static a/b"))
native.route(app, ["GET", "PUT"], "/multi", native.text("multi"))

LIBDIR = os.environ.get("FA_NATIVE_TEST_LIBDIR")
if LIBDIR:
    score = Path(LIBDIR) / "libscore.so"
    echo = Path(LIBDIR) / "libecho.so"
    native.get(app, "/score/{user_id:int}", native.load(score, "score"))
    native.post(app, "/reverse", native.load(score, "reverse"))
    native.get(app, "/fail", native.load(score, "fail"))
    native.route(app, ["GET", "POST"], "/echo/{a}/{b:int}", native.load(echo, "echo"))
    native.get(app, "/files/{p:path}", native.load(echo, "echo"))
    native.get(app, "/status/{code:int}", native.load(echo, "status"))
    # The same path under two patterns, each with its own methods.
    native.get(app, "/things/{id:int}", native.load(echo, "echo"))
    native.post(app, "/things/{name}", native.load(echo, "echo"))
    # A static path and a parameterised one that also matches it.
    native.get(app, "/users/me", native.text("me"))
    native.delete(app, "/users/{uid}", native.load(echo, "echo"))


@app.get("/score/{name}")
async def app_score(name: str) -> dict[str, str]:
    # Reached when the native {user_id:int} pattern does not match.
    return {"app": name}


@app.get("/app/{name}")
async def app_route(name: str) -> dict[str, str]:
    return {"app": name}


@app.post("/app-echo")
async def app_echo(payload: dict[str, object]) -> dict[str, object]:
    return {"app": payload}


@app.get("/slow")
async def slow(delay: float = 0.2) -> dict[str, float]:
    await asyncio.sleep(delay)
    return {"slept": delay}
