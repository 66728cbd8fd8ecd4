"""``--workers N``: the parent binds the socket once, N spawned children serve it.

The parent restarts children that die, stops everything on SIGINT/SIGTERM (SIGTERM to every child,
then waits for each), and gives up when a child exits with the startup-failure status, because
a broken app, bind or lifespan would fail the same way on every restart.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from multiprocessing.context import SpawnProcess

from fasterapi_asgi.config import STARTUP_FAILURE, Config
from fasterapi_asgi.logging import style

multiprocessing.allow_connection_pickling()
_spawn = multiprocessing.get_context("spawn")

logger = logging.getLogger("uvicorn.error")


def _worker_main(config: Config, sockets: list[socket.socket], stdin_fileno: int | None) -> None:
    """Entry point of a spawned child: logging is set up again, then a normal Server runs."""
    if stdin_fileno is not None:
        sys.stdin = os.fdopen(stdin_fileno)
    config.configure_logging()
    from fasterapi_asgi.server import Server

    try:
        Server(config).run(sockets=sockets)
    except KeyboardInterrupt:
        pass  # the parent asked us to stop; no traceback


def _stdin_fileno() -> int | None:
    try:
        return sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return None


class Multiprocess:
    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        self.config = config
        self.sockets = sockets
        self.processes_num = config.workers
        self.processes: list[SpawnProcess] = []
        self.should_exit = threading.Event()
        self.startup_failed = False
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle_signal)

    def _handle_signal(self, sig: int, frame: object) -> None:
        if sig == signal.SIGHUP:
            self._restart_requested = True
            return
        logger.info("Received %s, exiting.", signal.Signals(sig).name)
        self.should_exit.set()

    def _start_process(self) -> SpawnProcess:
        process = _spawn.Process(
            target=_worker_main,
            kwargs={"config": self.config, "sockets": self.sockets, "stdin_fileno": _stdin_fileno()},
        )
        process.start()
        return process

    def run(self) -> None:
        pid = os.getpid()
        logger.info(
            "Started parent process [%d]",
            pid,
            extra={"color_message": "Started parent process [" + style("%d", fg="cyan", bold=True) + "]"},
        )
        self._restart_requested = False
        self.processes = [self._start_process() for _ in range(self.processes_num)]

        while not self.should_exit.wait(0.5):
            if self._restart_requested:
                self._restart_requested = False
                self.restart_all()
            self.keep_subprocess_alive()

        self.terminate_all()
        self.join_all()
        logger.info(
            "Stopping parent process [%d]",
            pid,
            extra={"color_message": "Stopping parent process [" + style("%d", fg="cyan", bold=True) + "]"},
        )

    def keep_subprocess_alive(self) -> None:
        for idx, process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            if process.is_alive():
                continue
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logger.error("Child process [%s] failed to start, stopping the parent process.", process.pid)
                self.startup_failed = True
                self.should_exit.set()
                return
            logger.info("Child process [%s] died", process.pid)
            self.processes[idx] = self._start_process()

    def restart_all(self) -> None:
        """SIGHUP: replace the children one by one (each new child starts before the old one stops)."""
        logger.info("Received SIGHUP, restarting processes.")
        for idx, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            self.processes[idx] = self._start_process()
            self._terminate(old)
            old.join()

    def _terminate(self, process: SpawnProcess) -> None:
        if process.exitcode is None and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
            logger.info("Terminated child process [%s]", process.pid)

    def terminate_all(self) -> None:
        for process in self.processes:
            self._terminate(process)

    def join_all(self) -> None:
        for process in self.processes:
            logger.info("Waiting for child process [%s]", process.pid)
            process.join()
