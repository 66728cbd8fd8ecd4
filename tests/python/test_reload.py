"""``--reload``: the reload directories and patterns as Config resolves them (in-process), and the reloader
over real processes: an app in a temporary directory is edited while a client polls it.

Each server watches only its own temporary app directory (``--reload-dir``), never the repository.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from harness import REPO_ROOT, ServerProcess, free_port, launch_server, wait_accepting

from fasterapi_asgi.config import Config
from fasterapi_asgi.supervisors.reload import FileFilter, StatWatcher

# -- Config: directories and patterns (uvicorn's rules) ----------------------------------------------------


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog with INFO records of the server's loggers (an earlier test may have set propagate=False)."""
    package_logger = logging.getLogger("uvicorn")
    saved = package_logger.propagate
    package_logger.propagate = True
    caplog.set_level(logging.INFO)
    yield caplog
    package_logger.propagate = saved


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory, made the current directory: src/, src/sub/, tests/, build_a/, build_b/."""
    for name in ("src/sub", "tests", "build_a", "build_b"):
        (tmp_path / name).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path.resolve()


def reload_config(**kwargs: object) -> Config:
    return Config("app:app", reload=True, log_config=None, **kwargs)  # type: ignore[arg-type]


def test_reload_dirs_default_to_the_current_directory(tree: Path, logs: pytest.LogCaptureFixture) -> None:
    config = reload_config()
    assert config.reload_dirs == [tree]
    assert f"Will watch for changes in these directories: ['{tree}']" in logs.text


def test_nested_reload_dirs_collapse_to_the_outer_one(tree: Path) -> None:
    config = reload_config(reload_dirs=["src", "src/sub", "tests"])
    assert sorted(config.reload_dirs) == [tree / "src", tree / "tests"]
    assert config.reload_dirs[0].is_absolute()


def test_patterns_naming_directories_add_or_remove_watched_directories(tree: Path) -> None:
    # An include pattern that names a directory (itself, or by glob in the current directory) watches it.
    config = reload_config(reload_dirs=["src"], reload_includes=["tests", "build_*", "*.txt"])
    assert sorted(config.reload_dirs) == [tree / "build_a", tree / "build_b", tree / "src", tree / "tests"]
    assert {"tests", "build_*", "*.txt"} <= set(config.reload_includes)
    # An exclude pattern that names a directory stops watching it and everything under it.
    config = reload_config(reload_dirs=["src", "tests"], reload_excludes=["src", "*.txt"])
    assert config.reload_dirs == [tree / "tests"]
    assert config.reload_dirs_excludes == [tree / "src"]


def test_a_pattern_both_included_and_excluded_is_excluded(tree: Path) -> None:
    config = reload_config(reload_includes=["*.txt", "*.cfg"], reload_excludes=["*.txt"])
    assert "*.txt" not in config.reload_includes
    assert "*.cfg" in config.reload_includes
    assert "*.txt" in config.reload_excludes


def test_invalid_reload_dirs_fall_back_to_the_current_directory(
    tree: Path, logs: pytest.LogCaptureFixture
) -> None:
    config = reload_config(reload_dirs=["src"], reload_excludes=["src"])
    assert config.reload_dirs == [tree]
    assert "Provided reload directories ['src'] did not contain valid directories" in logs.text


def test_reload_options_without_reload_warn(tree: Path, logs: pytest.LogCaptureFixture) -> None:
    config = Config("app:app", log_config=None, reload_dirs=["src"])
    assert config.reload_dirs == []
    assert "Current configuration will not reload as not all conditions are met" in logs.text
    assert "Will watch for changes" not in logs.text
    logs.clear()
    Config("app:app", log_config=None, reload=True, workers=3)
    assert '"workers" flag is ignored when reloading is enabled.' in logs.text


def test_file_filter_defaults_and_options(tree: Path) -> None:
    default = FileFilter(reload_config())
    assert default(tree / "src" / "app.py")
    for ignored in (".hidden.py", "app.pyc", "notes.txt", "~backup.py", ".app.py.swp"):
        assert not default(tree / ignored), ignored

    custom = FileFilter(reload_config(reload_includes=["*.txt", ".env"], reload_excludes=["*.py", "tests"]))
    assert custom(tree / "notes.txt")
    assert custom(tree / ".env")  # named explicitly: the default '.*' exclusion gives way
    assert not custom(tree / "app.py")  # '*.py' excluded: the default include gives way
    assert not custom(tree / "tests" / "data.txt")  # inside an excluded directory


def test_stat_watcher_sees_new_changed_and_deleted_files(tree: Path) -> None:
    (tree / "src" / "a.py").write_text("a = 1\n")
    (tree / "src" / "b.py").write_text("b = 1\n")
    watcher = StatWatcher([tree / "src"], FileFilter(reload_config()))
    watcher.start()
    assert watcher.changes(0) == []
    (tree / "src" / "a.py").write_text("a = 22\n")  # size changes too: no reliance on mtime granularity
    (tree / "src" / "b.py").unlink()
    (tree / "src" / "sub" / "c.py").write_text("c = 1\n")
    (tree / "src" / "notes.txt").write_text("not watched\n")
    assert watcher.changes(0) == sorted([tree / "src" / "a.py", tree / "src" / "b.py", tree / "src/sub/c.py"])
    assert watcher.changes(0) == []


# -- the reloader, end to end ----------------------------------------------------------------------------

APP = """
import os

