"""Which body types a route plan may validate straight from the request bytes.

FastAPI parses a JSON body with ``json.loads`` and validates the result in pydantic's Python mode
(``TypeAdapter.validate_python(value, from_attributes=True)``). pydantic can do both at once from the bytes
(``TypeAdapter.validate_json``, pydantic-core's own JSON parser), in about 60% of the time for a 1 KB model.
The two are not the same in general, so a plan uses ``validate_json`` only where they are, and only on
success:

- **The parsers.** Where ``validate_json`` succeeds, ``json.loads`` accepts the same bytes and gives the same
  values: the same numbers (big integers, floats correctly rounded, ``NaN``/``Infinity``, ``1e400`` as
  infinity), strings, and the last value of a repeated key. Where they differ, pydantic's parser is the
  stricter one: ``json.loads`` also takes a UTF-8 byte-order mark, UTF-16 and UTF-32, lone surrogates
  (escaped or UTF-8-encoded); pydantic's parser fails on those, and the plan then takes FastAPI's way
  (``json.loads``, then ``validate_python``) for that request, so FastAPI's answer stays the one given.
  ``tests/python/test_plan_json.py`` compares the two on generated documents, numbers and strings.
- **The validators.** pydantic validates some types differently in JSON mode (dates from numbers, bytes,
  tuples, sets, enums, unions, custom validators, ``json_or_python`` schemas, strict mode). A schema is
  eligible only when every node of its core schema is one whose JSON-mode and Python-mode validation of
  ``json.loads``' values agree: strings, integers, floats, booleans, ``None``, lists, dicts with string keys,
  optional values, defaults, and models built of those with no custom ``__init__``, ``model_post_init`` or
  validators, with no option outside the short list below. Anything else keeps FastAPI's way for every
  request.

Both halves depend on pydantic-core's parser and validators, so they hold for the releases in
``PROVEN_PYDANTIC_CORE`` (the test lock's, where the comparison and FastAPI's suite ran); with any other,
every body takes FastAPI's way. :func:`json_mode_difference` answers with the reason a schema is not
eligible, or "" when it is.
"""

from __future__ import annotations

from typing import Any

# pydantic-core releases the comparison (tests/python/test_plan_json.py) and FastAPI's suite ran on.
PROVEN_PYDANTIC_CORE = ("2.50.5",)

# Per core-schema type: the keys a node may have (besides "type", "metadata", "ref", "serialization", which
# do not change validation). A key not listed (strict, a custom validator, an alias...) makes it ineligible.
_ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "str": frozenset({"min_length", "max_length", "strip_whitespace", "to_lower", "to_upper"}),
    "int": frozenset({"multiple_of", "le", "ge", "lt", "gt"}),
    "float": frozenset({"allow_inf_nan", "multiple_of", "le", "ge", "lt", "gt"}),
    "bool": frozenset(),
    "none": frozenset(),
    "nullable": frozenset({"schema"}),
    "default": frozenset({"schema", "default"}),
    "list": frozenset({"items_schema", "min_length", "max_length"}),
    "dict": frozenset({"keys_schema", "values_schema", "min_length", "max_length"}),
    "model": frozenset({"cls", "config", "custom_init", "root_model", "schema"}),
    "model-fields": frozenset({"fields", "computed_fields", "model_name"}),
    "model-field": frozenset({"schema", "serialization_exclude", "serialization_alias", "frozen"}),
    "definitions": frozenset({"schema", "definitions"}),
    "definition-ref": frozenset({"schema_ref"}),
}
_NEUTRAL_KEYS = frozenset({"type", "metadata", "ref", "serialization"})
# A model's config keys that do not change validation, and the values extra_fields_behavior may have.
_MODEL_CONFIG_KEYS = frozenset({"title", "extra_fields_behavior"})
_EXTRA_BEHAVIOURS = frozenset({"ignore", "forbid"})


def json_mode_difference(schema: Any) -> str:
    """Why ``validate_json(body)`` may differ from ``validate_python(json.loads(body))`` for a body the first
    accepts, for this core schema (see the module's docstring); "" when it may not."""
    import pydantic_core

    if pydantic_core.__version__ not in PROVEN_PYDANTIC_CORE:
        proven = ", ".join(PROVEN_PYDANTIC_CORE)
        return f"pydantic-core {pydantic_core.__version__} is not a proven release ({proven})"
    definitions: dict[str, Any] = {}
    seen: set[str] = set()

    def walk(node: Any) -> str:
        if not isinstance(node, dict):
            return f"a schema node of type {type(node).__name__}"
        kind = node.get("type")
        allowed = _ALLOWED_KEYS.get(kind) if isinstance(kind, str) else None
        if allowed is None:
            return f"a {kind!r} schema"
        extra = set(node) - allowed - _NEUTRAL_KEYS
        if extra:
            return f"a {kind!r} schema with {', '.join(sorted(extra))}"
        if kind == "dict":
            keys = node.get("keys_schema", {"type": "any"})
            if keys.get("type") != "str" or set(keys) - _NEUTRAL_KEYS:
                return "a 'dict' schema whose keys are not plain strings"
        if kind == "model":
            if node.get("custom_init") or node.get("root_model"):
                return "a model with a custom __init__ or a root model"
            config = node.get("config") or {}
            if set(config) - _MODEL_CONFIG_KEYS:
                return f"a model config with {', '.join(sorted(set(config) - _MODEL_CONFIG_KEYS))}"
            if config.get("extra_fields_behavior", "ignore") not in _EXTRA_BEHAVIOURS:
                return f"a model with extra={config['extra_fields_behavior']!r}"
        if kind == "model-fields" and node.get("computed_fields"):
            return "a model with computed fields"
        if kind == "definitions":
            for definition in node.get("definitions", ()):
                if not isinstance(definition, dict) or not isinstance(definition.get("ref"), str):
                    return "a definition without a reference"
                definitions[definition["ref"]] = definition
            for definition in node.get("definitions", ()):
                reason = walk_once(definition)
                if reason:
                    return reason
        if kind == "definition-ref":
            target = definitions.get(node.get("schema_ref", ""))
            return "a reference to an unknown definition" if target is None else walk_once(target)
        for child in _children(node):
            reason = walk(child)
            if reason:
                return reason
        return ""

    def walk_once(node: dict[str, Any]) -> str:
        ref = node.get("ref")
        if isinstance(ref, str):
            if ref in seen:  # a recursive model: checked where it was first met
                return ""
            seen.add(ref)
        return walk(node)

    try:
        return walk(schema)
    except RecursionError:
        return "a schema nested too deeply"


def _children(node: dict[str, Any]) -> list[Any]:
    kind = node["type"]
    if kind == "dict":
        return [node["values_schema"]] if "values_schema" in node else [{"type": "any"}]
    if kind == "list":
        return [node.get("items_schema", {"type": "any"})]
    if kind == "model-fields":
        return list(node["fields"].values())
    if kind in ("nullable", "default", "model", "model-field", "definitions"):
        return [node["schema"]]
    return []
