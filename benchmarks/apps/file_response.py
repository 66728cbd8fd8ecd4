"""Starlette FileResponse benchmark app: ``GET /file`` answers a 1 MiB file, ``GET /small`` a 4 KiB one.

The files are written at import into ``$FA_BENCH_FILES`` (default: a directory under the system temp dir), so
nothing binary is committed. Under fasterapi-asgi the response goes by ``http.response.pathsend`` (sendfile);
under uvicorn and granian Starlette reads the file in 64 KiB chunks.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

DEFAULT_DIRECTORY = os.path.join(tempfile.gettempdir(), "fasterapi-bench-files")
DIRECTORY = Path(os.environ.get("FA_BENCH_FILES", DEFAULT_DIRECTORY))
DIRECTORY.mkdir(parents=True, exist_ok=True)
for name, size in (("1m.bin", 1 << 20), ("4k.bin", 4096)):
    path = DIRECTORY / name
    if not path.exists() or path.stat().st_size != size:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(bytes(i % 251 for i in range(size)))
        tmp.replace(path)


async def big(request: Request) -> FileResponse:
    return FileResponse(DIRECTORY / "1m.bin")


async def small(request: Request) -> FileResponse:
    return FileResponse(DIRECTORY / "4k.bin")


app = Starlette(routes=[Route("/file", big), Route("/small", small)])
