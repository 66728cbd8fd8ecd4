"""Route plans validate an eligible JSON body with pydantic's ``validate_json`` (``_plan_json``): wherever it
succeeds, FastAPI's two steps (``json.loads``, then ``validate_python(..., from_attributes=True)``) must
succeed with an equal value. Checked here on generated documents, numbers and strings for the eligible types,
and the eligibility rule on types pydantic validates differently in JSON mode."""

from __future__ import annotations

import datetime
import enum
import json
import math
import random
from decimal import Decimal
from typing import Annotated, Any, Optional, Union

import pydantic_core
import pytest
from fastapi import Body, Depends, FastAPI, Request
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from fasterapi_asgi._plan_json import PROVEN_PYDANTIC_CORE, json_mode_difference


class Tag(BaseModel):
    name: str
    weight: float


class Item(BaseModel):
    name: str
    description: str = ""
    price: float
    tax: float | None = None
    quantity: int = 1
    active: bool = True
    tags: list[Tag] = []
    scores: dict[str, float] = {}
    counts: Optional[list[int]] = None  # noqa: UP045 - typing.Optional spelled as users spell it


class Node(BaseModel):
    value: int
    children: list[Node] = []


class Forbidding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int
    b: str = Field("x", max_length=5)


class Bounded(BaseModel):
    n: int = Field(ge=0, le=1000)
    x: float = Field(gt=-1e300, allow_inf_nan=False, default=0.0)
    s: str = Field(min_length=1, max_length=8)


ELIGIBLE: list[Any] = [
    Item,
    Node,
    Forbidding,
    Bounded,
    int,
    float,
    str,
    bool,
    None,
    list[int],
    list[float],
    dict[str, int],
    dict[str, list[str]],
    Optional[str],  # noqa: UP045
    float | None,
    list[Tag],
]


class Colour(enum.Enum):
    RED = "red"


class Validated(BaseModel):
    a: int

    @field_validator("a", mode="before")
    @classmethod
    def double(cls, value: Any) -> Any:
        return value


class Before(BaseModel):
    a: int

    @model_validator(mode="before")
    @classmethod
    def check(cls, data: Any) -> Any:
        return data


class Strict(BaseModel):
    model_config = ConfigDict(strict=True)
    a: int


class Aliased(BaseModel):
    a: int = Field(validation_alias=AliasChoices("a", "b"))


class Extra(BaseModel):
    model_config = ConfigDict(extra="allow")
    a: int


class PostInit(BaseModel):
    a: int

    def model_post_init(self, context: Any) -> None:
        pass


class WithInit(BaseModel):
    a: int

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)


INELIGIBLE: list[Any] = [
    datetime.datetime,
    datetime.date,
    bytes,
    Decimal,
    tuple[int, int],
    set[int],
    frozenset[str],
    Union[int, str],  # noqa: UP007
    Colour,
    Any,
    dict[int, str],
    dict,
    list,
    Validated,
    Before,
    Strict,
    Aliased,
    Extra,
    PostInit,
    WithInit,
    list[Validated],
    Optional[Strict],  # noqa: UP045
]


@pytest.mark.parametrize("tp", ELIGIBLE, ids=repr)
def test_eligible_types(tp: Any) -> None:
    if pydantic_core.__version__ not in PROVEN_PYDANTIC_CORE:
        pytest.skip(f"pydantic-core {pydantic_core.__version__}: no type is eligible")
    assert json_mode_difference(TypeAdapter(tp).core_schema) == ""


def test_another_pydantic_core_is_not_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pydantic_core, "__version__", "2.0.0")
    reason = json_mode_difference(TypeAdapter(int).core_schema)
    assert reason.startswith("pydantic-core 2.0.0 is not a proven release"), reason


@pytest.mark.parametrize("tp", INELIGIBLE, ids=repr)
def test_types_validated_differently_in_json_mode_are_not_eligible(tp: Any) -> None:
    assert json_mode_difference(TypeAdapter(tp).core_schema) != ""


