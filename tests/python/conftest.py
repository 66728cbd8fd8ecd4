"""Fixtures for the HTTP behaviour tests.

- ``kind``: "fasterapi" or "uvicorn" (module-scoped parameter; the ids make ``-k uvicorn`` work).
- ``server``: the raw test app served by ``kind`` — for behaviour both servers must share.
- ``fasterapi``: the raw test app served by fasterapi-asgi only — for behaviour uvicorn lacks.
- ``start_server(kind, app, *flags)``: a server for any app and flags, shared within the module.
- ``fresh_server(kind, app, *flags)``: a server owned by one test (for signals and exit codes).

The fasterapi parametrisation is never skipped: if fasterapi-asgi cannot start, its tests fail.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import KINDS, ServerPool, ServerProcess, start_server  # noqa: E402

StartServer = Callable[..., ServerProcess]


@pytest.fixture(scope="module")
def server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory.mktemp("servers"))
    yield pool
    pool.close()


# Named "start_server" for the tests; the function name avoids shadowing harness.start_server.
@pytest.fixture(scope="module", name="start_server")
def _start_server(server_pool: ServerPool) -> StartServer:
    return server_pool.get


@pytest.fixture(scope="module", params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module", params=["fasterapi"])
def fasterapi_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# Function-scoped lookups into the module's pool: a server that died is restarted for the next
# test instead of failing every later test of the module.
@pytest.fixture
def server(kind: str, server_pool: ServerPool) -> ServerProcess:
    return server_pool.get(kind, "raw_app:app")


@pytest.fixture
def fasterapi(fasterapi_kind: str, server_pool: ServerPool) -> ServerProcess:
    return server_pool.get(fasterapi_kind, "raw_app:app")


@pytest.fixture(autouse=True)
def _shared_servers_survive(server_pool: ServerPool) -> Iterator[None]:
    """Fail the test during which a shared server process died (crash, abort, unexpected exit)."""
    yield
    dead = server_pool.reap_dead()
    if dead:
        report = "\n\n".join(
            f"{srv.kind} {srv.app} {' '.join(srv.flags)} exited with code {srv.proc.returncode}:\n"
            + srv.log_excerpt(3000)
            for srv in dead
        )
        pytest.fail(f"server process died during this test:\n{report}", pytrace=False)


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[StartServer]:
    started: list[ServerProcess] = []

    def start(kind: str, app: str = "raw_app:app", *flags: str) -> ServerProcess:
        srv = start_server(kind, app, tuple(flags), tmp_path)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
