"""The FastAPI, Starlette and pydantic names route plans call per request, looked up once."""

from __future__ import annotations


class FastAPICode:
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
        from pydantic_core import PydanticUndefined
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
        self.Undefined = PydanticUndefined
        self.QueryParams = QueryParams
        self.Request = Request
        self.Response = Response


_code: FastAPICode | None = None


def fastapi_code() -> FastAPICode:
    """The looked-up FastAPI names (made on first use)."""
    global _code
    if _code is None:
        _code = FastAPICode()
    return _code


# request_response's error when a dependency with yield swallowed the exception and no response was sent.
RESPONSE_NOT_AWAITED = (
    "Response not awaited. There's a high chance that the "
    "application code is raising an exception and a dependency with yield "
    "has a block with a bare except, or a block with except Exception, "
    "and is not raising the exception again. Read more about it in the "
    "docs: https://fastapi.tiangolo.com/tutorial/dependencies/dependencies-with-yield/#dependencies-with-yield-and-except"
)
