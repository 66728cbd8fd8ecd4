"""Verify mode: route plans checked against FastAPI's own code on every compiled request (tests only).

``route_plans.force_on_every_route(verify=True)`` (FastAPI's suite in the test command) makes every plan check
its work as it answers: the arguments of a route without dependencies against what FastAPI's
``solve_dependencies`` builds, and every response the plan writes itself against what FastAPI's
``serialize_response`` and ``Response`` make of the same return value. A difference raises AssertionError.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any


async def verify_response(
    writer: Any, scope: Any, raw: Any, start: Any, body: Any, background: Any = None, sub_response: Any = None
) -> None:
    """Verify mode: FastAPI's serialize_response and Response class, given the same return value, must
    make the same status, header list and body as the messages the plan sends."""
    expected = await writer.build(scope, raw, background, sub_response)
    if (expected.status_code, expected.raw_headers, bytes(expected.body)) != (
        start["status"],
        start["headers"],
        body["body"],
    ):
        raise AssertionError(
            f"route plan for {writer.endpoint_path!r}: sent {start!r} {body!r}, FastAPI's response "
            f"{expected.status_code!r} {expected.raw_headers!r} {expected.body!r}"
        )


async def verify_values(
    plan: Any, scope: Any, receive: Any, values: dict[str, Any], results: dict[int, Any]
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
                dependant=plan.dependant,
                dependency_overrides_provider=plan.route.dependency_overrides_provider,
                body=values.get(plan.body.name) if plan.body is not None else None,
                async_exit_stack=inner,
                embed_body_fields=plan.route._embed_body_fields,
            )
    finally:
        utils.request_params_to_args = validate  # type: ignore[assignment]
        utils.request_body_to_args = validate_body  # type: ignore[assignment]
    if solved.errors or not _same(solved.values, values):
        raise AssertionError(
            f"route plan for {plan.writer.endpoint_path!r}: arguments {values!r}, FastAPI's "
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
