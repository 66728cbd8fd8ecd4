"""A route plan's dependencies: FastAPI's ``solve_dependencies`` with its per-request decisions made once.

For every dependency (``Depends``, ``Security``, a class, a ``yield`` dependency, sub-dependencies)
FastAPI decides per request, for every occurrence in the tree, things that depend only on the ``Dependant``:
what kind of callable it is, its cache key, its OAuth scopes, where its parameters come from. A
:class:`DepNode` asks FastAPI's own functions those questions once. Per request a plan then does what
``solve_dependencies`` does, in its order:

1. **Validation first, for every occurrence.** Every parameter of every occurrence in the tree (FastAPI
   validates a cached dependency's parameters again each time it appears) is read and validated, in
   ``solve_dependencies``' post-order, before any dependency is called. Any error hands the request to
   FastAPI's handler before anything has run, and FastAPI answers (its 422, which lists every error). So
   errors never occur once dependencies run, and the run below need not skip failed sub-trees as
   ``solve_dependencies`` does.
2. **The run.** Depth first, as ``solve_dependencies`` recurses: each sub-dependency's own dependencies, then
   the dependency itself: the cached value when ``use_cache`` and its key is in this request's cache; a
   generator on the request or function exit stack by its scope, an async one without a concurrency limit
   through :class:`~fasterapi_asgi._plan_generator.GeneratorEntry`, any other through FastAPI's own
   ``_solve_generator``;
   a coroutine awaited; anything else in the thread pool; each under its concurrency limit when it has one.
   The special parameters are the request's: the one ``Request``, one ``BackgroundTasks`` made when first
   needed, the one sub-``Response``, a ``SecurityScopes`` of the node's scopes.

A request that starts with ``dependency_overrides`` set on the app goes to FastAPI's handler. An override
installed while the request runs (by one of its dependencies) is seen where FastAPI sees it: from the next
sub-dependency on, each is solved by FastAPI's own ``solve_dependencies`` on the overriding ``Dependant``,
with this request's cache, background tasks and sub-response, and the validation errors it reports end in
FastAPI's ``RequestValidationError``, as in ``get_request_handler``. The functions whose decisions are cached
here are fingerprinted in ``_plan_proof._FASTAPI_FINGERPRINTS``.
"""

from __future__ import annotations

from typing import Any

from fasterapi_asgi._plan_code import fastapi_code
from fasterapi_asgi._plan_generator import GeneratorEntry
from fasterapi_asgi._plan_params import param_readers, query_params_object

# The Request attribute each parameter source is read from (Starlette's HTTPConnection properties).
_REQUEST_ATTRIBUTE = {
    "path": "path_params",
    "query": "query_params",
    "header": "headers",
    "cookie": "cookies",
}


def why_not_tree(dependant: Any, *, root: bool) -> str:
    """Why a dependant's tree is not one a plan runs ("" when it is)."""
    if dependant.websocket_param_name:
        return "it takes a websocket parameter"
    if not root and dependant.body_params:
        return "a dependency takes a body"
    call = dependant.call
    if call is None:
        return "a dependency has no callable"
    for sub in dependant.dependencies:
        reason = why_not_tree(sub, root=False)
        if reason:
            return reason
    return ""


def fill_request_caches(request: Any, code: Any) -> None:
    """What FastAPI's ``solve_dependencies`` has cached on the request before any dependency runs: for every
    dependant it reads ``request.query_params``, ``headers`` and ``cookies`` (``request_params_to_args``),
    the first time for the first leaf of the tree, before any call. The ``QueryParams`` is made by
    ``query_params_object``; the properties are fingerprinted (_plan_proof)."""
    request._query_params = query_params_object(request.scope["query_string"], code.QueryParams)
    request.cookies  # noqa: B018 - the property caches the headers, then the cookies


def _kind(call: Any, code: Any) -> str:
    """How solve_dependencies calls ``call``: "generator", "coroutine" or "thread"."""
    if code.is_gen_callable(call) or code.is_async_gen_callable(call):
        return "generator"
    if code.is_coroutine_callable(call):
        return "coroutine"
    return "thread"


