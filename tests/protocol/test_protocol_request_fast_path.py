"""Requests built from the wire on the fast path equal requests built by their constructor.

``from_wire`` / ``parse_request`` fill a request's slots directly (no generated ``__init__`` and
``__post_init__``); the reference below is the previous implementation, which called the
dataclass constructor. Both must give equal objects or the same error (code, message, field),
with the same precedence: id, type, a missing required field, then each field in order.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.protocol import (
    EVENT_FIELDS,
    EVENT_TYPES,
    REQUEST_TYPES,
    ErrorCode,
    EventName,
    ProtocolError,
    event_from_fields,
    is_valid_name,
    parse_request,
)
from parlour.protocol.requests import _v_request_id


def reference_from_wire(cls: Any, obj: Mapping[str, Any]) -> Any:
    kwargs: dict[str, Any] = {"id": obj.get("id")}
    for name, _, required in cls._FIELDS:
        value = obj.get(name)
        if value is None and required:
            raise ProtocolError(ErrorCode.MISSING_FIELD, f"missing field {name!r}", field=name)
        kwargs[name] = value
    return cls(**kwargs)


def reference_parse_request(obj: Mapping[str, Any]) -> Any:
    raw_id = obj.get("id")
    if raw_id is None:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "missing field 'id'", field="id")
    request_id = _v_request_id(raw_id)
    kind = obj.get("type")
    try:
        if kind is None:
            raise ProtocolError(ErrorCode.MISSING_FIELD, "missing field 'type'", field="type")
        cls = REQUEST_TYPES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            shown = kind if isinstance(kind, str) and len(kind) <= 40 else "?"
            raise ProtocolError(
                ErrorCode.UNKNOWN_TYPE, f"unknown request type {shown!r}", request_type=str(shown)
            )
        return reference_from_wire(cls, obj)
    except ProtocolError as exc:
        exc.request_id = request_id
        raise


def outcome(build: Any, obj: Mapping[str, Any]) -> tuple[str, Any]:
    try:
        req = build(obj)
    except ProtocolError as exc:
        return "error", (exc.code, exc.message, exc.extra, exc.request_id)
    fields = {f.name: getattr(req, f.name) for f in dataclasses.fields(req)}
    return type(req).__name__, (req, repr(fields))


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**54), max_value=2**54),
    st.floats(),
    st.sampled_from(["general", "alice", "bad name", "", " ", "x" * 33, "c-1", "hunter22"]),
    st.text(max_size=6),
    st.lists(st.sampled_from(["a", "b", "bad name", 3]), max_size=3),
    st.fixed_dictionaries(
        {}, optional={"rooms": st.dictionaries(st.sampled_from(["a", "b!"]), st.integers())}
    ),
)
FIELD_NAMES = sorted(
    {name for cls in REQUEST_TYPES.values() for name, _, _ in cls._FIELDS} | {"id", "extra"}
)


@st.composite
def frames(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from([*REQUEST_TYPES, "shout", 7]))
    cls = REQUEST_TYPES.get(kind) if isinstance(kind, str) else None
    own = ["id"] + [name for name, _, _ in cls._FIELDS] if cls else ["id"]
    obj: dict[str, Any] = {"type": kind}
    for name in own + draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=2)):
        if draw(st.integers(0, 9)) > 0:  # mostly present
            obj[name] = draw(VALUES)
    return obj


@settings(max_examples=1500, deadline=None)
@given(frames())
def test_parse_request_equals_the_constructor_path(obj: dict[str, Any]) -> None:
    assert outcome(parse_request, obj) == outcome(reference_parse_request, obj)
    cls = REQUEST_TYPES.get(obj["type"]) if isinstance(obj["type"], str) else None
    if cls is not None:
        assert outcome(cls.from_wire, obj) == outcome(lambda o: reference_from_wire(cls, o), obj)


@pytest.mark.parametrize("cls", list(REQUEST_TYPES.values()), ids=list(REQUEST_TYPES))
def test_every_slot_is_a_wire_field_and_optional_ones_default_to_none(cls: Any) -> None:
    """What the fast path relies on: it sets exactly ``id`` and the ``_FIELDS``."""
    names = [name for name, _, _ in cls._FIELDS]
    assert sorted(f.name for f in dataclasses.fields(cls)) == sorted(["id", *names])
    for f in dataclasses.fields(cls):
        required = f.name == "id" or any(n == f.name and r for n, _, r in cls._FIELDS)
        assert (f.default is dataclasses.MISSING) if required else (f.default is None)


def test_a_missing_field_wins_over_an_earlier_invalid_one() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request({"id": 1, "type": "send", "room": "bad name", "text": "hi"})
    assert info.value.code is ErrorCode.MISSING_FIELD and info.value.extra["field"] == "client_id"
    assert info.value.request_id == 1


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=st.characters(max_codepoint=127), max_size=34)
    | st.text(alphabet="aZ09_.- @", max_size=34)
    | st.text(alphabet="abcXYZ019", min_size=30, max_size=34)
    | st.integers()
    | st.none()
)
def test_an_ascii_name_is_the_documented_pattern(value: object) -> None:
    """The fast path for ASCII names (Unicode names: test_protocol_names)."""
    expected = isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.\-]{1,32}", value) is not None
    assert is_valid_name(value) is expected


@pytest.mark.parametrize("name", list(EventName))
def test_event_wire_name_is_a_plain_string(name: EventName) -> None:
    cls = EVENT_TYPES[name]
    assert cls.NAME is name and cls.wire_fields() == EVENT_FIELDS[name]
    sample = {
        "room": "r",
        "peer": "p",
        "from": "f",
        "text": "t",
        "client_id": "c",
        "attachment": None,
    }
    fields: dict[str, object] = {key: sample.get(key, 1) for key in EVENT_FIELDS[name]}
    fields.update({k: False for k in ("edited", "deleted", "online") if k in fields})
    wire = event_from_fields(name, fields).to_wire()
    assert wire == {"type": "event", "event": name.value, **fields}
    assert type(wire["event"]) is str
