"""The ``fasterapi-asgi`` command line (uvicorn's options) and the ``run()`` entry point.

``fasterapi-asgi bench ...`` is a sub-command handled by ``fasterapi_asgi.bench.cli``.
"""

from __future__ import annotations

import logging
import os
import platform
import ssl
import sys
from collections.abc import Callable, Sequence
from configparser import RawConfigParser
from typing import IO, Any

import click

import fasterapi_asgi
from fasterapi_asgi.config import (
    HTTP2_INITIAL_WINDOW_SIZE_DEFAULT,
    HTTP2_MAX_CONCURRENT_STREAMS_DEFAULT,
    HTTP2_MAX_HEADER_LIST_SIZE_DEFAULT,
    HTTP_PROTOCOLS,
    INTERFACES,
    LIFESPAN,
    LOG_LEVELS,
    LOGGING_CONFIG,
    SSL_PROTOCOL_VERSION,
    STARTUP_FAILURE,
    TIMEOUT_REQUEST_BODY_DEFAULT,
    TIMEOUT_REQUEST_HEADER_DEFAULT,
    TIMEOUT_SEND_DEFAULT,
    TIMEOUT_WORKER_HEALTHCHECK_DEFAULT,
    WS_MAX_QUEUE_DEFAULT,
    WS_MAX_SIZE_DEFAULT,
    WS_PING_INTERVAL_DEFAULT,
    WS_PING_TIMEOUT_DEFAULT,
    Config,
    InterfaceType,
    LifespanType,
    LoopFactoryType,
    one_line_error,
    parse_header,
)
from fasterapi_asgi.server import Server
from fasterapi_asgi.supervisors import ChangeReload, Multiprocess

logger = logging.getLogger("uvicorn.error")


def print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(
        f"Running fasterapi-asgi {fasterapi_asgi.__version__} with {platform.python_implementation()} "
        f"{platform.python_version()} on {platform.system()}"
    )
    click.echo(native_versions())
    ctx.exit()


def native_versions() -> str:
    """The native parts as the core would run them: the running uvloop's libuv, the llhttp and nghttp2
    compiled in, and the OpenSSL Python's ssl module loaded (the one TLS uses). One line; the reason when the
    core cannot load.
    """
    import ssl

    try:
        import uvloop

        from fasterapi_asgi import _core
        from fasterapi_asgi.server import _bind_libuv

        libuv = _bind_libuv(_core)
    except Exception as exc:  # an ImportError, or the core refusing this uvloop's libuv
        return f"native core unavailable: {one_line_error(exc)}"
    libuv_text = f"{libuv >> 16}.{(libuv >> 8) & 0xFF}.{libuv & 0xFF}"
    parsers = f"llhttp {_core.LLHTTP_VERSION}, nghttp2 {_core.NGHTTP2_VERSION}"
    return f"libuv {libuv_text} (uvloop {uvloop.__version__}), {parsers}, {ssl.OPENSSL_VERSION}"


