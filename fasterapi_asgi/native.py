"""Native routes: endpoints answered by the C++ core, on the same port as the app, without Python.

Declare them on the app object (or on a :class:`Routes` collection passed with ``--native module:attr``)::

    from fastapi import FastAPI
    from fasterapi_asgi import native

    app = FastAPI()
    native.get(app, "/health", native.health())
    native.get(app, "/version", native.json({"version": "1.4.2"}))
    native.get(app, "/api/v1/metrics", native.metrics())
    native.get(app, "/score/{user_id:int}", native.load("build/libscore.so", "score"))

Under fasterapi-asgi the core matches these routes before the ASGI app and answers them in the libuv read
callback. Under any other server: for Starlette and FastAPI apps, each built-in handler (text, json, bytes,
file, redirect, health) is also registered as an ordinary app route that gives the same answer, so the app
behaves the same under uvicorn; ``metrics()`` and ``load()`` have no Python equivalent and are absent there
(404) unless a ``fallback`` endpoint is given. Raw ASGI callables get no fallback: other servers simply ignore
the declarations.
"""

from __future__ import annotations

import json as _json
import logging
import mimetypes
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Handler",
    "Route",
    "Routes",
    "build",
    "bytes_",
    "delete",
    "file",
    "get",
    "get_include",
    "health",
    "install",
    "json",
    "load",
    "metrics",
    "patch",
    "post",
    "put",
    "redirect",
    "route",
    "routes_of",
    "static",
    "text",
]

logger = logging.getLogger("uvicorn.error")

_ATTR = "__fasterapi_native_routes__"
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(int|str|path))?\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True)
class Handler:
    """A prepared native handler. Build one with :func:`text`, :func:`json`, :func:`load`, ..."""

    kind: str  # "static" | "health" | "metrics" | "user" | "directory" | "disk_file"
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    library: str | None = None
    symbol: str | None = None
    fallback: Callable[..., Any] | None = None
    path: str | None = None  # "directory" / "disk_file": what is served from disk
    flags: int = 0  # "directory" / "disk_file": _FOLLOW_SYMLINKS | _ALLOW_HIDDEN | _PRECOMPRESSED | _HTML


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    include_in_schema: bool = False


@dataclass
class Routes:
    """An ordered collection of native routes (what ``--native module:attr`` points at)."""

    routes: list[Route] = field(default_factory=list)

    def route(
        self, methods: str | Iterable[str], path: str, handler: Handler, *, include_in_schema: bool = False
    ) -> None:
        _check_path(path)
        if not isinstance(handler, Handler):
            raise TypeError("handler must be built with fasterapi_asgi.native (text(), json(), load(), ...)")
        for method in [methods] if isinstance(methods, str) else list(methods):
            m = method.upper()
            if not re.fullmatch(r"[A-Z]+", m):
                raise ValueError(f"invalid HTTP method: {method!r}")
            if any(r.method == m and r.path == path for r in self.routes):
                raise ValueError(f"duplicate native route: {m} {path}")
            self.routes.append(Route(m, path, handler, include_in_schema))

    def get(self, path: str, handler: Handler, **kw: Any) -> None:
        self.route("GET", path, handler, **kw)

    def post(self, path: str, handler: Handler, **kw: Any) -> None:
        self.route("POST", path, handler, **kw)

    def __iter__(self) -> Any:
        return iter(self.routes)

    def __len__(self) -> int:
        return len(self.routes)


# ----------------------------------------------------------------------------------------------------
# Handlers
# ----------------------------------------------------------------------------------------------------


def _headers(extra: dict[str, str] | Sequence[tuple[str, str]] | None) -> tuple[tuple[str, str], ...]:
    items = list(extra.items()) if isinstance(extra, dict) else list(extra or [])
    out = []
    for name, value in items:
        if not _HEADER_NAME.match(name) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"invalid header: {name!r}")
        if name.lower() == "content-length":
            raise ValueError("content-length is computed by the server")
        out.append((name.lower(), value))
    return tuple(out)


