"""Server configuration: the options of the command line, app loading, logging and listening sockets.

Option names, meanings and defaults follow uvicorn's ``Config``; differences are listed in
``docs/configuration.md``.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import logging
import logging.config
import os
import socket
import ssl
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from configparser import RawConfigParser
from pathlib import Path
from typing import IO, Any, Literal

from fasterapi_asgi.importer import ImportFromStringError, import_from_string
from fasterapi_asgi.logging import TRACE_LOG_LEVEL, style
from fasterapi_asgi.middleware.asgi2 import ASGI2Middleware
from fasterapi_asgi.middleware.proxy_headers import ProxyHeadersMiddleware

LifespanType = Literal["auto", "on", "off"]
LoopFactoryType = Literal["none", "auto", "asyncio", "uvloop"]
InterfaceType = Literal["auto", "asgi3", "asgi2"]
HTTPProtocolType = Literal["auto", "h11", "httptools", "zttp"]

LOG_LEVELS: dict[str, int] = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE_LOG_LEVEL,
}
LIFESPAN: dict[str, str] = {
    "auto": "fasterapi_asgi.lifespan.on:LifespanOn",
    "on": "fasterapi_asgi.lifespan.on:LifespanOn",
    "off": "fasterapi_asgi.lifespan.off:LifespanOff",
}
LOOP_FACTORIES: tuple[str, ...] = ("none", "auto", "asyncio", "uvloop")
INTERFACES: list[InterfaceType] = ["auto", "asgi3", "asgi2"]
# uvicorn's --http choices. The native parser serves every one of them (as every --ws value selects the native
# WebSocket implementation): the name only picks which Python library uvicorn would have used.
HTTP_PROTOCOLS: tuple[str, ...] = ("auto", "h11", "httptools", "zttp")
# uvicorn's default --ssl-version: ssl.PROTOCOL_TLS_SERVER.
SSL_PROTOCOL_VERSION: int = ssl.PROTOCOL_TLS_SERVER

# Exit status when the app cannot be loaded, the socket cannot be bound or lifespan startup fails
# (uvicorn's value, so supervisors and scripts written for uvicorn keep working).
STARTUP_FAILURE = 3
# uvicorn's --ws-max-size default: larger incoming WebSocket messages close the session with 1009.
WS_MAX_SIZE_DEFAULT = 16 * 1024 * 1024
# Time bounds per connection against clients that stall (seconds; 0 turns one off). No ordinary client comes
# near them: they fire only when nothing moves for that long.
TIMEOUT_REQUEST_HEADER_DEFAULT = 30.0
TIMEOUT_REQUEST_BODY_DEFAULT = 60.0
TIMEOUT_SEND_DEFAULT = 60.0
# HTTP/2 (--http2) bounds: SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE (RFC 9113's default:
# the request body a stream may have buffered), SETTINGS_MAX_HEADER_LIST_SIZE (enforced: 431 beyond it).
HTTP2_MAX_CONCURRENT_STREAMS_DEFAULT = 100
HTTP2_INITIAL_WINDOW_SIZE_DEFAULT = 65535
HTTP2_MAX_HEADER_LIST_SIZE_DEFAULT = 65536
# uvicorn's WebSocket defaults.
WS_MAX_QUEUE_DEFAULT = 32
WS_PING_INTERVAL_DEFAULT = 20.0
WS_PING_TIMEOUT_DEFAULT = 20.0
# uvicorn's --timeout-worker-healthcheck default (seconds).
TIMEOUT_WORKER_HEALTHCHECK_DEFAULT = 5

LOGGING_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {
            "()": "fasterapi_asgi.logging.DefaultFormatter",
            "fmt": "%(levelprefix)s %(message)s",
            "use_colors": None,
        },
        "access": {
            "()": "fasterapi_asgi.logging.AccessFormatter",
            "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
        },
    },
    "handlers": {
        "default": {"formatter": "default", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        "access": {"formatter": "access", "class": "logging.StreamHandler", "stream": "ext://sys.stdout"},
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}

logger = logging.getLogger("uvicorn.error")


def parse_header(header: str | Sequence[str]) -> tuple[str, str]:
    """``"Name: value"`` (or a ``(name, value)`` pair) -> ``(name, value)``, both stripped.

    Raises ``ValueError`` for a missing colon, an empty or invalid name, or CR/LF/NUL anywhere.
    """
    if isinstance(header, str):
        name, sep, value = header.partition(":")
        if not sep:
            raise ValueError(f'Header "{header}" must be in format "Name:Value".')
    else:
        name, value = header
    name, value = name.strip(), value.strip()
    if not name or any(c in name for c in ' \t()<>@,;:\\"/[]?={}') or not name.isprintable():
        raise ValueError(f'Invalid header name "{name}".')
    if any(c in value for c in "\r\n\x00"):
        raise ValueError(f'Invalid value for header "{name}": CR, LF and NUL are not allowed.')
    return name, value


def load_env_file(path: str | os.PathLike[str]) -> None:
    """Set variables from a dotenv file; variables already in the environment win (as python-dotenv)."""
    try:
        from dotenv import load_dotenv
    except ImportError:  # a minimal KEY=VALUE reader, enough for the common case
        with open(path, encoding="utf-8") as file:
            for raw_line in file:
                line = raw_line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, _, value = line.removeprefix("export ").partition("=")
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                    value = value[1:-1]
                os.environ.setdefault(key.strip(), value)
    else:
        load_dotenv(dotenv_path=path)


def one_line_error(exc: BaseException) -> str:
    """An exception as one line: ``FileNotFoundError: [Errno 2] No such file or directory: 'x.pem'``."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def create_ssl_context(
    certfile: str | os.PathLike[str],
    keyfile: str | os.PathLike[str] | None,
    password: str | None,
    ssl_version: int,
    cert_reqs: int,
    ca_certs: str | os.PathLike[str] | None,
    ciphers: str | None,
) -> ssl.SSLContext:
    """The ``ssl.SSLContext`` uvicorn builds from its ``--ssl-*`` options; the core serves TLS with its
    ``SSL_CTX`` (so every option, default and error is exactly Python's and uvicorn's)."""
    context = ssl.SSLContext(ssl_version)
    context.load_cert_chain(certfile, keyfile, (lambda: password) if password else None)
    context.verify_mode = ssl.VerifyMode(cert_reqs)
    if ca_certs:
        context.load_verify_locations(ca_certs)
    if ciphers:
        context.set_ciphers(ciphers)
    return context


