"""How a request's Task starts: on Python 3.12+ eagerly (the app's first step runs at once, inside the
server's read callback; a request answered without suspending never waits for the loop), on 3.10/3.11
scheduled by the loop. Either way the app sees what it sees under uvicorn: a real asyncio Task (the same one
across suspensions, a new one per request), contextvars isolated per request, errors reported as a 500 and
logged."""

from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import StartServer

APP = "task_app:app"


def test_current_task_and_contextvars_as_uvicorn(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, APP)
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        sequential = [client.get(f"/task?r{i}").json() for i in range(3)]

    def one(i: int) -> dict[str, object]:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            return dict(c.get(f"/task?c{i}").json())

    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(one, range(8)))
    for i, body in enumerate(sequential):
        assert body == {
            "is_task": True,
            "same_task": True,
            "inherited": "unset",
            "mine": f"r{i}",
            "new_task": True,
        }
    for i, body in enumerate(concurrent):
        assert body == {
            "is_task": True,
            "same_task": True,
            "inherited": "unset",
            "mine": f"c{i}",
            "new_task": True,
        }


def test_error_in_the_first_step_is_a_logged_500(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, APP)
    r = httpx.get(srv.url + "/boom-first-step", timeout=10)
    assert r.status_code == 500
    log = srv.wait_for_log("failed in the first step")
    assert "Exception in ASGI application" in log
    assert httpx.get(srv.url + "/plain", timeout=10).json() == {"ok": True}  # and the server goes on


def test_requests_answered_in_their_first_step(fresh_server: StartServer) -> None:
    """--stats counts the Tasks whose app had already answered when the Task was returned: on 3.12+ the
    requests that never suspend (all of /plain), on 3.10/3.11 none (the first step waits for the loop)."""
    srv = fresh_server("fasterapi", APP, "--stats")
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        for _ in range(20):
            assert client.get("/plain").status_code == 200
        assert client.get("/task").status_code == 200
    srv.stop()  # graceful: the --stats table is logged at shutdown
    found = re.search(
        r"app Tasks: (\d+) (started eagerly|scheduled by the loop), (\d+) answered in their first step",
        srv.log(),
    )
    assert found, srv.log_excerpt()
    started, how, first_step = int(found.group(1)), found.group(2), int(found.group(3))
    assert started == 21
    if sys.version_info >= (3, 12):
        assert how == "started eagerly"
        assert first_step == 20  # /task suspends in asyncio.sleep
    else:
        assert how == "scheduled by the loop"
        assert first_step == 0


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager Task start is Python 3.12+")
def test_eager_start_keeps_a_user_task_factory(fresh_server: StartServer) -> None:
    """An app that installs a task factory gets it: eager_app installs asyncio's eager factory itself."""
    srv = fresh_server("fasterapi", "eager_app:app", "--lifespan", "on", "--stats")
    assert httpx.get(srv.url + "/", timeout=10).status_code == 200
    srv.stop()  # graceful: the --stats table is logged at shutdown
    assert "scheduled by the loop, " in srv.log()  # the server left Task creation to the factory
