"""The single-process server: lifespan, the native core's listeners, signals and graceful shutdown.

Python orchestrates here; every byte of HTTP is moved by ``fasterapi_asgi._core`` (imported lazily, when a
server starts, so that the package, its configuration and CLI import without the extension).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Generator, MutableMapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from fasterapi_asgi.config import STARTUP_FAILURE, Config
from fasterapi_asgi.logging import get_client_addr, get_path_with_query_string, style

if TYPE_CHECKING:
    from fasterapi_asgi import _core

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Seconds between checks of should_exit (and of the connection count during graceful shutdown).
_TICK = 0.1

logger = logging.getLogger("uvicorn.error")
access_logger = logging.getLogger("uvicorn.access")


def _error_log(message: str, exc: BaseException | None) -> None:
    logger.error("%s", message, exc_info=exc)


def _log(level: int, message: str) -> None:
    logger.log(level, "%s", message)


class _AccessLog:
    """The access log as the core calls it: ``app`` for the app's responses (from the scope, when the response
    starts, as uvicorn), ``core`` for responses the server answered itself (native routes, 503, ...)."""

    def __init__(self) -> None:
        self._info = access_logger.info

    def app(self, scope: MutableMapping[str, Any], status: int) -> None:
        # The same args as uvicorn's access record, so custom access formatters keep working.
        self._info(
            '%s - "%s %s HTTP/%s" %d',
            get_client_addr(scope),
            scope["method"],
            get_path_with_query_string(scope),
            scope["http_version"],
            status,
        )

    def core(self, client: str, method: str, path_qs: str, http_version: str, status: int) -> None:
        self._info('%s - "%s %s HTTP/%s" %d', client, method, path_qs, http_version, status)


def _ws_log(scope: MutableMapping[str, Any], outcome: int) -> None:
    """uvicorn's lines for a WebSocket handshake (on its error logger, whatever the access log setting)."""
    if outcome == 101:
        path = get_path_with_query_string(scope)
        logger.info('%s - "WebSocket %s" [accepted]', get_client_addr(scope), path)
        logger.info("connection open")
        return
    logger.info('%s - "WebSocket %s" %d', get_client_addr(scope), get_path_with_query_string(scope), outcome)
    try:
        phrase = http.HTTPStatus(outcome).phrase
    except ValueError:
        phrase = ""
    logger.info("connection rejected (%d %s)", outcome, phrase)


def _bind_libuv(core: Any) -> int:
    """Point the core at the libuv inside uvloop's extension (required even for ``--loop asyncio``).

    Returns the running libuv's version as ``UV_VERSION_HEX`` (0xMMmmpp)."""
    try:
        import uvloop.loop
    except ImportError as exc:
        raise RuntimeError(f"fasterapi-asgi needs uvloop (pip install uvloop): {exc}") from exc
    file = uvloop.loop.__file__
    assert file is not None
    return int(core.libuv_bind(file))


