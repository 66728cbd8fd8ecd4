"""Route plans: FastAPI routes answered without FastAPI's per-request scaffolding, with FastAPI's own answers.

For every FastAPI ``APIRoute`` whose shape a plan reproduces exactly, the route's ``app`` (what Starlette's
router calls once the path matched) is replaced by a :class:`RoutePlan`; routers, middleware, exception
handlers and mounts run as before. What a plan leaves out is what FastAPI does on every request whatever the
route needs: two ``AsyncExitStack`` contexts, reading and parsing a body the route does not take,
``solve_dependencies`` walking an empty dependency tree and making a sub-``Response``, ``BackgroundTasks`` and
telemetry look-ups. What it keeps is FastAPI's own code for everything that decides an answer:
``request_params_to_args`` (values and errors of path, query, header and cookie parameters), the endpoint,
``serialize_response``, the response class, and Starlette's ``wrap_app_handling_exceptions`` around them, so
the bytes, the exceptions and the handlers that answer them are FastAPI's.

A plan commits only on success: when a parameter does not validate, or FastAPI's telemetry is active for the
request, it hands the request to the route's original app before anything has run, and FastAPI answers (the
422 is FastAPI's own). This round compiles routes with no dependencies, no body and no
``Request``/``Response``/``BackgroundTasks``/``SecurityScopes`` parameters whose endpoint is not a generator
(``async def``, or ``def`` run in the thread pool as FastAPI runs it), with FastAPI's default response class
or an explicit ``response_class``; every other route keeps FastAPI's handler, and ``install`` says why.

Proven on the FastAPI releases in ``PROVEN_FASTAPI``, whose relevant functions must also reference exactly the
names recorded in ``_FASTAPI_FINGERPRINTS`` (a changed patch release falls back to FastAPI's handlers):
FastAPI's own test suite passes with a plan on every route it can compile
(tests/upstream/fa_force_route_plans.py), in verify mode, where FastAPI's ``solve_dependencies`` must build
the same arguments for each compiled request.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any

from fasterapi_asgi._plan_deps import DependencyRun, why_not_tree
from fasterapi_asgi._plan_replay import TrackedSend, raiser, replay_send

logger = logging.getLogger("uvicorn.error")

# FastAPI releases the plans are proven on (the test lock's; FastAPI's suite runs with plans forced on).
PROVEN_FASTAPI = ("0.165.0",)

# The names each function a plan stands in for, calls, or caches the decisions of references, nested functions
# included (see _fingerprinted): a release whose code differs is not compiled for. Recorded from FastAPI
# 0.165.0 and Starlette 1.10.0 with _names_digest(); the same on Python 3.11, 3.12 and 3.13.
_FASTAPI_FINGERPRINTS: dict[str, str] = {
    "request_response": "499ac251a42bccfa",
    "get_request_handler": "4997a6eaf82a139c",
    "solve_dependencies": "7edc1ac89fd8e8ed",
    "_build_response_args": "36c0f41ec98868b1",
    "run_endpoint_function": "e52af26dbb91f295",
    "serialize_response": "dc41da1597e11f23",
    "APIRoute.get_route_handler": "3efcd9a307d8012c",
    "request_params_to_args": "965a3885db60a57c",
    "request_body_to_args": "b67e79d7317d2b93",
    "Request.body": "a24bad0598db956c",
    "Request.stream": "c8eb699ca64f116f",
    "Request.json": "f4a630bb41ca832b",
    "_get_multidict_value": "dbf298fddebe3626",
    "_validate_value_with_model_field": "94dd748a7902bcd9",
    "_get_param_aliases": "b65da11196e16aa4",
    "_get_cache_key": "2998e8f6eb757f95",
    "_get_oauth_scopes": "f7687745bfda8413",
    "_solve_generator": "97bb41412e7e401b",
    "ModelField.validate": "ca2d6664687fa53b",
    "ModelField.serialize_json": "2af5da026847c267",
    "HTTPConnection.query_params": "75140c454c985be6",
    "HTTPConnection.headers": "1aae2b7980479131",
    "HTTPConnection.path_params": "9b98b4019a93466c",
    "HTTPConnection.cookies": "85d65abca7b1c71b",
    "Response.__init__": "bdc3becdf37611a0",
    "Response.init_headers": "d0a829298fa07000",
    "Response.render": "6bca43d5a2a3e643",
    "Response.__call__": "40c2f2076e91794d",
    "wrap_app_handling_exceptions": "e988fc71db3a6e4c",
    "ServerErrorMiddleware.__call__": "cee0be719c396b0c",
    "ExceptionTelemetryMiddleware.__call__": "83d7971283e2b638",
    "AppBodyLimitMiddleware.__call__": "2b30b0ddfbba82ad",
    "ExceptionMiddleware.__call__": "234b8a408e0528d8",
    "AsyncExitStackMiddleware.__call__": "63185ed6bf3ed4f5",
    "FastAPI.build_middleware_stack": "7a4355e703db9df9",
}

# Requests answered by a plan, requests a plan handed to FastAPI's own handler, and exceptions a plan replayed
# through FastAPI's route-level exception wrapper (the suite's plugin reports them).
_counters = [0, 0, 0]


def plan_counters() -> tuple[int, int, int]:
    """(requests answered by a plan, requests a plan handed back to FastAPI's handler, exceptions a plan
    replayed through the route's exception wrapper) in this process."""
    return _counters[0], _counters[1], _counters[2]


def _names(code: Any, acc: set[str]) -> set[str]:
    acc.update(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            _names(const, acc)
    return acc


def _names_digest(func: Any) -> str:
    code = getattr(func, "__code__", None)
    if code is None:
        return ""
    return hashlib.sha256(" ".join(sorted(_names(code, set()))).encode()).hexdigest()[:16]


def _fingerprinted() -> dict[str, Any]:
    """The functions whose code the plans reproduce, stand in for, or cache decisions of."""
    from fastapi import routing
    from fastapi._body_limit import AppBodyLimitMiddleware
    from fastapi._compat import v2
    from fastapi.dependencies import utils
    from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
    from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware
    from starlette._exception_handler import wrap_app_handling_exceptions
    from starlette.middleware.errors import ServerErrorMiddleware
    from starlette.middleware.exceptions import ExceptionMiddleware
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import Response

    return {
        # The route handler a plan stands in for, and what it calls.
        "request_response": routing.request_response,
        "get_request_handler": routing.get_request_handler,
        "solve_dependencies": utils.solve_dependencies,
        "_build_response_args": getattr(routing, "_build_response_args", None),
        "run_endpoint_function": routing.run_endpoint_function,
        "serialize_response": routing.serialize_response,
        "APIRoute.get_route_handler": routing.APIRoute.get_route_handler,
        # Parameter reading (_plan_params).
        "request_params_to_args": utils.request_params_to_args,
        "request_body_to_args": utils.request_body_to_args,
        "Request.body": Request.body,
        "Request.stream": Request.stream,
        "Request.json": Request.json,
        "_get_multidict_value": utils._get_multidict_value,
        "_validate_value_with_model_field": utils._validate_value_with_model_field,
        "_get_param_aliases": utils._get_param_aliases,
        "ModelField.validate": v2.ModelField.validate,
        # Dependencies (_plan_deps).
        "_get_cache_key": utils._get_cache_key,
        "_get_oauth_scopes": utils._get_oauth_scopes,
        "_solve_generator": utils._solve_generator,
        "ModelField.serialize_json": v2.ModelField.serialize_json,
        "HTTPConnection.query_params": HTTPConnection.query_params.fget,  # type: ignore[attr-defined]
        "HTTPConnection.headers": HTTPConnection.headers.fget,  # type: ignore[attr-defined]
        "HTTPConnection.path_params": HTTPConnection.path_params.fget,  # type: ignore[attr-defined]
        "HTTPConnection.cookies": HTTPConnection.cookies.fget,  # type: ignore[attr-defined]
        # The response written without a Response object.
        "Response.__init__": Response.__init__,
        "Response.init_headers": Response.init_headers,
        "Response.render": Response.render,
        "Response.__call__": Response.__call__,
        # The flattened middleware stack (_plan_stack) and the replayed wrappers (_plan_replay).
        "wrap_app_handling_exceptions": wrap_app_handling_exceptions,
        "ServerErrorMiddleware.__call__": ServerErrorMiddleware.__call__,
        "ExceptionTelemetryMiddleware.__call__": ExceptionTelemetryMiddleware.__call__,
        "AppBodyLimitMiddleware.__call__": AppBodyLimitMiddleware.__call__,
        "ExceptionMiddleware.__call__": ExceptionMiddleware.__call__,
        "AsyncExitStackMiddleware.__call__": AsyncExitStackMiddleware.__call__,
        "FastAPI.build_middleware_stack": _fastapi_class().build_middleware_stack,
    }


def _fastapi_class() -> Any:
    from fastapi import FastAPI

    return FastAPI


def unproven_fastapi() -> str:
    """Why this process's FastAPI is not one the plans are proven on ("" when it is)."""
    import fastapi

    version = getattr(fastapi, "__version__", "?")
    if version not in PROVEN_FASTAPI:
        return f"FastAPI {version} is not a proven release ({', '.join(PROVEN_FASTAPI)})"
    try:
        funcs = _fingerprinted()
    except (ImportError, AttributeError) as exc:
        return f"FastAPI {version} lacks {exc}"
    changed = [name for name, func in funcs.items() if _names_digest(func) != _FASTAPI_FINGERPRINTS.get(name)]
    if changed:
        return f"FastAPI {version}'s {', '.join(changed)} differ from the proven code"
    return ""


class _FastAPICode:
    """The FastAPI and Starlette functions and classes a plan calls on every request, looked up once, when the
    first plan is built (the module imports neither framework: a process serving another app never loads
    them). NOTE: imported inside __call__ they cost each request an import lookup per name."""

    def __init__(self) -> None:
        from fastapi._compat.v2 import _regenerate_error_with_loc
        from fastapi.background import BackgroundTasks
        from fastapi.dependencies.models import (
            _is_async_gen_callable,
            _is_coroutine_callable,
            _is_gen_callable,
        )
        from fastapi.dependencies.utils import (
            _get_oauth_scopes,
            _solve_generator,
            get_dependant,
            solve_dependencies,
        )
        from fastapi.exceptions import FastAPIError, RequestValidationError, ResponseValidationError
        from fastapi.routing import _extract_endpoint_context, run_endpoint_function, serialize_response
        from fastapi.security import SecurityScopes
        from fastapi.telemetry._api import _get_request_telemetry, _validation_failed
        from fastapi.utils import is_body_allowed_for_status_code
        from pydantic import ValidationError
        from starlette._exception_handler import wrap_app_handling_exceptions
        from starlette.concurrency import run_in_threadpool
        from starlette.datastructures import Headers, QueryParams
        from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
        from starlette.requests import Request
        from starlette.responses import Response

        self.is_gen_callable = _is_gen_callable
        self.is_async_gen_callable = _is_async_gen_callable
        self.is_coroutine_callable = _is_coroutine_callable
        self.get_oauth_scopes = _get_oauth_scopes
        self.get_dependant = get_dependant
        self.solve_dependencies = solve_dependencies
        self.RequestValidationError = RequestValidationError
        self.validation_failed = _validation_failed
        self.BackgroundTasks = BackgroundTasks
        self.solve_generator = _solve_generator
        self.FastAPIError = FastAPIError
        self.SecurityScopes = SecurityScopes
        self.run_in_threadpool = run_in_threadpool
        self.regenerate_error_with_loc = _regenerate_error_with_loc
        self.ResponseValidationError = ResponseValidationError
        self.extract_endpoint_context = _extract_endpoint_context
        self.run_endpoint_function = run_endpoint_function
        self.serialize_response = serialize_response
        self.get_request_telemetry = _get_request_telemetry
        self.is_body_allowed_for_status_code = is_body_allowed_for_status_code
        self.ValidationError = ValidationError
        self.wrap_app_handling_exceptions = wrap_app_handling_exceptions
        self.Headers = Headers
        self.MAX_BODY_SIZE_SCOPE_KEY = MAX_BODY_SIZE_SCOPE_KEY
        from pydantic_core import PydanticUndefined

        self.Undefined = PydanticUndefined
        self.QueryParams = QueryParams
        self.Request = Request
        self.Response = Response


_code: _FastAPICode | None = None


def fastapi_code() -> _FastAPICode:
    """The looked-up FastAPI names (made on first use)."""
    global _code
    if _code is None:
        _code = _FastAPICode()
    return _code


# request_response's error when a dependency with yield swallowed the exception and no response was sent.
_RESPONSE_NOT_AWAITED = (
    "Response not awaited. There's a high chance that the "
    "application code is raising an exception and a dependency with yield "
    "has a block with a bare except, or a block with except Exception, "
    "and is not raising the exception again. Read more about it in the "
    "docs: https://fastapi.tiangolo.com/tutorial/dependencies/dependencies-with-yield/#dependencies-with-yield-and-except"
)


class _JSONBody:
    """How a plan writes the default response of a route with a response model, as FastAPI does (the
    model's ``TypeAdapter`` validates the return value and dumps it to JSON bytes, then ``Response(content,
    media_type="application/json", status_code=...)``), without the ``Response`` object: the status, the
    header list and the body ``Response.__init__``/``init_headers`` would make, sent as ``Response.__call__``
    sends them."""

    __slots__ = ("validate", "dump_json", "options", "status", "content_length", "body_allowed")

    def __init__(self, route: Any) -> None:
        assert _code is not None
        adapter = route.response_field._type_adapter  # ModelField.validate / serialize_json use this one
        self.validate = adapter.validate_python
        self.dump_json = adapter.dump_json
        self.options = {
            "include": route.response_model_include,
            "exclude": route.response_model_exclude,
            "by_alias": route.response_model_by_alias,
            "exclude_unset": route.response_model_exclude_unset,
            "exclude_defaults": route.response_model_exclude_defaults,
            "exclude_none": route.response_model_exclude_none,
        }
        self.status = route.status_code if route.status_code else 200
        # Response.init_headers: no content-length below 200 and for 204 and 304; FastAPI then empties the
        # body of a status that may not have one (205 keeps the content-length of the body it had).
        self.content_length = not (self.status < 200 or self.status in (204, 304))
        self.body_allowed = _code.is_body_allowed_for_status_code(self.status)

    def messages(
        self, value: Any, status: Any = None, extra_headers: Any = ()
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The two messages for a validated return value; ``status`` when the response arguments give one
        other than the route's (a dependency's sub-response), and the sub-response's headers after the
        response's own, as FastAPI extends them."""
        body = self.dump_json(value, **self.options)
        if status is None or status == self.status:
            status, content_length, body_allowed = self.status, self.content_length, self.body_allowed
        else:
            content_length = not (status < 200 or status in (204, 304))
            body_allowed = _code.is_body_allowed_for_status_code(status)  # type: ignore[union-attr]
        headers = [(b"content-type", b"application/json")]
        if content_length:
            headers.insert(0, (b"content-length", str(len(body)).encode("latin-1")))
        headers.extend(extra_headers)
        if not body_allowed:
            body = b""
        return (
            {"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body},
        )


# The Dependant's special parameters: a route taking one runs as a tree (the websocket one is never compiled).
_SPECIAL_PARAMS = (
    "request_param_name",
    "http_connection_param_name",
    "response_param_name",
    "background_tasks_param_name",
    "security_scopes_param_name",
)


class RoutePlan:
    """The ASGI app a compiled route answers with (see the module's docstring). ``original`` is FastAPI's."""

    __slots__ = (
        "original",
        "dependant",
        "is_coroutine",
        "call",
        "readers",
        "tree",
        "tree_needs_response",
        "body",
        "endpoint_path",
        "status_code",
        "response_field",
        "response_class",
        "use_dump_json",
        "json_body",
        "serialize_options",
        "verify",
        "_route",
    )

    def __init__(self, route: Any, *, verify: bool = False) -> None:
        from fastapi.datastructures import DefaultPlaceholder
        from fastapi.dependencies.models import _is_coroutine_callable

        from fasterapi_asgi._plan_body import BodyReader
        from fasterapi_asgi._plan_deps import DepNode
        from fasterapi_asgi._plan_params import ParamReader

        fastapi_code()
        dependant = route.dependant
        self._route = route
        self.original = route.app
        self.dependant = dependant
        self.is_coroutine = _is_coroutine_callable(dependant.call)
        self.call = dependant.call
        # solve_dependencies' order; the readers keep the dependant's own lists (verify mode needs them).
        self.readers = tuple(
            (source, ParamReader(fields, multi=source in ("query", "header")))
            for source, fields in (
                ("path", dependant.path_params),
                ("query", dependant.query_params),
                ("header", dependant.header_params),
                ("cookie", dependant.cookie_params),
            )
            if fields
        )
        # A route with dependencies or special parameters runs its tree (see _plan_deps).
        self.tree = None
        self.tree_needs_response = False
        if dependant.dependencies or any(getattr(dependant, name) for name in _SPECIAL_PARAMS):
            self.tree = DepNode(dependant)
            self.tree_needs_response = self.tree.needs_response()
        self.body = BodyReader(route) if dependant.body_params else None
        self.endpoint_path = dependant.path
        self.status_code = route.status_code
        self.response_field = route.response_field
        response_class = route.response_class
        # As get_request_handler: the default class's value, or the route's own; FastAPI's faster bytes path
        # only when the class is the default one and there is a response model.
        self.use_dump_json = self.response_field is not None and isinstance(
            response_class, DefaultPlaceholder
        )
        self.response_class = (
            response_class.value if isinstance(response_class, DefaultPlaceholder) else response_class
        )
        # The default response of an async endpoint is written without a Response object.
        self.json_body = _JSONBody(route) if self.use_dump_json and self.is_coroutine else None
        self.serialize_options = {
            "include": route.response_model_include,
            "exclude": route.response_model_exclude,
            "by_alias": route.response_model_by_alias,
            "exclude_unset": route.response_model_exclude_unset,
            "exclude_defaults": route.response_model_exclude_defaults,
            "exclude_none": route.response_model_exclude_none,
        }
        self.verify = verify

    def _read_params(self, scope: Any, record: dict[int, Any] | None = None) -> dict[str, Any] | None:
        """The endpoint's arguments, as solve_dependencies would give them; None where it would report an
        error. Each source's mapping is made as Starlette's HTTPConnection makes it. ``record`` (verify mode)
        gets each source's result as request_params_to_args returns it, by the identity of FastAPI's list."""
        code = _code
        assert code is not None
        values: dict[str, Any] = {}
        for source, reader in self.readers:
            if source == "path":
                received: Any = scope.get("path_params", {})
            elif source == "query":
                received = code.QueryParams(scope["query_string"])
            elif source == "header":
                received = code.Headers(scope=scope)
            else:
                received = code.Request(scope).cookies
            found = reader.read(received)
            if found is None:
                return None
            values.update(found)
            if record is not None:
                record[id(reader.fields)] = (found, [])
        return values

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        code = _code
        assert code is not None  # made with the first plan
        # FastAPI's telemetry records spans and data from inside its own handler: with it active, that
        # handler. And without FastAPI's middleware exit stack in the scope (a route served outside a FastAPI
        # app), its handler's own assertion answers.
        if code.get_request_telemetry() is not None or not isinstance(
            scope.get("fastapi_middleware_astack"), AsyncExitStack
        ):
            _counters[1] += 1
            await self.original(scope, receive, send)
            return
        if self.tree is not None:
            await self._call_tree(scope, receive, send)
            return
        # Any parameter error: FastAPI's handler answers (its 422), before anything of the route has run.
        results: dict[int, Any] | None = {} if self.verify else None
        values = self._read_params(scope, results)
        if values is None:
            _counters[1] += 1
            await self.original(scope, receive, send)
            return
        if self.body is not None:
            # A body limit (a parent app's) counts the bytes FastAPI reads: its handler reads them.
            if code.MAX_BODY_SIZE_SCOPE_KEY in scope:
                _counters[1] += 1
                await self.original(scope, receive, send)
                return
            body_value, replay = await self.body.read(code.Headers(scope=scope), receive)
            if replay is not None:
                _counters[1] += 1
                await self.original(scope, replay, send)
                return
            values[self.body.name] = body_value
            if results is not None:
                results[id(self.body.fields)] = ({self.body.name: body_value}, [])
        if results is not None:
            await self._verify_values(scope, receive, values, results)
        _counters[0] += 1
        # From here on the route runs once. What request_response's exception wrapper would do with an
        # exception is replayed through that wrapper (see _plan_replay).
        start: dict[str, Any] | None = None
        try:
            json_body = self.json_body
            if json_body is not None:
                raw = await self.call(**values)  # run_endpoint_function's call, telemetry being off
                if not isinstance(raw, code.Response):
                    start, body = json_body.messages(self._validate_return(scope, raw, json_body))
                    if self.verify:
                        await self._verify_response(scope, raw, start, body)
                    await send(start)
                    await send(body)
                    return
            else:
                raw = await code.run_endpoint_function(
                    dependant=self.dependant, values=values, is_coroutine=self.is_coroutine
                )
            response = raw if isinstance(raw, code.Response) else await self._response(scope, raw)
            tracked = TrackedSend(send)
            try:
                await response(scope, receive, tracked)  # type: ignore[arg-type]
            finally:
                start = tracked.start
        except Exception as exc:  # noqa: BLE001 - replayed through FastAPI's wrapper, which re-raises it
            _counters[2] += 1
            request = code.Request(scope, receive, send)
            wrapped = code.wrap_app_handling_exceptions(raiser(exc, start), request)
            await wrapped(scope, receive, replay_send(send, start))

    async def _call_tree(self, scope: Any, receive: Any, send: Any) -> None:
        """A route with dependencies or special parameters: request_response's exit stacks and
        get_request_handler's steps, with the tree run as solve_dependencies runs it (see _plan_deps)."""
        code = _code
        assert code is not None and self.tree is not None
        provider = self._route.dependency_overrides_provider
        if provider is not None and getattr(provider, "dependency_overrides", None):
            _counters[1] += 1  # overrides are looked up per request by FastAPI's handler
            await self.original(scope, receive, send)
            return
        request = code.Request(scope, receive, send)  # request_response's: the one every step gets
        validated: list[dict[str, Any]] = []
        if not self.tree.validate(request, validated):
            _counters[1] += 1
            await self.original(scope, receive, send)
            return
        if self.body is not None:
            if code.MAX_BODY_SIZE_SCOPE_KEY in scope:
                _counters[1] += 1
                await self.original(scope, receive, send)
                return
            body_value, replay = await self.body.read(request.headers, receive, request)
            if replay is not None:
                _counters[1] += 1
                await self.original(scope, replay, send)
                return
            validated[-1][self.body.name] = body_value  # the root's, as request_body_to_args adds it
        _counters[0] += 1
        body = getattr(request, "_json", code.Undefined)  # what get_request_handler's body step gave
        run = DependencyRun(request, validated, None, self._route, body, code)
        if self.tree_needs_response:
            run.sub_response()
        start: dict[str, Any] | None = None
        try:
            response_awaited = False
            async with AsyncExitStack() as request_stack:
                scope["fastapi_inner_astack"] = request_stack
                async with AsyncExitStack() as function_stack:
                    scope["fastapi_function_astack"] = function_stack
                    values = await run.solve(self.tree)
                    if run.errors:  # from a sub-tree FastAPI solved: get_request_handler's 422
                        validation_error = code.RequestValidationError(
                            run.errors,
                            body=None if body is code.Undefined else body,
                            endpoint_ctx=self._endpoint_context(scope),
                        )
                        code.validation_failed(validation_error)
                        raise validation_error
                    sub_response = run.response
                    if self.is_coroutine:
                        raw = await self.call(**values)  # run_endpoint_function's call, telemetry being off
                    else:
                        raw = await code.run_endpoint_function(
                            dependant=self.dependant, values=values, is_coroutine=False
                        )
                    messages = None
                    if isinstance(raw, code.Response):
                        if raw.background is None:
                            raw.background = run.background_tasks
                        response = raw
                    elif self.json_body is not None:
                        args = self._response_args(run.background_tasks, sub_response)
                        messages = self.json_body.messages(
                            self._validate_return(scope, raw, self.json_body),
                            args.get("status_code"),
                            sub_response.headers.raw if sub_response is not None else (),
                        )
                        if self.verify:
                            await self._verify_response(
                                scope, raw, *messages, run.background_tasks, sub_response
                            )
                    else:
                        response = await self._response(scope, raw, run.background_tasks, sub_response)
                if messages is not None:
                    start = messages[0]
                    await send(start)
                    await send(messages[1])
                    if run.background_tasks is not None:
                        await run.background_tasks()
                else:
                    tracked = TrackedSend(send)
                    try:
                        await response(scope, receive, tracked)  # type: ignore[arg-type]
                    finally:
                        start = tracked.start
                response_awaited = True
            if not response_awaited:
                raise code.FastAPIError(_RESPONSE_NOT_AWAITED)
        except Exception as exc:  # noqa: BLE001 - replayed through FastAPI's wrapper, which re-raises it
            _counters[2] += 1
            wrapped = code.wrap_app_handling_exceptions(raiser(exc, start), request)
            await wrapped(scope, receive, replay_send(send, start))

    def _validate_return(self, scope: Any, raw: Any, json_body: _JSONBody) -> Any:
        """serialize_response's validation of the return value (ModelField.validate's call), raising FastAPI's
        ResponseValidationError with its errors and endpoint context."""
        code = _code
        assert code is not None
        try:
            return json_body.validate(raw, from_attributes=True)
        except code.ValidationError as exc:
            errors = code.regenerate_error_with_loc(
                errors=exc.errors(include_url=False), loc_prefix=("response",)
            )
            raise code.ResponseValidationError(
                errors=errors, body=raw, endpoint_ctx=self._endpoint_context(scope)
            ) from None

    def _endpoint_context(self, scope: Any) -> Any:
        """get_request_handler's endpoint context for error messages (FastAPI's cached dict, updated as it
        updates it)."""
        code = _code
        assert code is not None
        endpoint_ctx = code.extract_endpoint_context(self.call)
        if self.endpoint_path:
            mount_path = scope.get("root_path", "").rstrip("/")
            endpoint_ctx["path"] = f"{scope['method']} {mount_path}{self.endpoint_path}"
        return endpoint_ctx

    def _response_args(self, background: Any, sub_response: Any) -> dict[str, Any]:
        """_build_response_args: the background tasks, and the route's status or the sub-response's."""
        args: dict[str, Any] = {"background": background}
        sub_status = sub_response.status_code if sub_response is not None else None
        status = self.status_code if self.status_code else sub_status
        if status is not None:
            args["status_code"] = status
        if sub_status:
            args["status_code"] = sub_status
        return args

    async def _response(self, scope: Any, raw: Any, background: Any = None, sub_response: Any = None) -> Any:
        """What get_request_handler makes of the endpoint's return value when it is not a Response: the
        background tasks, the status of the response arguments, and the sub-response's headers appended."""
        code = _code
        assert code is not None
        args = self._response_args(background, sub_response)
        content = await code.serialize_response(
            field=self.response_field,
            response_content=raw,
            is_coroutine=self.is_coroutine,
            endpoint_ctx=self._endpoint_context(scope),
            dump_json=self.use_dump_json,
            **self.serialize_options,
        )
        if self.use_dump_json:
            response = code.Response(content=content, media_type="application/json", **args)
        else:
            response = self.response_class(content, **args)
        if not code.is_body_allowed_for_status_code(response.status_code):
            response.body = b""
        if sub_response is not None:
            response.headers.raw.extend(sub_response.headers.raw)
        return response

    async def _verify_response(
        self, scope: Any, raw: Any, start: Any, body: Any, background: Any = None, sub_response: Any = None
    ) -> None:
        """Verify mode: FastAPI's serialize_response and Response class, given the same return value, must
        make the same status, header list and body as the messages the plan sends."""
        expected = await self._response(scope, raw, background, sub_response)
        if (expected.status_code, expected.raw_headers, bytes(expected.body)) != (
            start["status"],
            start["headers"],
            body["body"],
        ):
            raise AssertionError(
                f"route plan for {self.endpoint_path!r}: sent {start!r} {body!r}, FastAPI's response "
                f"{expected.status_code!r} {expected.raw_headers!r} {expected.body!r}"
            )

    async def _verify_values(
        self, scope: Any, receive: Any, values: dict[str, Any], results: dict[int, Any]
    ) -> None:
        """Verify mode: FastAPI's solve_dependencies, given the same parameter results, must build the same
        arguments (so nothing a plan leaves out -- a dependency, a body, a special parameter -- would have
        added or changed one). The parameters are not validated a second time: validators and default
        factories may count their calls (FastAPI's own suite checks that a factory runs once), so
        solve_dependencies gets the values this request's reading gave, by the identity of the dependant's
        parameter and body lists."""
        from fastapi.dependencies import utils
        from fastapi.dependencies.utils import solve_dependencies
        from starlette.requests import Request

        validate = utils.request_params_to_args
        validate_body = utils.request_body_to_args

        def recorded(fields: Any, received: Any) -> Any:
            return results[id(fields)] if id(fields) in results else validate(fields, received)

        async def recorded_body(body_fields: Any, received_body: Any, embed_body_fields: bool) -> Any:
            if id(body_fields) in results:
                return results[id(body_fields)]
            return await validate_body(body_fields, received_body, embed_body_fields)

        inner_scope = dict(scope)
        utils.request_params_to_args = recorded  # type: ignore[assignment]
        utils.request_body_to_args = recorded_body  # type: ignore[assignment]
        try:
            async with AsyncExitStack() as inner, AsyncExitStack() as function:
                inner_scope["fastapi_inner_astack"] = inner
                inner_scope["fastapi_function_astack"] = function
                solved = await solve_dependencies(
                    request=Request(inner_scope, receive),
                    dependant=self.dependant,
                    dependency_overrides_provider=self._route.dependency_overrides_provider,
                    body=values.get(self.body.name) if self.body is not None else None,
                    async_exit_stack=inner,
                    embed_body_fields=self._route._embed_body_fields,
                )
        finally:
            utils.request_params_to_args = validate  # type: ignore[assignment]
            utils.request_body_to_args = validate_body  # type: ignore[assignment]
        if solved.errors or not _same(solved.values, values):
            raise AssertionError(
                f"route plan for {self.endpoint_path!r}: arguments {values!r}, FastAPI's "
                f"{solved.values!r} (errors {solved.errors!r})"
            )


def _same(a: Any, b: Any) -> bool:
    """Equal, where NaN equals NaN (a float parameter may be one) and containers are compared item by item."""
    if a is b:
        return True
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and type(a) is type(b):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _why_not_body(route: Any) -> str:
    """Why the route's body is not one a plan reads ("" when it is: one pydantic-validated JSON body
    parameter, not embedded, not a form, as request_body_to_args's single-field case)."""
    from fastapi import params
    from fastapi.dependencies.utils import _get_form_models, _should_embed_body_fields

    fields = route.dependant.body_params
    if len(fields) != 1 or route.body_field is None:
        return "it takes more than one body parameter"
    if isinstance(route.body_field.field_info, params.Form) or _get_form_models(fields[0]):
        return "it takes a form"
    if getattr(route, "_embed_body_fields", True) or _should_embed_body_fields(fields):
        return "its body parameter is embedded"
    return ""


def why_not(route: Any) -> str:
    """Why ``route`` gets no plan ("" when it can have one)."""
    from fastapi.datastructures import DefaultPlaceholder
    from fastapi.dependencies.models import _is_async_gen_callable, _is_gen_callable
    from fastapi.routing import APIRoute, _EffectiveRouteContext

    if type(route) is _EffectiveRouteContext:  # an APIRoute as an included router serves it
        if type(route.original_route) is not APIRoute:
            return f"its class {type(route.original_route).__qualname__} is not FastAPI's APIRoute"
    elif type(route) is not APIRoute:
        return f"its class {type(route).__qualname__} is not FastAPI's APIRoute"
    app = route.app
    if isinstance(app, RoutePlan):
        return "already compiled"
    if (
        getattr(app, "__qualname__", "") != "request_response.<locals>.app"
        or app.__module__ != "fastapi.routing"
    ):
        return "its app is not the one FastAPI built"
    dependant = route.dependant
    reason = why_not_tree(dependant, root=True)
    if reason:
        return reason
    if dependant.body_params or route.body_field is not None:
        reason = _why_not_body(route)
        if reason:
            return reason
    call = dependant.call
    if call is None or _is_gen_callable(call) or _is_async_gen_callable(call):
        return "its endpoint is a generator"
    if getattr(route, "stream_item_field", None) is not None or getattr(route, "is_json_stream", False):
        return "it streams"
    response_class = route.response_class
    actual = response_class.value if isinstance(response_class, DefaultPlaceholder) else response_class
    from fastapi.sse import EventSourceResponse

    if isinstance(actual, type) and issubclass(actual, EventSourceResponse):
        return "it streams server-sent events"
    return ""


def compile_route(route: Any, *, verify: bool = False) -> str:
    """Give ``route`` a plan when it can have one. Returns "" when compiled, else why not."""
    reason = why_not(route)
    if not reason:
        route.app = RoutePlan(route, verify=verify)
    return reason


def api_routes_of(app: Any) -> Iterable[Any]:
    """Every route of the Starlette routers reachable from ``app`` (see route_index.routers_of)."""
    from fasterapi_asgi.route_index import routers_of

    for router in routers_of(app):
        yield from list(getattr(router, "routes", ()))


def included_routes_of(app: Any) -> Iterable[Any]:
    """The effective routes (``_EffectiveRouteContext``) through which FastAPI's included routers serve
    their APIRoutes: FastAPI builds them on an included router's first request (``effective_candidates``);
    asking for them here builds the same ones earlier, and FastAPI keeps using them until that router's
    routes change (then it builds new ones, which have no plan)."""
    from fastapi.routing import _EffectiveRouteContext, _IncludedRouter

    pending = [route for route in api_routes_of(app) if isinstance(route, _IncludedRouter)]
    seen: set[int] = set()
    while pending:
        included = pending.pop()
        if id(included) in seen or len(seen) > 10_000:
            continue
        seen.add(id(included))
        for candidate in included.effective_candidates():
            if isinstance(candidate, _IncludedRouter):
                pending.append(candidate)
            elif isinstance(candidate, _EffectiveRouteContext) and candidate.app is not None:
                yield candidate


def fastapi_apps_of(app: Any) -> list[Any]:
    """The FastAPI apps reachable from ``app``: itself, the apps middleware wraps (``.app``), and apps mounted
    in the routers of those."""
    from fastapi import FastAPI
    from starlette.routing import Router

    from fasterapi_asgi.route_index import _own_attr

    found: list[Any] = []
    seen: set[int] = set()
    stack = [app]
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen or len(seen) > 10_000:
            continue
        seen.add(id(obj))
        if isinstance(obj, FastAPI):
            found.append(obj)
        if isinstance(obj, Router):
            stack.extend(_own_attr(route, "app") for route in list(obj.routes))
        stack.extend(_own_attr(obj, name) for name in ("router", "app"))
    return found


def install(app: Any) -> tuple[int, int]:
    """Compile every FastAPI route reachable from ``app``. Returns (compiled, FastAPI routes). Nothing happens
    when FastAPI is not imported, or is not a proven release (one INFO line says why)."""
    if "fastapi.routing" not in sys.modules:
        return 0, 0
    from fastapi.routing import APIRoute, _IncludedRouter

    routes = [route for route in api_routes_of(app) if isinstance(route, APIRoute)]
    if not routes and not any(isinstance(route, _IncludedRouter) for route in api_routes_of(app)):
        return 0, 0
    unproven = unproven_fastapi()
    if unproven:
        logger.info("FastAPI routes not compiled: %s; FastAPI's own handlers answer.", unproven)
        return 0, len(routes)
    routes.extend(included_routes_of(app))
    compiled = 0
    for route in routes:
        reason = compile_route(route)
        if reason:
            logger.debug(
                "Route %s %s not compiled: %s.", ",".join(sorted(route.methods or ())), route.path, reason
            )
        else:
            compiled += 1
    return compiled, len(routes)


def flatten_stacks(app: Any) -> tuple[int, int]:
    """Run the built-in middleware layers of every FastAPI app reachable from ``app`` flattened (see
    _plan_stack) where they are only the built-in ones. Returns (apps flattened, FastAPI apps); an app whose
    stack Starlette has not built yet counts as flattened when its stack is built (if it qualifies then).
    Nothing happens when FastAPI is not imported or not a proven release."""
    if "fastapi.routing" not in sys.modules or unproven_fastapi():
        return 0, 0
    from fasterapi_asgi._plan_stack import flatten_app

    apps = fastapi_apps_of(app)
    return sum(1 for fastapi_app in apps if flatten_app(fastapi_app)), len(apps)


def force_on_every_route(*, verify: bool = True) -> Callable[[], None]:
    """Compile every APIRoute as it is made (``APIRoute.__init__``) and every included router's effective
    route (``_EffectiveRouteContext.from_api_route``), and flatten every FastAPI middleware stack as it is
    built, for running FastAPI's own test suite with the plans on. Returns the function that undoes it. With
    ``verify``, a compiled request without dependencies is also solved by FastAPI's solve_dependencies and the
    arguments compared, and a response the plan writes itself is compared with the one FastAPI's
    serialize_response and Response would make (AssertionError otherwise)."""
    from fastapi.routing import APIRoute

    unproven = unproven_fastapi()
    if unproven:
        raise RuntimeError(f"route plans cannot be forced on: {unproven}")
    from fastapi import FastAPI

    from fasterapi_asgi._plan_stack import flatten

    original_init = APIRoute.__init__
    original_build = FastAPI.build_middleware_stack

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if type(self) is APIRoute:
            compile_route(self, verify=verify)

    def build_middleware_stack(self: Any) -> Any:
        return flatten(original_build(self))

    from fastapi.routing import _EffectiveRouteContext

    original_from_api_route = vars(_EffectiveRouteContext)["from_api_route"]

    def from_api_route(cls: Any, **kwargs: Any) -> Any:
        context = original_from_api_route.__func__(cls, **kwargs)
        if type(context) is _EffectiveRouteContext:
            compile_route(context, verify=verify)
        return context

    APIRoute.__init__ = __init__  # type: ignore[method-assign]
    FastAPI.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    _EffectiveRouteContext.from_api_route = classmethod(from_api_route)  # type: ignore[method-assign,assignment]

    def undo() -> None:
        APIRoute.__init__ = original_init  # type: ignore[method-assign]
        FastAPI.build_middleware_stack = original_build  # type: ignore[method-assign]
        _EffectiveRouteContext.from_api_route = original_from_api_route  # type: ignore[method-assign]

    return undo
