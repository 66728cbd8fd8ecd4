"""FastAPI's built-in middleware layers run as one flattened equivalent.

A FastAPI app with no user middleware answers every request through five layers around its router:
``ServerErrorMiddleware`` (500 for an unhandled error), ``ExceptionTelemetryMiddleware`` (reports an error
to active telemetry), ``AppBodyLimitMiddleware`` (the app's ``max_body_size``), ``ExceptionMiddleware`` (the
app's exception handlers) and ``AsyncExitStackMiddleware`` (the exit stack FastAPI closes files with). On a
request that raises nothing, all they do is put the exception handlers and the exit stack in the scope, open
and close the exit stack, and pass the messages through. :class:`FlatStack`, set as the app's
``middleware_stack``, does exactly that, in one frame.

When an exception escapes the router, the exit stack closes with it as the real layer's would, and the
outcome is replayed (``_plan_replay``) through shallow copies of the app's own four outer layers, so the
handlers, the 500 page (the debug one included), the telemetry report and the re-raise are theirs.

Used only when the built stack is exactly those five layers, in that order, from the fingerprinted releases,
with no body limit. Anything else keeps the real layers. A request that is not HTTP, or that a parent app's
body limit already covers, goes through the real layers too.
"""

from __future__ import annotations

import copy
from contextlib import AsyncExitStack
from typing import Any

from fasterapi_asgi._plan_code import fastapi_code
from fasterapi_asgi._plan_replay import TrackedSend, raiser, replay_send

# Requests a FlatStack answered, and exceptions it replayed through the real layers (the suite's plugin
# reports both).
_counters = [0, 0]


def stack_counters() -> tuple[int, int]:
    """(requests through a flattened stack, exceptions replayed through the real layers) in this process."""
    return _counters[0], _counters[1]


class FlatStack:
    """An app's ``middleware_stack``: the built-in layers of ``real`` in one frame (see the module)."""

    __slots__ = ("real", "inner", "handlers", "_outer", "_body_limit_key")

    def __init__(self, real: Any, layers: list[Any], inner: Any) -> None:
        self.real = real  # the app's own stack, kept whole
        self._outer = layers[:4]  # ServerError, ExceptionTelemetry, AppBodyLimit, ExceptionMiddleware
        exceptions = layers[3]
        # ExceptionMiddleware's own dictionaries, as it puts them in the scope.
        self.handlers = (exceptions._exception_handlers, exceptions._status_handlers)
        self.inner = inner  # the router, as AsyncExitStackMiddleware calls it
        self._body_limit_key = fastapi_code().MAX_BODY_SIZE_SCOPE_KEY  # a parent app's body limit is in force

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self._body_limit_key in scope:
            await self.real(scope, receive, send)
            return
        _counters[0] += 1
        scope["starlette.exception_handlers"] = self.handlers
        tracked = TrackedSend(send)
        try:
            async with AsyncExitStack() as stack:
                scope["fastapi_middleware_astack"] = stack
                await self.inner(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - replayed through the app's own layers, which re-raise it
            await self._replay(scope, receive, send, exc, tracked.start)

    async def _replay(self, scope: Any, receive: Any, send: Any, exc: Exception, start: Any) -> None:
        _counters[1] += 1
        app = raiser(exc, start)
        for layer in reversed(self._outer):
            outer = copy.copy(layer)
            outer.app = app
            app = outer
        await app(scope, receive, replay_send(send, start))


def _built_in_layers(stack: Any) -> tuple[list[Any], Any] | None:
    """The five built-in layers of a built FastAPI middleware stack and the app inside them, or None when
    the stack is anything else (a user middleware, a body limit, another class)."""
    from fastapi._body_limit import AppBodyLimitMiddleware
    from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
    from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware
    from starlette.middleware.errors import ServerErrorMiddleware
    from starlette.middleware.exceptions import ExceptionMiddleware

    expected = (
        ServerErrorMiddleware,
        ExceptionTelemetryMiddleware,
        AppBodyLimitMiddleware,
        ExceptionMiddleware,
        AsyncExitStackMiddleware,
    )
    layers = []
    layer = stack
    for cls in expected:
        if type(layer) is not cls:
            return None
        layers.append(layer)
        layer = getattr(layer, "app", None)
    if getattr(layers[4], "context_name", None) != "fastapi_middleware_astack":
        return None
    return layers, layer


def flatten(stack: Any) -> Any:
    """``stack`` as a FlatStack when it is exactly FastAPI's built-in layers, else ``stack`` itself."""
    if isinstance(stack, FlatStack):
        return stack
    found = _built_in_layers(stack)
    if found is None:
        return stack
    layers, inner = found
    return FlatStack(stack, layers, inner)


def flatten_app(app: Any) -> bool:
    """Flatten a FastAPI app's middleware stack: now when it is built, else when Starlette builds it (on the
    app's first call). Returns whether it is flattened, or will be when it is built."""
    stack = app.middleware_stack
    if stack is not None:
        app.middleware_stack = flatten(stack)
        return isinstance(app.middleware_stack, FlatStack)
    build = app.build_middleware_stack

    def build_flattened() -> Any:
        return flatten(build())

    app.build_middleware_stack = build_flattened  # an instance attribute: this app only
    # What build_middleware_stack will make of the app as it is now.
    return not app.user_middleware and getattr(app, "max_body_size", None) is None
