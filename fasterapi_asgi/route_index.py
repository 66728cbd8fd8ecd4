"""The native route index for Starlette and FastAPI routers.

Starlette's ``Router.app`` asks every route in table order whether it matches (``route.matches(scope)``, a
regular expression each) until one does: in an app with 300 routes, routing is most of a request. The index
reads each route's compiled path pattern once and keeps the literal text it must start with (``/users/`` for
``^/users/(?P<id>[^/]+)$``; the whole path for a static route). Per request, the native side
(``_core.IndexedRouterApp``, csrc/bindings/route_index.cc) walks the route path through a trie of those keys
and calls the router's own, unchanged ``app`` function with a stand-in ``self`` whose ``routes`` are only
the routes whose key fits, in table order. Starlette still decides every match, so path parameters,
convertors, 405s, ``redirect_slashes`` (its probe reads the whole table) and scope updates are Starlette's
own.

Soundness: a route left out is one whose ``matches`` cannot answer anything but ``Match.NONE`` for the path:

- only route classes whose ``matches`` is one of the known functions (Starlette's ``Route``,
  ``WebSocketRoute``, ``Mount``; FastAPI's ``APIRoute`` and ``APIWebSocketRoute``) are indexed, by their
  ``path_regex``; every other route (``Host``, FastAPI's included routers, custom classes) is a candidate
  for every path;
- a pattern's key is read with Python's own regular-expression parser: the literals after ``^`` up to the
  first construct that is not a literal (so a quantified or case-insensitive character ends it);
- the table is compared with the one the index was built from on every request (same list, same route
  objects); any change rebuilds the index before the request is routed;
- only routers whose class uses Starlette's or FastAPI's own ``app`` function are indexed; a request whose
  scope carries a FastAPI effective route context takes the plain scan.

Not seen: a route object whose ``path_regex`` is replaced after the route table was read (no public API does
this; the table itself may change freely)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

logger = logging.getLogger("uvicorn.error")


def _regex_parser() -> tuple[Any, Any] | None:
    """Python's own regular-expression parser and its constants (private modules: ``re._parser`` since 3.11,
    ``sre_parse`` before); None when this Python has neither, and the index is then off."""
    try:  # Python 3.11+
        from re import _constants, _parser  # type: ignore[attr-defined]

        return _parser, _constants
    except ImportError:
        pass
    try:  # Python 3.10
        import sre_constants
        import sre_parse

        return sre_parse, sre_constants
    except ImportError:
        return None


_REGEX = _regex_parser()
if _REGEX is not None:
    _sre_parse, _sre_constants = _REGEX
    _AT = _sre_constants.AT
    _LITERAL = _sre_constants.LITERAL
    _AT_BEGINNING = _sre_constants.AT_BEGINNING
    _AT_ENDS = (_sre_constants.AT_END, _sre_constants.AT_END_STRING)

# The names (code.co_names) that Starlette's own route-matching functions use, identical in every release
# from 0.37 to 1.10 on Python 3.10 to 3.13 (tests/python/test_route_index.py checks the installed one). Those
# functions are trusted to answer Match.NONE whenever path_regex does not match, and Router.app to read its
# table only as self.routes, only while they still are these functions: a release whose function uses
# anything else is not indexed (the plain scan routes its requests).
_STARLETTE_FINGERPRINTS: dict[str, frozenset[str]] = {
    "Route.matches": frozenset(
        "FULL Match NONE PARTIAL convert dict endpoint get get_route_path groupdict items match methods "
        "param_convertors path_regex update".split()
    ),
    "WebSocketRoute.matches": frozenset(
        "FULL Match NONE convert dict endpoint get get_route_path groupdict items match param_convertors "
        "path_regex update".split()
    ),
    "Mount.matches": frozenset(
        "FULL Match NONE app convert dict get get_route_path groupdict items len match param_convertors "
        "path_regex pop update".split()
    ),
    "Router.app": frozenset(
        "FULL Match NONE PARTIAL RedirectResponse URL default dict endswith get_route_path handle lifespan "
        "matches redirect_slashes routes rstrip str update".split()
    ),
}


def _proven(func: Any) -> bool:
    """``func`` (one of Starlette's functions above) is the one proven: the same names in its code."""
    code = getattr(func, "__code__", None)
    expected = _STARLETTE_FINGERPRINTS.get(getattr(func, "__qualname__", ""))
    return code is not None and expected is not None and frozenset(code.co_names) == expected


def unproven_starlette_functions() -> list[str]:
    """Starlette's routing functions that are not the proven ones (empty: all are)."""
    from starlette import routing

    funcs = (routing.Route.matches, routing.WebSocketRoute.matches, routing.Mount.matches, routing.Router.app)
    return [f.__qualname__ for f in funcs if not _proven(f)]


# A key of "" with exact=False: a candidate for every path.
_ALWAYS = ("", False)


def pattern_key(pattern: re.Pattern[Any]) -> tuple[str, bool]:
    """``(key, exact)`` for a path pattern used with ``pattern.match(path)``: every path it matches
    starts with ``key``; with ``exact`` it is ``key`` or ``key + "\\n"`` (what ``$`` allows).
    ``("", False)`` when nothing can be said."""
    if not isinstance(pattern.pattern, str) or _REGEX is None:
        return _ALWAYS
    try:
        parsed = _sre_parse.parse(pattern.pattern, pattern.flags)
    except Exception:  # noqa: BLE001 - a pattern Python compiled but we cannot read: no key
        return _ALWAYS
    flags = parsed.state.flags
    if flags & re.IGNORECASE:
        return _ALWAYS
    items = list(parsed)
    i = 1 if items and items[0] == (_AT, _AT_BEGINNING) else 0
    chars: list[str] = []
    while i < len(items) and items[i][0] is _LITERAL:
        chars.append(chr(items[i][1]))
        i += 1
    key = "".join(chars)
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in the pattern
        return _ALWAYS
    exact = (
        i == len(items) - 1
        and items[i][0] is _AT
        and items[i][1] in _AT_ENDS
        and not flags & re.MULTILINE  # with MULTILINE, `$` also matches before any newline
    )
    return key, exact


def _loaded_fastapi_routing() -> Any | None:
    """fastapi.routing when the process has imported it (an app with FastAPI routes has), else None:
    FastAPI is never imported for an app that does not use it (the import alone costs tens of megabytes)."""
    return sys.modules.get("fastapi.routing")


def _known_matches() -> set[Any]:
    """The ``matches`` functions whose answer is Match.NONE whenever
    ``route.path_regex.match(route_path)`` fails."""
    from starlette import routing

    known = {
        f
        for f in (routing.Route.matches, routing.WebSocketRoute.matches, routing.Mount.matches)
        if _proven(f)
    }
    fastapi_routing = _loaded_fastapi_routing()
    if fastapi_routing is None:
        return known
    for cls in (fastapi_routing.APIRoute, getattr(fastapi_routing, "APIWebSocketRoute", None)):
        if cls is None or "matches" not in vars(cls):
            continue
        # FastAPI's override: super().matches(scope), then scope["route"]; since 0.16x, an "effective route
        # context" in the scope may stand in for the route (the native side then takes the plain scan).
        names = set(cls.matches.__code__.co_names)
        allowed = {"super", "matches", "Match", "NONE", "original_route"}
        allowed.add("_get_scope_effective_route_context")
        if names <= allowed and _fastapi_context_keys() is not None and _proven(routing.Route.matches):
            known.add(cls.matches)
    return known


def _fastapi_context_keys() -> tuple[str, str] | tuple[None, None] | None:
    """FastAPI's scope keys for its effective route context: (scope key, context key); (None, None) when the
    installed FastAPI has no such context; None when it has one this module does not understand."""
    fastapi_routing = _loaded_fastapi_routing()
    if fastapi_routing is None:
        return None, None
    getter = getattr(fastapi_routing, "_get_scope_effective_route_context", None)
    if getter is None:
        return None, None
    scope_key = getattr(fastapi_routing, "_FASTAPI_SCOPE_KEY", None)
    ctx_key = getattr(fastapi_routing, "_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY", None)
    if not isinstance(scope_key, str) or not isinstance(ctx_key, str):
        return None
    # scope.get(_FASTAPI_SCOPE_KEY, {}).get(_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY): nothing else.
    if set(getter.__code__.co_names) != {"get", "_FASTAPI_SCOPE_KEY", "_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY"}:
        return None
    return scope_key, ctx_key


def _indexable_app_functions() -> set[Any]:
    """Router ``app`` functions that read their table only as ``self.routes`` and use ``self`` for
    nothing that a stand-in forwarding every other attribute to the router would change."""
    from starlette import routing

    if not _proven(routing.Router.app):
        return set()
    functions = {routing.Router.app}
    fastapi_routing = _loaded_fastapi_routing()
    if fastapi_routing is None:
        return functions
    app = vars(fastapi_routing.APIRouter).get("app")
    if app is not None and "__class__" not in app.__code__.co_freevars:  # no zero-argument super()
        functions.add(app)
    return functions


class _Reader:
    """Reads route tables for the native index (``keys_for``), and attaches the index to the routers it finds
    inside them (mounts, hosts)."""

    def __init__(self, min_routes: int, *, verify: bool = False) -> None:
        from starlette import routing

        self.min_routes = min_routes
        self.verify = self._verify if verify else None
        self.match_none = routing.Match.NONE
        self.known_matches = _known_matches()
        self.app_functions = _indexable_app_functions()
        self.get_route_path = routing.get_route_path
        self.context_keys = _fastapi_context_keys()
        self.router_type = routing.Router

    def keys_for(self, routes: tuple[Any, ...]) -> list[tuple[str, bool]] | None:
        """One (key, exact) pair per route, or None: this table is scanned as it is."""
        if len(routes) < self.min_routes:
            return None
        keys = []
        for route in routes:
            key = _ALWAYS
            if type(route).matches in self.known_matches:
                regex = getattr(route, "path_regex", None)
                if isinstance(regex, re.Pattern):
                    key = pattern_key(regex)
            keys.append(key)
            for inner in _routers_inside(route, self.router_type):
                attach(inner, self)
        return keys

    def _verify(self, scope: dict[str, Any], routes: tuple[Any, ...], candidates: tuple[Any, ...]) -> None:
        """Test mode: every route the index left out must answer Match.NONE for this scope."""
        chosen = {id(route) for route in candidates}
        for route in routes:
            if id(route) not in chosen and type(route).matches in self.known_matches:
                match, _ = route.matches(scope)
                if match is not self.match_none:
                    raise AssertionError(
                        f"route index left out {route!r}, which answers {match!r} "
                        f"for path {scope.get('path')!r}"
                    )


def _routers_inside(route: Any, router_type: type) -> Iterator[Any]:
    """The routers a Mount, a Host or a FastAPI included router dispatches to: through middleware (``.app``)
    and Starlette/FastAPI applications (``.router``)."""
    for name in ("_base_app", "app", "original_router"):
        obj = _own_attr(route, name)
        for _ in range(32):
            if obj is None:
                break
            if isinstance(obj, router_type):
                yield obj
                break
            obj = _own_attr(obj, "router") or _own_attr(obj, "app")


def _own_attr(obj: Any, name: str) -> Any:
    """An attribute from the object's own ``__dict__`` (no properties or ``__getattr__`` run), else None."""
    attrs = getattr(obj, "__dict__", None)
    return attrs.get(name) if isinstance(attrs, dict) else None


def _is_bound_app(obj: Any, router: Any, func: Any) -> bool:
    return getattr(obj, "__self__", None) is router and getattr(obj, "__func__", None) is func


def indexed_app_of(router: Any) -> Any | None:
    """The router's IndexedRouterApp when the index is attached to it, else None."""
    from fasterapi_asgi._core import IndexedRouterApp

    obj = getattr(router, "middleware_stack", None)
    for _ in range(32):
        if isinstance(obj, IndexedRouterApp):
            return obj if obj.router is router else None
        obj = _own_attr(obj, "app")
        if obj is None:
            return None
    return None


def attach(router: Any, reader: _Reader) -> Any | None:
    """Puts the index where the router's own ``app`` sits in its middleware stack. Returns the
    IndexedRouterApp, or None when this router keeps the plain scan (a router class with its own ``app``,
    or a stack the index cannot find the router's ``app`` in)."""
    from fasterapi_asgi._core import IndexedRouterApp

    existing = indexed_app_of(router)
    if existing is not None:
        return existing
    func = next((vars(c)["app"] for c in type(router).__mro__ if "app" in vars(c)), None)
    if func not in reader.app_functions:
        return None
    scope_key, ctx_key = reader.context_keys or (None, None)
    indexed = IndexedRouterApp(
        router,
        func,
        reader.get_route_path,
        reader.keys_for,
        ctx_scope_key=scope_key,
        ctx_key=ctx_key,
        verify=reader.verify,
    )
    stack = getattr(router, "middleware_stack", None)
    if _is_bound_app(stack, router, func):
        router.middleware_stack = indexed
    else:
        holder: Any = stack
        for _ in range(32):
            inner = _own_attr(holder, "app")
            if inner is None:
                return None
            if _is_bound_app(inner, router, func):
                holder.app = indexed
                break
            holder = inner
        else:
            return None
    indexed.prepare()
    return indexed


def reachable(app: Any, inside: Callable[[Any], Iterable[Any]]) -> Iterator[Any]:
    """Every object reachable from an ASGI app, each once: the app, its ``.router`` (Starlette, FastAPI), the
    apps middleware wraps (``.app``), and, for each route of a Starlette router reached, ``inside(route)``.
    Only own attributes are followed (no property or ``__getattr__`` runs)."""
    from starlette.routing import Router

    seen: set[int] = set()
    stack = [app]
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen or len(seen) > 10_000:
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, Router):
            for route in list(getattr(obj, "routes", ())):
                stack.extend(inside(route))
        stack.extend(_own_attr(obj, name) for name in ("router", "app"))


