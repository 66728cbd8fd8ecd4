"""A gunicorn worker class: run fasterapi-asgi under gunicorn's process manager.

    gunicorn -k fasterapi_asgi.workers.FasterAPIWorker -w 4 -b 0.0.0.0:8000 main:app

gunicorn binds the sockets and supervises the workers (restarts, ``--max-requests``, ``HUP`` reloads,
timeouts); each worker runs one fasterapi-asgi server, with its native core on its own uvloop loop, on the
inherited sockets.
Requires ``gunicorn`` (not a dependency of fasterapi-asgi).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from fasterapi_asgi.config import Config
from fasterapi_asgi.server import Server

__all__ = ["FasterAPIAsyncioWorker", "FasterAPIWorker"]


class FasterAPIWorker(Worker):  # type: ignore[misc]
    """gunicorn worker serving an ASGI app with fasterapi-asgi (uvloop when available)."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, source in (
            ("uvicorn.error", self.log.error_log),
            ("uvicorn.access", self.log.access_log),
        ):
            logger = logging.getLogger(name)
            logger.handlers = source.handlers
            logger.setLevel(source.level)
            logger.propagate = False
        config_kwargs: dict[str, Any] = {
            "app": None,
            "log_config": None,
            "timeout_keep_alive": self.cfg.keepalive,
            "limit_max_requests": self.max_requests or None,
            "forwarded_allow_ips": self.cfg.forwarded_allow_ips,
        }
        if self.cfg.is_ssl:  # gunicorn's --certfile/--keyfile/...: served by the core (as uvicorn's worker)
            options = self.cfg.ssl_options
            config_kwargs.update(
                ssl_keyfile=options.get("keyfile"),
                ssl_certfile=options.get("certfile"),
                ssl_keyfile_password=options.get("password"),
                ssl_version=options.get("ssl_version"),
                ssl_cert_reqs=options.get("cert_reqs"),
                ssl_ca_certs=options.get("ca_certs"),
                ssl_ciphers=options.get("ciphers"),
            )
        if self.cfg.settings["backlog"].value:
            config_kwargs["backlog"] = self.cfg.settings["backlog"].value
        config_kwargs.update(self.CONFIG_KWARGS)
        self.config = Config(**config_kwargs)

    def init_signals(self) -> None:
        # Leave SIGTERM/SIGINT to the server's own graceful-shutdown handlers (as uvicorn's worker does).
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    async def _heartbeat(self) -> None:
        # gunicorn kills a worker that does not notify within --timeout seconds.
        interval = max(self.timeout / 2, 0.5) if self.timeout else 1.0
        while True:
            self.notify()
            await asyncio.sleep(interval)

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = Server(config=self.config)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGQUIT, self.handle_exit, signal.SIGQUIT, None)
        heartbeat = loop.create_task(self._heartbeat())
        try:
            await server.serve(sockets=self.sockets)
        finally:
            heartbeat.cancel()
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def run(self) -> None:
        factory = self.config.get_loop_factory()
        if factory is None:
            asyncio.run(self._serve())
            return
        loop = factory()
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()


class FasterAPIAsyncioWorker(FasterAPIWorker):
    """The same on the standard asyncio loop (the core embeds its own libuv loop)."""

    CONFIG_KWARGS = {"loop": "asyncio"}
