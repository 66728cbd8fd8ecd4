"""A route plan's JSON body: FastAPI's body step for one pydantic body parameter, successes only.

FastAPI reads a request body (``Request.body()``: ``http.request`` messages until ``more_body`` is false),
parses it with ``json.loads`` when the ``content-type`` is ``application/json`` (or another JSON type), and
validates it with the body parameter's field (``request_body_to_args`` for one body parameter that is not
embedded: ``ModelField.validate`` on the whole parsed body, located at ``("body",)``). A :class:`BodyReader`
does the same for the common case: the first ``content-type`` header is exactly ``application/json``, the body
is not empty, ``json.loads`` parses it and the field validates it.

Where the body parameter's type is one pydantic validates the same way from the bytes (``_plan_json``), a
plan without a ``Request`` to leave the parsed JSON on validates the bytes with ``validate_json`` instead;
where that fails, it takes FastAPI's two steps for the request, which decide.

Anything else -- another or no content type, an empty body, invalid JSON, a validation error, a disconnect
while reading, an exception from ``receive`` -- hands the request to FastAPI's handler before the route has
run, with a ``receive`` that replays the messages already read (:class:`ReplayReceive`), so FastAPI reads the
same message sequence and answers with its own 422, 400 or error.
"""

from __future__ import annotations

import json
from typing import Any

from fasterapi_asgi._plan_params import validate_body_value

Message = dict[str, Any]

# Bodies validated from their bytes, and bodies pydantic's parser or validator refused there (FastAPI's two
# steps then decided), in this process (FastAPI's suite reports them).
_counters = [0, 0]


def body_counters() -> tuple[int, int]:
    """(bodies validated with validate_json, bodies it refused) in this process."""
    return _counters[0], _counters[1]


class ReplayReceive:
    """A ``receive`` that returns the messages a plan has read (and re-raises the exception ``receive``
    raised, if it raised one), then calls ``receive``."""

    __slots__ = ("messages", "error", "receive")

    def __init__(self, messages: list[Message], error: BaseException | None, receive: Any) -> None:
        self.messages = messages
        self.error = error
        self.receive = receive

    async def __call__(self) -> Message:
        if self.messages:
            return self.messages.pop(0)
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return await self.receive()


class BodyReader:
    """Reads, parses and validates a compiled route's JSON body (see the module's docstring)."""

    __slots__ = ("name", "field", "fields", "validate_json", "why_not_json")

    def __init__(self, route: Any) -> None:
        from fasterapi_asgi._plan_json import json_mode_difference

        self.fields = route.dependant.body_params  # FastAPI's own list (verify mode recognises it)
        self.field = self.fields[0]
        self.name: str = self.field.name
        adapter = self.field._type_adapter
        self.why_not_json = json_mode_difference(adapter.core_schema)
        self.validate_json = None if self.why_not_json else adapter.validate_json

    async def read(self, headers: Any, receive: Any, request: Any = None) -> tuple[Any, Any]:
        """(the validated value, None) on success; else (None, the receive FastAPI's handler must get).
        ``request``, the Request the route's dependencies and endpoint get, is left as FastAPI's body step
        leaves it: its body and parsed JSON cached, its stream consumed (``Request.body``/``json``)."""
        messages: list[Message] = []
        chunks: list[bytes] = []
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] == "http.request":
                    chunk = message.get("body", b"")
                    if chunk:
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
                elif message["type"] == "http.disconnect":
                    return None, ReplayReceive(messages, None, receive)
        except Exception as exc:  # noqa: BLE001 - FastAPI's handler gets it from receive, where it came from
            return None, ReplayReceive(messages, exc, receive)
        body = b"".join(chunks)
        if not body or headers.get("content-type") != "application/json":
            return None, ReplayReceive(messages, None, receive)
        if request is None and self.validate_json is not None:
            try:
                value = self.validate_json(body)
            except Exception:  # noqa: BLE001 - FastAPI's two steps decide (see _plan_json)
                _counters[1] += 1
            else:
                _counters[0] += 1
                return value, None
        try:
            parsed = json.loads(body)
            value = validate_body_value(self.field, parsed)
        except Exception:  # noqa: BLE001 - invalid JSON or a validation error: FastAPI's handler answers
            return None, ReplayReceive(messages, None, receive)
        if request is not None:
            request._stream_consumed = True
            request._body = body
            request._json = parsed
        return value, None