def routers_of(app: Any) -> list[Any]:
    """The Starlette routers reachable from an ASGI app: the app itself, ``app.router`` (Starlette,
    FastAPI), the apps middleware wraps (``.app``), and routers inside mounts and hosts."""
    try:
        from starlette.routing import Router
    except ImportError:
        return []
    return [
        obj for obj in reachable(app, lambda route: _routers_inside(route, Router)) if isinstance(obj, Router)
    ]


def install(app: Any, *, min_routes: int = 1) -> tuple[int, int, int]:
    """Attaches the index to every router reachable from ``app``. Returns (routers indexed, routes in them,
    routes the index can skip). Nothing happens (0, 0, 0) when the process has not imported Starlette's
    routing: the app then has no Starlette router, and importing it here would cost memory for nothing."""
    if "starlette.routing" not in sys.modules:
        return 0, 0, 0
    if _REGEX is None:
        logger.info(
            "Route index off: this Python has no regular-expression parser module to read route patterns."
        )
        return 0, 0, 0
    unproven = unproven_starlette_functions()
    if unproven:
        logger.info(
            "Route index off: this Starlette's %s %s not the proven one%s; routing stays the app's own scan.",
            ", ".join(unproven),
            "is" if len(unproven) == 1 else "are",
            "" if len(unproven) == 1 else "s",
        )
        return 0, 0, 0
    reader = _Reader(min_routes)
    routers = indexed = routes = 0
    for router in routers_of(app):
        attached = attach(router, reader)
        if attached is None:
            continue
        stats = attached.stats()
        routers += 1
        routes += stats["routes"]
        indexed += stats["indexed"]
    return routers, routes, indexed


def force_on_every_router(*, verify: bool = True) -> Callable[[], None]:
    """Attaches the index to every Starlette router as it is built (``Router.__init__``), however
    small: for running Starlette's and FastAPI's own test suites with the index on. Returns the function
    that undoes it. With ``verify``, every indexed request also checks that each route the index left out
    answers Match.NONE (AssertionError otherwise)."""
    from starlette.routing import Router

    try:  # the suites build FastAPI routers too: their route classes must be known to the reader
        import fastapi.routing  # noqa: F401
    except ImportError:
        pass
    reader = _Reader(min_routes=0, verify=verify)
    original_init = Router.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        attach(self, reader)

    Router.__init__ = __init__  # type: ignore[method-assign]

    def undo() -> None:
        Router.__init__ = original_init  # type: ignore[method-assign]

    return undo
