"""``native.static`` benchmark app: ``/assets/4k.bin`` and ``/assets/1m.bin`` served by the core without
Python (the files of ``file_response.py``, written at import). Compared with nginx ``sendfile on`` serving
the same directory (``benchmarks/nginx_static.conf.template``); under uvicorn Starlette's ``StaticFiles``
(the Python fallback) answers."""

from __future__ import annotations

from file_response import DIRECTORY
from starlette.applications import Starlette

from fasterapi_asgi import native

app = Starlette()
native.static(app, "/assets", DIRECTORY)
