"""Type stub for the private native module ``fasterapi_asgi._core``.

The core knows nothing of configuration files, the command line or lifespan: Python
orchestrates, the core moves bytes.  Only ``fasterapi_asgi.server`` (and the binding tests)
import this module.
"""

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]

class AccessLog(Protocol):
    """What the core calls for each response's access line (server.py's _AccessLog)."""

    def app(self, scope: MutableMapping[str, Any], status: int) -> None:
        """A response of the app, when it starts."""
    def core(self, client: str, method: str, path_qs: str, http_version: str, status: int) -> None:
        """A response the server answered itself (client "host:port" or "-", path with "?query" if any)."""

# (message, exception or None); used for "Exception in ASGI application" and friends
ErrorLogFn = Callable[[str, BaseException | None], None]

class ClientDisconnected(OSError):
    """Raised by a WebSocket ``send()`` after the client went away."""

LIBUV_HEADER_VERSION: int  # UV_VERSION_HEX of the uv.h the extension was compiled against
LLHTTP_VERSION: str
NGHTTP2_VERSION: str  # the nghttp2 release compiled in
NATIVE_ABI_VERSION: int  # FA_NATIVE_ABI_VERSION of csrc/include/fasterapi_asgi/native.h

def libuv_bind(uvloop_loop_so_path: str) -> int:
    """Resolve the libuv API from uvloop's already-loaded extension module.

    Returns the runtime ``uv_version()``.  Raises ``RuntimeError`` with a clear message when
    the module is not loaded, a symbol is missing, the libuv version is not one the build is proven
    against (``FA_UV_PROVEN_LIBUV`` in csrc/core/uv_api.h: uvloop>=0.18,<=0.23.0), or libuv's own type
    sizes differ from the compiled ones.  Idempotent.
    """

def live_handles() -> int:
    """Number of libuv handles the core has opened and not yet seen closed (all servers)."""

def live_app_handlers() -> int:
    """App handlers alive (a request Task keeps its server's alive after the Server object is gone)."""

class Server:
    """One HTTP/1.1 server bound to one event loop.

    ``loop`` is the running loop: a uvloop loop (handles go on its own ``uv_loop_t``) or any
    other asyncio loop (the core runs a private ``uv_loop_t`` embedded through its backend fd).
    Must be created and used on the loop's thread.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app: ASGIApp,
        *,
        error_log: ErrorLogFn,
        access_log: AccessLog | None = None,
        root_path: str = "",
        server_header: bool = True,
        date_header: bool = True,
        default_headers: list[tuple[bytes, bytes]] | None = None,
        timeout_keep_alive: float = 5.0,
        state: dict[str, Any] | None = None,
        limit_concurrency: int | None = None,
        h11_max_incomplete_event_size: int | None = None,
        asgi_version: str = "3.0",
        stats: bool = False,
        websocket: bool = True,
        ws_max_size: int = 16777216,
        timeout_request_header: float = 30.0,
        timeout_request_body: float = 60.0,
        timeout_send: float = 60.0,
        log: Callable[[int, str], None] | None = None,
        ws_log: Callable[[MutableMapping[str, Any], int], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ssl_handshake_timeout: float = 60.0,
        ws_max_queue: int = 32,
        ws_ping_interval: float | None = 20.0,
        ws_ping_timeout: float | None = 20.0,
        ws_per_message_deflate: bool = True,
        http2: bool = False,
        http2_max_concurrent_streams: int = 100,
        http2_initial_window_size: int = 65535,
        http2_max_header_list_size: int = 65536,
    ) -> None:
        """``ssl_context``: serve every connection over TLS with this context's OpenSSL context (its
        certificate, key, verify mode, CA and ciphers as configured in Python); the core sets its ALPN.
        Contexts with ``sni_callback``/``keylog_filename`` set are refused. ``ssl_handshake_timeout``: seconds
        from the first handshake byte to its end. ``http2``: serve HTTP/2 too (h2c by prior knowledge on a
        plain socket, ALPN ``h2`` with TLS) with these SETTINGS (the header list size is enforced: 431)."""
    def set_reset_contextvars(self, on: bool) -> None:
        """Start every request Task in a fresh, empty ``contextvars.Context`` (--reset-contextvars)."""
    def listen(self, sock: socket.socket, backlog: int = 2048) -> None:
        """Serve connections accepted on an already bound and listening socket (TCP or Unix).

        The core ``dup``s the descriptor; the caller may close ``sock`` afterwards.
        """
    def stop_accepting(self) -> None:
        """Close every listener; established connections are untouched."""
    def shutdown(self) -> None:
        """Begin graceful stop: stop accepting, close idle keep-alive connections now, and
        close each busy connection once its in-flight response is complete."""
    def close(self) -> None:
        """Force-close every connection and listener. Handles are released in their close
        callbacks, i.e. after the loop runs once more."""
    @property
    def connections(self) -> int:
        """Open client connections."""
    @property
    def active_requests(self) -> int:
        """Requests whose response is not yet complete."""
    def set_proxy_headers(self, rewrite: Callable[[MutableMapping[str, Any]], None] | None) -> None:
        """Call ``rewrite(scope)`` for requests carrying x-forwarded-for / x-forwarded-proto (None: off)."""
    def add_static_route(
        self, method: str, pattern: str, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None: ...
    def add_health_route(self, method: str, pattern: str, body: bytes) -> None: ...
    def add_metrics_route(self, method: str, pattern: str) -> None: ...
    def add_user_route(
        self, method: str, pattern: str, library: str, symbol: str, user_data: int
    ) -> None: ...
    def add_directory_route(
        self, method: str, prefix: str, directory: str, flags: int, headers: list[tuple[str, str]]
    ) -> None: ...
    def add_disk_file_route(
        self,
        method: str,
        pattern: str,
        path: str,
        content_type: str,
        flags: int,
        headers: list[tuple[str, str]],
    ) -> None: ...
    def match_native(self, method: str, path: str) -> str | None:
        """The native route pattern answering ``method path``, "405", or None (falls through to the app)."""
    def metrics_text(self) -> str: ...
    # --loop asyncio: the private libuv loop, driven by fasterapi_asgi._embed
    @property
    def embedded(self) -> bool: ...
    def _backend_fd(self) -> int: ...
    def _backend_timeout(self) -> int: ...
    def _run_once(self) -> None: ...
    def _set_wakeup(self, fn: Callable[[], None] | None) -> None: ...
    def stats(self) -> dict[str, int]:
        """Counters: requests, connections_total, bytes_in, bytes_out, ..."""

class IndexedRouterApp:
    """The native route index of one Starlette/FastAPI router (fasterapi_asgi.route_index): calls
    ``func(view, scope, receive, send)`` where the view's routes are only the candidates for the path."""

    router: Any
    def __init__(
        self,
        router: Any,
        func: Any,
        get_route_path: Callable[[MutableMapping[str, Any]], str],
        keys_for: Callable[[tuple[Any, ...]], list[tuple[str, bool]] | None],
        ctx_scope_key: str | None = None,
        ctx_key: str | None = None,
        verify: Callable[..., Any] | None = None,
    ) -> None: ...
    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None: ...
    def candidates(self, route_path: str) -> tuple[Any, ...] | None:
        """The candidate routes for a route path (None: plain scan)."""
    def prepare(self) -> None:
        """Build the index now (else at the first request)."""
    def stats(self) -> dict[str, int]:
        """Counters: routes, indexed, active, lookups, plain, rebuilds."""
