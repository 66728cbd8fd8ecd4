"""How a route plan turns an endpoint's return value into FastAPI's response.

What ``get_request_handler`` does after the endpoint returned: a returned ``Response`` is sent as it is;
otherwise the response arguments (``_build_response_args``: background tasks, the route's status or a
dependency's sub-response status), ``serialize_response`` with the route's response-model options, the
route's response class (or ``Response(..., media_type="application/json")`` on FastAPI's JSON-bytes path), no
body for a status that may not have one, and the sub-response's headers appended. :class:`JSONMessages` writes
the JSON-bytes path of an ``async def`` endpoint without the ``Response`` object.
"""

from __future__ import annotations

from typing import Any

from fasterapi_asgi._plan_code import fastapi_code


class JSONMessages:
    """How a plan writes the default response of a route with a response model, as FastAPI does (the
    model's ``TypeAdapter`` validates the return value and dumps it to JSON bytes, then ``Response(content,
    media_type="application/json", status_code=...)``), without the ``Response`` object: the status, the
    header list and the body ``Response.__init__``/``init_headers`` would make, sent as ``Response.__call__``
    sends them."""

    __slots__ = ("validate", "dump_json", "options", "status", "content_length", "body_allowed")

    def __init__(self, route: Any, options: dict[str, Any]) -> None:
        code = fastapi_code()
        adapter = route.response_field._type_adapter  # ModelField.validate / serialize_json use this one
        self.validate = adapter.validate_python
        self.dump_json = adapter.dump_json
        self.options = options  # the response model's serialize_json options
        self.status = route.status_code if route.status_code else 200
        # Response.init_headers: no content-length below 200 and for 204 and 304; FastAPI then empties the
        # body of a status that may not have one (205 keeps the content-length of the body it had).
        self.content_length = not (self.status < 200 or self.status in (204, 304))
        self.body_allowed = code.is_body_allowed_for_status_code(self.status)

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
            body_allowed = fastapi_code().is_body_allowed_for_status_code(status)
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


class ResponseWriter:
    """A route's response settings as get_request_handler reads them, and what it does with them."""

    __slots__ = (
        "call",
        "is_coroutine",
        "endpoint_path",
        "status_code",
        "response_field",
        "response_class",
        "use_dump_json",
        "serialize_options",
        "json",
    )

    def __init__(self, route: Any, is_coroutine: bool) -> None:
        from fastapi.datastructures import DefaultPlaceholder

        self.call = route.dependant.call
        self.is_coroutine = is_coroutine
        self.endpoint_path = route.dependant.path
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
        # The JSON-bytes path of an async endpoint is written without a Response object.
        self.json = (
            JSONMessages(route, self.serialize_options) if self.use_dump_json and is_coroutine else None
        )

    def validate_return(self, scope: Any, raw: Any) -> Any:
        """serialize_response's validation of the return value (ModelField.validate's call), raising FastAPI's
        ResponseValidationError with its errors and endpoint context."""
        code = fastapi_code()
        try:
            return self.json.validate(raw, from_attributes=True)  # type: ignore[union-attr]
        except code.ValidationError as exc:
            errors = code.regenerate_error_with_loc(
                errors=exc.errors(include_url=False), loc_prefix=("response",)
            )
            raise code.ResponseValidationError(
                errors=errors, body=raw, endpoint_ctx=self.endpoint_context(scope)
            ) from None

    def endpoint_context(self, scope: Any) -> Any:
        """get_request_handler's endpoint context for error messages (FastAPI's cached dict, updated as it
        updates it)."""
        code = fastapi_code()
        endpoint_ctx = code.extract_endpoint_context(self.call)
        if self.endpoint_path:
            mount_path = scope.get("root_path", "").rstrip("/")
            endpoint_ctx["path"] = f"{scope['method']} {mount_path}{self.endpoint_path}"
        return endpoint_ctx

    def args(self, background: Any, sub_response: Any) -> dict[str, Any]:
        """_build_response_args: the background tasks, and the route's status or the sub-response's."""
        args: dict[str, Any] = {"background": background}
        sub_status = sub_response.status_code if sub_response is not None else None
        status = self.status_code if self.status_code else sub_status
        if status is not None:
            args["status_code"] = status
        if sub_status:
            args["status_code"] = sub_status
        return args

    async def build(self, scope: Any, raw: Any, background: Any = None, sub_response: Any = None) -> Any:
        """What get_request_handler makes of the endpoint's return value when it is not a Response: the
        background tasks, the status of the response arguments, and the sub-response's headers appended."""
        code = fastapi_code()
        args = self.args(background, sub_response)
        content = await code.serialize_response(
            field=self.response_field,
            response_content=raw,
            is_coroutine=self.is_coroutine,
            endpoint_ctx=self.endpoint_context(scope),
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
