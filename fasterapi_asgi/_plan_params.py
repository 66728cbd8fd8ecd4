"""A route plan's parameter reading: FastAPI's ``request_params_to_args``, per-request decisions made once.

For every path, query, header and cookie parameter, FastAPI decides on every request things that depend only
on the field: its aliases (``_get_param_aliases``), whether it is a sequence read with ``getlist``
(``_get_multidict_value``), whether it is required, its default and whether the default is validated
(``_validate_value_with_model_field``). A :class:`ParamReader` asks FastAPI's own functions those questions
once, when the plan is built. Per request it does only what depends on the request: pick the alias present,
read the value, and validate it with the field's own ``TypeAdapter`` as ``ModelField.validate`` does
(``validate_python(value, from_attributes=True)``).

It reads successes only. A missing required value, a value that does not validate, or any other exception
makes :meth:`ParamReader.read` return None; the plan then hands the request to FastAPI's handler, which
validates again and answers with its own 422. A parameter declared as a pydantic model (``Query()`` of a
model, ``Header()`` of a model...) makes the reader call FastAPI's own ``request_params_to_args`` for its
whole source. The functions whose decisions are cached here are fingerprinted in
``_plan_proof._FASTAPI_FINGERPRINTS``.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

# Defaults deepcopy returns as they are (its atomic types, by exact type): copying them is skipped.
_ATOMIC = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis), type(NotImplemented))


class _SimpleParam:
    """One parameter that is not a pydantic model: FastAPI's per-request decisions about it, made once."""

    __slots__ = (
        "name",
        "keys",
        "key",
        "getlist",
        "sequence",
        "required",
        "field",
        "default_validated",
        "validate",
    )

    def __init__(self, field: Any, multi: bool) -> None:
        from fastapi._compat.shared import field_annotation_is_sequence
        from fastapi.dependencies.utils import _get_param_aliases, _is_json_field

        self.name: str = field.name
        # request_params_to_args: the first alias whose request key is present, else the first one.
        self.keys = tuple(key for _, key in _get_param_aliases(field))
        self.key = self.keys[0] if len(self.keys) == 1 else None
        # _get_multidict_value: getlist for a non-Json sequence field of a multi-dict source (query
        # parameters, headers); an empty sequence (or an empty string for a sequence field) is missing.
        self.sequence = field_annotation_is_sequence(field.field_info.annotation)
        self.getlist = multi and self.sequence and not _is_json_field(field)
        # _validate_value_with_model_field: a missing value is an error, or the default (deep-copied),
        # validated only with validate_default. The default is read when it is needed, as FastAPI reads it
        # (``field.default`` calls a default factory).
        self.required = bool(field.field_info.is_required())
        self.field = field
        self.default_validated = bool(field.field_info.validate_default)
        # ModelField.validate: its TypeAdapter's validate_python(value, from_attributes=True).
        self.validate = field._type_adapter.validate_python


class ParamReader:
    """Reads one source's parameters (path, query, header or cookie) for a plan; see the module's docstring.
    ``fields`` is FastAPI's own list from the route's Dependant."""

    __slots__ = ("fields", "params", "_fastapi")

    def __init__(self, fields: list[Any], *, multi: bool) -> None:
        from fastapi.dependencies.utils import _get_param_model, request_params_to_args

        self.fields = fields
        self._fastapi = request_params_to_args
        # None: a field is a pydantic model; the whole source is FastAPI's request_params_to_args.
        self.params: tuple[_SimpleParam, ...] | None = None
        if all(_get_param_model(field) is None for field in fields):
            self.params = tuple(_SimpleParam(field, multi) for field in fields)

    def read(self, received: Any) -> dict[str, Any] | None:
        """The parameters' values as FastAPI's request_params_to_args gives them, or None where it would
        report an error (or anything raised)."""
        if self.params is None:
            try:
                found, errors = self._fastapi(self.fields, received)
            except Exception:  # noqa: BLE001 - FastAPI's handler meets it again and answers
                return None
            return None if errors else found
        values: dict[str, Any] = {}
        try:
            for param in self.params:
                key = param.key
                if key is None:
                    key = next((k for k in param.keys if k in received), param.keys[0])
                value = received.getlist(key) if param.getlist else received.get(key, None)
                if value is None or (param.sequence and len(value) == 0):
                    if param.required:
                        return None
                    value = param.field.default
                    if type(value) not in _ATOMIC:  # exact types, as deepcopy dispatches
                        value = deepcopy(value)
                    if not param.default_validated:
                        values[param.name] = value
                        continue
                values[param.name] = param.validate(value, from_attributes=True)
        except Exception:  # noqa: BLE001 - a ValidationError or a validator's own error: FastAPI answers
            return None
        return values


