"""pytest plugin (``-p fa_force_route_index``, with tests/upstream on PYTHONPATH): the native route index on
every Starlette router a test suite builds, however small, checking on every indexed request that each
route it left out answers Match.NONE. At the end it reports how many requests the index routed, and fails
the run if it routed none (the plugin would then prove nothing)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from upstream_report import report_use

from fasterapi_asgi import _core, route_index

_undo: Callable[[], None] | None = None
_before = (0, 0)


def pytest_configure(config: pytest.Config) -> None:
    global _undo, _before
    _undo = route_index.force_on_every_router(verify=True)
    _before = _core.route_index_counters()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    lookups, plain = (now - then for now, then in zip(_core.route_index_counters(), _before, strict=True))
    report_use(
        session,
        f"fasterapi-asgi route index: {lookups} requests through the index, {plain} by the plain scan",
        lookups,
        "fasterapi-asgi route index: no request was routed through the index",
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if _undo is not None:
        _undo()