VERSION = {version!r}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"{{VERSION}} {{os.getpid()}}".encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
"""


def write_app(app_dir: Path, version: str) -> None:
    # Python takes app.py's cached bytecode while the source's size and mtime in whole seconds match: every
    # version is the same size, so an edit within the second of the last import would be served from the old
    # .pyc (the reloader having done its part; seen on Python 3.14).
    shutil.rmtree(app_dir / "__pycache__", ignore_errors=True)
    (app_dir / "app.py").write_text(textwrap.dedent(APP.format(version=version)))


def fetch(server: ServerProcess) -> tuple[str, int] | None:
    """(version, pid) from the app, or None while no server process answers."""
    try:
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            version, pid = client.get(server.url).text.split()
    except (httpx.HTTPError, ValueError):
        return None
    return version, int(pid)


def wait_for_version(server: ServerProcess, version: str, not_pid: int = 0, timeout: float = 15.0) -> int:
    """Poll until the app answers ``version`` from a process other than ``not_pid``; returns its pid."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        assert server.alive(), f"the reloader exited:\n{server.log_excerpt()}"
        seen = fetch(server)
        if seen is not None and seen[0] == version and seen[1] != not_pid:
            return seen[1]
        time.sleep(0.05)
    raise AssertionError(f"app never answered {version!r} (last: {seen}):\n{server.log_excerpt()}")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, server: ServerProcess) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{server.log_excerpt()}")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    path = tmp_path / "app"
    path.mkdir()
    write_app(path, "v1")
    return path


