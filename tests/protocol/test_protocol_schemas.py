"""Request/reply/event schemas: parsing, validation and round trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.protocol import (
    EVENT_FIELDS,
    EVENT_TYPES,
    NDJSON,
    REPLY_FIELDS,
    REQUEST_TYPES,
    Error,
    ErrorCode,
    Event,
    EventName,
    FrameDecoder,
    LoginRequest,
    MessageEvent,
    MessageRecord,
    Ok,
    ProtocolError,
    Resume,
    SendRequest,
    encode,
    event_from_fields,
    parse_event,
    parse_reply,
    parse_request,
    parse_server_frame,
)
from parlour.protocol.testing import LENGTH_PREFIXED, unframe

NAMES = st.from_regex(r"[A-Za-z0-9_.\-]{1,32}", fullmatch=True)
TEXT = st.text(min_size=1, max_size=50).filter(lambda s: not s.isspace())
IDS = st.integers(-(2**53), 2**53) | st.text(min_size=1, max_size=64)
LIMIT = st.integers(1, 1000)
SEQ = st.integers(1, 2**53)
NUM = st.floats(0, 1e12, allow_nan=False)
POS = st.floats(0.001, 1e9, allow_nan=False)
PASSWORD = st.text(min_size=1, max_size=40)
RESUME = st.builds(
    lambda r, d, b: {"rooms": r, "dms": d} | ({} if b is None else {"broadcasts": b}),
    st.dictionaries(NAMES, st.integers(0, 2**40), max_size=3),
    st.dictionaries(NAMES, st.integers(0, 2**40), max_size=3),
    st.none() | st.integers(0, 2**40),
)

#: file names the protocol accepts: no path separators, no control or bidi characters
FILENAMES = st.text(
    st.characters(
        blacklist_categories=("Cc", "Cs"),
        blacklist_characters="/\\\u2028\u2029\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
        "\u2066\u2067\u2068\u2069",
    ),
    min_size=1,
    max_size=60,
).filter(lambda n: n.strip() and n not in (".", ".."))
SHA256 = st.text("0123456789abcdef", min_size=64, max_size=64)
OFFER_IDS = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
FILE_IDS = st.from_regex(r"[A-Za-z0-9_-]{22}", fullmatch=True)
ENDPOINTS = st.lists(
    st.builds(
        lambda a, b, port: {"host": f"10.{a}.{b}.1", "port": port},
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(1, 65535),
    ),
    max_size=8,
    unique_by=lambda e: (e["host"], e["port"]),
)


def opt(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


def target() -> st.SearchStrategy[dict[str, Any]]:
    return NAMES.map(lambda n: {"room": n}) | NAMES.map(lambda n: {"peer": n})


FIELDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "hello": st.fixed_dictionaries({"version": st.integers(1, 10)}, optional={"client": TEXT}),
    "signup": st.fixed_dictionaries({"username": NAMES, "password": PASSWORD}),
    "login": st.fixed_dictionaries(
        {"username": NAMES, "password": PASSWORD}, optional={"resume": RESUME}
    ),
    "logout": st.just({}),
    "passwd": st.fixed_dictionaries({"old_password": PASSWORD, "new_password": PASSWORD}),
    "rooms": st.just({}),
    "room_create": st.fixed_dictionaries({"room": NAMES}),
    "room_rename": st.fixed_dictionaries({"room": NAMES, "new_name": NAMES}),
    "room_delete": st.fixed_dictionaries({"room": NAMES}),
    "join": st.fixed_dictionaries({"room": NAMES}, optional={"limit": LIMIT}),
    "leave": st.fixed_dictionaries({"room": NAMES}),
    "send": st.fixed_dictionaries(
        {"room": NAMES, "text": TEXT, "client_id": st.text(min_size=1, max_size=64)},
        optional={"attachment": FILE_IDS},
    ),
    "history": st.builds(
        lambda t, o: {**t, **o},
        target(),
        st.fixed_dictionaries({}, optional={"before": SEQ, "limit": LIMIT}),
    ),
    "since": st.fixed_dictionaries(
        {"ts": NUM}, optional={"rooms": st.lists(NAMES, max_size=3), "limit": LIMIT}
    ),
    "edit": st.builds(lambda t, s, x: {**t, "seq": s, "text": x}, target(), SEQ, TEXT),
    "delete": st.builds(lambda t, s: {**t, "seq": s}, target(), SEQ),
    "dm": st.fixed_dictionaries(
        {"to": NAMES, "text": TEXT, "client_id": st.text(min_size=1, max_size=64)},
        optional={"attachment": FILE_IDS},
    ),
    "broadcast": st.fixed_dictionaries({"text": TEXT}),
    "who": st.fixed_dictionaries(
        {}, optional={"room": NAMES, "since": POS, "recent": st.booleans()}
    ),
    "block": st.fixed_dictionaries({"user": NAMES}),
    "unblock": st.fixed_dictionaries({"user": NAMES}),
    "blocks": st.just({}),
    "kick": st.fixed_dictionaries({"user": NAMES}, optional={"room": NAMES, "reason": TEXT}),
    "ban": st.fixed_dictionaries({"user": NAMES}, optional={"duration": POS, "reason": TEXT}),
    "unban": st.fixed_dictionaries({"user": NAMES}),
    "bans": st.just({}),
    "audit": st.fixed_dictionaries({}, optional={"limit": LIMIT}),
    "sync": st.fixed_dictionaries({"resume": RESUME}),
    "mark_read": st.builds(lambda t, s: {**t, "seq": s}, target(), SEQ),
    "unread": st.just({}),
    "file_probe": st.just({}),
    "file_offer": st.fixed_dictionaries(
        {"to": NAMES, "filename": FILENAMES, "size": st.integers(0, 2**48 - 1), "sha256": SHA256},
        optional={"endpoints": ENDPOINTS},
    ),
    "file_accept": st.fixed_dictionaries({"offer": OFFER_IDS}, optional={"endpoints": ENDPOINTS}),
    "file_decline": st.fixed_dictionaries({"offer": OFFER_IDS}),
    "file_cancel": st.fixed_dictionaries({"offer": OFFER_IDS}),
    "file_done": st.fixed_dictionaries({"offer": OFFER_IDS}),
    "file_token": st.fixed_dictionaries({}, optional={"size": st.integers(0, 2**48 - 1)}),
    "ping": st.just({}),
}


def test_every_request_type_has_a_strategy_and_reply_fields() -> None:
    assert set(FIELDS) == set(REQUEST_TYPES) == set(REPLY_FIELDS)
    assert len(REQUEST_TYPES) == 38


@st.composite
def wire_requests(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(FIELDS)))
    return {"id": draw(IDS), "type": kind, **draw(FIELDS[kind])}


def normalise(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    for key in ("ts", "since", "duration"):
        if key in out:
            out[key] = float(out[key])
    if "resume" in out:
        resume = {"rooms": out["resume"]["rooms"], "dms": out["resume"]["dms"]}
        if out["resume"].get("broadcasts") is not None:
            resume["broadcasts"] = out["resume"]["broadcasts"]
        out["resume"] = resume
    return out


@settings(deadline=None, max_examples=300)
@given(wire_requests())
def test_every_request_round_trips_through_codec(obj: dict[str, Any]) -> None:
    [decoded] = FrameDecoder().feed(encode(obj))
    assert isinstance(decoded, dict)
    req = parse_request(decoded)
    assert obj["type"] == req.TYPE
    wire = req.to_wire()
    assert wire == normalise(obj)
    assert parse_request(wire) == req


@settings(deadline=None, max_examples=200)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "type",
                "room",
                "text",
                "client_id",
                "seq",
                "peer",
                "user",
                "resume",
                "limit",
                "ts",
                "version",
            ]
        ),
        st.none()
        | st.integers()
        | st.text(max_size=5)
        | st.booleans()
        | st.lists(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    ),
    st.sampled_from(sorted(REQUEST_TYPES)),
)
def test_garbage_requests_raise_protocol_errors_only(obj: dict[str, Any], kind: str) -> None:
    obj.setdefault("type", kind)
    try:
        parse_request(obj)
    except ProtocolError as exc:
        assert exc.code in {
            ErrorCode.MISSING_FIELD,
            ErrorCode.INVALID_FIELD,
            ErrorCode.UNKNOWN_TYPE,
        }


def error_of(obj: dict[str, Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_request(obj)
    return info.value


def test_missing_and_invalid_fields_name_the_field_and_keep_the_id() -> None:
    err = error_of({"id": 5, "type": "send", "room": "general", "client_id": "c"})
    assert (err.code, err.extra["field"], err.request_id) == (ErrorCode.MISSING_FIELD, "text", 5)
    err = error_of({"id": "a", "type": "send", "room": "bad name", "text": "x", "client_id": "c"})
    assert (err.code, err.extra["field"], err.request_id) == (ErrorCode.INVALID_FIELD, "room", "a")
    err = error_of({"id": 1, "type": "nope"})
    assert err.code is ErrorCode.UNKNOWN_TYPE and err.request_id == 1
    err = error_of({"type": "ping"})
    assert err.code is ErrorCode.MISSING_FIELD and err.request_id is None
    err = error_of({"id": True, "type": "ping"})
    assert err.code is ErrorCode.INVALID_FIELD and err.request_id is None
    err = error_of({"id": 1})
    assert err.code is ErrorCode.MISSING_FIELD and err.extra["field"] == "type"


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"room": "x" * 33, "text": "hi", "client_id": "c"}, "room"),
        ({"room": "", "text": "hi", "client_id": "c"}, "room"),
        ({"room": "caf\u00e9\u200b", "text": "hi", "client_id": "c"}, "room"),
        ({"room": "a", "text": "   ", "client_id": "c"}, "text"),
        ({"room": "a", "text": 5, "client_id": "c"}, "text"),
        ({"room": "a", "text": "hi", "client_id": "c" * 65}, "client_id"),
        ({"room": "a", "text": "hi", "client_id": ""}, "client_id"),
    ],
)
def test_send_validation(fields: dict[str, Any], bad: str) -> None:
    err = error_of({"id": 1, "type": "send", **fields})
    assert err.extra["field"] == bad


def test_other_validation() -> None:
    assert error_of({"id": 1, "type": "history", "room": "a", "peer": "b"}).extra["field"] == "room"
    assert error_of({"id": 1, "type": "history"}).code is ErrorCode.INVALID_FIELD
    assert (
        error_of({"id": 1, "type": "edit", "room": "a", "seq": 0, "text": "x"}).extra["field"]
        == "seq"
    )
    assert error_of({"id": 1, "type": "since", "ts": -1}).extra["field"] == "ts"
    assert (
        error_of({"id": 1, "type": "ban", "user": "a", "duration": 0}).extra["field"] == "duration"
    )
    assert error_of({"id": 1, "type": "audit", "limit": 1001}).extra["field"] == "limit"
    assert error_of({"id": 1, "type": "join", "room": "a", "limit": True}).extra["field"] == "limit"
    bad_resume = {"id": 1, "type": "sync", "resume": {"rooms": {"a": -1}}}
    assert error_of(bad_resume).extra["field"] == "resume.rooms"
    assert error_of({"id": 1, "type": "sync", "resume": []}).extra["field"] == "resume"


def test_building_in_python_validates_too() -> None:
    with pytest.raises(ProtocolError):
        SendRequest(id=1, room="no spaces", text="x", client_id="c")
    req = LoginRequest(id=1, username="a", password="hunter22", resume=Resume(rooms={"g": 3}))
    assert "hunter22" not in repr(req)
    assert req.to_wire()["resume"] == {"rooms": {"g": 3}, "dms": {}}


def test_replies_round_trip() -> None:
    ok = Ok(3, {"room": "g", "seq": 1})
    assert parse_reply(ok.to_wire()) == ok
    err = Error(4, "rate_limited", "slow down", {"retry_after": 0.5})
    wire = err.to_wire()
    assert wire == {
        "id": 4,
        "type": "error",
        "code": "rate_limited",
        "message": "slow down",
        "retry_after": 0.5,
    }
    assert parse_server_frame(wire) == err
    exc = ProtocolError(ErrorCode.LOCKED_OUT, "locked", retry_after=60)
    exc.request_id = 9
    assert Error.from_exception(exc).to_wire()["retry_after"] == 60
    with pytest.raises(ProtocolError):
        parse_reply({"id": 1, "type": "ok", "data": []})
    with pytest.raises(ProtocolError):
        parse_reply({"id": 1, "type": "error"})


def test_events_and_records() -> None:
    rec = MessageRecord(room="general", seq=12, ts=1.5, sender="bob", text="hi", client_id="c")
    ev = MessageEvent.of(rec)
    wire = ev.to_wire()
    assert wire["type"] == "event" and wire["event"] == "message" and wire["from"] == "bob"
    assert parse_event(wire) == ev
    assert MessageRecord.from_wire(parse_event(wire).fields) == rec
    assert isinstance(ev, MessageEvent) and ev.record == rec
    assert set(EVENT_FIELDS) == set(EventName) == set(EVENT_TYPES)
    with pytest.raises(ProtocolError):
        parse_event({"type": "event", "event": "message", "room": "g"})
    with pytest.raises(ProtocolError):
        event_from_fields("nonsense", {})
    with pytest.raises(ProtocolError):
        MessageRecord(room="a", peer="b", seq=1, ts=0, sender="x", text=None)


#: a value of the right type for every wire field of every event
_FIELD_VALUES: dict[str, Any] = {
    "room": st.one_of(NAMES),
    "peer": NAMES,
    "seq": SEQ,
    "ts": NUM,
    "from": NAMES,
    "text": st.none() | TEXT,
    "edited": st.booleans(),
    "deleted": st.booleans(),
    "client_id": st.none() | st.text(min_size=1, max_size=64),
    "attachment": st.none()
    | st.fixed_dictionaries(
        {
            "id": FILE_IDS,
            "name": FILENAMES,
            "size": st.integers(0, 2**48 - 1),
            "type": st.sampled_from(["image/png", "text/plain", "application/octet-stream"]),
            "sha256": SHA256,
            "inline": st.booleans(),
            "thumbnail": st.booleans(),
        }
    ),
    "user": NAMES,
    "online": st.booleans(),
    "by": NAMES,
    "reason": st.text(max_size=50),
    "until": st.none() | NUM,
    "new_name": NAMES,
    "code": st.sampled_from([c.value for c in ErrorCode]),
    "offer": OFFER_IDS,
    "filename": FILENAMES,
    "size": st.integers(0, 2**48 - 1),
    "sha256": SHA256,
    "expires": NUM,
    "transfer": st.text("0123456789abcdef", min_size=16, max_size=16),
    "key": st.text(min_size=44, max_size=44),
    "peers": ENDPOINTS,
    "relay": st.none()
    | st.fixed_dictionaries(
        {"host": st.none() | st.just("192.0.2.1"), "port": st.integers(1, 65535)},
        optional={"ticket": st.text(min_size=24, max_size=24)},
    ),
}


@st.composite
def events(draw: st.DrawFn) -> Event:
    name = draw(st.sampled_from(list(EventName)))
    fields = {key: draw(_FIELD_VALUES[key]) for key in sorted(EVENT_FIELDS[name])}
    if name is EventName.BROADCAST:
        fields["text"] = draw(TEXT)
    if name is EventName.KICKED:
        fields["room"] = draw(st.none() | NAMES)
    if name is EventName.FILE_ENDED:
        fields["by"] = draw(st.none() | NAMES)
    return event_from_fields(name, fields)


@settings(max_examples=300)
@given(events())
def test_every_typed_event_survives_the_wire(event: Event) -> None:
    """typed event -> NDJSON bytes -> parse_event -> the same typed event (both wires)."""
    line = NDJSON.encode_event(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    (frame,) = FrameDecoder().feed(line)
    assert isinstance(frame, dict)
    back = parse_event(frame)
    assert back == event and type(back) is type(event)
    assert set(frame) - {"type", "event"} == EVENT_FIELDS[event.name]
    assert frame["event"] == event.name.value and type(frame["event"]) is str
    payloads, rest = unframe(LENGTH_PREFIXED.encode_event(event))
    assert rest == b"" and payloads == [line[:-1]]


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**400), 10**400)
    | st.integers(10**300, 10**400)  # beyond any float
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def request_frames(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A request type and fields: the type's own field names (and id), any JSON values."""
    kind = draw(st.sampled_from(sorted(REQUEST_TYPES)))
    names = [f for f, _, _ in REQUEST_TYPES[kind]._FIELDS] or ["unknown"]
    values = st.integers(10**300, 10**400) | _JSON  # huge integers often
    fields = draw(st.dictionaries(st.sampled_from(names), values, max_size=len(names)))
    if draw(st.integers(0, 9)):  # usually a valid id, so that the fields are looked at
        fields["id"] = draw(IDS)
    return kind, fields


@settings(max_examples=2000)
@given(request_frames())
def test_any_request_frame_is_parsed_or_refused_with_a_protocol_error(
    frame_parts: tuple[str, dict[str, Any]],
) -> None:
    """Whatever JSON a client sends as a request — huge integers, wrong types, nesting — the
    parser answers with a request or a ProtocolError, never another exception."""
    kind, fields = frame_parts
    frame = {"type": kind, **fields}
    try:
        request = parse_request(frame)
    except ProtocolError as exc:
        assert exc.code in ErrorCode
        return
    assert kind == request.TYPE
    assert encode(request.to_wire())  # what was accepted can be encoded again
