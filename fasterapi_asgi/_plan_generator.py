"""A route plan's entry into an ``async`` generator dependency (``yield``): FastAPI's ``_solve_generator``
without the two context-manager layers it builds per request.

For an async generator dependency without a concurrency limit, FastAPI's ``_solve_generator`` does, per
request:

1. ``asynccontextmanager(call)(**values)``: ``asynccontextmanager`` makes a new ``functools.wraps`` helper
   every time; the helper makes contextlib's context manager around the generator.
2. Enters one anyio ``CancelScope`` per request on the request's exit stack (``fastapi_inner_astack``),
   shared by all of the request's generator dependencies and kept in
   ``scope["fastapi_async_cleanup_scopes"]``.
3. Wraps the context manager in ``fastapi.concurrency._asynccontextmanager_with_shielded_exit``: a second
   ``asynccontextmanager`` generator that shields the shared scope while the dependency's cleanup runs, puts
   the shield back, then calls ``checkpoint_if_cancelled()``.
4. Enters that on the dependency's exit stack.

:class:`GeneratorEntry` does the same with step 1's helper made once (it is the same function every time)
and step 3 done by :class:`ShieldedExit`, a class instead of a generator. ShieldedExit reproduces the
wrapper's way through where the request ends without an exception reaching the dependency. An exception
that reaches it goes through FastAPI's wrapper itself: ShieldedExit builds it then, around the already
entered context manager, and hands it the exception, so FastAPI's and contextlib's code decide what is
raised, suppressed or re-raised. The dependency's own context manager is always contextlib's.

Kept exactly: every call of the dependency and its cleanup, the cleanup scope and the order it is entered
in, the shield's value whenever the dependency's code runs, ``checkpoint_if_cancelled``, which exception
propagates and with which traceback object. Not kept: the frames of FastAPI's wrapper and contextlib in a
traceback of an exception raised by a cleanup that ended normally. FastAPI's functions are fingerprinted
in ``_plan_proof._FASTAPI_FINGERPRINTS``.
"""

from __future__ import annotations

from typing import Any

# Dependencies entered by GeneratorEntry, and exits that an exception took through FastAPI's wrapper (the
# FastAPI suite's plugin reports them).
_counters = [0, 0]


def generator_counters() -> tuple[int, int]:
    """(async generator dependencies entered by a GeneratorEntry, exceptions handed to FastAPI's wrapper)
    in this process."""
    return _counters[0], _counters[1]


class _Entered:
    """The dependency's context manager, already entered, as FastAPI's wrapper enters and exits it: entering
    gives the value it gave, exiting is its own exit."""

    __slots__ = ("cm", "value")

    def __init__(self, cm: Any, value: Any) -> None:
        self.cm = cm
        self.value = value

    async def __aenter__(self) -> Any:
        return self.value

    async def __aexit__(self, typ: Any, value: Any, traceback: Any) -> Any:
        return await self.cm.__aexit__(typ, value, traceback)


class ShieldedExit:
    """``_asynccontextmanager_with_shielded_exit(cm, cleanup_scope)`` for one request (see the module's
    docstring). ``wrapper`` is FastAPI's function, called only when an exception reaches the dependency."""

    __slots__ = ("_cm", "_scope", "_was_shielded", "_value", "_wrapper", "_checkpoint")

    def __init__(self, cm: Any, cleanup_scope: Any, wrapper: Any, checkpoint: Any) -> None:
        self._cm = cm
        self._scope = cleanup_scope
        self._wrapper = wrapper
        self._checkpoint = checkpoint

    async def __aenter__(self) -> Any:
        # The wrapper: ``was_shielded = cleanup_scope.shield``, then ``async with cm as value: yield value``.
        # What the dependency raises here goes through the wrapper's ``finally``, which puts the shield back,
        # and out unchanged (a generator never raises StopIteration or StopAsyncIteration out of itself:
        # PEP 479 makes them RuntimeError inside the dependency).
        was_shielded = self._was_shielded = self._scope.shield
        try:
            self._value = await self._cm.__aenter__()
        except BaseException:
            self._scope.shield = was_shielded
            raise
        return self._value

    async def __aexit__(self, typ: Any, value: Any, traceback: Any) -> Any:
        scope = self._scope
        if typ is not None:
            # FastAPI's wrapper around the entered context manager, suspended where the original would be.
            # The shield is what it was when the dependency was entered, as the wrapper read it then; the
            # wrapper sets it to True before anything else runs.
            _counters[1] += 1
            wrapper = self._wrapper(_Entered(self._cm, self._value), scope)
            scope.shield = self._was_shielded
            await wrapper.__aenter__()
            return await wrapper.__aexit__(typ, value, traceback)
        # The wrapper resumed after ``yield`` with no exception: its inner ``finally`` shields the scope,
        # ``async with`` exits the dependency, its outer ``finally`` restores the shield, then the
        # checkpoint. An exception from the dependency's exit goes out through both ``finally`` blocks.
        try:
            scope.shield = True
            await self._cm.__aexit__(None, None, None)
        finally:
            scope.shield = self._was_shielded
        await self._checkpoint()
        return False


class GeneratorEntry:
    """``_solve_generator`` for one async generator dependency without a concurrency limit; see the module's
    docstring. Made once per dependency when the plan is built."""

    __slots__ = ("_helper", "_cancel_scope", "_wrapper", "_checkpoint")

    def __init__(self, call: Any) -> None:
        from fastapi import concurrency
        from fastapi.dependencies import utils

        # The function asynccontextmanager(call) returns; _solve_generator makes an equal one per request.
        self._helper = utils.asynccontextmanager(call)
        self._cancel_scope = utils.CancelScope
        self._wrapper = utils._asynccontextmanager_with_shielded_exit
        self._checkpoint = concurrency.checkpoint_if_cancelled

    async def enter(self, request: Any, stack: Any, sub_values: dict[str, Any]) -> Any:
        """The dependency's value, its cleanup pushed on ``stack``, as ``_solve_generator`` gives it."""
        cm = self._helper(**sub_values)
        _counters[0] += 1
        scope = request.scope
        cleanup_scopes = scope.setdefault("fastapi_async_cleanup_scopes", {})
        request_stack = scope["fastapi_inner_astack"]
        cleanup_scope = cleanup_scopes.get(request_stack)
        if cleanup_scope is None:
            # The request stack outlives both dependency scopes: entered before the first generator, so that
            # it encloses their own scopes (FastAPI's comment and order).
            cleanup_scope = request_stack.enter_context(self._cancel_scope())
            cleanup_scopes[request_stack] = cleanup_scope
            request_stack.callback(cleanup_scopes.pop, request_stack)
        return await stack.enter_async_context(
            ShieldedExit(cm, cleanup_scope, self._wrapper, self._checkpoint)
        )
