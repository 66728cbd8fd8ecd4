"""pytest plugin (``-p fa_force_route_plans``, with tests/upstream on PYTHONPATH): a route plan on every
FastAPI route a test suite makes that a plan can serve, in verify mode (each compiled request is also solved
by FastAPI's ``solve_dependencies`` and the arguments compared). At the end it reports how many requests the
plans answered and how many they handed to FastAPI's own handler, and fails the run if the plans answered none
(the plugin would then prove nothing). Only for FastAPI's suite: it needs FastAPI importable."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fasterapi_asgi import route_plans

_undo: Callable[[], None] | None = None
_before = (0, 0)


def pytest_configure(config: pytest.Config) -> None:
    global _undo, _before
    _undo = route_plans.force_on_every_route(verify=True)
    _before = route_plans.plan_counters()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    answered, handed_back = (
        now - then for now, then in zip(route_plans.plan_counters(), _before, strict=True)
    )
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = (
        f"fasterapi-asgi route plans: {answered} requests answered by a plan, "
        f"{handed_back} handed to FastAPI's own handler"
    )
    if reporter is not None:
        reporter.write_line(line)
    else:
        print(line)
    if answered == 0 and session.testscollected > 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter is not None:
            reporter.write_line("fasterapi-asgi route plans: no request was answered by a plan")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _undo is not None:
        _undo()