def _as_list(value: Sequence[str] | str | None) -> list[str]:
    """One option value or several (a CLI tuple, a list) as a list without repeats, in order."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(dict.fromkeys(value))


def _is_dir(path: Path) -> bool:
    try:
        return path.resolve().is_dir()
    except OSError:
        return False


def _directories_named_by(pattern: str) -> Iterable[Path]:
    """The directory a reload pattern names, or the directories it matches in the current directory."""
    path = Path(pattern)
    if _is_dir(path):
        return [path]
    if not pattern or path.is_absolute():
        return []  # Path.glob() takes relative patterns only
    try:
        return [match for match in Path.cwd().glob(pattern) if _is_dir(match)]
    except (OSError, ValueError):
        return []


def resolve_reload_patterns(patterns: list[str], directories: list[str]) -> tuple[list[str], list[Path]]:
    """``(patterns, directories)`` for ``--reload-include``/``--reload-exclude``: every pattern is kept; those
    naming directories also contribute them (``.*`` excepted: it is meant for hidden files, not to match every
    hidden directory). Directories come back absolute, existing, and without any nested in another one."""
    found = [Path(directory) for directory in directories]
    for pattern in patterns:
        if pattern != ".*":
            found.extend(_directories_named_by(pattern))
    resolved = list(dict.fromkeys(path.resolve() for path in found if _is_dir(path)))
    outermost = [path for path in resolved if not any(other in path.parents for other in resolved)]
    return list(dict.fromkeys(patterns)), outermost


def _asyncio_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    return asyncio.SelectorEventLoop


def _uvloop_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    import uvloop

    return uvloop.new_event_loop


class Config:
    """All server options; ``load()`` imports and wraps the app, ``bind_socket()`` makes a listener."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 8000,
        uds: str | None = None,
        fd: int | None = None,
        loop: LoopFactoryType | str = "auto",
        lifespan: LifespanType = "auto",
        env_file: str | os.PathLike[str] | None = None,
        log_config: dict[str, Any]
        | str
        | os.PathLike[str]
        | RawConfigParser
        | IO[Any]
        | None = LOGGING_CONFIG,
        log_level: str | int | None = None,
        access_log: bool = True,
        use_colors: bool | None = None,
        interface: InterfaceType = "auto",
        workers: int | None = None,
        proxy_headers: bool = True,
        server_header: bool = True,
        date_header: bool = True,
        forwarded_allow_ips: list[str] | str | None = None,
        root_path: str = "",
        limit_concurrency: int | None = None,
        limit_max_requests: int | None = None,
        limit_max_requests_jitter: int = 0,
        backlog: int = 2048,
        timeout_keep_alive: float = 5,
        timeout_graceful_shutdown: float | None = None,
        headers: Sequence[tuple[str, str] | str] | None = None,
        factory: bool = False,
        h11_max_incomplete_event_size: int | None = None,
        reuse_port: bool = False,
        native: str | None = None,
        stats: bool = False,
        ws: str = "auto",
        ws_max_size: int = WS_MAX_SIZE_DEFAULT,
        timeout_request_header: float = TIMEOUT_REQUEST_HEADER_DEFAULT,
        timeout_request_body: float = TIMEOUT_REQUEST_BODY_DEFAULT,
        timeout_send: float = TIMEOUT_SEND_DEFAULT,
        route_index: bool = True,
        compile_routes: bool = True,
        gc_freeze: bool = True,
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
        reload_delay: float = 0.25,
        reload_includes: list[str] | str | None = None,
        reload_excludes: list[str] | str | None = None,
        timeout_worker_healthcheck: int = TIMEOUT_WORKER_HEALTHCHECK_DEFAULT,
        ssl_keyfile: str | os.PathLike[str] | None = None,
        ssl_certfile: str | os.PathLike[str] | None = None,
        ssl_keyfile_password: str | None = None,
        ssl_version: int = SSL_PROTOCOL_VERSION,
        ssl_cert_reqs: int = ssl.CERT_NONE,
        ssl_ca_certs: str | os.PathLike[str] | None = None,
        ssl_ciphers: str | None = None,
        ssl_context_factory: Callable[[Config, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None = None,
        reset_contextvars: bool = False,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.uds = uds
        self.fd = fd
        self.loop = loop
        self.lifespan = lifespan
        self.log_config = log_config
        self.log_level = log_level
        self.access_log = access_log
        self.use_colors = use_colors
        self.interface = interface
        self.workers = workers or 1
        self.proxy_headers = proxy_headers
        self.server_header = server_header
        self.date_header = date_header
        self.root_path = root_path
        self.limit_concurrency = limit_concurrency
        self.limit_max_requests = limit_max_requests
        self.limit_max_requests_jitter = limit_max_requests_jitter
        self.backlog = backlog
        self.timeout_keep_alive = timeout_keep_alive
        self.timeout_graceful_shutdown = timeout_graceful_shutdown
        self.headers: list[tuple[str, str]] = [parse_header(h) for h in headers or []]
        self.factory = factory
        self.h11_max_incomplete_event_size = h11_max_incomplete_event_size
        self.reuse_port = reuse_port
        self.native = native  # "module:attribute" of a fasterapi_asgi.native.Routes, or None
        self.stats = stats  # per-stage time accounting in the core (--stats)
        self.route_index = route_index  # the native index of Starlette/FastAPI route tables (route_index.py)
        self.compile_routes = compile_routes  # route plans for FastAPI routes (route_plans.py)
        self.gc_freeze = gc_freeze  # gc.collect() + gc.freeze() after startup (server.py)
        self.ws = (
            ws  # "none" turns WebSocket support off; every other value selects the native implementation
        )
        self.ws_max_size = ws_max_size
        self.ws_max_queue = ws_max_queue
        self.ws_ping_interval = ws_ping_interval
        self.ws_ping_timeout = ws_ping_timeout
        self.ws_per_message_deflate = ws_per_message_deflate
        self.http = http
        self.http2 = http2
        self.http2_max_concurrent_streams = http2_max_concurrent_streams
        self.http2_initial_window_size = http2_initial_window_size
        self.http2_max_header_list_size = http2_max_header_list_size
        self.reload = reload
        self.reload_delay = reload_delay
        # Resolved below when reloading (uvicorn's rules): absolute directories, glob patterns.
        self.reload_dirs: list[Path] = []
        self.reload_dirs_excludes: list[Path] = []
        self.reload_includes: list[str] = []
        self.reload_excludes: list[str] = []
        self.timeout_worker_healthcheck = timeout_worker_healthcheck
        self.ssl_keyfile = ssl_keyfile
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile_password = ssl_keyfile_password
        self.ssl_version = ssl_version
        self.ssl_cert_reqs = ssl_cert_reqs
        self.ssl_ca_certs = ssl_ca_certs
        self.ssl_ciphers = ssl_ciphers
        self.ssl_context_factory = ssl_context_factory
        self.ssl: ssl.SSLContext | None = None
        self.reset_contextvars = reset_contextvars
        for name, value in (
            ("timeout_request_header", timeout_request_header),
            ("timeout_request_body", timeout_request_body),
            ("timeout_send", timeout_send),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0 turns it off), got {value}")
        # The WebSocket options as the core takes them (None: no pings / no pong deadline).
        for option, seconds in (("ws_ping_interval", ws_ping_interval), ("ws_ping_timeout", ws_ping_timeout)):
            if seconds is not None and not seconds >= 0:
                raise ValueError(f"{option} must be >= 0 seconds or None (off), got {seconds}")
        if ws_max_queue < 1:
            raise ValueError(f"ws_max_queue must be >= 1 (messages buffered for the app), got {ws_max_queue}")
        self.timeout_request_header = float(timeout_request_header)
        self.timeout_request_body = float(timeout_request_body)
        self.timeout_send = float(timeout_send)
        self.raw_app: Any = None

        # Extra response headers, names lowercased, as handed to the core.  A user "server" header
        # replaces the default one (as in uvicorn), so the core's own is then turned off.
        self.default_headers: list[tuple[bytes, bytes]] = [
            (name.lower().encode("latin1"), value.encode("latin1")) for name, value in self.headers
        ]
        self.encoded_headers = self.default_headers  # uvicorn's attribute name

        self.loaded = False
        self.configure_logging()

        if (reload_dirs or reload_includes or reload_excludes) and not self.should_reload:
            logger.warning(
                "Current configuration will not reload as not all conditions are met, "
                "please refer to documentation."
            )
        if self.should_reload:
            self._resolve_reload_paths(reload_dirs, reload_includes, reload_excludes)

        if env_file is not None:
            logger.info("Loading environment from '%s'", env_file)
            load_env_file(env_file)

        if workers is None and "WEB_CONCURRENCY" in os.environ:
            self.workers = int(os.environ["WEB_CONCURRENCY"])

        self.forwarded_allow_ips: list[str] | str
        if forwarded_allow_ips is None:
            self.forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
        else:
            self.forwarded_allow_ips = forwarded_allow_ips

        if self.reload and self.workers > 1:
            logger.warning('"workers" flag is ignored when reloading is enabled.')

    def _resolve_reload_paths(
        self,
        reload_dirs: Sequence[str] | str | None,
        reload_includes: Sequence[str] | str | None,
        reload_excludes: Sequence[str] | str | None,
    ) -> None:
        """``--reload-dir/--reload-include/--reload-exclude`` as uvicorn resolves them: a pattern naming
        directories (itself or its matches in the current directory) adds them to the watched (include) or
        excluded (exclude) directories; watched directories inside an excluded one are dropped; a pattern
        both included and excluded is excluded; nothing valid to watch means the current directory."""
        given_dirs = _as_list(reload_dirs)
        includes, excludes = _as_list(reload_includes), _as_list(reload_excludes)
        self.reload_includes, self.reload_dirs = resolve_reload_patterns(includes, given_dirs)
        self.reload_excludes, self.reload_dirs_excludes = resolve_reload_patterns(excludes, [])
        self.reload_dirs = [
            watched
            for watched in self.reload_dirs
            if not any(
                watched == excluded or excluded in watched.parents for excluded in self.reload_dirs_excludes
            )
        ]
        self.reload_includes = [p for p in self.reload_includes if p not in self.reload_excludes]
        if not self.reload_dirs:
            if given_dirs:
                logger.warning(
                    "Provided reload directories %s did not contain valid directories, "
                    "watching current working directory.",
                    given_dirs,
                )
            self.reload_dirs = [Path.cwd()]
        logger.info("Will watch for changes in these directories: %s", sorted(map(str, self.reload_dirs)))

    @property
    def asgi_version(self) -> Literal["2.0", "3.0"]:
        return "2.0" if self.interface == "asgi2" else "3.0"

    @property
    def use_subprocess(self) -> bool:
        return bool(self.reload or self.workers > 1)

    @property
    def should_reload(self) -> bool:
        return isinstance(self.app, str) and self.reload

    @property
    def is_ssl(self) -> bool:
        return bool(self.ssl_keyfile or self.ssl_certfile or self.ssl_context_factory)

    def check_protocols(self) -> None:
        """``--http`` and ``--http2`` as uvicorn names them; raises ``ValueError`` with a one-line reason."""
        if self.http not in HTTP_PROTOCOLS:
            raise ValueError(
                f"--http {self.http!r}: fasterapi-asgi parses HTTP natively and accepts uvicorn's names "
                f"{'|'.join(HTTP_PROTOCOLS)} (all served by the native parser), not a protocol class"
            )
        # The HTTP/2 SETTINGS values RFC 9113 allows (a window under 1 KiB would be one frame at a time).
        for option, value, low, high, unit in (
            ("--http2-max-concurrent-streams", self.http2_max_concurrent_streams, 1, 2**31 - 1, ""),
            ("--http2-initial-window-size", self.http2_initial_window_size, 1024, 2**31 - 1, " bytes"),
            ("--http2-max-header-list-size", self.http2_max_header_list_size, 1024, 2**32 - 1, " bytes"),
        ):
            if not low <= value <= high:
                raise ValueError(f"{option} must be between {low} and {high}{unit}, got {value}")

    def load_ssl(self) -> None:
        """Build ``self.ssl`` as uvicorn does (``create_ssl_context`` or ``ssl_context_factory``)."""
        if self.ssl_context_factory is not None:

            def default_factory() -> ssl.SSLContext:
                if not self.ssl_certfile:
                    raise ValueError(
                        "`default_ssl_context_factory()` requires `ssl_certfile` to be set on `Config`. "
                        "Either pass `ssl_certfile` (and optionally `ssl_keyfile`) or build the `SSLContext` "
                        "directly inside `ssl_context_factory` without calling the default factory."
                    )
                return self._ssl_context_from_options(self.ssl_certfile)

            context = self.ssl_context_factory(self, default_factory)
            if not isinstance(context, ssl.SSLContext):
                raise TypeError(
                    f"`ssl_context_factory` must return an `ssl.SSLContext`, got {type(context).__name__}"
                )
            self.ssl = context
        elif self.is_ssl:
            if not self.ssl_certfile:
                raise ValueError("--ssl-keyfile needs --ssl-certfile (the certificate chain to serve)")
            self.ssl = self._ssl_context_from_options(self.ssl_certfile)
        else:
            self.ssl = None

    def _ssl_context_from_options(self, certfile: str | os.PathLike[str]) -> ssl.SSLContext:
        return create_ssl_context(
            keyfile=self.ssl_keyfile,
            certfile=certfile,
            password=self.ssl_keyfile_password,
            ssl_version=self.ssl_version,
            cert_reqs=self.ssl_cert_reqs,
            ca_certs=self.ssl_ca_certs,
            ciphers=self.ssl_ciphers,
        )

    @property
    def core_server_header(self) -> bool:
        """Whether the core adds its own ``server`` header (off when the user supplied one)."""
        return self.server_header and all(name != b"server" for name, _ in self.default_headers)

    def configure_logging(self) -> None:
        logging.addLevelName(TRACE_LOG_LEVEL, "TRACE")

        if self.log_config is not None:
            if isinstance(self.log_config, os.PathLike):
                self.log_config = os.fspath(self.log_config)
            if isinstance(self.log_config, dict):
                log_config = self.log_config
                if self.use_colors in (True, False):
                    log_config = copy.deepcopy(log_config)  # never mutate the shared LOGGING_CONFIG
                    for name in ("default", "access"):
                        if name in log_config.get("formatters", {}):
                            log_config["formatters"][name]["use_colors"] = self.use_colors
                logging.config.dictConfig(log_config)
            elif isinstance(self.log_config, str) and self.log_config.endswith(".json"):
                with open(self.log_config) as file:
                    logging.config.dictConfig(json.load(file))
            elif isinstance(self.log_config, str) and self.log_config.endswith((".yaml", ".yml")):
                try:
                    import yaml
                except ImportError as exc:
                    raise ImportError(
                        "Install the PyYAML package to use `--log-config` with YAML files."
                    ) from exc
                with open(self.log_config) as file:
                    logging.config.dictConfig(yaml.safe_load(file))
            else:
                logging.config.fileConfig(self.log_config, disable_existing_loggers=False)

        if self.log_level is not None:
            level = LOG_LEVELS[self.log_level.lower()] if isinstance(self.log_level, str) else self.log_level
            for name in ("uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
                logging.getLogger(name).setLevel(level)
        if self.access_log is False:
            access_logger = logging.getLogger("uvicorn.access")
            access_logger.handlers = []
            access_logger.propagate = False

    def load_app(self) -> Any:
        """Import the app (not yet called or wrapped). Logs one line and exits with 3 on failure."""
        try:
            return import_from_string(self.app)
        except ImportFromStringError as exc:
            logger.error("Error loading ASGI app. %s", exc)
            sys.exit(STARTUP_FAILURE)

    def load(self) -> None:
        """Import the app, call the factory, detect ASGI 2 / 3 and apply the middleware."""
        assert not self.loaded
        try:
            self.check_protocols()
            self.load_ssl()
        except (OSError, ValueError, TypeError) as exc:  # ssl.SSLError is an OSError
            logger.error("Cannot set up the server: %s", one_line_error(exc))
            sys.exit(STARTUP_FAILURE)
        self.lifespan_class = import_from_string(LIFESPAN[self.lifespan])

        app = self.load_app()
        try:
            app = app()  # a factory takes no arguments; an ASGI app (or class) needs some
        except TypeError as exc:
            if self.factory:
                logger.error("Error loading ASGI app factory: %s", exc)
                sys.exit(STARTUP_FAILURE)
        else:
            if not self.factory:
                logger.warning(
                    "ASGI app factory detected. Using it, "
                    "but please consider setting the --factory flag explicitly."
                )

        if self.interface == "auto":
            if inspect.isclass(app):
                use_asgi_3 = hasattr(app, "__await__")
            elif inspect.isfunction(app):
                use_asgi_3 = inspect.iscoroutinefunction(app)
            else:
                use_asgi_3 = inspect.iscoroutinefunction(getattr(app, "__call__", None))  # noqa: B004
            self.interface = "asgi3" if use_asgi_3 else "asgi2"

        self.raw_app = app  # before wrapping: native routes are declared on the user's own app object
        if self.interface == "asgi2":
            app = ASGI2Middleware(app)
        # Proxy headers are applied by the core through this hook, and only to requests that carry
        # x-forwarded-* headers: no middleware layer on every request (measured: 13% of raw ASGI rps).
        self.proxy_rewrite: Callable[[Any], None] | None = None
        if self.proxy_headers:
            self.proxy_rewrite = ProxyHeadersMiddleware(app, trusted_hosts=self.forwarded_allow_ips).rewrite

        self.loaded_app = app
        self.loaded = True

    def get_loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        """``auto``: uvloop when importable, else asyncio; or a ``"module:factory"`` import string."""
        if self.loop == "none":
            return None
        if self.loop == "asyncio":
            return _asyncio_loop_factory()
        if self.loop == "uvloop":
            return _uvloop_loop_factory()
        if self.loop == "auto":
            try:
                return _uvloop_loop_factory()
            except ImportError:
                return _asyncio_loop_factory()
        try:
            factory: Callable[[], asyncio.AbstractEventLoop] = import_from_string(self.loop)
        except ImportFromStringError as exc:
            logger.error("Error loading custom loop setup function. %s", exc)
            sys.exit(STARTUP_FAILURE)
        return factory

    # -- sockets ----------------------------------------------------------------------------------

    def bind_socket(self) -> socket.socket:
        """One listening socket for ``--uds``, ``--fd`` or host/port, logged; used before forking workers."""
        if self.uds is not None:
            sock = self._bind_uds()
        elif self.fd is not None:
            sock = self._socket_from_fd()
        else:
            family = socket.AF_INET6 if self.host and ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            self._bind_tcp(sock, (self.host, self.port))
        sock.listen(self.backlog)
        self.log_started_message([sock])
        sock.set_inheritable(True)
        return sock

    def create_sockets(self) -> list[socket.socket]:
        """Bound, listening sockets for a single-process server.

        For host/port every address ``getaddrinfo`` yields is bound (``localhost`` may give both
        127.0.0.1 and ::1; an empty host means all interfaces), like ``loop.create_server``.
        """
        if self.uds is not None:
            sockets = [self._bind_uds()]
        elif self.fd is not None:
            sockets = [self._socket_from_fd()]
        else:
            sockets = []
            host = self.host or None
            try:
                infos = socket.getaddrinfo(
                    host, self.port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
                )
            except OSError as exc:
                logger.error(exc)
                sys.exit(STARTUP_FAILURE)
            seen: set[tuple[int, Any]] = set()
            try:
                for family, type_, proto, _, sockaddr in infos:
                    if (family, sockaddr) in seen:
                        continue
                    seen.add((family, sockaddr))
                    sock = socket.socket(family, type_, proto)
                    sockets.append(sock)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    self._bind_tcp(sock, sockaddr)
            except SystemExit:
                for sock in sockets:
                    sock.close()
                raise
        for sock in sockets:
            sock.listen(self.backlog)
        return sockets

    def _bind_tcp(self, sock: socket.socket, address: Any) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            logger.error(exc)
            sys.exit(STARTUP_FAILURE)

    def _bind_uds(self) -> socket.socket:
        assert self.uds is not None
        path = self.uds
        # A socket file left by a previous run would make bind() fail; asyncio removes it too.
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.remove(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o666)
        except OSError as exc:
            sock.close()
            logger.error(exc)
            sys.exit(STARTUP_FAILURE)
        return sock

    def _socket_from_fd(self) -> socket.socket:
        assert self.fd is not None
        # socket(fileno=...) detects the real family (TCP or Unix) of the inherited descriptor; the dup
        # leaves the caller's descriptor open, as uvicorn's socket.fromfd() does.
        return socket.socket(fileno=os.dup(self.fd))

    def log_started_message(self, listeners: Sequence[socket.socket]) -> None:
        if self.fd is not None:
            logger.info(
                "fasterapi-asgi running on socket %s (Press CTRL+C to quit)", listeners[0].getsockname()
            )
        elif self.uds is not None:
            logger.info(
                "fasterapi-asgi running on unix socket %s (Press CTRL+C to quit)",
                self.uds,
                extra={
                    "color_message": "fasterapi-asgi running on unix socket "
                    + style("%s", bold=True)
                    + " (Press CTRL+C to quit)"
                },
            )
        else:
            host = "0.0.0.0" if not self.host else self.host
            addr_format = "%s://[%s]:%d" if ":" in host else "%s://%s:%d"
            port = self.port or listeners[0].getsockname()[1]
            logger.info(
                f"fasterapi-asgi running on {addr_format} (Press CTRL+C to quit)",
                "https" if self.is_ssl else "http",
                host,
                port,
                extra={
                    "color_message": "fasterapi-asgi running on "
                    + style(addr_format, bold=True)
                    + " (Press CTRL+C to quit)"
                },
            )
