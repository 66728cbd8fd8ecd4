"""The command line, end to end: real server processes (fasterapi-asgi and uvicorn from the same test
body where both must behave alike), real sockets.

Apps are written to the test's tmp_path and served with ``--app-dir tmp_path``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from harness import KINDS, PACKAGE_PARENT, REPO_ROOT, ServerProcess, free_port, launch_server, wait_accepting

STARTUP_FAILURE = 3

# One app for the CLI tests.  Markers (files) in $ORCH_MARKER_DIR show what ran and when.
ORCH_APP = """
import asyncio, json, os

MARKERS = os.environ.get("ORCH_MARKER_DIR")


def marker(name, text=""):
    if MARKERS:
        with open(os.path.join(MARKERS, name), "w") as f:
            f.write(text)


async def respond(send, body, status=200, content_type=b"text/plain"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["name"] = "orch"
                marker("startup")
                await send({"type": "lifespan.startup.complete"})
            else:
                marker("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if scope["root_path"] and path.startswith(scope["root_path"]):
        path = path[len(scope["root_path"]):]  # uvicorn puts root_path in front of path
    query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    if path == "/env":
        await respond(send, os.environ.get(query["name"], "<unset>").encode())
    elif path == "/scope":
        payload = {"client": scope["client"], "scheme": scope["scheme"], "root_path": scope["root_path"],
                   "path": scope["path"], "pid": os.getpid()}
        await respond(send, json.dumps(payload).encode(), content_type=b"application/json")
    elif path == "/slow":
        marker("slow-started")
        await asyncio.sleep(1.0)
        await respond(send, b"slow done")
    elif path == "/hang":
        marker("hang-started")
        await asyncio.sleep(3600)
    else:
        await respond(send, b"ok")
"""

FACTORY_APP = """
def create_app():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"7")]})
        await send({"type": "http.response.body", "body": b"factory"})
    return app
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "apps"
    directory.mkdir()
    (directory / "orch_app.py").write_text(ORCH_APP)
    (directory / "factory_app.py").write_text(FACTORY_APP)
    return directory


@pytest.fixture
def markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "markers"
    directory.mkdir()
    monkeypatch.setenv("ORCH_MARKER_DIR", str(directory))
    return directory


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fasterapi_asgi", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def failed_start(kind: str, app: str, tmp_path: Path, *flags: str) -> tuple[int, str]:
    server = launch_server(kind, app, tuple(flags), tmp_path)
    try:
        code = server.wait(timeout=30)
    finally:
        server.stop()
    return code, server.log()


def get(server: ServerProcess, path: str, **kwargs: object) -> httpx.Response:
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
        return client.get(path, **kwargs)  # type: ignore[arg-type]


# -- options and errors that need no running server -------------------------------------------------


def test_help_lists_uvicorn_options() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # undo click's line wrapping
    for option in (
        "--host", "--port", "--uds", "--fd", "--app-dir", "--factory", "--lifespan", "--log-level",
        "--access-log / --no-access-log", "--root-path", "--timeout-keep-alive",
        "--timeout-graceful-shutdown",
        "--header", "--server-header / --no-server-header", "--date-header / --no-date-header", "--backlog",
        "--loop", "--env-file", "--workers", "--proxy-headers / --no-proxy-headers", "--forwarded-allow-ips",
        "--limit-concurrency", "--log-config", "--use-colors / --no-use-colors", "--version", "--interface",
    ):  # fmt: skip
        assert option in text, option
    assert "[default: 127.0.0.1]" in text
    assert "[default: 8000]" in text
    assert "[default: 2048]" in text