def _parse_headers(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> list[tuple[str, str]]:
    try:
        return [parse_header(header) for header in value]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


ENVVAR_PREFIX = "FASTERAPI_ASGI"
UVICORN_ENVVAR_PREFIX = "UVICORN"


def _at_least(minimum: float) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A range check that keeps uvicorn's option type (int/float) while refusing values below `minimum`."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and not value >= minimum:
            raise click.BadParameter(f"{value} is not in the range x>={minimum}.")
        return value

    return check


def _adopt_uvicorn_environment(command: click.Command, environ: dict[str, str]) -> None:
    """A deployment configured through uvicorn's ``UVICORN_<OPTION>`` variables keeps working: each one fills
    the ``FASTERAPI_ASGI_<OPTION>`` variable of the same option unless that is set (ours win)."""
    names = ["APP"] + [param.name.upper() for param in command.params if param.name]
    for name in names:
        theirs = environ.get(f"{UVICORN_ENVVAR_PREFIX}_{name}")
        if theirs is not None:
            environ.setdefault(f"{ENVVAR_PREFIX}_{name}", theirs)


class _Command(click.Command):
    """Adds the ``bench`` sub-command in front of the single-command interface."""

    def main(self, args: Sequence[str] | None = None, *pargs: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        if argv and argv[0] == "bench":
            from fasterapi_asgi.bench.cli import main as bench_main

            sys.exit(bench_main(argv[1:]))
        _adopt_uvicorn_environment(self, os.environ)  # type: ignore[arg-type]
        return super().main(argv, *pargs, **kwargs)


@click.command(cls=_Command, context_settings={"auto_envvar_prefix": ENVVAR_PREFIX})
@click.argument("app", envvar=f"{ENVVAR_PREFIX}_APP")
@click.option("--host", type=str, default="127.0.0.1", show_default=True, help="Bind socket to this host.")
@click.option(
    "--port",
    type=int,
    default=8000,
    show_default=True,
    help="Bind socket to this port. If 0, an available port will be picked.",
)
@click.option("--uds", type=str, default=None, help="Bind to a UNIX domain socket.")
@click.option("--fd", type=int, default=None, help="Bind to socket from this file descriptor.")
@click.option("--reload", is_flag=True, default=False, help="Enable auto-reload.")
@click.option(
    "--reload-dir",
    "reload_dirs",
    multiple=True,
    help="Set reload directories explicitly, instead of using the current working directory.",
    type=click.Path(exists=True),
)
@click.option(
    "--reload-include",
    "reload_includes",
    multiple=True,
    help="Set glob patterns to include while watching for files. Includes '*.py' by default; these defaults "
    "can be overridden with `--reload-exclude`.",
)
@click.option(
    "--reload-exclude",
    "reload_excludes",
    multiple=True,
    help="Set glob patterns to exclude while watching for files. Includes '.*, .py[cod], .sw.*, ~*' by "
    "default; these defaults can be overridden with `--reload-include`.",
)
@click.option(
    "--reload-delay",
    type=float,
    default=0.25,
    show_default=True,
    help="Delay between previous and next check if application needs to be. Defaults to 0.25s.",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Number of worker processes. Defaults to the $WEB_CONCURRENCY environment variable if available, "
    "or 1.",
)
@click.option(
    "--loop",
    type=str,
    metavar="[auto|asyncio|uvloop]",
    default="auto",
    show_default=True,
    help="Event loop factory implementation (or a 'module:factory' import string).",
)
@click.option(
    "--http",
    type=click.Choice(list(HTTP_PROTOCOLS)),
    default="auto",
    show_default=True,
    help="HTTP protocol implementation: every value uses the native parser (uvicorn's names are accepted for "
    "compatibility).",
)
@click.option(
    "--http2",
    is_flag=True,
    default=False,
    show_default=True,
    help="Enable HTTP/2: h2 by ALPN on a TLS port, h2c by prior knowledge on a plain one (HTTP/1.1 is still "
    "served).",
)
@click.option(
    "--http2-max-concurrent-streams",
    type=int,
    default=HTTP2_MAX_CONCURRENT_STREAMS_DEFAULT,
    show_default=True,
    help="HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: requests in progress at once on one connection.",
)
@click.option(
    "--http2-initial-window-size",
    type=int,
    default=HTTP2_INITIAL_WINDOW_SIZE_DEFAULT,
    show_default=True,
    help="HTTP/2 SETTINGS_INITIAL_WINDOW_SIZE: request-body bytes a stream may send before the app takes "
    "them.",
)
@click.option(
    "--http2-max-header-list-size",
    type=int,
    default=HTTP2_MAX_HEADER_LIST_SIZE_DEFAULT,
    show_default=True,
    help="HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE: larger request header lists are answered 431.",
)
@click.option(
    "--lifespan",
    type=click.Choice(list(LIFESPAN)),
    default="auto",
    show_default=True,
    help="Lifespan implementation.",
)
@click.option(
    "--interface",
    type=click.Choice(INTERFACES),
    default="auto",
    show_default=True,
    help="Select ASGI3 or ASGI2 as the application interface.",
)
@click.option(
    "--env-file", type=click.Path(exists=True), default=None, help="Environment configuration file."
)
@click.option(
    "--log-config",
    type=click.Path(exists=True),
    default=None,
    help="Logging configuration file. Supported formats: .ini, .json, .yaml.",
)
@click.option(
    "--log-level", type=click.Choice(list(LOG_LEVELS)), default=None, help="Log level. [default: info]"
)
@click.option("--access-log/--no-access-log", is_flag=True, default=True, help="Enable/Disable access log.")
@click.option(
    "--use-colors/--no-use-colors", is_flag=True, default=None, help="Enable/Disable colorized logging."
)
@click.option(
    "--proxy-headers/--no-proxy-headers",
    is_flag=True,
    default=True,
    help="Enable/Disable X-Forwarded-Proto, X-Forwarded-For to populate url scheme and remote address info.",
)
@click.option(
    "--server-header/--no-server-header",
    is_flag=True,
    default=True,
    help="Enable/Disable default Server header.",
)
@click.option(
    "--date-header/--no-date-header", is_flag=True, default=True, help="Enable/Disable default Date header."
)
@click.option(
    "--forwarded-allow-ips",
    type=str,
    default=None,
    help="Comma separated list of IP Addresses, IP Networks, or literals (e.g. UNIX Socket path) "
    "to trust with proxy headers. Defaults to the $FORWARDED_ALLOW_IPS environment variable if available, "
    "or '127.0.0.1,::1'. The literal '*' means trust everything.",
)
@click.option(
    "--root-path",
    type=str,
    default="",
    help="Set the ASGI 'root_path' for applications submounted below a given URL path.",
)
@click.option(
    "--limit-concurrency",
    type=int,
    default=None,
    help="Maximum number of concurrent connections or tasks to allow, before issuing HTTP 503 responses.",
)
@click.option(
    "--backlog",
    type=int,
    default=2048,
    show_default=True,
    help="Maximum number of connections to hold in backlog.",
)
@click.option(
    "--limit-max-requests",
    type=int,
    default=None,
    help="Maximum number of requests to service before terminating the process.",
)
@click.option(
    "--limit-max-requests-jitter",
    type=click.IntRange(min=0),  # as uvicorn 0.55: a negative jitter is a usage error
    default=0,
    show_default=True,
    help="Maximum jitter to add to limit_max_requests."
    " Staggers worker restarts to avoid all workers restarting simultaneously.",
)
@click.option(
    "--timeout-keep-alive",
    type=float,
    default=5,
    show_default=True,
    help="Close Keep-Alive connections if no new data is received within this timeout (in seconds).",
)
@click.option(
    "--timeout-request-header",
    type=click.FloatRange(min=0),
    default=TIMEOUT_REQUEST_HEADER_DEFAULT,
    show_default=True,
    help="Close a connection whose request head has not fully arrived this many seconds after its first byte "
    "(answered 408; slowloris). 0: no bound.",
)
@click.option(
    "--timeout-request-body",
    type=click.FloatRange(min=0),
    default=TIMEOUT_REQUEST_BODY_DEFAULT,
    show_default=True,
    help="Close a connection when no request-body byte arrives for this many seconds while the body is being "
    "read (the app sees http.disconnect). 0: no bound.",
)
@click.option(
    "--timeout-send",
    type=click.FloatRange(min=0),
    default=TIMEOUT_SEND_DEFAULT,
    show_default=True,
    help="Close a connection whose queued response bytes have not moved for this many seconds (a client that "
    "does not read). 0: no bound.",
)
@click.option(
    "--timeout-graceful-shutdown",
    type=float,
    default=None,
    help="Maximum number of seconds to wait for graceful shutdown.",
)
@click.option(
    "--timeout-worker-healthcheck",
    type=int,
    default=TIMEOUT_WORKER_HEALTHCHECK_DEFAULT,
    show_default=True,
    help="Maximum number of seconds to wait for a worker to respond to a healthcheck.",
)
@click.option("--ssl-keyfile", type=str, default=None, help="SSL key file")
@click.option("--ssl-certfile", type=str, default=None, help="SSL certificate file")
@click.option("--ssl-keyfile-password", type=str, default=None, help="SSL keyfile password")
@click.option(
    "--ssl-version",
    type=int,
    default=int(SSL_PROTOCOL_VERSION),
    show_default=True,
    help="SSL version to use (see stdlib ssl module's)",
)
@click.option(
    "--ssl-cert-reqs",
    type=int,
    default=0,
    show_default=True,
    help="Whether client certificate is required (see stdlib ssl module's)",
)
@click.option("--ssl-ca-certs", type=str, default=None, help="CA certificates file")
@click.option(
    "--ssl-ciphers",
    type=str,
    default=None,
    help="Ciphers to use (see stdlib ssl module's). Defaults to OpenSSL's safe defaults.",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    callback=_parse_headers,
    help="Specify custom default HTTP response headers as a Name:Value pair (repeatable).",
)
@click.option(
    "--version",
    is_flag=True,
    callback=print_version,
    expose_value=False,
    is_eager=True,
    help="Display the fasterapi-asgi version and exit.",
)
@click.option(
    "--app-dir",
    default="",
    show_default=True,
    help="Look for APP in the specified directory, by adding this to the PYTHONPATH. "
    "Defaults to the current working directory.",
)
@click.option(
    "--h11-max-incomplete-event-size",
    type=int,
    default=None,
    help="Maximum number of bytes of an incomplete request head (request line and headers).",
)
@click.option(
    "--ws",
    type=click.Choice(["auto", "none", "websockets", "websockets-sansio", "wsproto"]),
    default="auto",
    show_default=True,
    help="WebSocket support: 'none' answers upgrade requests as plain HTTP; any other value uses the native "
    "implementation (uvicorn's library names are accepted for compatibility).",
)
@click.option(
    "--ws-max-size",
    type=int,
    default=WS_MAX_SIZE_DEFAULT,
    show_default=True,
    help="WebSocket max message size in bytes (larger messages close the session with 1009).",
)
@click.option(
    "--ws-max-queue",
    type=int,
    callback=_at_least(1),
    default=WS_MAX_QUEUE_DEFAULT,
    show_default=True,
    help="The maximum length of the WebSocket message queue (messages buffered for the app before reading "
    "pauses).",
)
@click.option(
    "--ws-ping-interval",
    type=float,
    callback=_at_least(0),
    default=WS_PING_INTERVAL_DEFAULT,
    show_default=True,
    help="WebSocket ping interval in seconds. 0: no keepalive pings.",
)
@click.option(
    "--ws-ping-timeout",
    type=float,
    callback=_at_least(0),
    default=WS_PING_TIMEOUT_DEFAULT,
    show_default=True,
    help="WebSocket ping timeout in seconds: no pong this long after a ping closes the connection (1011).",
)
@click.option(
    "--ws-per-message-deflate",
    type=bool,
    default=True,
    show_default=True,
    help="WebSocket per-message-deflate compression",
)
@click.option(
    "--stats/--no-stats",
    default=False,
    help="Measure where each request's time goes (read+parse, route, scope, dispatch, app, write), "
    "and log the breakdown at shutdown. Off: no cost.",
)
@click.option(
    "--route-index/--no-route-index",
    default=True,
    show_default=True,
    help="Route Starlette and FastAPI apps through a native index of their route tables (Starlette still "
    "decides each match; the result is the same as its plain scan).",
)
@click.option(
    "--compile-routes/--no-compile-routes",
    default=True,
    show_default=True,
    help="Answer the FastAPI routes a route plan can serve without FastAPI's per-request scaffolding, with "
    "FastAPI's own answers (what a plan does not reproduce exactly goes to FastAPI's handler).",
)
@click.option(
    "--gc-freeze/--no-gc-freeze",
    default=True,
    show_default=True,
    help="After startup, collect garbage once and move every object alive then out of the cyclic garbage "
    "collector's reach (gc.freeze()): later collections no longer traverse the app's whole startup heap.",
)
@click.option(
    "--native",
    type=str,
    default=None,
    help="Native routes to serve from C++ before the app: a 'module:attribute' fasterapi_asgi.native.Routes.",
)
@click.option(
    "--reuse-port",
    is_flag=True,
    default=False,
    help="Set SO_REUSEPORT on the listening socket.",
)
@click.option(
    "--reset-contextvars",
    is_flag=True,
    default=False,
    show_default=True,
    help="Run each ASGI request in a fresh contextvars.Context. Hides context set in the lifespan.",
)
@click.option(
    "--factory",
    is_flag=True,
    default=False,
    show_default=True,
    help="Treat APP as an application factory, i.e. a () -> <ASGI app> callable.",
)
def main(
    app: str,
    log_config: str | None,
    headers: list[tuple[str, str]],
    **options: Any,
) -> None:
    """Serve the ASGI application APP ("module:attribute") with the native fasterapi-asgi core."""
    run(
        app,
        log_config=LOGGING_CONFIG if log_config is None else log_config,
        headers=headers,
        **options,
    )


def run(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    uds: str | None = None,
    fd: int | None = None,
    loop: LoopFactoryType | str = "auto",
    lifespan: LifespanType = "auto",
    interface: InterfaceType = "auto",
    workers: int | None = None,
    env_file: str | os.PathLike[str] | None = None,
    log_config: dict[str, Any] | str | os.PathLike[str] | RawConfigParser | IO[Any] | None = LOGGING_CONFIG,
    log_level: str | int | None = None,
    access_log: bool = True,
    proxy_headers: bool = True,
    server_header: bool = True,
    date_header: bool = True,
    forwarded_allow_ips: list[str] | str | None = None,
    root_path: str = "",
    limit_concurrency: int | None = None,
    backlog: int = 2048,
    limit_max_requests: int | None = None,
    limit_max_requests_jitter: int = 0,
    timeout_keep_alive: float = 5,
    timeout_graceful_shutdown: float | None = None,
    headers: Sequence[tuple[str, str] | str] | None = None,
    use_colors: bool | None = None,
    app_dir: str | None = None,
    factory: bool = False,
    h11_max_incomplete_event_size: int | None = None,
    reuse_port: bool = False,
    native: str | None = None,
    stats: bool = False,
    route_index: bool = True,
    compile_routes: bool = True,
    gc_freeze: bool = True,
    ws: str = "auto",
    ws_max_size: int = WS_MAX_SIZE_DEFAULT,
    timeout_request_header: float = TIMEOUT_REQUEST_HEADER_DEFAULT,
    timeout_request_body: float = TIMEOUT_REQUEST_BODY_DEFAULT,
    timeout_send: float = TIMEOUT_SEND_DEFAULT,
    http: str = "auto",
    http2: bool = False,
    http2_max_concurrent_streams: int = HTTP2_MAX_CONCURRENT_STREAMS_DEFAULT,
    http2_initial_window_size: int = HTTP2_INITIAL_WINDOW_SIZE_DEFAULT,
    http2_max_header_list_size: int = HTTP2_MAX_HEADER_LIST_SIZE_DEFAULT,
    ws_max_queue: int = WS_MAX_QUEUE_DEFAULT,
    ws_ping_interval: float | None = WS_PING_INTERVAL_DEFAULT,
    ws_ping_timeout: float | None = WS_PING_TIMEOUT_DEFAULT,
    ws_per_message_deflate: bool = True,
    reload: bool = False,
    reload_dirs: list[str] | str | None = None,
    reload_includes: list[str] | str | None = None,
    reload_excludes: list[str] | str | None = None,
    reload_delay: float = 0.25,
    timeout_worker_healthcheck: int = TIMEOUT_WORKER_HEALTHCHECK_DEFAULT,
    ssl_keyfile: str | os.PathLike[str] | None = None,
    ssl_certfile: str | os.PathLike[str] | None = None,
    ssl_keyfile_password: str | None = None,
    ssl_version: int = SSL_PROTOCOL_VERSION,
    ssl_cert_reqs: int = 0,
    ssl_ca_certs: str | os.PathLike[str] | None = None,
    ssl_ciphers: str | None = None,
    ssl_context_factory: Callable[[Config, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None = None,
    reset_contextvars: bool = False,
) -> None:
    """Serve ``app`` (an ASGI app, or a ``"module:attribute"`` import string) until stopped.

    Exits with status 3 when the app cannot be loaded or fails its lifespan startup.
    """
    if app_dir is not None:
        sys.path.insert(0, app_dir)

    config = Config(
        app,
        host=host,
        port=port,
        uds=uds,
        fd=fd,
        loop=loop,
        lifespan=lifespan,
        interface=interface,
        workers=workers,
        env_file=env_file,
        log_config=log_config,
        log_level=log_level,
        access_log=access_log,
        proxy_headers=proxy_headers,
        server_header=server_header,
        date_header=date_header,
        forwarded_allow_ips=forwarded_allow_ips,
        root_path=root_path,
        limit_concurrency=limit_concurrency,
        backlog=backlog,
        limit_max_requests=limit_max_requests,
        limit_max_requests_jitter=limit_max_requests_jitter,
        timeout_keep_alive=timeout_keep_alive,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        headers=headers,
        use_colors=use_colors,
        factory=factory,
        h11_max_incomplete_event_size=h11_max_incomplete_event_size,
        reuse_port=reuse_port,
        native=native,
        stats=stats,
        route_index=route_index,
        compile_routes=compile_routes,
        gc_freeze=gc_freeze,
        ws=ws,
        ws_max_size=ws_max_size,
        timeout_request_header=timeout_request_header,
        timeout_request_body=timeout_request_body,
        timeout_send=timeout_send,
        http=http,
        http2=http2,
        http2_max_concurrent_streams=http2_max_concurrent_streams,
        http2_initial_window_size=http2_initial_window_size,
        http2_max_header_list_size=http2_max_header_list_size,
        ws_max_queue=ws_max_queue,
        ws_ping_interval=ws_ping_interval,
        ws_ping_timeout=ws_ping_timeout,
        ws_per_message_deflate=ws_per_message_deflate,
        reload=reload,
        reload_dirs=reload_dirs,
        reload_includes=reload_includes,
        reload_excludes=reload_excludes,
        reload_delay=reload_delay,
        timeout_worker_healthcheck=timeout_worker_healthcheck,
        ssl_keyfile=ssl_keyfile,
        ssl_certfile=ssl_certfile,
        ssl_keyfile_password=ssl_keyfile_password,
        ssl_version=ssl_version,
        ssl_cert_reqs=ssl_cert_reqs,
        ssl_ca_certs=ssl_ca_certs,
        ssl_ciphers=ssl_ciphers,
        ssl_context_factory=ssl_context_factory,
        reset_contextvars=reset_contextvars,
    )
    # Options that cannot work fail now, with one line, before any socket is bound or process started.
    try:
        config.check_protocols()
        config.load_ssl()
    except (OSError, ValueError, TypeError) as exc:  # ssl.SSLError is an OSError
        logger.error("Cannot set up the server: %s", one_line_error(exc))
        sys.exit(STARTUP_FAILURE)
    finally:
        config.ssl = None  # rebuilt by Config.load() where the server runs (an SSLContext does not pickle)
    if config.reload or config.workers > 1:
        if not isinstance(app, str):
            logger.warning(
                "You must pass the application as an import string to enable 'reload' or 'workers'."
            )
            sys.exit(STARTUP_FAILURE)
    else:
        config.load_app()  # fail fast, with one line, before any socket is bound

    server = Server(config=config)
    supervisor: Multiprocess | ChangeReload | None = None
    try:
        if config.should_reload:
            sock = config.bind_socket()
            supervisor = ChangeReload(config, target=server.run, sockets=[sock])
            supervisor.run()
        elif config.workers > 1:
            sock = config.bind_socket()
            supervisor = Multiprocess(config, sockets=[sock])
            supervisor.run()
        else:
            server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if config.uds and os.path.exists(config.uds):
            os.remove(config.uds)

    if supervisor is not None:
        if isinstance(supervisor, Multiprocess) and supervisor.startup_failed:
            sys.exit(STARTUP_FAILURE)
    elif not server.started:
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