class DepNode:
    """One dependant of a route's tree (the route's own is the root): FastAPI's decisions about it, made
    once."""

    __slots__ = (
        "dependant",
        "call",
        "kind",
        "concurrency",
        "use_cache",
        "cache_key",
        "name",
        "scope",
        "readers",
        "children",
        "request_name",
        "connection_name",
        "response_name",
        "background_name",
        "scopes_name",
        "oauth_scopes",
        "occurrences",
        "needs_response",
        "generator_entry",
        "occurrence_readers",
    )

    def __init__(self, dependant: Any) -> None:
        from fastapi.dependencies.utils import _get_cache_key, _get_oauth_scopes

        code = fastapi_code()
        self.dependant = dependant
        self.call = dependant.call
        self.kind = _kind(self.call, code)
        self.concurrency = dependant.concurrency
        self.use_cache = dependant.use_cache
        self.cache_key = _get_cache_key(dependant=dependant, uses_scopes_cache={})
        self.name = dependant.name
        self.scope = dependant.scope
        self.readers = tuple(
            (_REQUEST_ATTRIBUTE[source], reader) for source, reader in param_readers(dependant)
        )
        self.children = tuple(DepNode(sub) for sub in dependant.dependencies)
        self.request_name = dependant.request_param_name
        self.connection_name = dependant.http_connection_param_name
        self.response_name = dependant.response_param_name
        self.background_name = dependant.background_tasks_param_name
        self.scopes_name = dependant.security_scopes_param_name
        self.oauth_scopes = _get_oauth_scopes(dependant=dependant) if self.scopes_name else None
        # The readers of every occurrence of the subtree, in the order validate() appends their values.
        self.occurrence_readers = tuple(self._post_order())
        # How many entries validate() appends for this node's subtree.
        self.occurrences: int = len(self.occurrence_readers)
        # Whether any node of the subtree takes the sub-Response.
        self.needs_response: bool = bool(self.response_name) or any(c.needs_response for c in self.children)
        # An async generator without a concurrency limit is entered without _solve_generator's per-request
        # wrappers; a sync generator's context manager runs in the thread pool, through FastAPI's own.
        self.generator_entry: GeneratorEntry | None = None
        if self.kind == "generator" and self.concurrency is None and code.is_async_gen_callable(self.call):
            self.generator_entry = GeneratorEntry(self.call)

    def _post_order(self) -> list[tuple[tuple[str, Any], ...]]:
        """Every occurrence's readers in solve_dependencies' order: each node's children first."""
        order: list[tuple[tuple[str, Any], ...]] = []
        for child in self.children:
            order.extend(child._post_order())
        order.append(self.readers)
        return order

    def validate(self, request: Any, out: list[dict[str, Any]]) -> bool:
        """Every occurrence's parameters, in solve_dependencies' order (children first), appended to ``out``;
        False at the first error (FastAPI's handler then answers)."""
        for readers in self.occurrence_readers:
            values: dict[str, Any] = {}
            for attribute, reader in readers:
                found = reader.read(getattr(request, attribute))
                if found is None:
                    return False
                values.update(found)
            out.append(values)
        return True


