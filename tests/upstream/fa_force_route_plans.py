"""pytest plugin (``-p fa_force_route_plans``, with tests/upstream on PYTHONPATH): a route plan on every
FastAPI route a test suite makes that a plan can serve, in verify mode (each compiled request is also solved
by FastAPI's ``solve_dependencies`` and the arguments compared), every built-in middleware stack flattened and
every FastAPI app entered through the server's entry (``_plan_entry``). At the end it reports how many
requests the plans answered and how many they handed to FastAPI's own handler, and fails the run if the plans
answered none (the plugin would then prove nothing). Only for FastAPI's suite: it needs FastAPI importable."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from upstream_report import report_use

from fasterapi_asgi import _plan_body, _plan_entry, _plan_generator, _plan_stack, route_plans

# Each counter source's counts when the session started (the report gives what the session added).
_COUNTERS: tuple[Callable[[], tuple[int, ...]], ...] = (
    route_plans.plan_counters,
    _plan_stack.stack_counters,
    _plan_entry.entry_counters,
    _plan_body.body_counters,
    _plan_generator.generator_counters,
)
_undo: Callable[[], None] | None = None
_before: list[tuple[int, ...]] = []


def pytest_configure(config: pytest.Config) -> None:
    global _undo, _before
    _undo = route_plans.force_on_every_route(verify=True)
    _before = [counters() for counters in _COUNTERS]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    (
        (answered, handed_back, plan_replayed),
        (flattened, replayed),
        (entered, entry_handed),
        (from_bytes, refused),
        (generators, generator_errors),
    ) = (
        tuple(now - then for now, then in zip(counters(), before, strict=True))
        for counters, before in zip(_COUNTERS, _before, strict=True)
    )
    report_use(
        session,
        f"fasterapi-asgi route plans: {answered} requests answered by a plan, "
        f"{handed_back} handed to FastAPI's own handler, {plan_replayed} exceptions replayed through the "
        f"route's exception wrapper; {flattened} requests through a flattened "
        f"middleware stack, {replayed} exceptions replayed through the real layers; {entered} requests "
        f"entered without FastAPI.__call__, {entry_handed} handed to it; {from_bytes} bodies validated "
        f"from their bytes, {refused} refused there and read by FastAPI's steps; {generators} yield "
        f"dependencies entered without FastAPI's per-request wrappers, {generator_errors} exceptions handed "
        f"to its wrapper at their exit",
        answered,
        "fasterapi-asgi route plans: no request was answered by a plan",
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if _undo is not None:
        _undo()