def bytes_(
    body: bytes,
    content_type: str = "application/octet-stream",
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Handler:
    """Answer with fixed bytes. The response is serialised once, at registration."""
    if not 100 <= status <= 999:
        raise ValueError(f"invalid status code: {status}")
    return Handler("static", status, (("content-type", content_type), *_headers(headers)), bytes(body))


def text(
    body: str,
    *,
    status: int = 200,
    content_type: str = "text/plain; charset=utf-8",
    headers: dict[str, str] | None = None,
) -> Handler:
    """Answer with a fixed text body."""
    return bytes_(body.encode("utf-8"), content_type, status=status, headers=headers)


def json(content: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    """Answer with ``content`` serialised once to JSON, exactly as FastAPI's JSONResponse renders it."""
    body = _json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
    return bytes_(body.encode("utf-8"), "application/json", status=status, headers=headers)


# StaticFiles flags (csrc/http/router.h).
_FOLLOW_SYMLINKS = 1
_ALLOW_HIDDEN = 2
_PRECOMPRESSED = 4
_HTML = 8


def file(
    path: str | os.PathLike[str],
    *,
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
    from_disk: bool = False,
    precompressed: bool = False,
) -> Handler:
    """Answer with a file's content, read once at registration; or, with ``from_disk=True``, opened at each
    request and sent with sendfile(2) (changes on disk are seen; ETag, Last-Modified, 304, single ranges;
    ``precompressed``: a ``.br``/``.gz`` sibling chosen by Accept-Encoding)."""
    p = Path(path)
    ctype = content_type or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    if ctype.startswith("text/") and "charset" not in ctype:
        ctype += "; charset=utf-8"
    if not from_disk:
        return bytes_(p.read_bytes(), ctype, headers=headers)
    if not p.is_file():
        raise ValueError(f"not a file: {str(p)!r}")
    return Handler(
        "disk_file",
        headers=(("content-type", ctype), *_headers(headers)),
        path=str(p.resolve()),
        flags=_PRECOMPRESSED if precompressed else 0,
    )


def static(
    app: Any,
    path: str,
    directory: str | os.PathLike[str],
    *,
    html: bool = True,
    follow_symlinks: bool = False,
    allow_hidden: bool = False,
    precompressed: bool = True,
    cache_control: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Serve ``directory`` under ``path`` (e.g. ``"/assets"``) natively: GET and HEAD on ``path``,
    ``path/`` and everything below, answered in C++ with sendfile(2) (over TLS: read in steps into the TLS
    writer). See docs/native-routes.md, "Static files".

    ``html``: a directory is answered with its ``index.html`` (a URL without the final ``/`` is redirected
    to it) and a missing file with the root's ``404.html`` if there is one, as Starlette's
    ``StaticFiles(html=True)``. ``follow_symlinks``: symlinks are followed wherever they point (else a
    symlink anywhere in the path is 404). ``allow_hidden``: names starting with ``.`` are served (else 404).
    ``precompressed``: ``name.br`` / ``name.gz`` is sent instead of ``name`` when the client accepts it.
    ``cache_control``: the Cache-Control value of every file response. Under other servers a Starlette or
    FastAPI app gets ``StaticFiles`` mounted at ``path`` instead (without the hidden-file rule, precompressed
    files and Cache-Control)."""
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"not a directory: {str(root)!r}")
    if "{" in path or "}" in path:
        raise ValueError(f"a static path takes no parameters: {path!r}")
    extra = list(_headers(headers))
    if cache_control is not None:
        extra.append(("cache-control", cache_control))
    flags = (
        (_FOLLOW_SYMLINKS if follow_symlinks else 0)
        | (_ALLOW_HIDDEN if allow_hidden else 0)
        | (_PRECOMPRESSED if precompressed else 0)
        | (_HTML if html else 0)
    )
    handler = Handler("directory", headers=tuple(_headers(extra)), path=str(root.resolve()), flags=flags)
    route(app, "GET", path.rstrip("/") or "/", handler)


def redirect(location: str, *, status: int = 307) -> Handler:
    """Redirect to ``location`` (307 by default, like Starlette's RedirectResponse)."""
    if status not in (301, 302, 303, 307, 308):
        raise ValueError(f"not a redirect status: {status}")
    return Handler("static", status, _headers([("location", location)]), b"")


def health(body: str = "ok") -> Handler:
    """200 with ``body`` while the server is serving; 503 once graceful shutdown has begun."""
    return Handler("health", 200, (("content-type", "text/plain; charset=utf-8"),), body.encode("utf-8"))


def metrics() -> Handler:
    """The server's counters in Prometheus text format: requests, connections, bytes in/out, per-route counts
    and
    a latency histogram per native route."""
    return Handler("metrics")


def load(
    library: str | os.PathLike[str], symbol: str, *, fallback: Callable[..., Any] | None = None
) -> Handler:
    """A user C/C++ handler: ``symbol`` in the shared library ``library``, built against ``native.h``
    (see :func:`get_include` and :func:`build`). The library is loaded, and its ABI version checked, when the
    server
    starts. ``fallback`` is an optional Starlette/FastAPI endpoint used under other servers."""
    return Handler("user", library=str(library), symbol=symbol, fallback=fallback)


# ----------------------------------------------------------------------------------------------------
# Declaring routes on an app
# ----------------------------------------------------------------------------------------------------

_fallback_registry: dict[int, tuple[Any, Routes]] = {}


def _check_path(path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(f"a route path must start with '/': {path!r}")
    rest = _PARAM.sub("", path)
    if "{" in rest or "}" in rest:
        raise ValueError(f"malformed path parameter in {path!r} (types: int, str, path)")


def routes_of(app: Any) -> Routes:
    """The native routes declared on ``app`` (an empty collection if none)."""
    routes = getattr(app, _ATTR, None)
    if isinstance(routes, Routes):
        return routes
    entry = _fallback_registry.get(id(app))
    if entry is not None and entry[0] is app:
        return entry[1]
    routes = Routes()
    try:
        setattr(app, _ATTR, routes)
    except (AttributeError, TypeError):
        _fallback_registry[id(app)] = (app, routes)
    return routes


def route(
    app: Any, methods: str | Iterable[str], path: str, handler: Handler, *, include_in_schema: bool = False
) -> None:
    """Declare a native route on ``app``. ``include_in_schema=True`` lists it in a FastAPI app's OpenAPI
    schema."""
    collection = app if isinstance(app, Routes) else routes_of(app)
    before = len(collection)
    collection.route(methods, path, handler, include_in_schema=include_in_schema)
    if not isinstance(app, Routes):
        for r in collection.routes[before:]:
            _add_python_fallback(app, r)


def get(app: Any, path: str, handler: Handler, **kw: Any) -> None:
    route(app, "GET", path, handler, **kw)


def post(app: Any, path: str, handler: Handler, **kw: Any) -> None:
    route(app, "POST", path, handler, **kw)


def put(app: Any, path: str, handler: Handler, **kw: Any) -> None:
    route(app, "PUT", path, handler, **kw)


def patch(app: Any, path: str, handler: Handler, **kw: Any) -> None:
    route(app, "PATCH", path, handler, **kw)


def delete(app: Any, path: str, handler: Handler, **kw: Any) -> None:
    route(app, "DELETE", path, handler, **kw)


def _fallback_endpoint(handler: Handler) -> Callable[..., Any] | None:
    if handler.fallback is not None:
        return handler.fallback
    if handler.kind == "disk_file":
        from starlette.requests import Request
        from starlette.responses import FileResponse

        file_headers = dict(handler.headers)
        file_type = file_headers.pop("content-type", None)
        file_path = handler.path
        assert file_path is not None

        # Takes the request: Starlette's add_route passes it; FastAPI injects it for the annotation.
        async def file_endpoint(request: Request) -> FileResponse:
            return FileResponse(file_path, headers=file_headers, media_type=file_type)

        file_endpoint.__annotations__.update({"request": Request, "return": FileResponse})
        return file_endpoint
    if handler.kind not in ("static", "health"):
        return None
    from starlette.requests import Request
    from starlette.responses import Response

    headers = dict(handler.headers)
    media_type = headers.pop("content-type", None)

    # Takes the request: Starlette's add_route calls endpoint(request); FastAPI injects it for the annotation.
    async def endpoint(request: Request) -> Response:
        return Response(handler.body, status_code=handler.status, headers=headers, media_type=media_type)

    # Resolved here: under `from __future__ import annotations` FastAPI cannot resolve the strings "Request"
    # and "Response" against this module's globals, and /openapi.json fails for an include_in_schema route.
    endpoint.__annotations__.update({"request": Request, "return": Response})
    return endpoint


def _add_python_fallback(app: Any, r: Route) -> None:
    """Register the same answer as an ordinary Starlette/FastAPI route, for servers without native routes."""
    try:
        from starlette.applications import Starlette
    except ImportError:
        return
    if not isinstance(app, Starlette):
        return
    if r.handler.kind == "directory":
        from starlette.staticfiles import StaticFiles

        assert r.handler.path is not None
        files = StaticFiles(
            directory=r.handler.path,
            html=bool(r.handler.flags & _HTML),
            follow_symlink=bool(r.handler.flags & _FOLLOW_SYMLINKS),
        )
        files.__fasterapi_native__ = True  # type: ignore[attr-defined]
        app.mount("" if r.path == "/" else r.path, files, name=f"native_static_{r.path}")
        return
    endpoint = _fallback_endpoint(r.handler)
    if endpoint is None:
        return
    endpoint.__fasterapi_native__ = True  # type: ignore[attr-defined]
    endpoint.__name__ = (
        f"native_{r.method.lower()}_{re.sub(r'[^0-9A-Za-z]+', '_', r.path).strip('_') or 'root'}"
    )
    add_api_route = getattr(app, "add_api_route", None)
    if add_api_route is not None:  # FastAPI: appears in /docs only when asked
        from starlette.responses import Response

        add_api_route(
            r.path,
            endpoint,
            methods=[r.method],
            include_in_schema=r.include_in_schema,
            response_class=Response,
        )
        if r.method == "GET":  # the native route answers HEAD too; FastAPI does not add HEAD itself
            add_api_route(
                r.path, endpoint, methods=["HEAD"], include_in_schema=False, response_class=Response
            )
    else:
        app.add_route(r.path, endpoint, methods=[r.method], include_in_schema=r.include_in_schema)


# ----------------------------------------------------------------------------------------------------
# Installing into the core (called by the server at start-up)
# ----------------------------------------------------------------------------------------------------


def install(core: Any, routes: Iterable[Route], app: Any = None) -> int:
    """Register ``routes`` in the core's route table; report app routes they shadow. Returns how many."""
    count = 0
    for r in routes:
        h = r.handler
        if h.kind == "static":
            core.add_static_route(r.method, r.path, h.status, list(h.headers), h.body)
        elif h.kind == "health":
            core.add_health_route(r.method, r.path, h.body)
        elif h.kind == "metrics":
            core.add_metrics_route(r.method, r.path)
        elif h.kind == "directory":
            assert h.path is not None
            core.add_directory_route(r.method, r.path, h.path, h.flags, list(h.headers))
        elif h.kind == "disk_file":
            assert h.path is not None
            file_headers = [kv for kv in h.headers if kv[0] != "content-type"]
            ctype = dict(h.headers).get("content-type", "")
            core.add_disk_file_route(r.method, r.path, h.path, ctype, h.flags, file_headers)
        elif h.kind == "user":
            assert h.library is not None and h.symbol is not None
            core.add_user_route(r.method, r.path, h.library, h.symbol, 0)
        else:  # pragma: no cover - Handler is built by this module only
            raise ValueError(f"unknown native handler kind {h.kind!r}")
        count += 1
    if app is not None:
        for message in shadowed_app_routes(core, app):
            logger.warning(message)
    return count


def _app_routes(app: Any) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for candidate in (app, getattr(app, "router", None)):
        routes = getattr(candidate, "routes", None)
        if isinstance(routes, list):
            for rt in routes:
                path = getattr(rt, "path", None)
                endpoint = getattr(rt, "endpoint", None)
                mounted = getattr(rt, "app", None)
                if (
                    not isinstance(path, str)
                    or getattr(endpoint, "__fasterapi_native__", False)
                    or getattr(mounted, "__fasterapi_native__", False)
                ):
                    continue
                methods = sorted(getattr(rt, "methods", None) or ["GET"])
                out.append((path, methods))
            break
    return out


def shadowed_app_routes(core: Any, app: Any) -> list[str]:
    """Messages for each app route that a native route answers instead (checked on the route's literal
    path)."""
    messages = []
    for path, methods in _app_routes(app):
        probe = _PARAM.sub(lambda m: "0" if m.group(2) == "int" else "x", path)
        for method in methods:
            hit = core.match_native(method, probe)
            if hit is not None and hit != "405":
                messages.append(
                    f"Native route {method} {hit} shadows the app route {method} {path}: "
                    "the native route answers."
                )
    return messages


# ----------------------------------------------------------------------------------------------------
# Building user handlers
# ----------------------------------------------------------------------------------------------------


def get_include() -> str:
    """The directory holding ``fasterapi_asgi/native.h``, for ``-I`` when compiling a handler library."""
    here = Path(__file__).resolve().parent
    installed = here / "include"
    if (installed / "fasterapi_asgi" / "native.h").exists():
        return str(installed)
    source = here.parent / "csrc" / "include"  # editable install / source checkout
    if (source / "fasterapi_asgi" / "native.h").exists():
        return str(source)
    raise FileNotFoundError("fasterapi_asgi/native.h not found: reinstall fasterapi-asgi")


def build(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    compiler: str | None = None,
    extra_args: Sequence[str] = (),
) -> Path:
    """Compile handler sources into a shared library with the system C++ compiler (``-O2 -shared -fPIC``)."""
    cxx = compiler or os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        raise RuntimeError("no C++ compiler found: install g++ (apt-get install -y g++) or set CXX")
    srcs = [str(sources)] if isinstance(sources, (str, os.PathLike)) else [str(s) for s in sources]
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [cxx, "-std=c++17", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-I", get_include(), *srcs,
           "-o", str(out), *extra_args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building {out.name} failed:\n{proc.stderr}")
    return out