class DependencyRun:
    """One request's run of a tree: the shared objects solve_dependencies threads through its recursion."""

    __slots__ = (
        "request",
        "validated",
        "cache",
        "background_tasks",
        "response",
        "errors",
        "_provider",
        "_body",
        "_embed_body_fields",
        "_uses_scopes",
        "_code",
    )

    def __init__(
        self,
        request: Any,
        validated: list[dict[str, Any]],
        response: Any,
        route: Any,
        body: Any,
        code: Any,
    ) -> None:
        self.request = request
        self.validated = iter(validated)  # consumed in the order validate() appended
        self.cache: dict[Any, Any] = {}
        self.background_tasks: Any = None
        self.response = response  # the sub-Response, None while no node has taken it (it is then untouched)
        self.errors: list[Any] = []  # only from sub-trees FastAPI solved (an override installed mid-request)
        self._provider = route.dependency_overrides_provider
        self._body = body  # what get_request_handler passes solve_dependencies as ``body``
        self._embed_body_fields = route._embed_body_fields
        self._uses_scopes: dict[Any, Any] = {}
        self._code = code

    def sub_response(self) -> Any:
        """The sub-Response, made as solve_dependencies makes it when a node is the first to need it."""
        if self.response is None:
            response = self._code.Response()
            del response.headers["content-length"]
            response.status_code = None
            self.response = response
        return self.response

    async def _solve_by_fastapi(self, child: DepNode) -> tuple[Any, dict[str, Any] | None]:
        """solve_dependencies' step for a sub-dependency while dependency overrides are set: the overriding
        (or the same) call as a new Dependant, solved by FastAPI with this request's shared state. Returns
        the Dependant and its arguments (None after validation errors, which are recorded)."""
        code = self._code
        for _ in range(child.occurrences):  # its subtree is validated by FastAPI instead
            next(self.validated)
        overrides = getattr(self._provider, "dependency_overrides", {})
        call = overrides.get(child.call, child.call)
        dependant = child.dependant
        use = code.get_dependant(
            path=dependant.path,
            call=call,
            name=dependant.name,
            parent_oauth_scopes=code.get_oauth_scopes(dependant=dependant),
            scope=dependant.scope,
            concurrency=dependant.concurrency,
        )
        solved = await code.solve_dependencies(
            request=self.request,
            dependant=use,
            body=self._body,
            background_tasks=self.background_tasks,
            response=self.sub_response(),
            dependency_overrides_provider=self._provider,
            dependency_cache=self.cache,
            async_exit_stack=self.request.scope["fastapi_inner_astack"],
            embed_body_fields=self._embed_body_fields,
            _uses_scopes_cache=self._uses_scopes,
        )
        self.background_tasks = solved.background_tasks
        if solved.errors:
            self.errors.extend(solved.errors)
            return use, None
        return use, solved.values

    async def solve(self, node: DepNode) -> dict[str, Any]:
        """The arguments for ``node``'s call: its dependencies' values, then its parameters and specials."""
        code = self._code
        values: dict[str, Any] = {}
        for child in node.children:
            use, kind = child.dependant, child.kind
            if self._provider is not None and getattr(self._provider, "dependency_overrides", None):
                use, solved_values = await self._solve_by_fastapi(child)
                if solved_values is None:
                    continue
                child_values = solved_values
                kind = _kind(use.call, code)
            else:
                child_values = await self.solve(child)
            call, concurrency = use.call, use.concurrency
            key = child.cache_key
            if child.use_cache and key in self.cache:
                solved = self.cache[key]
            elif kind == "generator":
                stack = self.request.scope["fastapi_inner_astack"]
                if child.scope == "function":
                    stack = self.request.scope["fastapi_function_astack"]
                entry = child.generator_entry
                if entry is not None and use is child.dependant:
                    solved = await entry.enter(self.request, stack, child_values)
                else:
                    solved = await code.solve_generator(
                        request=self.request, dependant=use, stack=stack, sub_values=child_values
                    )
            elif kind == "coroutine":
                if concurrency is None:
                    solved = await call(**child_values)
                else:
                    async with concurrency.get_semaphore():
                        solved = await call(**child_values)
            elif concurrency is None:
                solved = await code.run_in_threadpool(call, **child_values)
            else:
                async with concurrency.get_semaphore():
                    solved = await code.run_in_threadpool(call, **child_values)
            if child.name is not None:
                values[child.name] = solved
            if key not in self.cache:
                self.cache[key] = solved
        values.update(next(self.validated))
        if node.connection_name:
            values[node.connection_name] = self.request
        if node.request_name:
            values[node.request_name] = self.request
        if node.background_name:
            if self.background_tasks is None:
                self.background_tasks = code.BackgroundTasks()
            values[node.background_name] = self.background_tasks
        if node.response_name:
            values[node.response_name] = self.sub_response()
        if node.scopes_name:
            values[node.scopes_name] = code.SecurityScopes(scopes=list(node.oauth_scopes or ()))  # fresh
        return values
