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

logger = logging.getLogger("uvicorn.error")

# FastAPI releases the plans are proven on (the test lock's; FastAPI's suite runs with plans forced on).
PROVEN_FASTAPI = ("0.165.0",)

# The names each function a plan stands in for (or calls) references, nested functions included: a release
# whose code differs is not compiled for. Recorded from FastAPI 0.165.0 with _names_digest().
_FASTAPI_FINGERPRINTS: dict[str, str] = {
    "request_response": "499ac251a42bccfa",
    "get_request_handler": "4997a6eaf82a139c",
    "solve_dependencies": "7edc1ac89fd8e8ed",
    "_build_response_args": "36c0f41ec98868b1",
    "run_endpoint_function": "e52af26dbb91f295",
    "serialize_response": "dc41da1597e11f23",
    "APIRoute.get_route_handler": "3efcd9a307d8012c",
}

# Requests answered by a plan, and requests a plan handed to FastAPI's own handler (the plugin reports both).
_counters = [0, 0]


def plan_counters() -> tuple[int, int]:
    """(requests answered by a plan, requests a plan handed back to FastAPI's handler) in this process."""
    return _counters[0], _counters[1]


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


def unproven_fastapi() -> str:
    """Why this process's FastAPI is not one the plans are proven on ("" when it is)."""
    import fastapi
    from fastapi import routing
    from fastapi.dependencies import utils

    version = getattr(fastapi, "__version__", "?")
    if version not in PROVEN_FASTAPI:
        return f"FastAPI {version} is not a proven release ({', '.join(PROVEN_FASTAPI)})"
    funcs = {
        "request_response": routing.request_response,
        "get_request_handler": routing.get_request_handler,
        "solve_dependencies": utils.solve_dependencies,
        "_build_response_args": getattr(routing, "_build_response_args", None),
        "run_endpoint_function": routing.run_endpoint_function,
        "serialize_response": routing.serialize_response,
        "APIRoute.get_route_handler": routing.APIRoute.get_route_handler,
    }
    changed = [name for name, func in funcs.items() if _names_digest(func) != _FASTAPI_FINGERPRINTS[name]]
    if changed:
        return f"FastAPI {version}'s {', '.join(changed)} differ from the proven code"
    return ""


class _FastAPICode:
    """The FastAPI and Starlette functions and classes a plan calls on every request, looked up once, when the
    first plan is built (the module imports neither framework: a process serving another app never loads
    them). NOTE: imported inside __call__ they cost each request an import lookup per name."""

    def __init__(self) -> None:
        from fastapi.dependencies.utils import request_params_to_args
        from fastapi.routing import _extract_endpoint_context, run_endpoint_function, serialize_response
        from fastapi.telemetry._api import _get_request_telemetry
        from fastapi.utils import is_body_allowed_for_status_code
        from starlette._exception_handler import wrap_app_handling_exceptions
        from starlette.requests import Request
        from starlette.responses import Response

        self.request_params_to_args = request_params_to_args
        self.extract_endpoint_context = _extract_endpoint_context
        self.run_endpoint_function = run_endpoint_function
        self.serialize_response = serialize_response
        self.get_request_telemetry = _get_request_telemetry
        self.is_body_allowed_for_status_code = is_body_allowed_for_status_code
        self.wrap_app_handling_exceptions = wrap_app_handling_exceptions
        self.Request = Request
        self.Response = Response


_code: _FastAPICode | None = None


