"""Lifespan: the protocol driver in-process, and exit codes, state and shutdown through real servers
(fasterapi-asgi and uvicorn from the same test body)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import KINDS, ServerProcess, launch_server

from fasterapi_asgi import Config
from fasterapi_asgi.lifespan import LifespanOff, LifespanOn

STARTUP_FAILURE = 3


@pytest.fixture(autouse=True)
def capture_server_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Let caplog see INFO records even if an earlier test applied LOGGING_CONFIG (propagate=False)."""
    package_logger = logging.getLogger("uvicorn")
    saved = package_logger.propagate
    package_logger.propagate = True
    caplog.set_level(logging.INFO)
    yield
    package_logger.propagate = saved


def make_lifespan(app: Any, mode: str = "auto") -> LifespanOn:
    config = Config(app, log_config=None, proxy_headers=False, lifespan=mode)  # type: ignore[arg-type]
    config.load()
    return LifespanOn(config)


def run_lifespan(app: Any, mode: str = "auto") -> tuple[LifespanOn, list[str]]:
    events: list[str] = []

    async def main() -> LifespanOn:
        lifespan = make_lifespan(app, mode)
        await lifespan.startup()
        events.append(f"startup should_exit={lifespan.should_exit}")
        if not lifespan.should_exit:
            await lifespan.shutdown()
            events.append(f"shutdown should_exit={lifespan.should_exit}")
        return lifespan

    return asyncio.run(main()), events


async def good_app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "lifespan"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.0"}
    assert (await receive())["type"] == "lifespan.startup"
    scope["state"]["db"] = "connected"
    await send({"type": "lifespan.startup.complete"})
    assert (await receive())["type"] == "lifespan.shutdown"
    scope["state"]["db"] = "closed"
    await send({"type": "lifespan.shutdown.complete"})


async def failing_startup_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "no database"})


async def failing_shutdown_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})


async def no_lifespan_app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http", "lifespan not supported"


def test_startup_and_shutdown_share_state(caplog: pytest.LogCaptureFixture) -> None:
    lifespan, events = run_lifespan(good_app)
    assert events == ["startup should_exit=False", "shutdown should_exit=False"]
    assert lifespan.state == {"db": "closed"}
    for line in ("Waiting for application startup.", "Application startup complete.",
                 "Waiting for application shutdown.", "Application shutdown complete."):  # fmt: skip
        assert line in caplog.text


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_startup_failed(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    lifespan, events = run_lifespan(failing_startup_app, mode)
    assert events == ["startup should_exit=True"]
    assert "no database" in caplog.text
    assert "Application startup failed. Exiting." in caplog.text


def test_shutdown_failed(caplog: pytest.LogCaptureFixture) -> None:
    _, events = run_lifespan(failing_shutdown_app)
    assert events == ["startup should_exit=False", "shutdown should_exit=True"]
    assert "flush failed" in caplog.text
    assert "Application shutdown failed. Exiting." in caplog.text


def test_auto_tolerates_an_app_without_lifespan(caplog: pytest.LogCaptureFixture) -> None:
    lifespan, events = run_lifespan(no_lifespan_app, "auto")
    assert events == ["startup should_exit=False", "shutdown should_exit=False"]
    assert lifespan.error_occurred
    assert "ASGI 'lifespan' protocol appears unsupported." in caplog.text
    assert "Traceback" not in caplog.text


def test_on_requires_lifespan_support(caplog: pytest.LogCaptureFixture) -> None:
    _, events = run_lifespan(no_lifespan_app, "on")
    assert events == ["startup should_exit=True"]
    assert "Exception in 'lifespan' protocol" in caplog.text
    assert "AssertionError: lifespan not supported" in caplog.text


def test_lifespan_off_driver() -> None:
    async def main() -> LifespanOff:
        lifespan = LifespanOff(Config(good_app, log_config=None))
        await lifespan.startup()
        await lifespan.shutdown()
        return lifespan

    lifespan = asyncio.run(main())
    assert lifespan.state == {}
    assert lifespan.should_exit is False


def test_asgi2_lifespan_scope_version() -> None:
    seen: list[Any] = []

    class App:
        def __init__(self, scope: Any) -> None:
            seen.append(scope["asgi"])

        async def __call__(self, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})

    run_lifespan(App)
    assert seen == [{"version": "2.0", "spec_version": "2.0"}]


