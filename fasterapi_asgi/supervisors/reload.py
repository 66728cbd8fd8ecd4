"""``--reload``: a supervisor process that restarts the server process when watched files change.

The supervisor holds the listening socket (bound once by ``main.run``) and runs the server in a spawned child.
Changes under ``config.reload_dirs`` that pass the include/exclude patterns are collected continuously;
every ``--reload-delay`` seconds the supervisor looks at what was collected and, if anything, replaces the
child (SIGTERM, wait for its graceful stop, start a new one). A child that dies on its own (an import error,
a failed startup) is not restarted until the next change: the supervisor never spins on a broken app.

Changes are watched with ``watchfiles`` when it is installed (``pip install 'fasterapi-asgi[reload]'``), and
otherwise by polling modification times at each check.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from fasterapi_asgi.config import Config
from fasterapi_asgi.logging import style
from fasterapi_asgi.supervisors._subprocess import spawn_process

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# uvicorn's defaults: Python sources are watched; hidden files, compiled files, editor swap and backup files
# are not. A default is dropped when the user names it on the other side (--reload-exclude '*.py' ...).
DEFAULT_INCLUDES = ("*.py",)
DEFAULT_EXCLUDES = (".*", ".py[cod]", ".sw.*", "~*")

# Longest the supervisor sleeps before looking at its signals again (seconds).
_SLICE = 0.1

logger = logging.getLogger("uvicorn.error")


class FileFilter:
    """Whether a changed file should reload the server, by ``config``'s resolved reload patterns.

    A path matching an include pattern reloads unless it is inside an excluded directory or matches an
    exclude pattern; a path that ends with the include pattern itself (a file named literally) always
    reloads. Patterns match from the right, as ``pathlib.PurePath.match`` does (``*.py``: the file name).
    """

    def __init__(self, config: Config) -> None:
        includes = [p for p in DEFAULT_INCLUDES if p not in config.reload_excludes]
        self.includes = list(dict.fromkeys([*includes, *config.reload_includes]))
        excludes = [p for p in DEFAULT_EXCLUDES if p not in config.reload_includes]
        self.exclude_dirs = list(config.reload_dirs_excludes)
        for pattern in config.reload_excludes:
            if not _names_directory(pattern):
                excludes.append(pattern)
        self.excludes = list(dict.fromkeys(excludes))

    def __call__(self, path: Path) -> bool:
        for include in self.includes:
            if not path.match(include):
                continue
            if str(path).endswith(include):
                return True
            if any(directory in path.parents for directory in self.exclude_dirs):
                return False
            return not any(path.match(exclude) for exclude in self.excludes)
        return False


def _names_directory(pattern: str) -> bool:
    try:
        return Path(pattern).resolve().is_dir()
    except OSError:
        return False


class _Watcher(Protocol):
    name: str

    def start(self) -> None: ...

    def changes(self, timeout: float) -> list[Path]: ...

    def stop(self) -> None: ...


class WatchFilesWatcher:
    """``watchfiles`` (inotify and friends) in a thread, from before the first child starts: changes made
    while the supervisor waits or restarts are kept until the next check."""

    name = "WatchFiles"

    def __init__(self, directories: list[Path], file_filter: FileFilter) -> None:
        from watchfiles import watch  # ImportError: the caller falls back to polling

        self._watch = watch
        self._directories = directories
        self._filter = file_filter
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[Path, None] = {}
        self._news = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fasterapi-asgi-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            for batch in self._watch(
                *self._directories,
                watch_filter=lambda _change, path: self._filter(Path(path)),
                stop_event=self._stop,
                raise_interrupt=False,
                ignore_permission_denied=True,
            ):
                with self._lock:
                    for _change, path in batch:
                        self._pending[Path(path)] = None
                self._news.set()
        except Exception:  # noqa: BLE001 - reported; the server keeps running without reloading
            logger.exception("WatchFiles stopped watching for changes; restart the server to reload again.")

    def changes(self, timeout: float) -> list[Path]:
        if not self._news.wait(timeout):
            return []
        with self._lock:
            self._news.clear()
            paths = sorted(self._pending)
            self._pending.clear()
        return paths

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


class StatWatcher:
    """Polling: at each check, every file under the watched directories that passes the filter is compared
    with its modification time and size at the previous check (new and deleted files count as changes)."""

    name = "StatReload"

    def __init__(self, directories: list[Path], file_filter: FileFilter) -> None:
        self._directories = directories
        self._filter = file_filter
        self._seen: dict[Path, tuple[int, int]] = {}

    def start(self) -> None:
        self._seen = self._snapshot()

    def _snapshot(self) -> dict[Path, tuple[int, int]]:
        seen: dict[Path, tuple[int, int]] = {}
        excluded = set(self._filter.exclude_dirs)
        for directory in self._directories:
            for root, subdirs, files in os.walk(directory):
                subdirs[:] = [name for name in subdirs if Path(root, name) not in excluded]
                for name in files:
                    path = Path(root, name)
                    if not self._filter(path):
                        continue
                    try:
                        info = path.stat()
                    except OSError:
                        continue
                    seen[path] = (info.st_mtime_ns, info.st_size)
        return seen

    def changes(self, timeout: float) -> list[Path]:
        current = self._snapshot()
        changed = [path for path, state in current.items() if self._seen.get(path) != state]
        changed.extend(path for path in self._seen if path not in current)
        self._seen = current
        return sorted(changed)

    def stop(self) -> None:
        pass


def _make_watcher(config: Config, file_filter: FileFilter) -> _Watcher:
    try:
        return WatchFilesWatcher(config.reload_dirs, file_filter)
    except ImportError:
        logger.warning(
            "watchfiles is not installed: watching for changes by polling modification times "
            "(pip install 'fasterapi-asgi[reload]' to use WatchFiles)."
        )
        return StatWatcher(config.reload_dirs, file_filter)


def _display_path(path: Path) -> str:
    try:
        return f"'{path.relative_to(Path.cwd())}'"
    except ValueError:
        return f"'{path}'"


class ChangeReload:
    """Run ``target(sockets=sockets)`` in a child process; restart it when watched files change."""

    def __init__(self, config: Config, target: Callable[..., None], sockets: list[socket.socket]) -> None:
        self.config = config
        self.target = target
        self.sockets = sockets
        self.should_exit = threading.Event()
        self.pid = os.getpid()
        self.process: SpawnProcess | None = None
        self.file_filter = FileFilter(config)
        self.watcher = _make_watcher(config, self.file_filter)
        self.reloader_name = self.watcher.name
        # Signal handlers only append here (no lock is taken in a handler); the main loop acts on them.
        self._signals: list[int] = []
        self._previous_handlers: dict[int, Any] = {}

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signals.append(sig)

    def _take_signals(self) -> int:
        count = len(self._signals)
        if count:
            del self._signals[:count]
            self.should_exit.set()
        return count

    def run(self) -> None:
        self.startup()
        try:
            while self._pause(self.config.reload_delay):
                changes = self.watcher.changes(_SLICE)
                if changes and not self.should_exit.is_set():
                    logger.warning(
                        "%s detected changes in %s. Reloading...",
                        self.reloader_name,
                        ", ".join(map(_display_path, changes)),
                    )
                    self.restart()
        finally:
            self.shutdown()

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (the delay between two checks); False as soon as the supervisor should exit."""
        deadline = time.monotonic() + seconds
        while True:
            self._take_signals()
            if self.should_exit.is_set():
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            self.should_exit.wait(min(remaining, _SLICE))

    def startup(self) -> None:
        highlighted = style("%s", fg="cyan", bold=True)
        logger.info(
            "Started reloader process [%s] using %s",
            self.pid,
            self.reloader_name,
            extra={"color_message": f"Started reloader process [{highlighted}] using {highlighted}"},
        )
        for sig in HANDLED_SIGNALS:
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
        self.watcher.start()
        self._start_child()

    def _start_child(self) -> None:
        self.process = spawn_process(self.config, self.target, {"sockets": self.sockets})
        self.process.start()

    def _stop_child(self) -> None:
        """SIGTERM the child and wait for its graceful stop. A stop signal arriving meanwhile is passed on as
        SIGINT, which makes the server skip the rest of its graceful shutdown."""
        process = self.process
        if process is None:
            return
        if process.exitcode is None:
            process.terminate()
        while process.exitcode is None:
            process.join(_SLICE)
            if self._take_signals() and process.exitcode is None and process.pid is not None:
                try:
                    os.kill(process.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        process.close()
        self.process = None

    def restart(self) -> None:
        self._stop_child()
        if not self.should_exit.is_set():
            self._start_child()

    def shutdown(self) -> None:
        self.watcher.stop()
        self._stop_child()
        for sock in self.sockets:
            sock.close()
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()
        logger.info(
            "Stopping reloader process [%s]",
            self.pid,
            extra={"color_message": "Stopping reloader process [" + style("%s", fg="cyan", bold=True) + "]"},
        )
