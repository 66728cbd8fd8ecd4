"""``--workers N``: the parent binds the socket once, N spawned children serve it.

The parent
- restarts a child that dies, and gives up when a child exits with the startup-failure status (a broken app,
  bind or lifespan would fail the same way on every restart);
- health-checks every child that has finished its startup: a ping over a pipe must be answered within
  ``--timeout-worker-healthcheck`` seconds, and the answer comes from the child's event loop, so a child
  whose loop is blocked (a synchronous call in a request handler) is detected. It is replaced at once and
  sent SIGTERM, then SIGKILL if it has not exited after the same timeout again. A child still starting up
  (importing the app, lifespan startup) answers from a thread and is never killed for being slow;
- on SIGINT/SIGTERM sends SIGTERM to every child and waits for each (health-checking them meanwhile);
- on SIGHUP replaces the children one by one, each new one serving before the old one is stopped;
- on SIGTTIN adds a child, on SIGTTOU removes one (never the last).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection
from types import FrameType

from fasterapi_asgi.config import STARTUP_FAILURE, Config
from fasterapi_asgi.logging import style
from fasterapi_asgi.server import Server
from fasterapi_asgi.supervisors._subprocess import spawn_context, spawn_process

_SIGNAL_NAMES = ("SIGINT", "SIGTERM", "SIGHUP", "SIGTTIN", "SIGTTOU")
HANDLED_SIGNALS = tuple(getattr(signal, name) for name in _SIGNAL_NAMES if hasattr(signal, name))

# Seconds between two rounds of supervision (signals, dead children, health checks).
_TICK = 0.25
# Seconds between a child's answer to a ping and the next ping.
_PING_INTERVAL = 1.0

# Messages on a child's health pipe. Parent -> child: PING. Child -> parent: STARTING (answered by the child's
# health thread: the server has not finished startup), SERVING (answered by the child's event loop), and once,
# unasked, STARTED (sent from the loop when startup completes).
PING = b"p"
STARTING = b"w"
SERVING = b"s"
STARTED = b"S"

logger = logging.getLogger("uvicorn.error")


# -- the child's side ----------------------------------------------------------------------------------------


class _HealthAnswers:
    """Answers the parent's pings: from a thread while the server starts, then only from the event loop."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # the thread and the loop both write to the pipe

    def send(self, message: bytes) -> None:
        with self._lock:
            try:
                self.conn.send_bytes(message)
            except OSError:
                pass  # the parent is gone or has closed our pipe

    def serving(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.send(STARTED)

    def answer_pings(self) -> None:
        while True:
            try:
                self.conn.recv_bytes()
            except (EOFError, OSError):
                return
            loop = self.loop
            if loop is None:
                self.send(STARTING)
                continue
            try:
                loop.call_soon_threadsafe(self.send, SERVING)
            except RuntimeError:
                return  # the loop is closed: the process is exiting; a child that lingers is killed


class _WorkerServer(Server):
    def __init__(self, config: Config, health: _HealthAnswers) -> None:
        super().__init__(config)
        self._health = health

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._health.serving(asyncio.get_running_loop())


def _serve_worker(config: Config, sockets: list[socket.socket], health_conn: Connection) -> None:
    health = _HealthAnswers(health_conn)
    threading.Thread(target=health.answer_pings, name="fasterapi-asgi-health", daemon=True).start()
    _WorkerServer(config, health).run(sockets=sockets)


# -- the parent's side ---------------------------------------------------------------------------------------


class Worker:
    """One child process and the parent's end of its health pipe."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        self.conn, child_conn = spawn_context.Pipe()
        kwargs = {"config": config, "sockets": sockets, "health_conn": child_conn}
        self.process = spawn_process(config, _serve_worker, kwargs)
        self._child_conn: Connection | None = child_conn
        self.started = False  # the child has reported the end of its startup
        self.ping_sent: float | None = None  # when the unanswered ping was sent
        self.answered = 0.0  # when the last answer arrived
        self.kill_at: float | None = None  # after SIGTERM: when to send SIGKILL (None: wait)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    def start(self) -> None:
        self.process.start()
        assert self._child_conn is not None
        self._child_conn.close()  # the child has its own copy now
        self._child_conn = None

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def read_answers(self, now: float) -> None:
        try:
            while self.conn.poll():
                message = self.conn.recv_bytes()
                if message == STARTED:
                    self.started = True
                    if self.ping_sent is not None:
                        self.ping_sent = max(self.ping_sent, now)  # the loop's answer is due from now on
                else:
                    self.ping_sent = None
                    self.answered = now
        except (EOFError, OSError):
            pass  # the child has exited; is_alive() tells

    def ping(self, now: float) -> None:
        if self.ping_sent is not None or now - self.answered < _PING_INTERVAL:
            return
        try:
            self.conn.send_bytes(PING)
        except OSError:
            return
        self.ping_sent = now

    def unanswered_for(self, now: float) -> float:
        """Seconds a ping to this started child has waited for its event loop (0: none waiting)."""
        if not self.started or self.ping_sent is None:
            return 0.0
        return now - self.ping_sent

    def terminate(self, kill_after: float | None = None) -> None:
        if self.process.exitcode is None and self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                return  # it has just exited
            logger.info("Terminated child process [%s]", self.pid)
            if kill_after is not None:
                self.kill_at = time.monotonic() + kill_after

    def kill(self) -> None:
        if self.process.exitcode is None:
            self.process.kill()

    def join(self) -> None:
        self.process.join()
        self.conn.close()


class Multiprocess:
    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        self.config = config
        self.sockets = sockets
        self.processes_num = config.workers
        self.processes: list[Worker] = []
        self.retiring: list[Worker] = []  # sent SIGTERM, not yet reaped
        self.should_exit = threading.Event()
        self.startup_failed = False
        # <= 0 turns the health check off (uvicorn's value 0 would fail every child).
        self.healthcheck_timeout = float(config.timeout_worker_healthcheck)
        # Signal handlers only append here (no lock is taken in a handler); the main loop acts on them.
        self._signals: list[int] = []
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signals.append(sig)

    def _start_worker(self) -> Worker:
        worker = Worker(self.config, self.sockets)
        worker.start()
        return worker

    def run(self) -> None:
        pid = os.getpid()
        logger.info(
            "Started parent process [%d]",
            pid,
            extra={"color_message": "Started parent process [" + style("%d", fg="cyan", bold=True) + "]"},
        )
        self.processes = [self._start_worker() for _ in range(self.processes_num)]

        while True:
            self.handle_signals()
            if self.should_exit.is_set():
                break
            self.keep_subprocess_alive()
            if self.should_exit.is_set():
                break
            self.should_exit.wait(_TICK)

        self.terminate_all()
        self.join_all()
        logger.info(
            "Stopping parent process [%d]",
            pid,
            extra={"color_message": "Stopping parent process [" + style("%d", fg="cyan", bold=True) + "]"},
        )

    # -- signals --------------------------------------------------------------------------------------------

    def handle_signals(self) -> None:
        while self._signals:
            name = signal.Signals(self._signals.pop(0)).name
            if name in ("SIGINT", "SIGTERM"):
                logger.info("Received %s, exiting.", name)
                self.should_exit.set()
            elif name == "SIGHUP":
                self.restart_all()
            elif name == "SIGTTIN":
                self.handle_ttin()
            elif name == "SIGTTOU":
                self.handle_ttou()

    def _stop_requested(self) -> bool:
        """While a long action runs (SIGHUP's restarts): act on SIGINT/SIGTERM now, leave other signals."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            while sig in self._signals:
                self._signals.remove(sig)
                logger.info("Received %s, exiting.", signal.Signals(sig).name)
                self.should_exit.set()
        return self.should_exit.is_set()

    def handle_ttin(self) -> None:
        logger.info("Received SIGTTIN, increasing the number of processes.")
        self.processes_num += 1
        self.processes.append(self._start_worker())

    def handle_ttou(self) -> None:
        logger.info("Received SIGTTOU, decreasing number of processes.")
        if self.processes_num <= 1:
            logger.info("Already reached one process, cannot decrease the number of processes anymore.")
            return
        self.processes_num -= 1
        worker = self.processes.pop()
        worker.terminate()  # a graceful stop, however long its connections take
        self.retiring.append(worker)

    # -- supervision ----------------------------------------------------------------------------------------

    def keep_subprocess_alive(self) -> None:
        now = time.monotonic()
        for idx, worker in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            worker.read_answers(now)
            if not worker.is_alive():
                worker.join()
                if worker.exitcode == STARTUP_FAILURE:
                    logger.error(
                        "Child process [%s] failed to start, stopping the parent process.", worker.pid
                    )
                    self.startup_failed = True
                    self.should_exit.set()
                    return
                logger.info("Child process [%s] died", worker.pid)
                self.processes[idx] = self._start_worker()
                continue
            if self._is_unresponsive(worker, now):
                logger.error(
                    "Child process [%s] did not answer the health check within %g seconds (its event loop "
                    "is blocked); replacing it.",
                    worker.pid,
                    self.healthcheck_timeout,
                )
                worker.terminate(kill_after=self.healthcheck_timeout)
                self.retiring.append(worker)
                self.processes[idx] = self._start_worker()
                continue
            if self.healthcheck_timeout > 0:
                worker.ping(now)
        self._reap_retiring(now)

    def _is_unresponsive(self, worker: Worker, now: float) -> bool:
        return 0 < self.healthcheck_timeout < worker.unanswered_for(now)

    def _reap_retiring(self, now: float) -> None:
        for worker in list(self.retiring):
            worker.read_answers(now)  # keep its pipe drained
            if not worker.is_alive():
                worker.join()
                self.retiring.remove(worker)
            elif worker.kill_at is not None and now >= worker.kill_at:
                logger.error(
                    "Child process [%s] did not exit within %g seconds of SIGTERM; killing it (SIGKILL).",
                    worker.pid,
                    self.healthcheck_timeout,
                )
                worker.kill()
                worker.kill_at = None

    def restart_all(self) -> None:
        """SIGHUP: replace each child, the new one serving (its startup complete) before the old one stops."""
        logger.info("Received SIGHUP, restarting processes.")
        for idx, old in enumerate(list(self.processes)):
            if self._stop_requested():
                return
            new = self._start_worker()
            if not self._wait_until_ready(new):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    logger.error(
                        "New child process [%s] was not ready in time; keeping worker [%s] and aborting the "
                        "restart.",
                        new.pid,
                        old.pid,
                    )
                return
            self.processes[idx] = new
            old.terminate()
            self.retiring.append(old)

    def _wait_until_ready(self, worker: Worker) -> bool:
        """Whether ``worker`` completes its startup within the health-check timeout (check off: True)."""
        if self.healthcheck_timeout <= 0:
            return True
        deadline = time.monotonic() + self.healthcheck_timeout
        while time.monotonic() < deadline:
            if self._stop_requested() or not worker.is_alive():
                return False
            worker.read_answers(time.monotonic())
            if worker.started:
                return True
            time.sleep(0.05)
        return False

    # -- stopping -------------------------------------------------------------------------------------------

    def terminate_all(self) -> None:
        for worker in self.processes:
            worker.terminate()

    def join_all(self) -> None:
        """Wait for every child to exit; one whose event loop stops answering meanwhile is killed."""
        waiting = self.processes + self.retiring
        for worker in waiting:
            logger.info("Waiting for child process [%s]", worker.pid)
        self.retiring = []
        while waiting:
            now = time.monotonic()
            for worker in list(waiting):
                worker.read_answers(now)
                if not worker.is_alive():
                    worker.join()
                    waiting.remove(worker)
                    continue
                late = self._is_unresponsive(worker, now)
                if late or (worker.kill_at is not None and now >= worker.kill_at):
                    logger.error(
                        "Child process [%s] is not answering while it shuts down; killing it (SIGKILL).",
                        worker.pid,
                    )
                    worker.kill()
                    worker.kill_at = None
                    worker.started = False  # killed once
                elif self.healthcheck_timeout > 0:
                    worker.ping(now)
            if waiting:
                time.sleep(0.05)
