"""Native-route app for the benchmark suite.

Under fasterapi-asgi, ``/plaintext`` is answered by the C++ native route table without Python.
Under any other server (or before native routes exist) the Python fallback below answers it, so
the file always imports; the suite marks the native scenarios "not available" when
``from fasterapi_asgi import native`` fails.
"""

from __future__ import annotations

from typing import Any

try:
    from fasterapi_asgi import native
except ImportError:  # native routes not built yet, or another server's environment
    native = None  # type: ignore[assignment]

BODY = b"Hello, World!"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


NATIVE_AVAILABLE = native is not None
if native is not None:
    native.get(app, "/plaintext", native.text("Hello, World!"))