class _PlainQuery(dict):  # type: ignore[type-arg]
    """What a ``QueryParams`` answers for ``get``, ``in`` and ``getlist``, for a query string without
    percent-escapes or ``+`` (see :func:`query_params`): the last value of each name, every value in order."""

    __slots__ = ("items_in_order",)
    items_in_order: list[tuple[str, str]]

    def getlist(self, key: Any) -> list[Any]:
        return [value for name, value in self.items_in_order if name == key]


def _plain_pairs(query_string: bytes) -> list[tuple[str, str]] | None:
    """``parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)`` for a query string without
    ``%`` or ``+``; None for one with either.

    QueryParams decodes the bytes as latin-1 and takes ``parse_qsl(..., keep_blank_values=True)``'s pairs:
    split on ``&``, empty parts skipped, each part split at its first ``=`` (none: an empty value), ``+``
    made a space and percent-escapes decoded in both halves. Without ``%`` or ``+`` those last two change
    nothing, so the pairs are the split parts."""
    if b"%" in query_string or b"+" in query_string:
        return None
    pairs = []
    for part in query_string.decode("latin-1").split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((name, value))
    return pairs


def query_params(query_string: bytes, query_params_class: Any) -> Any:
    """``QueryParams(query_string)`` as a parameter reader reads it (``get``, ``in``, ``getlist``): a
    :class:`_PlainQuery` of the pairs, or the real class for a query string with ``%`` or ``+``."""
    pairs = _plain_pairs(query_string)
    if pairs is None:
        return query_params_class(query_string)
    query = _PlainQuery(pairs)
    query.items_in_order = pairs
    return query


def query_params_object(query_string: bytes, query_params_class: Any) -> Any:
    """``QueryParams(query_string)`` itself, the same object state without ``parse_qsl`` for a query string
    without ``%`` or ``+``: ``ImmutableMultiDict.__init__`` sets ``_dict`` (the last value of each name)
    then ``_list`` (the pairs), and ``QueryParams.__init__`` replaces both with ``str`` copies, which for
    these pairs are equal. Both ``__init__`` are fingerprinted (_plan_proof)."""
    pairs = _plain_pairs(query_string)
    if pairs is None:
        return query_params_class(query_string)
    query = query_params_class.__new__(query_params_class)
    query._dict = {name: value for name, value in pairs}
    query._list = pairs
    return query


def validate_body_value(field: Any, value: Any) -> Any:
    """request_body_to_args for one body parameter that is not embedded, given a parsed body: the field's
    ModelField.validate call (``validate_python(value, from_attributes=True)`` of its TypeAdapter). Raises
    what validation raises."""
    return field._type_adapter.validate_python(value, from_attributes=True)


def param_readers(dependant: Any) -> tuple[tuple[str, ParamReader], ...]:
    """A reader for each source (``"path"``, ``"query"``, ``"header"``, ``"cookie"``) the dependant takes
    parameters from, in solve_dependencies' order."""
    sources = (
        ("path", dependant.path_params),
        ("query", dependant.query_params),
        ("header", dependant.header_params),
        ("cookie", dependant.cookie_params),
    )
    # Query parameters and headers are multi-dicts (a list parameter reads every value).
    return tuple(
        (source, ParamReader(fields, multi=source in ("query", "header")))
        for source, fields in sources
        if fields
    )
