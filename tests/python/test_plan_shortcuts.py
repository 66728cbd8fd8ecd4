"""Two shortcuts route plans take through framework code give the framework's own answers.

- ``_plan_params.query_params``: for a query string without ``%`` or ``+``, what Starlette's
  ``QueryParams`` answers to ``get``, ``in`` and ``getlist``; compared on generated strings with the real
  class (which takes ``urllib.parse.parse_qsl``'s pairs, on every Python the suite runs on). And
  ``query_params_object``: a real ``QueryParams`` whose state (``__dict__``, every item) is the one
  ``QueryParams(query_string)`` has.
- ``_plan_entry.AppEntry``: ``FastAPI.__call__`` without asking OpenTelemetry three times per request; it
  takes the app's middleware stack only where ``NativeTelemetry.enabled()`` is false, and hands every other
  request (a provider given or set, a provider variable in the environment, a patched getter, lifespan) to
  ``FastAPI.__call__``.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import fastapi
import pytest
from starlette.datastructures import QueryParams

from fasterapi_asgi import _plan_entry, route_plans
from fasterapi_asgi._plan_params import query_params, query_params_object

ALPHABET = "ab=&;c =\x00\xe9\xff#?/=&&"


def _generated(count: int) -> list[bytes]:
    rng = random.Random(1234)
    found = [b"", b"&", b"=", b"==", b"a", b"a=", b"=a", b"a=b=c", b"&&a&&", b"a=1&a=2&a", b";a=1;b"]
    for _ in range(count):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 14)))
        found.append(text.encode("latin-1"))
    return found


def test_query_params_answer_as_starlettes() -> None:
    names = ["", "a", "b", "c", "a b", "ab", "\xe9", "c ", ";a", "x"]
    for raw in _generated(3000):
        plain = query_params(raw, QueryParams)
        real = QueryParams(raw)
        assert type(plain) is not QueryParams, raw  # the shortcut was taken
        for name in names + [key for key, _ in real.multi_items()]:
            assert (name in plain) == (name in real), (raw, name)
            assert plain.get(name, None) == real.get(name, None), (raw, name)
            assert plain.getlist(name) == real.getlist(name), (raw, name)


def _state(query: Any) -> Any:
    return (type(query), list(vars(query)), vars(query), [(type(k), type(v)) for k, v in query._list])


def test_query_params_objects_are_starlettes() -> None:
    for raw in _generated(3000) + [b"q=a+b", b"q=%41", b"a=1&a=2&b=%zz"]:
        made = query_params_object(raw, QueryParams)
        real = QueryParams(raw)
        assert _state(made) == _state(real), raw
        assert made == real and str(made) == str(real) and made.multi_items() == real.multi_items(), raw


@pytest.mark.parametrize("raw", [b"q=a+b", b"q=%41", b"a%3Db=1", b"+=+", b"q=%zz"])
def test_escapes_get_the_real_class(raw: bytes) -> None:
    found = query_params(raw, QueryParams)
    assert type(found) is QueryParams
    assert found.multi_items() == QueryParams(raw).multi_items()


needs_proven = pytest.mark.skipif(
    route_plans.unproven_fastapi() != "", reason="the FastAPI entry is only for a proven FastAPI"
)


def _app() -> Any:
    app = fastapi.FastAPI()

    @app.get("/n/{n}")
    async def read(n: int) -> dict[str, int]:
        return {"n": n}

    return app


def _http_scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/n/4",
        "raw_path": b"/n/4",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"x")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


def _call(entry: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(entry(scope, receive, send))
    return sent


class _Recorder:
    """A fallback that records being called and answers as the app does."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await self.app(scope, receive, send)


@needs_proven
def test_entry_takes_the_stack_while_telemetry_is_off() -> None:
    app = _app()
    assert _plan_entry.unproven_entry(app) == ""
    assert app._native_telemetry.enabled() is False
    fallback = _Recorder(app)
    entry = _plan_entry.AppEntry(app, fallback)
    scope = _http_scope()
    through_entry = _call(entry, scope)
    assert fallback.calls == 0
    assert scope["app"] is app
    assert through_entry == _call(app, _http_scope())
    assert through_entry[-1]["body"] == b'{"n":4}'


@needs_proven
@pytest.mark.parametrize("case", ["env", "given", "global", "patched", "lifespan", "root_path"])
def test_entry_hands_everything_else_to_fastapi(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace

    app = _app()
    fallback = _Recorder(app)
    entry = _plan_entry.AppEntry(app, fallback)
    scope = _http_scope()
    if case == "env":
        monkeypatch.setenv("OTEL_PYTHON_METER_PROVIDER", "not_loaded")
        assert not entry._telemetry.off(app._native_telemetry)
        return  # enabled() would import the provider the variable names: FastAPI's call does that
    if case == "given":
        monkeypatch.setitem(app._native_telemetry.config, "tracer_provider", trace.NoOpTracerProvider())
        assert app._native_telemetry.enabled() is True
    elif case == "global":
        monkeypatch.setattr(trace, "_TRACER_PROVIDER", trace.NoOpTracerProvider())
        assert app._native_telemetry.enabled() is True
    elif case == "patched":
        monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.NoOpTracerProvider())
        assert app._native_telemetry.enabled() is True
    elif case == "lifespan":
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> Any:
            return next(messages)

        async def send(message: Any) -> None:
            pass

        asyncio.run(entry(scope, receive, send))
        assert fallback.calls == 1
        return
    else:  # a root path is set as FastAPI.__call__ sets it, then the stack answers
        app.root_path = "/base"
        scope["path"] = "/base/n/4"
        assert _call(entry, scope)[-1]["body"] == b'{"n":4}'
        assert scope["root_path"] == "/base" and fallback.calls == 0
        return
    assert not entry._telemetry.off(app._native_telemetry)
    _call(entry, scope)
    assert fallback.calls == 1


@needs_proven
def test_entry_is_not_used_for_an_own_call() -> None:
    class Wrapped(fastapi.FastAPI):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await super().__call__(scope, receive, send)

    assert "defines its own __call__" in _plan_entry.unproven_entry(Wrapped())
    assert _plan_entry.unproven_entry(object()) == "not a FastAPI app"
    assert route_plans.entry_for(Wrapped()).__class__ is Wrapped
    assert isinstance(route_plans.entry_for(_app()), _plan_entry.AppEntry)


@needs_proven
def test_environment_keys_are_the_getters() -> None:
    """The entry looks the variables up as os.environ stores them: setting one through os.environ is seen."""
    entry = _plan_entry.AppEntry(_app())
    telemetry = entry.app._native_telemetry
    assert entry._telemetry.off(telemetry)
    for name in ("OTEL_PYTHON_TRACER_PROVIDER", "OTEL_PYTHON_METER_PROVIDER", "OTEL_PYTHON_LOGGER_PROVIDER"):
        os.environ[name] = "x"
        try:
            assert not entry._telemetry.off(telemetry), name
        finally:
            del os.environ[name]
    assert entry._telemetry.off(telemetry)