def test_version() -> None:
    """uvicorn's first line, then the native parts: the running uvloop's libuv, llhttp, the OpenSSL in use."""
    import importlib.metadata
    import ssl

    import uvloop
    import uvloop.loop

    import fasterapi_asgi

    result = run_cli("--version")
    assert result.returncode == 0
    first, second = result.stdout.splitlines()
    # One version, read from the package by the build: the installed metadata agrees with __version__.
    assert importlib.metadata.version("fasterapi-asgi") == fasterapi_asgi.__version__
    python = (
        f"{sys.implementation.name.replace('cpython', 'CPython')} {'.'.join(map(str, sys.version_info[:3]))}"
    )
    assert first == f"Running fasterapi-asgi {fasterapi_asgi.__version__} with {python} on Linux"
    from fasterapi_asgi import _core

    runtime = _core.libuv_bind(uvloop.loop.__file__)
    libuv = f"{runtime >> 16}.{(runtime >> 8) & 0xFF}.{runtime & 0xFF}"
    assert second == (
        f"libuv {libuv} (uvloop {uvloop.__version__}), llhttp {_core.LLHTTP_VERSION}, "
        f"nghttp2 {_core.NGHTTP2_VERSION}, {ssl.OPENSSL_VERSION}"
    )
    for version in (_core.LLHTTP_VERSION, _core.NGHTTP2_VERSION):
        assert version.count(".") == 2 and version.split(".")[0].isdigit(), version


def test_invalid_header_option_is_a_usage_error() -> None:
    result = run_cli("orch_app:app", "--header", "no-colon-here")
    assert result.returncode == 2
    assert 'Header "no-colon-here" must be in format "Name:Value".' in result.stderr


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("no_such_module_xyz:app", 'Error loading ASGI app. Could not import module "no_such_module_xyz".'),
        ("json:no_such_attr", 'Error loading ASGI app. Attribute "no_such_attr" not found in module "json".'),
        ("json", 'Error loading ASGI app. Import string "json" must be in format "<module>:<attribute>".'),
    ],
    ids=["module", "attribute", "format"],
)
def test_app_that_cannot_be_loaded(kind: str, app: str, message: str, tmp_path: Path) -> None:
    code, log = failed_start(kind, app, tmp_path)
    assert code == STARTUP_FAILURE, log
    assert log.strip() == f"ERROR:    {message}", log  # one line, no traceback


@pytest.mark.parametrize("kind", KINDS)
def test_env_file_is_loaded_before_the_app(kind: str, tmp_path: Path) -> None:
    # The app refuses to start and reports what it saw: no request (and no native core) needed.
    (tmp_path / "envcheck.py").write_text(
        textwrap.dedent(
            """
            import os
            SEEN_AT_IMPORT = os.environ.get("ORCH_ENV_VALUE")

            async def app(scope, receive, send):
                await receive()
                text = f"{SEEN_AT_IMPORT}|{os.environ.get('ORCH_ENV_VALUE')}"
                await send({"type": "lifespan.startup.failed", "message": "ENV=" + text})
            """
        )
    )
    env_file = tmp_path / "test.env"
    env_file.write_text("# comment\nORCH_ENV_VALUE=from-env-file\n")
    code, log = failed_start(
        kind, "envcheck:app", tmp_path, "--app-dir", str(tmp_path), "--env-file", str(env_file)
    )
    assert code == STARTUP_FAILURE, log
    assert "ENV=from-env-file|from-env-file" in log
    assert f"Loading environment from '{env_file}'" in log


def test_bench_subcommand_is_delegated(monkeypatch: pytest.MonkeyPatch) -> None:
    from fasterapi_asgi import main as main_module

    received: list[list[str]] = []

    def fake_bench_main(argv: list[str]) -> int:
        received.append(argv)
        return 7

    package = types.ModuleType("fasterapi_asgi.bench")
    cli = types.ModuleType("fasterapi_asgi.bench.cli")
    cli.main = fake_bench_main  # type: ignore[attr-defined]
    package.cli = cli  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fasterapi_asgi.bench", package)
    monkeypatch.setitem(sys.modules, "fasterapi_asgi.bench.cli", cli)

    with pytest.raises(SystemExit) as exc_info:
        main_module.main(["bench", "--servers", "uvicorn", "--port", "1"])
    assert exc_info.value.code == 7
    assert received == [["--servers", "uvicorn", "--port", "1"]]


