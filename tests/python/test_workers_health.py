"""``--workers``: the health check answered from each worker's event loop (a blocked loop gets its worker
replaced), slow startups left alone, and SIGTTIN/SIGTTOU/SIGHUP changing the set of workers.

Real supervisor and worker processes; workers are counted as the supervisor's ``multiprocessing`` spawn
children (psutil), and each request reports the pid that served it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from harness import KINDS, ServerProcess, launch_server, wait_accepting

APP = """
import asyncio, os, time

MARKERS = os.environ["HEALTH_MARKERS"]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                time.sleep(float(os.environ.get("HEALTH_STARTUP_SLEEP", "0")))  # blocks the loop: slow start
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/block":
        with open(os.path.join(MARKERS, f"blocked-{os.getpid()}"), "w"):
            pass
        time.sleep(60)  # a synchronous call in a handler: the whole event loop stops
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "app"
    path.mkdir()
    (path / "health_app.py").write_text(APP)
    monkeypatch.setenv("HEALTH_MARKERS", str(tmp_path))
    return path


@pytest.fixture
def workers(tmp_path: Path, app_dir: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(kind: str, *flags: str) -> ServerProcess:
        server = launch_server(kind, "health_app:app", ("--app-dir", str(app_dir), *flags), tmp_path)
        started.append(server)
        wait_accepting(server, timeout=30)
        return server

    yield start
    for server in started:
        server.stop()
        for child in worker_processes(server, include_exiting=True):
            child.kill()  # only if the supervisor could not stop it: nothing outlives the test


def worker_processes(server: ServerProcess, include_exiting: bool = False) -> list[psutil.Process]:
    """The supervisor's live worker children (not multiprocessing's resource tracker)."""
    try:
        children = psutil.Process(server.proc.pid).children()
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "spawn_main" not in " ".join(child.cmdline()):
                continue
            if include_exiting or child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, server: ServerProcess) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{server.log_excerpt()}")
        time.sleep(0.05)


def pid_of_answer(server: ServerProcess, timeout: float = 2.0) -> int | None:
    try:
        with httpx.Client(trust_env=False, timeout=timeout) as client:
            response = client.get(f"{server.url}/")
    except httpx.HTTPError:
        return None
    return int(response.text) if response.status_code == 200 else None


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def worker_count_is(server: ServerProcess, expected: int) -> Callable[[], bool]:
    return lambda: len(worker_processes(server)) == expected


def test_blocked_event_loop_gets_its_worker_replaced(
    workers: Callable[..., ServerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Startup blocks the loop for 2.5 s, more than the 1 s health-check timeout: a starting worker is not
    # killed for that (its answers come from a thread until the server has started).
    monkeypatch.setenv("HEALTH_STARTUP_SLEEP", "2.5")
    server = workers("fasterapi", "--workers", "2", "--timeout-worker-healthcheck", "1")
    wait_until(lambda: server.log().count("Application startup complete.") == 2, 20, "both startups", server)
    original = {child.pid for child in worker_processes(server)}
    assert len(original) == 2
    assert "health check" not in server.log()

    begin = time.monotonic()
    with httpx.Client(trust_env=False, timeout=20) as client, pytest.raises(httpx.HTTPError):
        client.get(f"{server.url}/block")  # the blocked worker is killed with the request in it
    # Ping interval 1 s + timeout 1 s + SIGTERM grace 1 s + supervision ticks: far from the 60 s sleep.
    assert time.monotonic() - begin < 6
    markers = list(tmp_path.glob("blocked-*"))
    assert len(markers) == 1
    blocked = int(markers[0].name.split("-")[1])
    assert blocked in original

    log = server.log()
    assert (
        f"Child process [{blocked}] did not answer the health check within 1 seconds (its event loop is "
        "blocked); replacing it." in log
    )
    assert f"Child process [{blocked}] did not exit within 1 seconds of SIGTERM; killing it (SIGKILL)." in log
    # SIGKILL is delivered asynchronously: the killed child is gone (or a zombie) within moments.
    wait_until(lambda: _gone(blocked), 3, f"child {blocked} to die", server)
    # The replacement serves; the healthy worker was left alone.
    wait_until(worker_count_is(server, 2), 15, "two workers again", server)
    current = {child.pid for child in worker_processes(server)}
    assert blocked not in current
    assert len(current & original) == 1
    answered = {pid_of_answer(server) for _ in range(8)}
    assert None not in answered
    assert answered <= current
    assert server.log().count("did not answer the health check") == 1


@pytest.mark.parametrize("kind", KINDS)
def test_sigttin_adds_and_sigttou_removes_workers(workers: Callable[..., ServerProcess], kind: str) -> None:
    server = workers(kind, "--workers", "2")
    wait_until(worker_count_is(server, 2), 20, "two workers", server)

    server.signal(signal.SIGTTIN)
    server.wait_for_log("Received SIGTTIN, increasing the number of processes.")
    wait_until(worker_count_is(server, 3), 20, "a third worker", server)
    wait_until(lambda: server.log().count("Application startup complete.") == 3, 20, "its startup", server)

    for expected in (2, 1):
        server.signal(signal.SIGTTOU)
        wait_until(worker_count_is(server, expected), 20, f"{expected} worker(s)", server)
    assert server.log().count("Received SIGTTOU, decreasing number of processes.") == 2

    server.signal(signal.SIGTTOU)  # never below one
    server.wait_for_log("Already reached one process, cannot decrease the number of processes anymore.")
    time.sleep(0.6)
    assert len(worker_processes(server)) == 1
    (last,) = worker_processes(server)
    assert pid_of_answer(server) == last.pid
    assert server.alive()


def test_sighup_replaces_every_worker_without_a_gap(workers: Callable[..., ServerProcess]) -> None:
    server = workers("fasterapi", "--workers", "2")
    wait_until(worker_count_is(server, 2), 20, "two workers", server)
    wait_until(lambda: server.log().count("Application startup complete.") == 2, 20, "both startups", server)
    original = {child.pid for child in worker_processes(server)}

    server.signal(signal.SIGHUP)
    server.wait_for_log("Received SIGHUP, restarting processes.")
    failures = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if pid_of_answer(server) is None:
            failures += 1
        current = {child.pid for child in worker_processes(server)}
        if len(current) == 2 and not current & original:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"workers not replaced:\n{server.log_excerpt()}")
    assert failures == 0
    for pid in original:
        assert f"Terminated child process [{pid}]" in server.log()
