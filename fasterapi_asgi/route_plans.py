"""Route plans: FastAPI routes answered without FastAPI's per-request scaffolding, with FastAPI's own answers.

For every FastAPI ``APIRoute`` (and every included router's effective route) whose shape a plan reproduces
exactly, the route's ``app`` -- what Starlette's router calls once the path matched -- is replaced by a
:class:`RoutePlan`; routers, user middleware, exception handlers and mounts run as before. A plan does what
FastAPI's ``request_response`` and ``get_request_handler`` do, with every decision that depends only on the
route made once:

- the parameters (``_plan_params``), a JSON body (``_plan_body``) and the dependency tree (``_plan_deps``);
- the response (``_plan_response``);
- exceptions, replayed through the framework's own wrapper (``_plan_replay``).

FastAPI's built-in middleware layers run flattened (``_plan_stack``, :func:`flatten_stacks`).

A plan commits only on success. Every parameter of the whole tree and the body are validated before anything
of the route runs. Any error, a body that is not JSON, active FastAPI telemetry or dependency overrides hand
the request to the route's original app, and FastAPI answers (its 422).

Plans are used only on the releases ``_plan_proof`` trusts. Their proof is FastAPI's own test suite, with
plans forced on in verify mode (``force_on_every_route``, tests/upstream/fa_force_route_plans.py,
``_plan_verify``).
docs/architecture.md ("Route plans for FastAPI routes") has the whole design.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any

from fasterapi_asgi._plan_code import RESPONSE_NOT_AWAITED, fastapi_code
from fasterapi_asgi._plan_deps import DependencyRun, fill_request_caches, why_not_tree
from fasterapi_asgi._plan_params import query_params
from fasterapi_asgi._plan_proof import PROVEN_FASTAPI, unproven_fastapi
from fasterapi_asgi._plan_replay import TrackedSend, raiser, replay_send
from fasterapi_asgi._plan_response import ResponseWriter
from fasterapi_asgi._plan_stats import ARGUMENTS, DEPENDENCIES, ENDPOINT, RESPONSE, StageClock, stage_times
from fasterapi_asgi._plan_verify import verify_response, verify_values

__all__ = [
    "PROVEN_FASTAPI",
    "RoutePlan",
    "compile_route",
    "entry_for",
    "flatten_stacks",
    "force_on_every_route",
    "install",
    "plan_counters",
    "stage_times",
    "unproven_fastapi",
    "why_not",
]

logger = logging.getLogger("uvicorn.error")

# Requests answered by a plan, requests a plan handed to FastAPI's own handler, and exceptions a plan replayed
# through FastAPI's route-level exception wrapper (the suite's plugin reports them).
_counters = [0, 0, 0]


def plan_counters() -> tuple[int, int, int]:
    """(requests answered by a plan, requests a plan handed back to FastAPI's handler, exceptions a plan
    replayed through the route's exception wrapper) in this process."""
    return _counters[0], _counters[1], _counters[2]


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
        "route",
        "dependant",
        "is_coroutine",
        "call",
        "readers",
        "tree",
        "body",
        "writer",
        "timed",
        "verify",
    )

    def __init__(self, route: Any, *, verify: bool = False, timed: bool = False) -> None:
        from fastapi.dependencies.models import _is_coroutine_callable

        from fasterapi_asgi._plan_body import BodyReader
        from fasterapi_asgi._plan_deps import DepNode
        from fasterapi_asgi._plan_params import param_readers

        fastapi_code()
        dependant = route.dependant
        self.route = route
        self.original = route.app
        self.dependant = dependant
        self.is_coroutine = _is_coroutine_callable(dependant.call)
        self.call = dependant.call
        # A route with dependencies or special parameters runs its tree (see _plan_deps), whose root reads
        # the route's parameters; any other route reads them itself. The readers keep the dependant's own
        # lists (verify mode needs them).
        self.tree = None
        self.readers: tuple[Any, ...] = ()
        if dependant.dependencies or any(getattr(dependant, name) for name in _SPECIAL_PARAMS):
            self.tree = DepNode(dependant)
        else:
            self.readers = param_readers(dependant)
        self.body = BodyReader(route) if dependant.body_params else None
        self.writer = ResponseWriter(route, self.is_coroutine)
        self.verify = verify
        self.timed = timed  # --stats: the plan's stages are measured (_plan_stats)

    async def _hand_back(self, scope: Any, receive: Any, send: Any) -> None:
        """FastAPI's own handler answers this request; nothing of the route has run."""
        _counters[1] += 1
        await self.original(scope, receive, send)

    async def _read_body(
        self, scope: Any, receive: Any, send: Any, headers: Any, request: Any = None
    ) -> tuple[bool, Any]:
        """(True, the body parameter's value); or (False, None) once the request is handed to FastAPI's
        handler (see _plan_body)."""
        assert self.body is not None
        # A body limit (a parent app's) counts the bytes FastAPI reads: its handler reads them.
        if fastapi_code().MAX_BODY_SIZE_SCOPE_KEY in scope:
            await self._hand_back(scope, receive, send)
            return False, None
        value, replay = await self.body.read(headers, receive, request)
        if replay is not None:
            await self._hand_back(scope, replay, send)
            return False, None
        return True, value

    def _read_params(self, scope: Any, record: dict[int, Any] | None = None) -> dict[str, Any] | None:
        """The endpoint's arguments, as solve_dependencies would give them; None where it would report an
        error. Each source's mapping is made as Starlette's HTTPConnection makes it. ``record`` (verify mode)
        gets each source's result as request_params_to_args returns it, by the identity of FastAPI's list."""
        code = fastapi_code()
        values: dict[str, Any] = {}
        for source, reader in self.readers:
            if source == "path":
                received: Any = scope.get("path_params", {})
            elif source == "query":
                received = (
                    query_params(scope["query_string"], code.QueryParams)
                    if reader.params is not None
                    else code.QueryParams(scope["query_string"])  # FastAPI's request_params_to_args reads it
                )
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
        code = fastapi_code()
        # FastAPI's telemetry records spans and data from inside its own handler: with it active, that
        # handler. And without FastAPI's middleware exit stack in the scope (a route served outside a FastAPI
        # app), its handler's own assertion answers.
        if code.get_request_telemetry() is not None or not isinstance(
            scope.get("fastapi_middleware_astack"), AsyncExitStack
        ):
            await self._hand_back(scope, receive, send)
            return
        clock = StageClock() if self.timed else None
        if self.tree is not None:
            await self._call_tree(scope, receive, send, clock)
            return
        # Any parameter error: FastAPI's handler answers (its 422), before anything of the route has run.
        results: dict[int, Any] | None = {} if self.verify else None
        values = self._read_params(scope, results)
        if values is None:
            await self._hand_back(scope, receive, send)
            return
        if self.body is not None:
            read, body_value = await self._read_body(scope, receive, send, code.Headers(scope=scope))
            if not read:
                return
            values[self.body.name] = body_value
            if results is not None:
                results[id(self.body.fields)] = ({self.body.name: body_value}, [])
        if results is not None:
            await verify_values(self, scope, receive, values, results)
        _counters[0] += 1
        if clock is not None:
            clock.lap(ARGUMENTS)
        # From here on the route runs once. What request_response's exception wrapper would do with an
        # exception is replayed through that wrapper (see _plan_replay).
        writer = self.writer
        start: dict[str, Any] | None = None
        try:
            if writer.json is not None:
                raw = await self.call(**values)  # run_endpoint_function's call, telemetry being off
                if clock is not None:
                    clock.lap(ENDPOINT)
                if not isinstance(raw, code.Response):
                    start, body = writer.json.messages(writer.validate_return(scope, raw))
                    if self.verify:
                        await verify_response(writer, scope, raw, start, body)
                    await send(start)
                    await send(body)
                    if clock is not None:
                        clock.lap(RESPONSE)
                    return
            else:
                raw = await code.run_endpoint_function(
                    dependant=self.dependant, values=values, is_coroutine=self.is_coroutine
                )
                if clock is not None:
                    clock.lap(ENDPOINT)
            response = raw if isinstance(raw, code.Response) else await writer.build(scope, raw)
            tracked = TrackedSend(send)
            try:
                await response(scope, receive, tracked)  # type: ignore[arg-type]
            finally:
                start = tracked.start
            if clock is not None:
                clock.lap(RESPONSE)
        except Exception as exc:  # noqa: BLE001 - replayed through FastAPI's wrapper, which re-raises it
            await self._replay(scope, receive, send, exc, start, code.Request(scope, receive, send))

    async def _replay(
        self, scope: Any, receive: Any, send: Any, exc: Exception, start: Any, request: Any
    ) -> None:
        """request_response's exception wrapper, given what the request raised and what it sent."""
        _counters[2] += 1
        wrapped = fastapi_code().wrap_app_handling_exceptions(raiser(exc, start), request)
        await wrapped(scope, receive, replay_send(send, start))

    async def _call_tree(self, scope: Any, receive: Any, send: Any, clock: StageClock | None) -> None:
        """A route with dependencies or special parameters: request_response's exit stacks and
        get_request_handler's steps, with the tree run as solve_dependencies runs it (see _plan_deps)."""
        code = fastapi_code()
        assert self.tree is not None
        provider = self.route.dependency_overrides_provider
        if provider is not None and getattr(provider, "dependency_overrides", None):
            await self._hand_back(scope, receive, send)  # overrides are looked up per request there
            return
        request = code.Request(scope, receive, send)  # request_response's: the one every step gets
        fill_request_caches(request, code)
        validated: list[dict[str, Any]] = []
        if not self.tree.validate(request, validated):
            await self._hand_back(scope, receive, send)
            return
        if self.body is not None:
            read, body_value = await self._read_body(scope, receive, send, request.headers, request)
            if not read:
                return
            validated[-1][self.body.name] = body_value  # the root's, as request_body_to_args adds it
        _counters[0] += 1
        if clock is not None:
            clock.lap(ARGUMENTS)
        body = getattr(request, "_json", code.Undefined)  # what get_request_handler's body step gave
        run = DependencyRun(request, validated, None, self.route, body, code)
        if self.tree.needs_response:
            run.sub_response()
        writer = self.writer
        start: dict[str, Any] | None = None
        try:
            response_awaited = False
            async with AsyncExitStack() as request_stack:
                scope["fastapi_inner_astack"] = request_stack
                async with AsyncExitStack() as function_stack:
                    scope["fastapi_function_astack"] = function_stack
                    values = await run.solve(self.tree)
                    if clock is not None:
                        clock.lap(DEPENDENCIES)
                    if run.errors:  # from a sub-tree FastAPI solved: get_request_handler's 422
                        validation_error = code.RequestValidationError(
                            run.errors,
                            body=None if body is code.Undefined else body,
                            endpoint_ctx=writer.endpoint_context(scope),
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
                    if clock is not None:
                        clock.lap(ENDPOINT)
                    messages = None
                    if isinstance(raw, code.Response):
                        if raw.background is None:
                            raw.background = run.background_tasks
                        response = raw
                    elif writer.json is not None:
                        args = writer.args(run.background_tasks, sub_response)
                        messages = writer.json.messages(
                            writer.validate_return(scope, raw),
                            args.get("status_code"),
                            sub_response.headers.raw if sub_response is not None else (),
                        )
                        if self.verify:
                            await verify_response(
                                writer, scope, raw, *messages, run.background_tasks, sub_response
                            )
                    else:
                        response = await writer.build(scope, raw, run.background_tasks, sub_response)
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
                raise code.FastAPIError(RESPONSE_NOT_AWAITED)
            if clock is not None:
                clock.lap(RESPONSE)
        except Exception as exc:  # noqa: BLE001 - replayed through FastAPI's wrapper, which re-raises it
            await self._replay(scope, receive, send, exc, start, request)


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


def compile_route(route: Any, *, verify: bool = False, timed: bool = False) -> str:
    """Give ``route`` a plan when it can have one. Returns "" when compiled, else why not."""
    reason = why_not(route)
    if not reason:
        plan = RoutePlan(route, verify=verify, timed=timed)
        route.app = plan
        if plan.body is not None and plan.tree is None and plan.body.why_not_json:
            logger.debug(
                "Route %s %s: its body is parsed and validated as FastAPI does, not from the bytes: %s.",
                ",".join(sorted(route.methods or ())),
                route.path,
                plan.body.why_not_json,
            )
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

    from fasterapi_asgi.route_index import _own_attr, reachable

    return [
        obj for obj in reachable(app, lambda route: (_own_attr(route, "app"),)) if isinstance(obj, FastAPI)
    ]


def install(app: Any, *, timed: bool = False) -> tuple[int, int]:
    """Compile every FastAPI route reachable from ``app``. Returns (compiled, FastAPI routes). Nothing happens
    when FastAPI is not imported, or is not a proven release (one INFO line says why). With ``timed``
    (``--stats``) the plans measure their stages (see _plan_stats)."""
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
        reason = compile_route(route, timed=timed)
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


def entry_for(app: Any) -> Any:
    """What the server should call in place of ``app``: an AppEntry (see _plan_entry) when ``app`` is a
    FastAPI app it can enter, else ``app`` itself. Only with a proven FastAPI release."""
    if "fastapi.routing" not in sys.modules or unproven_fastapi():
        return app
    from fasterapi_asgi._plan_entry import AppEntry, unproven_entry

    reason = unproven_entry(app)
    if reason:
        logger.debug("The app is entered through its own __call__: %s.", reason)
        return app
    return AppEntry(app)


def force_on_every_route(*, verify: bool = True) -> Callable[[], None]:
    """Compile every APIRoute as it is made (``APIRoute.__init__``) and every included router's effective
    route (``_EffectiveRouteContext.from_api_route``), flatten every FastAPI middleware stack as it is built,
    and enter every FastAPI app through an AppEntry (``FastAPI.__call__``), for running FastAPI's own test
    suite with the plans on. Returns the function that undoes it. With ``verify``, a compiled request without
    dependencies is also solved by FastAPI's solve_dependencies and the arguments compared, and a response
    the plan writes itself is compared with the one FastAPI's serialize_response and Response would make
    (AssertionError otherwise)."""
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

    from fasterapi_asgi._plan_entry import patch_fastapi_call

    undo_entry = patch_fastapi_call()
    APIRoute.__init__ = __init__  # type: ignore[method-assign]
    FastAPI.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    _EffectiveRouteContext.from_api_route = classmethod(from_api_route)  # type: ignore[method-assign,assignment]

    def undo() -> None:
        undo_entry()
        APIRoute.__init__ = original_init  # type: ignore[method-assign]
        FastAPI.build_middleware_stack = original_build  # type: ignore[method-assign]
        _EffectiveRouteContext.from_api_route = original_from_api_route  # type: ignore[method-assign]

    return undo
