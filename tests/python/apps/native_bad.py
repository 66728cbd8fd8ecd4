"""An app whose native user route cannot be installed: library and symbol from the environment."""

from __future__ import annotations

import os

from fastapi import FastAPI

from fasterapi_asgi import native

app = FastAPI()
native.get(app, "/bad", native.load(os.environ["FA_NATIVE_BAD_LIB"], os.environ["FA_NATIVE_BAD_SYMBOL"]))