# -- through real servers ------------------------------------------------------------------------------

STATE_APP = """
import json, os

MARKERS = os.environ["LIFESPAN_MARKER_DIR"]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["shared"] = []
                scope["state"]["name"] = "from-lifespan"
                await send({"type": "lifespan.startup.complete"})
            else:
                open(os.path.join(MARKERS, "shutdown"), "w").close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    state = scope.get("state")
    body = json.dumps({"state": state}).encode()
    if state is not None:
        state["added-by-request"] = True   # top level: must not leak into the next request (shallow copy)
        state.get("shared", []).append(1)          # nested: shared, as in uvicorn
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
"""

NO_LIFESPAN_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        raise RuntimeError("this app does not do lifespan")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
"""


@pytest.fixture
def apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "apps"
    directory.mkdir()
    (directory / "state_app.py").write_text(STATE_APP)
    (directory / "no_lifespan_app.py").write_text(NO_LIFESPAN_APP)
    (directory / "refuse_app.py").write_text(
        textwrap.dedent(
            """
            async def app(scope, receive, send):
                await receive()
                await send({"type": "lifespan.startup.failed", "message": "REFUSED-BY-APP"})
            """
        )
    )
    monkeypatch.setenv("LIFESPAN_MARKER_DIR", str(tmp_path))
    return directory


def get_json(server: ServerProcess, path: str = "/") -> Any:
    with httpx.Client(trust_env=False, timeout=10) as client:
        return json.loads(client.get(server.url + path).text)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("app", "flags", "message"),
    [
        ("refuse_app:app", (), "REFUSED-BY-APP"),
        ("no_lifespan_app:app", ("--lifespan", "on"), "Exception in 'lifespan' protocol"),
    ],
    ids=["startup-failed", "on-without-support"],
)
def test_startup_failure_exits_3(
    kind: str, app: str, flags: tuple[str, ...], message: str, apps: Path
) -> None:
    server = launch_server(kind, app, ("--app-dir", str(apps), *flags), apps)
    try:
        assert server.wait(timeout=30) == STARTUP_FAILURE
    finally:
        server.stop()
    log = server.log()
    assert message in log
    assert "ERROR:    Application startup failed. Exiting." in log
    assert "running on" not in log


@pytest.mark.parametrize("kind", KINDS)
def test_state_reaches_requests_as_a_shallow_copy(
    kind: str, fresh_server: Callable[..., ServerProcess], apps: Path, tmp_path: Path
) -> None:
    server = fresh_server(kind, "state_app:app", "--app-dir", str(apps))
    first = get_json(server)["state"]
    second = get_json(server)["state"]
    assert first == {"shared": [], "name": "from-lifespan"}
    assert second == {"shared": [1], "name": "from-lifespan"}
    server.signal(signal.SIGTERM)
    server.wait(timeout=10)
    assert (tmp_path / "shutdown").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_auto_serves_an_app_without_lifespan(
    kind: str, fresh_server: Callable[..., ServerProcess], apps: Path
) -> None:
    server = fresh_server(kind, "no_lifespan_app:app", "--app-dir", str(apps))
    with httpx.Client(trust_env=False, timeout=10) as client:
        assert client.get(server.url).text == "ok"
    log = server.log()
    assert "ASGI 'lifespan' protocol appears unsupported." in log
    assert "Traceback" not in log


@pytest.mark.parametrize("kind", KINDS)
def test_lifespan_off_server(
    kind: str, fresh_server: Callable[..., ServerProcess], apps: Path, tmp_path: Path
) -> None:
    server = fresh_server(kind, "state_app:app", "--app-dir", str(apps), "--lifespan", "off")
    state = get_json(server)["state"]
    assert state == {}  # no lifespan ran; the scope still carries an (empty) state, as in uvicorn
    server.signal(signal.SIGTERM)
    server.wait(timeout=10)
    assert not (tmp_path / "shutdown").exists()
    assert "Waiting for application startup." not in server.log()
