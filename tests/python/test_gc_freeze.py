"""After startup the server collects garbage once and freezes what is alive (gc.freeze()), so later full
collections do not traverse the app's startup heap again; cycles made while serving are still collected.
--no-gc-freeze leaves the collector as it is (as uvicorn)."""

from __future__ import annotations

import subprocess
import sys

import httpx
from conftest import StartServer


def interpreter_freeze_count() -> int:
    """What the interpreter freezes by itself (Python 3.12.1 freezes a few hundred objects at start-up)."""
    out = subprocess.run(
        [sys.executable, "-c", "import gc; print(gc.get_freeze_count())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_startup_heap_frozen_and_new_cycles_collected(start_server: StartServer) -> None:
    srv = start_server("fasterapi", "task_app:app")
    body = httpx.get(srv.url + "/gc", timeout=10).json()
    assert body["frozen"] > interpreter_freeze_count() + 1000  # the server's and the app's modules
    assert body["cycle_collected"] is True


def test_no_gc_freeze(kind: str, start_server: StartServer) -> None:
    flags = ("--no-gc-freeze",) if kind == "fasterapi" else ()
    srv = start_server(kind, "task_app:app", *flags)
    body = httpx.get(srv.url + "/gc", timeout=10).json()
    assert body == {"frozen": interpreter_freeze_count(), "cycle_collected": True}
