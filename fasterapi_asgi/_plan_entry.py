"""The server's entry into a FastAPI app: ``FastAPI.__call__`` and ``Starlette.__call__`` in one frame.

On every HTTP and WebSocket request, ``FastAPI.__call__`` asks whether its native OpenTelemetry bridge is on
(``NativeTelemetry.enabled``): for each of tracing, metrics and logs, whether the app was given a provider or
OpenTelemetry's global one is configured. OpenTelemetry answers that by looking the provider's environment
variable up in ``os.environ`` when no global provider is set, three times per request. With the bridge off,
``FastAPI.__call__`` calls ``Starlette.__call__``, which puts the app in the scope and calls the middleware
stack.

:class:`AppEntry` gives the same answer from what those calls read, without the calls: no provider given to
the app, no global provider set, none of the three variables in the environment, and the functions and
modules that ``enabled`` uses being the ones it was proven with. That is exactly the case in which
``enabled`` is false without side effects (OpenTelemetry's getters return their proxy providers, which
FastAPI's ``_unconfigured`` counts as not configured). Then it does what ``Starlette.__call__`` does. In
every other case (a provider given or set, a variable present, anything patched, a lifespan scope) the app's
own ``FastAPI.__call__`` answers, which may then turn telemetry on exactly as it would have.

Used only for an app whose class calls ``FastAPI.__call__`` and ``Starlette.__call__`` as FastAPI defines
them, while the functions below have the names recorded from the proven releases (``_ENTRY_FINGERPRINTS``).
"""

from __future__ import annotations

import os
from typing import Any

from fasterapi_asgi._plan_proof import _names_digest

# Requests the entry took through the app's middleware stack, and requests it handed to FastAPI.__call__.
_counters = [0, 0]

# The names each function the entry stands in for references (see _plan_proof._names_digest), recorded from
# FastAPI 0.165.0, Starlette 1.10.0 and opentelemetry-api 1.45.2; the same on Python 3.11, 3.12, 3.13 and
# 3.14.
_ENTRY_FINGERPRINTS: dict[str, str] = {
    "FastAPI.__call__": "69ec25146f424d3f",
    "Starlette.__call__": "96bdf88baee915a7",
    "NativeTelemetry.enabled": "1e399ed968f4509b",
    "_unconfigured": "2ebdd06445a76a46",
    "trace.get_tracer_provider": "6190ce67b5e46472",
    "metrics.get_meter_provider": "516eb04cf5b38456",
    "_logs.get_logger_provider": "7c4db8b728f65fa5",
}


def entry_counters() -> tuple[int, int]:
    """(requests the entry took to the middleware stack, requests handed to FastAPI.__call__)."""
    return _counters[0], _counters[1]


class _Telemetry:
    """What ``NativeTelemetry.enabled`` reads, looked up once; :meth:`off` tells, per request, whether it
    would certainly answer false without side effects."""

    def __init__(self) -> None:
        from fastapi.telemetry import _api, _asgi
        from opentelemetry import _logs, metrics, trace
        from opentelemetry._logs import _internal as logs_internal
        from opentelemetry.metrics import _internal as metrics_internal

        self.asgi = _asgi
        self.NativeTelemetry = _asgi.NativeTelemetry
        self.enabled = _asgi.NativeTelemetry.enabled
        self.unconfigured = _api._unconfigured
        self.trace, self.metrics, self.logs = trace, metrics, _logs
        self.metrics_internal, self.logs_internal = metrics_internal, logs_internal
        self.get_tracer = trace.get_tracer_provider
        self.get_meter = metrics_internal.get_meter_provider
        self.get_logger = logs_internal.get_logger_provider
        environ = os.environ
        # The variables each getter looks up when no provider is set, as os.environ stores their keys.
        self.keys = tuple(
            environ.encodekey(name)  # type: ignore[attr-defined]
            for name in (
                trace.OTEL_PYTHON_TRACER_PROVIDER,
                metrics_internal.OTEL_PYTHON_METER_PROVIDER,
                logs_internal._OTEL_PYTHON_LOGGER_PROVIDER,
            )
        )

    def unproven(self) -> str:
        """Why the entry cannot stand in for these functions ("" when it can)."""
        from fastapi import FastAPI
        from starlette.applications import Starlette

        found = {
            "FastAPI.__call__": FastAPI.__call__,
            "Starlette.__call__": Starlette.__call__,
            "NativeTelemetry.enabled": self.enabled,
            "_unconfigured": self.unconfigured,
            "trace.get_tracer_provider": self.get_tracer,
            "metrics.get_meter_provider": self.get_meter,
            "_logs.get_logger_provider": self.get_logger,
        }
        changed = [name for name, func in found.items() if _names_digest(func) != _ENTRY_FINGERPRINTS[name]]
        if changed:
            return f"{', '.join(changed)} differ from the proven code"
        proxies = (
            self.trace._PROXY_TRACER_PROVIDER,
            self.metrics_internal._PROXY_METER_PROVIDER,
            self.logs_internal._PROXY_LOGGER_PROVIDER,
        )
        if not all(self.unconfigured(proxy) for proxy in proxies):
            return "OpenTelemetry's proxy providers are not the ones FastAPI counts as unconfigured"
        if type(os.environ) is not os._Environ:
            return "os.environ is not the standard mapping"
        return ""

    def off(self, telemetry: Any) -> bool:
        """True when ``telemetry.enabled()`` would return False and do nothing else."""
        if type(telemetry) is not self.NativeTelemetry:
            return False
        config = telemetry.config
        if (
            config["tracer_provider"] is not None
            or config["meter_provider"] is not None
            or config["logger_provider"] is not None
        ):
            return False
        trace, metrics_internal, logs_internal = self.trace, self.metrics_internal, self.logs_internal
        if (
            trace._TRACER_PROVIDER is not None
            or metrics_internal._METER_PROVIDER is not None
            or logs_internal._LOGGER_PROVIDER is not None
        ):
            return False
        # What enabled() calls, through the names it calls them by.
        asgi = self.asgi
        if (
            self.NativeTelemetry.enabled is not self.enabled
            or asgi._unconfigured is not self.unconfigured
            or asgi.trace is not trace
            or asgi.metrics is not self.metrics
            or asgi._logs is not self.logs
            or trace.get_tracer_provider is not self.get_tracer
            or self.metrics.get_meter_provider is not self.get_meter
            or self.logs.get_logger_provider is not self.get_logger
        ):
            return False
        # The environment each getter reads: trace reads os.environ, metrics and logs their own import of it.
        environ = os.environ
        if (
            type(environ) is not os._Environ
            or metrics_internal.environ is not environ
            or logs_internal.environ is not environ
        ):
            return False
        data = environ._data  # type: ignore[attr-defined]
        tracer_key, meter_key, logger_key = self.keys
        return tracer_key not in data and meter_key not in data and logger_key not in data


