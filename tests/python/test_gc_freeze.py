"""After startup the server collects garbage once and freezes what is alive (gc.freeze()), so later full
collections do not traverse the app's startup heap again; cycles made while serving are still collected.
--no-gc-freeze leaves the collector as it is (as uvicorn)."""

from __future__ import annotations

import httpx
from conftest import StartServer


def test_startup_heap_frozen_and_new_cycles_collected(start_server: StartServer) -> None:
    srv = start_server("fasterapi", "task_app:app")
    body = httpx.get(srv.url + "/gc", timeout=10).json()
    assert body["frozen"] > 1000  # the interpreter, the server and the app's modules
    assert body["cycle_collected"] is True


def test_no_gc_freeze(kind: str, start_server: StartServer) -> None:
    flags = ("--no-gc-freeze",) if kind == "fasterapi" else ()
    srv = start_server(kind, "task_app:app", *flags)
    assert httpx.get(srv.url + "/gc", timeout=10).json() == {"frozen": 0, "cycle_collected": True}
