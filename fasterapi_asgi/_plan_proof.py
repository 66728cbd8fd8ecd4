"""Which FastAPI route plans trust: the proven releases and the fingerprints of the code they reproduce.

Route plans reproduce, stand in for, or cache the decisions of FastAPI's and Starlette's own functions. They
are used only with a FastAPI release in ``PROVEN_FASTAPI`` (FastAPI's own suite passes with plans forced on,
in the test command), and only while each of those functions references exactly the names recorded from that
release: a patch release whose code differs compiles nothing, and one INFO line says why.
"""

from __future__ import annotations

import hashlib
from typing import Any

# FastAPI releases the plans are proven on, oldest first: the test lock's, and the oldest, whose suite the
# test command also runs with plans forced on (tests/run_all.sh, in a venv of its own).
PROVEN_FASTAPI = ("0.164.0", "0.165.0")

# The names each function a plan stands in for, calls, or caches the decisions of references, nested functions
# included (see _fingerprinted): a release whose code differs is not compiled for. Recorded from FastAPI
# 0.165.0 and Starlette 1.10.0 with _names_digest(); the same on Python 3.11, 3.12 and 3.13. An older proven
# release's differences are in _RELEASE_FINGERPRINTS.
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
    "_asynccontextmanager_with_shielded_exit": "c9d0c64b1e955269",
    "ModelField.validate": "ca2d6664687fa53b",
    "ModelField.serialize_json": "2af5da026847c267",
    "HTTPConnection.query_params": "75140c454c985be6",
    "HTTPConnection.headers": "1aae2b7980479131",
    "HTTPConnection.path_params": "9b98b4019a93466c",
    "HTTPConnection.cookies": "85d65abca7b1c71b",
    "QueryParams.__init__": "c2e195c76dc017ba",
    "ImmutableMultiDict.__init__": "70f9a7ce1e8a91e7",
    "ImmutableMultiDict.__getitem__": "8d02d08815d53953",
    "ImmutableMultiDict.getlist": "e74c1d9805f0abfe",
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

# Where a proven release's functions differ from the newest's: its own names. FastAPI 0.165.0 added form
# size limits (``form_limits``) to the route handler; 0.164.0's reads forms without them, and plans serve no
# form route.
_RELEASE_FINGERPRINTS: dict[str, dict[str, str]] = {
    "0.164.0": {
        "get_request_handler": "3d8a8a1fae7a189e",
        "APIRoute.get_route_handler": "91ea8f6a4b3041f7",
    },
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
    from starlette.datastructures import ImmutableMultiDict, QueryParams
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
        # _plan_generator reproduces its way through when no exception reaches the dependency.
        "_asynccontextmanager_with_shielded_exit": getattr(
            utils._asynccontextmanager_with_shielded_exit, "__wrapped__", None
        ),
        "ModelField.serialize_json": v2.ModelField.serialize_json,
        "HTTPConnection.query_params": HTTPConnection.query_params.fget,  # type: ignore[attr-defined]
        "HTTPConnection.headers": HTTPConnection.headers.fget,  # type: ignore[attr-defined]
        "HTTPConnection.path_params": HTTPConnection.path_params.fget,  # type: ignore[attr-defined]
        "HTTPConnection.cookies": HTTPConnection.cookies.fget,  # type: ignore[attr-defined]
        "QueryParams.__init__": QueryParams.__init__,  # _plan_params.query_params answers as it does
        "ImmutableMultiDict.__init__": ImmutableMultiDict.__init__,
        "ImmutableMultiDict.__getitem__": ImmutableMultiDict.__getitem__,
        "ImmutableMultiDict.getlist": ImmutableMultiDict.getlist,
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
    expected = {**_FASTAPI_FINGERPRINTS, **_RELEASE_FINGERPRINTS.get(version, {})}
    changed = [name for name, func in funcs.items() if _names_digest(func) != expected.get(name)]
    if changed:
        return f"FastAPI {version}'s {', '.join(changed)} differ from the proven code"
    return ""