_telemetry: _Telemetry | None = None


def _telemetry_code() -> _Telemetry:
    global _telemetry
    if _telemetry is None:
        _telemetry = _Telemetry()
    return _telemetry


def unproven_entry(app: Any) -> str:
    """Why the server cannot enter ``app`` through an :class:`AppEntry` ("" when it can)."""
    from fastapi import FastAPI
    from starlette.applications import Starlette

    if not isinstance(app, FastAPI):
        return "not a FastAPI app"
    cls = type(app)
    if cls.__call__ is not FastAPI.__call__:
        return f"{cls.__qualname__} defines its own __call__"
    mro = cls.__mro__
    if mro[mro.index(FastAPI) + 1] is not Starlette:  # FastAPI.__call__'s super().__call__
        return f"{cls.__qualname__}'s classes put another __call__ after FastAPI's"
    try:
        return _telemetry_code().unproven()
    except (ImportError, AttributeError) as exc:
        return f"FastAPI or OpenTelemetry lacks {exc}"


class AppEntry:
    """The ASGI app the server calls in place of a FastAPI app (see the module). ``fallback`` is what
    answers every other request: the app itself, or (when FastAPI.__call__ is patched) the original
    function bound to it."""

    __slots__ = ("app", "fallback", "_telemetry")

    def __init__(self, app: Any, fallback: Any = None) -> None:
        self.app = app
        self.fallback = app if fallback is None else fallback
        self._telemetry = _telemetry_code()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self.app
        kind = scope["type"]
        if (kind == "http" or kind == "websocket") and self._telemetry.off(app._native_telemetry):
            _counters[0] += 1
            # FastAPI.__call__, telemetry off:
            if app.root_path:
                scope["root_path"] = app.root_path
            # then Starlette.__call__.
            scope["app"] = app
            if app.middleware_stack is None:
                app.middleware_stack = app.build_middleware_stack()
            await app.middleware_stack(scope, receive, send)
            return
        _counters[1] += 1
        await self.fallback(scope, receive, send)


def patch_fastapi_call() -> Any:
    """Every FastAPI app entered through an AppEntry (FastAPI.__call__ replaced), for running FastAPI's own
    suite with the entry on. Returns the function that undoes it."""
    from fastapi import FastAPI

    original = FastAPI.__call__
    reason = _telemetry_code().unproven()
    if reason:
        raise RuntimeError(f"the FastAPI entry cannot be forced on: {reason}")

    async def __call__(self: Any, scope: Any, receive: Any, send: Any) -> None:  # a coroutine function,
        # as callers that tell ASGI 3 from ASGI 2 (Starlette's TestClient) require
        await AppEntry(self, original.__get__(self))(scope, receive, send)

    FastAPI.__call__ = __call__  # type: ignore[method-assign]

    def undo() -> None:
        FastAPI.__call__ = original  # type: ignore[method-assign]

    return undo
