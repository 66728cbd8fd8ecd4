"""fasterapi-asgi: an ASGI 3 server with a native (C++/libuv/llhttp) HTTP core, drop-in for uvicorn.

The native module ``fasterapi_asgi._core`` is imported only when a server starts, so this package
(its configuration, CLI and lifespan code) imports without it.
"""

__version__ = "0.2.0"  # the one source of the version (pyproject.toml reads it)

from fasterapi_asgi.config import Config  # noqa: E402
from fasterapi_asgi.main import main, run  # noqa: E402
from fasterapi_asgi.server import Server  # noqa: E402

__all__ = ["Config", "Server", "__version__", "main", "run"]