# -- a running server ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_startup_and_shutdown_log(
    kind: str, fresh_server: Callable[..., ServerProcess], app_dir: Path
) -> None:
    server = fresh_server(kind, "orch_app:app", "--app-dir", str(app_dir))
    name = "fasterapi-asgi" if kind == "fasterapi" else "Uvicorn"
    log = server.wait_for_log(f"{name} running on http://127.0.0.1:{server.port} (Press CTRL+C to quit)")
    pid = server.proc.pid
    assert f"INFO:     Started server process [{pid}]" in log
    assert "INFO:     Waiting for application startup." in log
    assert "INFO:     Application startup complete." in log
    server.signal(signal.SIGTERM)
    server.wait(timeout=10)
    log = server.log()
    for line in ("Shutting down", "Waiting for application shutdown.", "Application shutdown complete.",
                 f"Finished server process [{pid}]"):  # fmt: skip
        assert f"INFO:     {line}" in log, log


@pytest.mark.parametrize("kind", KINDS)
def test_access_log_line(kind: str, fresh_server: Callable[..., ServerProcess], app_dir: Path) -> None:
    server = fresh_server(kind, "orch_app:app", "--app-dir", str(app_dir))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(b"GET /x?y=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    server.wait_for_log(f'INFO:     127.0.0.1:{client_port} - "GET /x?y=1 HTTP/1.1" 200 OK')


@pytest.mark.parametrize("kind", KINDS)
def test_no_access_log(kind: str, fresh_server: Callable[..., ServerProcess], app_dir: Path) -> None:
    server = fresh_server(kind, "orch_app:app", "--app-dir", str(app_dir), "--no-access-log")
    assert get(server, "/quiet").status_code == 200
    server.stop()
    assert "/quiet" not in server.log()


@pytest.mark.parametrize("kind", KINDS)
def test_headers_options(kind: str, fresh_server: Callable[..., ServerProcess], app_dir: Path) -> None:
    default = fresh_server(kind, "orch_app:app", "--app-dir", str(app_dir))
    response = get(default, "/")
    assert "server" in response.headers
    assert "date" in response.headers

    custom = fresh_server(
        kind, "orch_app:app", "--app-dir", str(app_dir),
        "--header", "X-Custom:one", "--header", "X-Other: two", "--no-server-header", "--no-date-header",
    )  # fmt: skip
    response = get(custom, "/")
    assert response.headers["x-custom"] == "one"
    assert response.headers["x-other"] == "two"
    assert "server" not in response.headers
    assert "date" not in response.headers

    replaced = fresh_server(kind, "orch_app:app", "--app-dir", str(app_dir), "--header", "Server: mine")
    assert get(replaced, "/").headers.get_list("server") == ["mine"]


@pytest.mark.parametrize("kind", KINDS)
def test_env_file_visible_to_requests(
    kind: str, fresh_server: Callable[..., ServerProcess], app_dir: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / "served.env"
    env_file.write_text('ORCH_SERVED_VALUE="quoted value"\n')
    server = fresh_server(kind, "orch_app:app", "--app-dir", str(app_dir), "--env-file", str(env_file))
    assert get(server, "/env", params={"name": "ORCH_SERVED_VALUE"}).text == "quoted value"


@pytest.mark.parametrize("kind", KINDS)
def test_factory(kind: str, fresh_server: Callable[..., ServerProcess], app_dir: Path) -> None:
    server = fresh_server(kind, "factory_app:create_app", "--app-dir", str(app_dir), "--factory")
    assert get(server, "/").text == "factory"


@pytest.mark.parametrize("kind", KINDS)
def test_proxy_headers_and_root_path(
    kind: str, fresh_server: Callable[..., ServerProcess], app_dir: Path
) -> None:
    forwarded = {"x-forwarded-for": "10.1.2.3, 127.0.0.1", "x-forwarded-proto": "https"}
    trusted = fresh_server(kind, "orch_app:app", "--app-dir", str(app_dir), "--root-path", "/api")
    body = get(trusted, "/scope", headers=forwarded).json()
    assert body["client"][0] == "10.1.2.3"
    assert body["scheme"] == "https"
    assert body["root_path"] == "/api"
    assert body["path"] == "/api/scope"  # uvicorn's scope["path"] includes root_path

    untrusted = fresh_server(kind, "orch_app:app", "--app-dir", str(app_dir), "--no-proxy-headers")
    body = get(untrusted, "/scope", headers=forwarded).json()
    assert body["client"][0] == "127.0.0.1"
    assert body["scheme"] == "http"


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_finishes_in_flight_request(
    kind: str, fresh_server: Callable[..., ServerProcess], app_dir: Path, markers: Path
) -> None:
    server = fresh_server(kind, "orch_app:app", "--app-dir", str(app_dir))
    result: dict[str, object] = {}

    def slow_request() -> None:
        try:
            response = get(server, "/slow")
            result["status"], result["text"] = response.status_code, response.text
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_for(lambda: (markers / "slow-started").exists(), what="the slow request to start")
    server.signal(signal.SIGTERM)
    thread.join(timeout=15)
    assert result == {"status": 200, "text": "slow done"}
    # The default SIGTERM disposition is re-raised after a graceful stop, as uvicorn does.
    assert server.wait(timeout=10) == -signal.SIGTERM
    assert (markers / "shutdown").exists()
    with pytest.raises(httpx.ConnectError):
        get(server, "/")


@pytest.mark.parametrize("kind", KINDS)
def test_sigint_exits_zero(kind: str, fresh_server: Callable[..., ServerProcess], app_dir: Path) -> None:
    server = fresh_server(kind, "orch_app:app", "--app-dir", str(app_dir))
    assert get(server, "/").status_code == 200
    server.signal(signal.SIGINT)
    assert server.wait(timeout=10) == 0
    assert "Finished server process" in server.log()


@pytest.mark.parametrize("kind", KINDS)
def test_timeout_graceful_shutdown(
    kind: str, fresh_server: Callable[..., ServerProcess], app_dir: Path, markers: Path
) -> None:
    server = fresh_server(kind, "orch_app:app", "--app-dir", str(app_dir), "--timeout-graceful-shutdown", "1")
    outcome: list[object] = []

    def hanging_request() -> None:
        try:
            outcome.append(get(server, "/hang").status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=hanging_request)
    thread.start()
    wait_for(lambda: (markers / "hang-started").exists(), what="the hanging request to start")
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    server.wait(timeout=15)
    thread.join(timeout=15)
    assert time.monotonic() - started < 10
    # The request never completes normally: uvicorn answers 500 for the cancelled task, a closed
    # connection is as good.
    assert len(outcome) == 1
    assert outcome[0] == 500 or isinstance(outcome[0], httpx.HTTPError), outcome
    assert "timeout graceful shutdown exceeded" in server.log()
    if kind == "fasterapi":  # it closes the connections; it has no request task to cancel
        assert "request(s) in progress: timeout graceful shutdown exceeded" in server.log()


def test_unix_domain_socket(tmp_path: Path, app_dir: Path) -> None:
    path = str(tmp_path / "s.sock")
    server = launch_server("fasterapi", "orch_app:app", ("--app-dir", str(app_dir), "--uds", path), tmp_path)
    try:
        server.wait_for_log(f"fasterapi-asgi running on unix socket {path}", timeout=15)
        transport = httpx.HTTPTransport(uds=path)
        with httpx.Client(transport=transport, base_url="http://local", trust_env=False) as client:
            assert client.get("/").text == "ok"
        assert server.stop() == -signal.SIGTERM
        assert not os.path.exists(path)  # removed at exit, as uvicorn does
    finally:
        server.stop()


def test_file_descriptor(tmp_path: Path, app_dir: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    log_path = tmp_path / "fd.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fasterapi_asgi",
                "orch_app:app",
                "--app-dir",
                str(app_dir),
                "--fd",
                str(listener.fileno()),
            ],  # fmt: skip
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            pass_fds=[listener.fileno()],
        )
    listener.close()
    server = ServerProcess("fasterapi", "orch_app:app", (), port, log_path, proc)
    try:
        wait_accepting(server)
        assert get(server, "/").text == "ok"
        assert "fasterapi-asgi running on socket ('127.0.0.1', " in server.log()
    finally:
        server.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_workers(kind: str, tmp_path: Path, app_dir: Path) -> None:
    server = launch_server(kind, "orch_app:app", ("--app-dir", str(app_dir), "--workers", "2"), tmp_path)
    try:
        wait_accepting(server, timeout=30)
        server.wait_for_log(f"Started parent process [{server.proc.pid}]")
        pid = get(server, "/scope").json()["pid"]
        assert pid != server.proc.pid

        os.kill(pid, signal.SIGKILL)  # a worker this test's server started
        server.wait_for_log(f"Child process [{pid}] died", timeout=10)

        def replaced() -> bool:
            pids = set()
            for _ in range(10):
                try:
                    with httpx.Client(trust_env=False, timeout=5) as client:
                        pids.add(client.get(f"{server.url}/scope").json()["pid"])
                except httpx.HTTPError:
                    return False
            return pid not in pids

        wait_for(replaced, timeout=20, what="the dead worker to be replaced")
        server.signal(signal.SIGTERM)
        server.wait(timeout=20)
        log = server.log()
        assert f"Stopping parent process [{server.proc.pid}]" in log
    finally:
        server.stop()


def test_workers_stop_when_app_fails_to_start(tmp_path: Path) -> None:
    (tmp_path / "refuse.py").write_text(
        "async def app(scope, receive, send):\n"
        "    await receive()\n"
        "    await send({'type': 'lifespan.startup.failed', 'message': 'REFUSED'})\n"
    )
    server = launch_server(
        "fasterapi", "refuse:app", ("--app-dir", str(tmp_path), "--workers", "2"), tmp_path
    )
    try:
        assert server.wait(timeout=60) == STARTUP_FAILURE
        assert "failed to start, stopping the parent process" in server.log()
    finally:
        server.stop()


def test_python_api_run_in_subprocess(tmp_path: Path, app_dir: Path) -> None:
    port = free_port()
    script = tmp_path / "serve.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(app_dir)!r})\n"
        "import fasterapi_asgi, orch_app\n"
        f"fasterapi_asgi.run(orch_app.app, port={port}, log_level='warning')\n"
    )
    log_path = tmp_path / "api.log"
    pythonpath = [str(PACKAGE_PARENT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, str(script)], cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath)),
        )  # fmt: skip
    server = ServerProcess("fasterapi", "orch_app:app", (), port, log_path, proc)
    try:
        wait_accepting(server)
        assert json.loads(get(server, "/scope").text)["path"] == "/scope"
        assert "Started server process" not in server.log()  # --log-level warning
    finally:
        server.stop()