def canonical(value: Any) -> Any:
    """A value with every type, float sign and NaN made visible, so == is exact."""
    if isinstance(value, BaseModel):
        fields = {name: canonical(getattr(value, name)) for name in type(value).model_fields}
        return (type(value).__name__, fields, sorted(value.model_fields_set), value.model_extra)
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else repr(value))
    if isinstance(value, dict):
        return ("dict", [(canonical(k), canonical(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [canonical(v) for v in value])
    return (type(value).__name__, value)


def fastapis(adapter: TypeAdapter[Any], body: bytes) -> tuple[str, Any]:
    try:
        return "ok", canonical(adapter.validate_python(json.loads(body), from_attributes=True))
    except Exception as exc:  # noqa: BLE001 - any failure: FastAPI answers with its own error
        return "error", type(exc).__name__


def check(adapter: TypeAdapter[Any], body: bytes) -> bool:
    """Asserts validate_json's success implies FastAPI's, with an equal value; True when it succeeded."""
    try:
        mine = canonical(adapter.validate_json(body))
    except Exception:  # noqa: BLE001 - the plan takes FastAPI's steps then
        return False
    assert fastapis(adapter, body) == ("ok", mine), body
    return True


NUMBER_TOKENS = [
    "0", "-0", "1", "-1", "0.0", "-0.0", "1e2", "1E+2", "1e-2", "2.5", "1e400", "-1e400", "1e-400", "NaN",
    "Infinity", "-Infinity", "9007199254740993", "123456789012345678901234567890", "1.0000000000000002",
    "4.9e-324", "2.2250738585072014e-308", "1.7976931348623157e308", "0.1", "100.0", "1.5e300",
    "01", "1.", ".5", "+1", "1_0", "nan", "inf", "0x10", "-", "1e", "--1",
]  # fmt: skip
STRING_TOKENS = [
    '""', '"a"', '"\\u00e9"', '"é"', '"\\ud83d\\ude00"', '"😀"', '"\\ud800"', '"\\udc00x"', '"\\u0000"',
    '"\x01"', '"\x7f"', '"\\n\\t\\"\\\\\\/"', '"\\x"', '"1"', '"1.5"', '" 12 "', '"1_000"', '"true"', '"yes"',
    '"off"', '"f"', '"NaN"', '"inf"', '"-0"', '"1e3"', '"٣"', '"\xed\xa0\x80"', '"\xc3"', '"\xff"',
    '"a\x00b"',
]  # fmt: skip
OTHER_TOKENS = ["true", "false", "null", "[]", "{}", "[1, 2]", '{"a": 1}', "tru", "[1,]", "{,}"]


def random_number(rng: random.Random) -> str:
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25))).lstrip("0") or "0"
    text = rng.choice(["", "-"]) + digits
    if rng.random() < 0.6:
        text += "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
    if rng.random() < 0.5:
        text += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randint(0, 330))
    return text


def random_value(rng: random.Random, depth: int, keys: list[str]) -> str:
    roll = rng.random()
    if depth <= 0 or roll < 0.35:
        return rng.choice(NUMBER_TOKENS) if rng.random() < 0.3 else random_number(rng)
    if roll < 0.55:
        return rng.choice(STRING_TOKENS)
    if roll < 0.62:
        return rng.choice(OTHER_TOKENS)
    if roll < 0.8:
        items = [random_value(rng, depth - 1, keys) for _ in range(rng.randint(0, 4))]
        return "[" + ", ".join(items) + "]"
    members = [
        f"{json.dumps(rng.choice(keys))}: {random_value(rng, depth - 1, keys)}"
        for _ in range(rng.randint(0, 6))
    ]
    return "{" + ",".join(members) + "}"


KEYS = ["name", "description", "price", "tax", "quantity", "active", "tags", "scores", "counts", "weight"]
KEYS += ["value", "children", "a", "b", "n", "x", "s", "other"]


def plausible(rng: random.Random, tp: Any) -> Any:
    """A Python value that mostly validates as ``tp`` (so the documents reach past the first field)."""
    if tp is Item:
        tags = [{"name": "t", "weight": rng.random()} for _ in range(rng.randint(0, 3))]
        return {
            "name": "n",
            "price": rng.uniform(-1e6, 1e6),
            "quantity": rng.randint(-9, 9**20),
            "tags": tags,
        }
    if tp is Node:
        return {"value": rng.randint(0, 99), "children": [{"value": 1}] * rng.randint(0, 3)}
    if tp is Forbidding:
        return {"a": rng.randint(-99, 99), "b": rng.choice(["", "ab", "abcde"])}
    if tp is Bounded:
        return {"n": rng.randint(0, 1000), "x": rng.uniform(-1, 1), "s": "abc"}
    return None


@pytest.mark.parametrize("tp", ELIGIBLE, ids=repr)
def test_validate_json_success_is_fastapis_answer(tp: Any) -> None:
    """Generated documents, valid JSON or nearly, of every shape; every one validate_json accepts is one
    FastAPI's steps accept with an equal value."""
    adapter: TypeAdapter[Any] = TypeAdapter(tp)
    rng = random.Random(f"plan-json-{tp!r}")
    accepted = 0
    for _ in range(4000):
        body = random_value(rng, 4, KEYS).encode()
        accepted += check(adapter, body)
        base = plausible(rng, tp)
        if base is not None:  # the same document with one field replaced by a generated token
            key = rng.choice(KEYS)
            text = json.dumps(base)[:-1] + f', "{key}": {random_value(rng, 2, KEYS)}}}'
            accepted += check(adapter, text.encode())
            accepted += check(adapter, json.dumps(base).encode())
    assert accepted >= 25, accepted  # the comparison compared something (None: only `null` is one)


@pytest.mark.parametrize("tp", [float, int, Optional[float], list[float]], ids=repr)  # noqa: UP045
def test_numbers_are_parsed_alike(tp: Any) -> None:
    """Floats correctly rounded by both parsers, big integers, exponents, infinities."""
    adapter: TypeAdapter[Any] = TypeAdapter(tp)
    rng = random.Random(f"plan-json-numbers-{tp!r}")
    tokens = NUMBER_TOKENS + [random_number(rng) for _ in range(20000)]
    for token in tokens:
        body = f"[{token}, {token}]" if tp == list[float] else token
        check(adapter, body.encode())


