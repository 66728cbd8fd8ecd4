"""``fasterapi-asgi bench``: trustworthy same-run comparisons of ASGI servers, and a CI regression gate.

Run ``fasterapi-asgi bench --help`` or ``python -m fasterapi_asgi.bench --help``. The method is
described in ``docs/benchmarks.md``. Nothing here needs the native core except the
``fasterapi-asgi`` server entry itself, which is started as a subprocess.
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
