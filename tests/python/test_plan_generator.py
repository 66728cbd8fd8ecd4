"""The route plans' entry into ``yield`` dependencies (``_plan_generator.GeneratorEntry``) against FastAPI's
own ``_solve_generator``: the same dependencies, the same requests, every event recorded on both sides.

Each scenario enters one or more async generator dependencies on FastAPI's two exit stacks, then ends the
request: normally, with an exception, or cancelled. It runs once with FastAPI's ``_solve_generator`` and
once with ``GeneratorEntry``; what the dependencies saw (the values, the exception thrown into them and
whether it is the very object raised, the cleanup scope's shield), what they did, what left the exit stacks
(type, message, identity, context, cause, traceback object) and the cleanup scopes left in the request's
scope must be equal. End to end, FastAPI's own suite runs with the plans forced on and counts the
dependencies entered this way."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

pytest.importorskip("fastapi")

from fastapi.dependencies.models import Dependant  # noqa: E402
from fastapi.dependencies.utils import _solve_generator  # noqa: E402

from fasterapi_asgi._plan_generator import GeneratorEntry, generator_counters  # noqa: E402
from fasterapi_asgi._plan_proof import unproven_fastapi  # noqa: E402

if unproven_fastapi():
    pytest.skip(f"route plans are off: {unproven_fastapi()}", allow_module_level=True)


class _Request:
    def __init__(self) -> None:
        self.scope: dict[str, Any] = {}


class _Boom(Exception):
    pass


Trace = list[Any]


def _shield(request: _Request) -> Any:
    scopes = request.scope.get("fastapi_async_cleanup_scopes") or {}
    scope = scopes.get(request.scope["fastapi_inner_astack"])
    return None if scope is None else scope.shield


def _describe(exc: BaseException | None, thrown: dict[str, BaseException]) -> Any:
    if exc is None:
        return None
    names = {id(v): k for k, v in thrown.items()}
    # anyio's cancellation message names the scope's and the task's addresses, which differ between runs.
    message = "cancelled" if isinstance(exc, asyncio.CancelledError) else str(exc)
    return (
        type(exc).__name__,
        message,
        names.get(id(exc), "new"),
        type(exc.__context__).__name__,
        names.get(id(exc.__context__), "new") if exc.__context__ is not None else None,
        type(exc.__cause__).__name__,
        exc.__suppress_context__,
    )


def _dependency(
    kind: str, label: str, trace: Trace, request: _Request, thrown: dict[str, BaseException]
) -> Any:
    """An async generator dependency of the given behaviour; it records what it sees in ``trace``."""

    async def dep() -> Any:
        trace.append((label, "enter", _shield(request)))
        if kind == "raise-on-enter":
            raise thrown.setdefault("enter", _Boom("on enter"))
        if kind == "no-yield":
            return
        if kind == "enter-awaits":
            await asyncio.sleep(0)
        try:
            yield f"{label}-value"
        except BaseException as exc:
            trace.append((label, "caught", _describe(exc, thrown), _shield(request)))
            if kind == "suppress":
                return
            if kind == "replace":
                raise thrown.setdefault("replaced", ValueError("replaced")) from None
            if kind == "replace-chained":
                raise thrown.setdefault("replaced", ValueError("replaced"))  # noqa: B904 - chained on purpose
            if kind == "await-then-raise":
                await anyio.sleep(0)
                trace.append((label, "slept", _shield(request)))
            raise
        finally:
            trace.append((label, "cleanup", _shield(request)))
            if kind == "await-cleanup":
                await anyio.sleep(0)
                trace.append((label, "cleanup slept", _shield(request)))
            if kind == "cleanup-raises":
                raise thrown.setdefault("cleanup", _Boom("in cleanup"))
        if kind == "yield-twice":
            yield "again"

    dep.__name__ = f"dep_{label}"
    return dep


Solver = Callable[[Any, AsyncExitStack, _Request], Awaitable[Any]]


async def _fastapi_solver(call: Any, stack: AsyncExitStack, request: _Request) -> Any:
    dependant = Dependant(call=call, name="x")
    return await _solve_generator(dependant=dependant, stack=stack, sub_values={}, request=request)


async def _plan_solver(call: Any, stack: AsyncExitStack, request: _Request) -> Any:
    return await GeneratorEntry(call).enter(request, stack, {})


async def _run(solver: Solver, deps: list[tuple[str, str]], ending: str) -> Trace:
    """Enter ``deps`` ((kind, "request" or "function" stack)) then end the request as ``ending`` says."""
    trace: Trace = []
    thrown: dict[str, BaseException] = {}
    request = _Request()
    raised: BaseException | None = None
    try:
        with anyio.CancelScope() as outer:
            async with AsyncExitStack() as request_stack:
                request.scope["fastapi_inner_astack"] = request_stack
                async with AsyncExitStack() as function_stack:
                    request.scope["fastapi_function_astack"] = function_stack
                    for i, (kind, where) in enumerate(deps):
                        stack = request_stack if where == "request" else function_stack
                        call = _dependency(kind, f"d{i}", trace, request, thrown)
                        trace.append(("value", await solver(call, stack, request)))
                    trace.append(("shield in endpoint", _shield(request)))
                    if ending == "raise":
                        raise thrown.setdefault("endpoint", _Boom("from the endpoint"))
                    if ending == "raise-base":
                        raise thrown.setdefault("endpoint", KeyboardInterrupt("base"))
                    if ending == "raise-stop":
                        raise thrown.setdefault("endpoint", StopAsyncIteration("stop"))
                    if ending == "cancel":
                        outer.cancel()
                        await anyio.sleep(0)
                        trace.append("not cancelled")
                    if ending == "cancel-late":
                        outer.cancel()
                trace.append(("after function stack", _shield(request)))
        trace.append(("cancelled caught", outer.cancelled_caught))
    except BaseException as exc:  # noqa: BLE001 - the outcome is what is compared
        raised = exc
        trace.append(("raised", _describe(exc, thrown)))
        endpoint = thrown.get("endpoint")
        if endpoint is not None and exc is endpoint:
            # contextlib puts back the traceback the exception had when it reached the dependency
            trace.append(("traceback frames", _frames(exc.__traceback__)))
    trace.append(("cleanup scopes left", request.scope.get("fastapi_async_cleanup_scopes")))
    del raised
    return trace


def _frames(tb: Any) -> list[str]:
    names = []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    # Frames above the test's own _run are the exit stacks', which both sides share.
    return names[: names.index("_run") + 1] if "_run" in names else names


KINDS = [
    "plain",
    "suppress",
    "replace",
    "replace-chained",
    "await-then-raise",
    "await-cleanup",
    "cleanup-raises",
    "yield-twice",
    "enter-awaits",
]
ENDINGS = ["normal", "raise", "raise-base", "raise-stop", "cancel", "cancel-late"]


def _compare(deps: list[tuple[str, str]], ending: str) -> Trace:
    async def both() -> tuple[Trace, Trace]:
        return await _run(_fastapi_solver, deps, ending), await _run(_plan_solver, deps, ending)

    fastapi_trace, plan_trace = anyio.run(both)
    assert plan_trace == fastapi_trace
    return plan_trace


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["request", "function"])
def test_one_dependency_ends_as_with_fastapi(kind: str, where: str, ending: str) -> None:
    _compare([(kind, where)], ending)


@pytest.mark.parametrize("kind", ["raise-on-enter", "no-yield"])
def test_entering_fails_as_with_fastapi(kind: str) -> None:
    trace = _compare([("plain", "request"), (kind, "function")], "normal")
    assert trace[-2][0] == "raised"


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize(
    "deps",
    [
        [("plain", "request"), ("plain", "function")],
        [("await-cleanup", "function"), ("suppress", "request"), ("replace", "function")],
        [("cleanup-raises", "request"), ("await-then-raise", "function"), ("plain", "function")],
        [("suppress", "function"), ("plain", "request"), ("yield-twice", "request")],
    ],
    ids=["two", "three-mixed", "raising", "suppressing"],
)
def test_several_dependencies_share_the_cleanup_scope_as_with_fastapi(
    deps: list[tuple[str, str]], ending: str
) -> None:
    _compare(deps, ending)


def test_what_the_comparison_sees() -> None:
    """The traces are not trivially equal: the shield is True in cleanup and False in the endpoint, an
    exception reaches the dependency as the very object raised, and a cancelled request's cleanup still
    completes its await."""
    trace = _compare([("await-then-raise", "request")], "raise")
    assert ("shield in endpoint", False) in trace
    caught = next(e for e in trace if e[1] == "caught")
    assert caught[2][:3] == ("_Boom", "from the endpoint", "endpoint") and caught[3] is True
    assert ("d0", "slept", True) in trace
    assert trace[-3][1][2] == "endpoint"
    trace = _compare([("await-cleanup", "function")], "cancel")
    assert ("d0", "cleanup slept", True) in trace and ("cancelled caught", True) in trace
    assert "not cancelled" not in trace


def test_counters_and_a_different_traceback_only_where_documented() -> None:
    entered, handed = generator_counters()
    _compare([("plain", "request")], "normal")
    _compare([("plain", "request")], "raise")
    assert generator_counters() == (entered + 2, handed + 1)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="uvloop's loop is the one FastAPI apps run on here")
def test_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def both() -> tuple[Trace, Trace]:
        deps = [("await-cleanup", "function"), ("await-then-raise", "request")]
        return await _run(_fastapi_solver, deps, "raise"), await _run(_plan_solver, deps, "raise")

    fastapi_trace, plan_trace = anyio.run(both, backend_options={"loop_factory": uvloop.new_event_loop})
    assert plan_trace == fastapi_trace