def _asyncio_run(
    main: Coroutine[Any, Any, None], loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
) -> None:
    """``asyncio.run(main, loop_factory=...)`` of Python 3.12, on 3.10 and 3.11 too."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main)
        return
    loop = asyncio.new_event_loop() if loop_factory is None else loop_factory()  # pragma: no cover
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.started = False
        self.should_exit = False
        self.force_exit = False
        self.core: _core.Server | None = None
        self._captured_signals: list[int] = []
        self._limit_max_requests: int | None = None
        if config.limit_max_requests is not None:
            self._limit_max_requests = config.limit_max_requests + random.randint(
                0, config.limit_max_requests_jitter
            )

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        _asyncio_run(self.serve(sockets=sockets), self.config.get_loop_factory())

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        with self.capture_signals():
            await self._serve(sockets)

    async def _serve(self, sockets: list[socket.socket] | None = None) -> None:
        process_id = os.getpid()
        config = self.config
        if not config.loaded:
            config.load()
        self.lifespan = config.lifespan_class(config)

        logger.info(
            "Started server process [%d]",
            process_id,
            extra={"color_message": "Started server process [" + style("%d", fg="cyan") + "]"},
        )
        await self.startup(sockets=sockets)
        if not self.should_exit:
            await self.main_loop()
        if self.started:
            await self.shutdown(sockets=sockets)
            logger.info(
                "Finished server process [%d]",
                process_id,
                extra={"color_message": "Finished server process [" + style("%d", fg="cyan") + "]"},
            )

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # The core first: a missing extension or a uvloop whose libuv this build does not support is refused
        # before the app's startup runs (and would have to be undone).
        try:
            from fasterapi_asgi import _core

            _bind_libuv(_core)
        except (ImportError, RuntimeError) as exc:
            logger.error("Cannot start the native server core: %s", exc)
            sys.exit(STARTUP_FAILURE)

        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)

        config = self.config

        if sockets is None:
            try:
                listeners = config.create_sockets()
            except SystemExit:
                await self.lifespan.shutdown()
                raise
        else:
            listeners = sockets

        access_log = None
        if config.access_log and access_logger.hasHandlers() and access_logger.isEnabledFor(logging.INFO):
            access_log = _AccessLog()

        # Route plans are installed before the core exists: it is given the app's entry (see route_plans).
        app = config.loaded_app
        if config.compile_routes:
            app = self._install_route_plans()
        self.core = _core.Server(
            asyncio.get_running_loop(),
            app,
            error_log=_error_log,
            access_log=access_log,
            root_path=config.root_path,
            server_header=config.core_server_header,
            date_header=config.date_header,
            default_headers=config.default_headers,
            timeout_keep_alive=float(config.timeout_keep_alive),
            state=self.lifespan.state,
            limit_concurrency=config.limit_concurrency,
            h11_max_incomplete_event_size=config.h11_max_incomplete_event_size,
            asgi_version=config.asgi_version,
            stats=config.stats,
            websocket=config.ws != "none",
            ws_max_size=config.ws_max_size,
            ws_max_queue=config.ws_max_queue,
            ws_ping_interval=config.ws_ping_interval,
            ws_ping_timeout=config.ws_ping_timeout,
            ws_per_message_deflate=config.ws_per_message_deflate,
            http2=config.http2,
            http2_max_concurrent_streams=config.http2_max_concurrent_streams,
            http2_initial_window_size=config.http2_initial_window_size,
            http2_max_header_list_size=config.http2_max_header_list_size,
            timeout_request_header=config.timeout_request_header,
            timeout_request_body=config.timeout_request_body,
            timeout_send=config.timeout_send,
            log=_log,
            ws_log=_ws_log,
            ssl_context=config.ssl,
            # The TLS handshake is bounded like a request head; asyncio's 60 s when that bound is off.
            ssl_handshake_timeout=config.timeout_request_header or 60.0,
        )
        if config.proxy_rewrite is not None:
            self.core.set_proxy_headers(config.proxy_rewrite)
        if config.reset_contextvars:
            self.core.set_reset_contextvars(True)
        try:
            self._install_native_routes()
        except (ImportError, OSError, RuntimeError, TypeError, ValueError) as exc:
            logger.error("Cannot install native routes: %s", exc)
            self.core.close()
            await self.lifespan.shutdown()
            sys.exit(STARTUP_FAILURE)

        if config.route_index:
            self._install_route_index()
        if config.gc_freeze:
            # The app, its routes, models and imported modules are alive for the whole process: left in the
            # collector's generations, every full collection traverses them again. Garbage from startup is
            # collected first; objects frozen here are still freed by reference counting.
            gc.collect()
            gc.freeze()

        try:
            for sock in listeners:
                if sockets is not None:
                    sock.listen(config.backlog)  # inherited from a supervisor: bound, maybe not listening
                self.core.listen(sock, config.backlog)
            if sockets is None:
                # With inherited sockets the supervisor has already logged where it listens.
                config.log_started_message(listeners)
        finally:
            if sockets is None:
                for sock in listeners:  # the core holds its own dup of each descriptor
                    sock.close()
        self.started = True

    def _install_native_routes(self) -> None:
        from fasterapi_asgi import native
        from fasterapi_asgi.importer import import_from_string

        config = self.config
        routes = list(native.routes_of(config.raw_app)) if config.raw_app is not None else []
        if config.native:
            extra = import_from_string(config.native)
            if not isinstance(extra, native.Routes):
                raise TypeError(f"--native {config.native} is not a fasterapi_asgi.native.Routes")
            routes.extend(extra)
        if routes:
            count = native.install(self.core, routes, app=config.raw_app)
            logger.info("Serving %d native route%s from C++.", count, "" if count == 1 else "s")

    def _install_route_plans(self) -> Any:
        """Compile the app's FastAPI routes, flatten its stacks; returns what the core should call: the app's
        entry (route_plans.entry_for) or the app itself."""
        from fasterapi_asgi import route_plans

        app = self.config.loaded_app
        try:
            compiled, routes = route_plans.install(app, timed=self.config.stats)
        except Exception:  # noqa: BLE001 - plans are an optimisation: FastAPI's own handlers answer without them
            logger.warning("FastAPI routes not compiled; FastAPI's own handlers answer.", exc_info=True)
            return app
        if routes:
            logger.info("Compiled %d of %d FastAPI route%s.", compiled, routes, "" if routes == 1 else "s")
        try:
            flattened, apps = route_plans.flatten_stacks(app)
        except Exception:  # noqa: BLE001 - an optimisation: the app's own layers answer without it
            logger.warning("FastAPI middleware layers not flattened; they run as built.", exc_info=True)
            return app
        if apps:
            logger.info(
                "FastAPI's built-in middleware layers run flattened in %d of %d app%s.",
                flattened,
                apps,
                "" if apps == 1 else "s",
            )
        try:
            return route_plans.entry_for(app)
        except Exception:  # noqa: BLE001 - an optimisation: the app's own __call__ answers without it
            logger.warning("The app is entered through its own __call__.", exc_info=True)
            return app

    def _install_route_index(self) -> None:
        from fasterapi_asgi import route_index

        try:
            routers, routes, indexed = route_index.install(self.config.loaded_app)
        except Exception:  # noqa: BLE001 - the index is an optimisation: the app is served without it
            logger.warning("Route index not installed; routing stays the app's own scan.", exc_info=True)
            return
        if routers:
            logger.info(
                "Route index: %d of %d route%s in %d router%s indexed natively.",
                indexed,
                routes,
                "" if routes == 1 else "s",
                routers,
                "" if routers == 1 else "s",
            )

    async def main_loop(self) -> None:
        while not await self.on_tick():
            await asyncio.sleep(_TICK)

    async def on_tick(self) -> bool:
        if self.should_exit:
            return True
        if self._limit_max_requests is not None and self.core is not None:
            if self.core.stats().get("requests", 0) >= self._limit_max_requests:
                logger.info(
                    "Maximum request limit of %d exceeded. Terminating process.", self._limit_max_requests
                )
                return True
        return False

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        logger.info("Shutting down")
        core = self.core
        assert core is not None

        # Stop accepting, close idle keep-alive connections, let busy ones finish their response.
        core.shutdown()
        for sock in sockets or []:
            sock.close()
        await asyncio.sleep(_TICK)

        timeout = self.config.timeout_graceful_shutdown
        deadline = None if timeout is None else time.monotonic() + timeout
        if core.connections and not self.force_exit:
            logger.info("Waiting for connections to close. (CTRL+C to force quit)")
        while core.connections and not self.force_exit:
            if deadline is not None and time.monotonic() >= deadline:
                # uvicorn cancels the request tasks here. The core does not hand its request tasks to
                # Python: core.close() below closes the connections instead, so every in-flight
                # request sees http.disconnect and its further sends are dropped; no task is cancelled.
                logger.error(
                    "Closing %d connection(s) with %d request(s) in progress: "
                    "timeout graceful shutdown exceeded",
                    core.connections,
                    core.active_requests,
                )
                break
            await asyncio.sleep(_TICK)

        if self.config.stats:
            plan_stages = None
            if "fasterapi_asgi.route_plans" in sys.modules:
                plan_stages = sys.modules["fasterapi_asgi.route_plans"].stage_times()
            for line in format_stage_stats(core.stats(), plan_stages):
                logger.info(line)
        core.close()
        if sockets is None and self.config.uds and os.path.exists(self.config.uds):
            # Ours: remove it now, since a re-raised SIGTERM ends the process before run() could.
            os.remove(self.config.uds)
        # Handles are released in their close callbacks, which run on the next loop iterations.
        await asyncio.sleep(0)
        await asyncio.sleep(0)

        if not self.force_exit:
            await self.lifespan.shutdown()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signals can only be handled on the main thread (e.g. not when embedded in a thread).
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        # signal.signal rather than loop.add_signal_handler, so the previous handlers can be restored.
        original_handlers = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original_handlers.items():
                signal.signal(sig, handler)
        # Having shut down gracefully, give the previous handlers the signals we swallowed (LIFO):
        # a default SIGINT handler raises KeyboardInterrupt, a default SIGTERM ends the process.
        for captured_signal in reversed(self._captured_signals):
            signal.raise_signal(captured_signal)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._captured_signals.append(sig)
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


_APP_LABEL = "app (Python: framework + endpoint)"
_STAGES = (
    ("parse", "read callback + parse (native)"),
    ("route", "native route lookup"),
    ("native", "native handler"),
    ("scope", "scope building"),
    ("task_start", "Task start"),
    ("route_index", "route index lookup (native)"),
    ("app", _APP_LABEL),
    ("receive", "receive()"),
    ("send", "send() serialisation"),
    ("write", "write system call"),
)


def stage_breakdown(stats: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(label, CPU microseconds per request, calls per request) for each stage of ``--stats``, then the rest
    of the loop thread's CPU time (epoll and the read system call in libuv, uvloop, asyncio's Task stepping)
    and the total. The rows add up to the total."""
    requests = stats.get("requests", 0) or 1
    rows = []
    staged = 0
    for key, label in _STAGES:
        ns = stats.get(f"stage_{key}_ns", 0)
        staged += ns
        rows.append((label, ns / requests / 1000, stats.get(f"stage_{key}_count", 0) / requests))
    cpu = stats.get("cpu_ns", 0)
    rows.append(("loop, libuv, asyncio (the rest)", max(cpu - staged, 0) / requests / 1000, 0.0))
    rows.append(("total: loop thread CPU", cpu / requests / 1000, 0.0))
    return rows


def format_stage_stats(
    stats: dict[str, Any], plan_stages: list[tuple[str, int, int]] | None = None
) -> list[str]:
    """The ``--stats`` report: the loop thread's CPU time per request, by stage; under the app's row, the
    route plans' stages (``route_plans.stage_times()``) that were measured, a part of it (their response
    stage holds the send() and write stages)."""
    requests = stats.get("requests", 0)
    lines = [f"Where the CPU time went ({requests} requests; microseconds of loop-thread CPU per request):"]
    for label, us, calls in stage_breakdown(stats):
        per = f"  x {calls:.2f}/request" if calls else ""
        lines.append(f"  {label:<36} {us:9.2f} us{per}")
        if label == _APP_LABEL:
            for plan_label, ns, count in plan_stages or ():
                if count:
                    per = f"  x {count / (requests or 1):.2f}/request"
                    lines.append(f"    {plan_label:<34} {ns / (requests or 1) / 1000:9.2f} us{per}")
    tasks = stats.get("app_tasks", 0)
    start = "started eagerly" if stats.get("eager_start") else "scheduled by the loop"
    lines.append(
        f"  app Tasks: {tasks} {start}, {stats.get('app_done_in_first_step', 0)} answered in their first step"
    )
    return lines
