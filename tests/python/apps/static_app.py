"""Native static files (``native.static``, ``native.file(from_disk=True)``), served by fasterapi-asgi
natively and by uvicorn through the Python fallback (Starlette's ``StaticFiles(html=True)`` mounted by
``native.static``, a ``FileResponse`` route for ``native.file``): the same app, compared byte for byte.

``FA_STATIC_DIR`` is served at ``/assets`` (defaults: html, no symlinks, no hidden files, precompressed
siblings), at ``/cached`` with ``cache_control`` and at ``/linked`` with ``follow_symlinks`` and
``allow_hidden``; ``FA_STATIC_DIR/big.bin`` at ``/download`` from disk.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from fasterapi_asgi import native

DIRECTORY = os.environ["FA_STATIC_DIR"]

app = Starlette()
native.static(app, "/assets", DIRECTORY)
native.static(app, "/cached", DIRECTORY, cache_control="public, max-age=3600", html=False)
native.static(app, "/linked", DIRECTORY, follow_symlinks=True, allow_hidden=True)
native.get(app, "/download", native.file(os.path.join(DIRECTORY, "big.bin"), from_disk=True))
native.get(app, "/metrics", native.metrics())
native.get(app, "/hello", native.text("hello"))  # the text fallback on a plain Starlette app