# Where an option's type differs from uvicorn's on purpose: uvicorn's --http and --ws also take a Python
# protocol class ("module:Class"), which a native server cannot use, so ours are the choices of uvicorn's
# names; our timeouts take fractions of a second where uvicorn's take whole seconds.
_TYPE_DIFFERENCES = {"http", "ws", "timeout_keep_alive", "timeout_graceful_shutdown"}
# Options whose type a later uvicorn changed, with the release that did: ours follows the newer one, so the
# comparison with an older uvicorn (0.54, the newest one for Python 3.10) skips the type.
_TYPE_CHANGED_IN = {"limit_max_requests_jitter": (0, 55)}


def test_every_uvicorn_option_is_accepted_with_its_meaning_and_default() -> None:
    """The option list of the uvicorn release the tests pin (pyproject's test extra): a new uvicorn flag
    appears here as a failure when the pin moves."""
    import importlib
    from importlib.metadata import version

    import uvicorn

    assert uvicorn.__version__ == version("uvicorn")
    uvicorn_release = tuple(int(part) for part in uvicorn.__version__.split(".")[:2])
    # `uvicorn.main` (and `fasterapi_asgi.main`) as attributes are the click commands, not the modules.
    theirs = importlib.import_module("uvicorn.main").main
    ours = {param.name: param for param in importlib.import_module("fasterapi_asgi.main").main.params}
    for param in theirs.params:
        mine = ours.get(param.name)
        assert mine is not None, f"uvicorn {uvicorn.__version__} option {param.opts} is missing"
        assert set(param.opts) <= set(mine.opts), param.name
        assert set(param.secondary_opts) <= set(mine.secondary_opts), param.name
        assert mine.default == param.default, param.name
        assert getattr(mine, "multiple", False) == getattr(param, "multiple", False), param.name
        assert getattr(mine, "is_flag", False) == getattr(param, "is_flag", False), param.name
        changed_in = _TYPE_CHANGED_IN.get(param.name)
        if changed_in is not None and uvicorn_release < changed_in:
            continue
        if param.name not in _TYPE_DIFFERENCES:
            assert type(mine.type) is type(param.type), (param.name, mine.type, param.type)
    # The run() entry point takes every keyword uvicorn.run() takes, with the same defaults.
    import inspect

    from fasterapi_asgi.main import run

    ours_run = inspect.signature(run).parameters
    for name, p in inspect.signature(uvicorn.run).parameters.items():
        assert name in ours_run, f"run() lacks uvicorn's {name}"
        if p.default is not inspect.Parameter.empty and name not in ("log_config", "app_dir"):
            assert ours_run[name].default == p.default, name