@pytest.fixture
def reloader(tmp_path: Path, app_dir: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(*flags: str) -> ServerProcess:
        server = launch_server(
            "fasterapi",
            "app:app",
            ("--app-dir", str(app_dir), "--reload", "--reload-dir", str(app_dir), *flags),
            tmp_path,
        )
        started.append(server)
        wait_accepting(server)
        return server

    yield start
    for server in started:
        server.stop()


def count(text: str, server: ServerProcess) -> int:
    return server.log().count(text)


def test_edit_reloads_the_app_and_sigint_stops_everything(
    reloader: Callable[..., ServerProcess], app_dir: Path
) -> None:
    server = reloader()
    first_pid = wait_for_version(server, "v1")
    log = server.log()
    assert f"Will watch for changes in these directories: ['{app_dir}']" in log
    assert f"Started reloader process [{server.proc.pid}] using WatchFiles" in log
    assert first_pid != server.proc.pid  # served by a child, not by the reloader

    write_app(app_dir, "v2")
    second_pid = wait_for_version(server, "v2")
    assert second_pid != first_pid
    assert f"WatchFiles detected changes in '{app_dir / 'app.py'}'. Reloading..." in server.log()
    wait_until(lambda: not pid_alive(first_pid), 5, "the old child to be gone", server)

    server.signal(signal.SIGINT)
    assert server.wait(timeout=10) == 0
    log = server.log()
    assert f"Stopping reloader process [{server.proc.pid}]" in log
    assert f"Finished server process [{second_pid}]" in log  # the child stopped gracefully
    assert not pid_alive(second_pid)


def test_excluded_and_unincluded_files_do_not_reload(
    reloader: Callable[..., ServerProcess], app_dir: Path
) -> None:
    server = reloader("--reload-exclude", "skip_*.py", "--reload-include", "*.txt")
    pid = wait_for_version(server, "v1")
    (app_dir / "skip_me.py").write_text("x = 1\n")  # *.py but excluded
    (app_dir / "notes.md").write_text("not included\n")
    (app_dir / ".hidden.py").write_text("x = 1\n")  # the default '.*' exclusion
    time.sleep(1.5)
    assert "detected changes" not in server.log()
    assert fetch(server) == ("v1", pid)

    (app_dir / "data.txt").write_text("included by --reload-include\n")  # proves the watcher was watching
    wait_until(lambda: "detected changes" in server.log(), 10, "a reload for data.txt", server)
    wait_for_version(server, "v1", not_pid=pid)
    reloads = [line for line in server.log().splitlines() if "detected changes" in line]
    assert reloads == [f"WARNING:  WatchFiles detected changes in '{app_dir / 'data.txt'}'. Reloading..."]


def test_reload_delay_spaces_the_checks(reloader: Callable[..., ServerProcess], app_dir: Path) -> None:
    server = reloader("--reload-delay", "2")
    wait_for_version(server, "v1")
    write_app(app_dir, "v2")
    wait_until(lambda: count("detected changes", server) == 1, 10, "the first reload", server)
    first = time.monotonic()
    write_app(app_dir, "v3")  # right after a check: seen only at the next one, reload-delay later
    wait_until(lambda: count("detected changes", server) == 2, 10, "the second reload", server)
    gap = time.monotonic() - first
    assert 1.8 <= gap <= 6, gap
    wait_for_version(server, "v3")


def test_broken_edits_keep_the_reloader_alive_until_fixed(
    reloader: Callable[..., ServerProcess], app_dir: Path
) -> None:
    server = reloader()
    wait_for_version(server, "v1")

    # A syntax error: the child dies with a traceback (exit 1).
    (app_dir / "app.py").write_text("def broken(:\n")
    wait_until(lambda: "SyntaxError" in server.log(), 10, "the child's SyntaxError", server)
    # No app attribute: the child exits with the startup-failure status 3.
    (app_dir / "app.py").write_text("application = None\n")
    wait_until(lambda: 'Attribute "app" not found' in server.log(), 10, "the child's exit 3", server)
    time.sleep(1.5)  # a dead child is not restarted before the next change: no spinning
    assert server.alive()
    assert count('Attribute "app" not found', server) == 1
    assert count("SyntaxError", server) == 1
    assert count("detected changes", server) == 2
    assert fetch(server) is None

    write_app(app_dir, "v2")
    wait_for_version(server, "v2")
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=10) == 0
    assert f"Stopping reloader process [{server.proc.pid}]" in server.log()


def test_without_watchfiles_modification_times_are_polled(tmp_path: Path, app_dir: Path) -> None:
    port = free_port()
    log_path = tmp_path / "stat.log"
    code = "import sys; sys.modules['watchfiles'] = None; from fasterapi_asgi.main import main; main()"
    args = [
        "app:app",
        "--app-dir",
        str(app_dir),
        "--port",
        str(port),
        "--reload",
        "--reload-dir",
        str(app_dir),
    ]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    server = ServerProcess("fasterapi", "app:app", tuple(args), port, log_path, proc)
    try:
        wait_accepting(server)
        first_pid = wait_for_version(server, "v1")
        log = server.log()
        assert "watchfiles is not installed: watching for changes by polling modification times" in log
        assert f"Started reloader process [{proc.pid}] using StatReload" in log
        write_app(app_dir, "v2")
        wait_for_version(server, "v2", not_pid=first_pid)
        assert f"StatReload detected changes in '{app_dir / 'app.py'}'. Reloading..." in server.log()
    finally:
        server.stop()