def test_strings_and_encodings() -> None:
    """Where json.loads takes what pydantic's parser does not (byte-order marks, UTF-16, lone surrogates),
    validate_json fails and FastAPI's steps decide; it never accepts a different string."""
    adapter: TypeAdapter[Any] = TypeAdapter(dict[str, str])
    document = '{"a": "é😀\\u00e9", "b": "\\ud800"}'
    for body in (
        document.encode(),
        b"\xef\xbb\xbf" + document.encode(),
        document.encode("utf-16"),
        document.encode("utf-32"),
        '{"a": "\ud800"}'.encode("utf-8", "surrogatepass"),
        b'{"a": "x", "a": "y"}',
    ):
        check(adapter, body)
    assert not check(adapter, b'{"a": "\\ud800"}')  # json.loads accepts it: FastAPI's steps answer
    assert check(adapter, b'{"a": "x", "a": "y"}')
    rng = random.Random("plan-json-strings")
    alphabet = [
        "a",
        "é",
        "😀",
        "\\n",
        "\\u00e9",
        "\\ud83d\\ude00",
        "\\ud800",
        "\\udfff",
        "\\\\",
        '\\"',
        "\x1f",
        " ",
    ]
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        check(adapter, f'{{"k": "{text}"}}'.encode("utf-8", "surrogatepass"))


def test_plans_validate_eligible_bodies_from_the_bytes(caplog: pytest.LogCaptureFixture) -> None:
    """A compiled route without dependencies validates an eligible body with validate_json; an ineligible
    one, or a route with a tree (its Request gets the parsed JSON), keeps FastAPI's two steps; DEBUG says
    why."""
    import logging

    from starlette.testclient import TestClient

    from fasterapi_asgi import route_plans

    if route_plans.unproven_fastapi() or pydantic_core.__version__ not in PROVEN_PYDANTIC_CORE:
        pytest.skip("route plans or validate_json are off here")
    app = FastAPI()

    @app.post("/items")
    async def create(item: Item) -> dict[str, object]:
        return {"name": item.name, "tags": [tag.name for tag in item.tags]}

    @app.post("/events")
    async def event(when: Annotated[datetime.datetime, Body()]) -> dict[str, str]:
        return {"when": when.isoformat()}

    @app.post("/with-request")
    async def with_request(item: Item, request: Request) -> dict[str, object]:
        return {"name": item.name, "keys": sorted(await request.json())}

    @app.post("/with-dependency", dependencies=[Depends(lambda: None)])
    async def with_dependency(item: Item) -> dict[str, str]:
        return {"name": item.name}

    server_logger = logging.getLogger("uvicorn.error")  # the server's logger (propagation may be off)
    level = server_logger.level
    server_logger.addHandler(caplog.handler)
    server_logger.setLevel(logging.DEBUG)
    try:
        assert route_plans.install(app) == (4, 4)
    finally:
        server_logger.removeHandler(caplog.handler)
        server_logger.setLevel(level)
    plans = {route.path: route.app for route in app.routes if isinstance(route.app, route_plans.RoutePlan)}
    assert plans["/items"].body.validate_json is not None
    assert plans["/events"].body.validate_json is None
    assert "/events: its body is parsed and validated as FastAPI does, not from the bytes" in caplog.text
    tried: list[tuple[bytes, str]] = []
    validate_json = plans["/items"].body.validate_json

    def recording(data: bytes) -> Any:
        try:
            value = validate_json(data)
        except Exception:
            tried.append((data, "refused"))
            raise
        tried.append((data, "validated"))
        return value

    plans["/items"].body.validate_json = recording
    before = route_plans.plan_counters()
    body = b'{"name": "\\ud83d\\ude00", "price": 1e400, "tags": [{"name": "x", "weight": -0.0}], "name": "b"}'
    when = "2026-12-07T10:00:00"
    with TestClient(app, headers={"content-type": "application/json"}) as client:
        assert client.post("/items", content=body).json() == {"name": "b", "tags": ["x"]}
        # json.loads takes a byte-order mark, pydantic's parser does not: FastAPI's steps answer, alike.
        assert client.post("/items", content=b"\xef\xbb\xbf" + body).json() == {"name": "b", "tags": ["x"]}
        assert client.post("/items", content=b'{"name": 1}').status_code == 422
        assert client.post("/events", content=f'"{when}"'.encode()).json() == {"when": when}
        keys = ["name", "price", "tags"]
        assert client.post("/with-request", content=body).json() == {"name": "b", "keys": keys}
        assert client.post("/with-dependency", content=body).json() == {"name": "b"}
    after = route_plans.plan_counters()
    assert (after[0] - before[0], after[1] - before[1]) == (5, 1)  # the 422 is FastAPI's
    assert [outcome for _, outcome in tried] == ["validated", "refused", "refused"]