@pytest.mark.parametrize(
    "args",
    [("--http", "h11"), ("--http", "httptools"), ("--http", "zttp"), ("--ws-per-message-deflate", "false")],
)
def test_uvicorn_protocol_names_are_served_natively(
    args: tuple[str, ...], fresh_server: Callable[..., ServerProcess]
) -> None:
    server = fresh_server("fasterapi", "raw_app:app", *args)
    assert get(server, "/").text == "hello, world"


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--http2-max-concurrent-streams", "0", "--http2-max-concurrent-streams must be between 1 and"),
        ("--http2-initial-window-size", "100", "--http2-initial-window-size must be between 1024 and"),
        ("--http2-initial-window-size", str(2**31), "--http2-initial-window-size must be between 1024 and"),
        ("--http2-max-header-list-size", "10", "--http2-max-header-list-size must be between 1024 and"),
    ],
)
def test_bad_http2_limits_fail_with_one_line(flag: str, value: str, message: str) -> None:
    result = run_cli("raw_app:app", "--app-dir", "tests/python/apps", "--http2", flag, value)
    assert result.returncode == 3
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_uvicorn_environment_variables_are_read(tmp_path: Path) -> None:
    """UVICORN_<OPTION> works like FASTERAPI_ASGI_<OPTION> (ours wins when both are set)."""
    port = free_port()
    env = dict(os.environ, UVICORN_PORT=str(port), UVICORN_HOST="256.0.0.1", FASTERAPI_ASGI_HOST="127.0.0.1")
    log = (tmp_path / "env.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fasterapi_asgi", "raw_app:app", "--app-dir", "tests/python/apps"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", trust_env=False, timeout=5)
                break
            except httpx.ConnectError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert r.text == "hello, world"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