class RoutePlan:
    """The ASGI app a compiled route answers with (see the module's docstring). ``original`` is FastAPI's."""

    __slots__ = (
        "original",
        "dependant",
        "is_coroutine",
        "call",
        "path_params",
        "query_params",
        "header_params",
        "cookie_params",
        "endpoint_path",
        "status_code",
        "response_field",
        "response_class",
        "use_dump_json",
        "serialize_options",
        "verify",
        "_route",
    )

    def __init__(self, route: Any, *, verify: bool = False) -> None:
        from fastapi.datastructures import DefaultPlaceholder
        from fastapi.dependencies.models import _is_coroutine_callable

        global _code
        if _code is None:
            _code = _FastAPICode()
        dependant = route.dependant
        self._route = route
        self.original = route.app
        self.dependant = dependant
        self.is_coroutine = _is_coroutine_callable(dependant.call)
        self.call = dependant.call
        # The dependant's own lists (verify mode recognises them by identity).
        self.path_params = dependant.path_params
        self.query_params = dependant.query_params
        self.header_params = dependant.header_params
        self.cookie_params = dependant.cookie_params
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
        self.serialize_options = {
            "include": route.response_model_include,
            "exclude": route.response_model_exclude,
            "by_alias": route.response_model_by_alias,
            "exclude_unset": route.response_model_exclude_unset,
            "exclude_defaults": route.response_model_exclude_defaults,
            "exclude_none": route.response_model_exclude_none,
        }
        self.verify = verify

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
        request = code.Request(scope, receive, send)
        # As solve_dependencies, in its order; any error means FastAPI's handler answers (its 422), before
        # anything of the route has run.
        values: dict[str, Any] = {}
        results: dict[int, Any] = {}
        for fields, source in (
            (self.path_params, "path_params"),
            (self.query_params, "query_params"),
            (self.header_params, "headers"),
            (self.cookie_params, "cookies"),
        ):
            if not fields:
                continue
            found, errors = code.request_params_to_args(fields, getattr(request, source))
            if errors:
                _counters[1] += 1
                await self.original(scope, receive, send)
                return
            values.update(found)
            if self.verify:
                results[id(fields)] = (found, errors)
        if self.verify:
            await self._verify_values(request, values, results)
        _counters[0] += 1

        async def respond(scope: Any, receive: Any, send: Any) -> None:
            # FastAPI's own call: awaited, or a sync endpoint in the thread pool.
            raw = await code.run_endpoint_function(
                dependant=self.dependant, values=values, is_coroutine=self.is_coroutine
            )
            response = await self._response(request, raw)
            await response(scope, receive, send)

        await code.wrap_app_handling_exceptions(respond, request)(scope, receive, send)

    async def _response(self, request: Any, raw: Any) -> Any:
        """What get_request_handler makes of the endpoint's return value, with no sub-response, no background
        tasks and no response headers from dependencies (a compiled route has none)."""
        code = _code
        assert code is not None
        if isinstance(raw, code.Response):
            return raw  # its background stays as the endpoint left it (FastAPI's would be None here too)
        endpoint_ctx = code.extract_endpoint_context(self.call)
        if self.endpoint_path:
            mount_path = request.scope.get("root_path", "").rstrip("/")
            endpoint_ctx["path"] = f"{request.method} {mount_path}{self.endpoint_path}"
        args: dict[str, Any] = {"background": None}
        if self.status_code:
            args["status_code"] = self.status_code
        content = await code.serialize_response(
            field=self.response_field,
            response_content=raw,
            is_coroutine=self.is_coroutine,
            endpoint_ctx=endpoint_ctx,
            dump_json=self.use_dump_json,
            **self.serialize_options,
        )
        if self.use_dump_json:
            response = code.Response(content=content, media_type="application/json", **args)
        else:
            response = self.response_class(content, **args)
        if not code.is_body_allowed_for_status_code(response.status_code):
            response.body = b""
        return response

    async def _verify_values(self, request: Any, values: dict[str, Any], results: dict[int, Any]) -> None:
        """Verify mode: FastAPI's solve_dependencies, given the same parameter results, must build the same
        arguments (so nothing a plan leaves out -- a dependency, a body, a special parameter -- would have
        added or changed one). The parameters are not validated a second time: validators and default
        factories may count their calls (FastAPI's own suite checks that a factory runs once), so
        solve_dependencies gets the results this request's validation already gave, by the identity of the
        dependant's parameter lists."""
        from fastapi.dependencies import utils
        from fastapi.dependencies.utils import solve_dependencies
        from starlette.requests import Request

        validate = utils.request_params_to_args

        def recorded(fields: Any, received: Any) -> Any:
            return results[id(fields)] if id(fields) in results else validate(fields, received)

        scope = dict(request.scope)
        utils.request_params_to_args = recorded  # type: ignore[assignment]
        try:
            async with AsyncExitStack() as inner, AsyncExitStack() as function:
                scope["fastapi_inner_astack"] = inner
                scope["fastapi_function_astack"] = function
                solved = await solve_dependencies(
                    request=Request(scope, request.receive),
                    dependant=self.dependant,
                    dependency_overrides_provider=self._route.dependency_overrides_provider,
                    async_exit_stack=inner,
                    embed_body_fields=False,
                )
        finally:
            utils.request_params_to_args = validate  # type: ignore[assignment]
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


def why_not(route: Any) -> str:
    """Why ``route`` gets no plan ("" when it can have one)."""
    from fastapi.datastructures import DefaultPlaceholder
    from fastapi.dependencies.models import _is_async_gen_callable, _is_gen_callable
    from fastapi.routing import APIRoute

    if type(route) is not APIRoute:
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
    if dependant.dependencies:
        return "it has dependencies"
    if dependant.body_params or route.body_field is not None:
        return "it takes a body"
    for name in (
        "request_param_name",
        "websocket_param_name",
        "http_connection_param_name",
        "response_param_name",
        "background_tasks_param_name",
        "security_scopes_param_name",
    ):
        if getattr(dependant, name, None):
            return f"it takes a {name.removesuffix('_param_name').replace('_', ' ')} parameter"
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


def install(app: Any) -> tuple[int, int]:
    """Compile every FastAPI route reachable from ``app``. Returns (compiled, FastAPI routes). Nothing happens
    when FastAPI is not imported, or is not a proven release (one INFO line says why)."""
    if "fastapi.routing" not in sys.modules:
        return 0, 0
    from fastapi.routing import APIRoute

    routes = [route for route in api_routes_of(app) if isinstance(route, APIRoute)]
    if not routes:
        return 0, 0
    unproven = unproven_fastapi()
    if unproven:
        logger.info("FastAPI routes not compiled: %s; FastAPI's own handlers answer.", unproven)
        return 0, len(routes)
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


def force_on_every_route(*, verify: bool = True) -> Callable[[], None]:
    """Compile every APIRoute as it is made (``APIRoute.__init__``), for running FastAPI's own test suite with
    the plans on. Returns the function that undoes it. With ``verify``, every compiled request also solves the
    request with FastAPI's solve_dependencies and compares the arguments (AssertionError otherwise)."""
    from fastapi.routing import APIRoute

    unproven = unproven_fastapi()
    if unproven:
        raise RuntimeError(f"route plans cannot be forced on: {unproven}")
    original_init = APIRoute.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if type(self) is APIRoute:
            compile_route(self, verify=verify)

    APIRoute.__init__ = __init__  # type: ignore[method-assign]

    def undo() -> None:
        APIRoute.__init__ = original_init  # type: ignore[method-assign]

    return undo
