"""Hostile requests against the whole core: whatever a client sends, it gets exactly one reply
(ok, or an error with a documented code), nothing raises, and everyone else is unaffected."""

from __future__ import annotations

from typing import Any

from core_harness import Harness, check_reply
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parlour.protocol import REQUEST_TYPES, Error, parse_request
from parlour.protocol.errors import ProtocolError

NAMES = st.sampled_from(["general", "help", "admin", "alice", "bob", "ghost", "GENERAL"])
CURSORS = st.dictionaries(NAMES, st.integers(0, 50), max_size=2)
#: plausible values per field, so that most requests reach the core's logic
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "text": st.text(min_size=1, max_size=30),
    "reason": st.text(max_size=20),
    "client_id": st.sampled_from(["c1", "c2", "c3"]),
    "seq": st.integers(1, 12),
    "before": st.integers(1, 12),
    "limit": st.integers(1, 20),
    "ts": st.floats(0, 2e6),
    "since": st.floats(0.001, 1e5),
    "duration": st.floats(0.001, 100),
    "recent": st.booleans(),
    "rooms": st.lists(NAMES, max_size=3),
    "resume": st.fixed_dictionaries({"rooms": CURSORS, "dms": CURSORS}),
    "version": st.integers(0, 3),
    "password": st.sampled_from(["password1", "admin-secret", "short"]),
    "old_password": st.sampled_from(["password1", "wrong-one"]),
    "new_password": st.sampled_from(["password2", "x"]),
    "filename": st.sampled_from(["a.txt", "../x", "b c.bin"]),
    "size": st.integers(0, 10),
    "sha256": st.sampled_from(["ab" * 32, "zz"]),
    "endpoints": st.lists(
        st.fixed_dictionaries(
            {"host": st.sampled_from(["10.0.0.1", "x"]), "port": st.integers(0, 3)}
        ),
        max_size=2,
    ),
    "offer": st.sampled_from(["abc", "", "x" * 40]),
}
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(REQUEST_TYPES)))
    fields: dict[str, Any] = {}
    for name, _, required in REQUEST_TYPES[kind]._FIELDS:
        if not required and draw(st.booleans()):
            continue
        good = GOOD.get(name, NAMES)
        fields[name] = draw(good if draw(st.integers(0, 9)) else HOSTILE)
    return kind, fields


@settings(
    deadline=None,
    max_examples=80,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.tuples(st.sampled_from(["alice", "admin"]), requests()), max_size=30))
def test_random_requests_always_get_exactly_one_reply(
    script: list[tuple[str, tuple[str, dict[str, Any]]]],
) -> None:
    h = Harness()
    alice = h.signup("alice")
    h.signup("bob")
    admin = h.admin()
    h.ok(admin, "room_create", room="quiet")  # a room the script never names
    bystander = h.signup("carol")
    h.ok(bystander, "join", room="quiet")
    conns = {"alice": alice, "admin": admin}
    rid = 10_000
    for who, (kind, fields) in script:
        conn = conns[who]
        if conn in h.closed:  # kicked, banned or logged out elsewhere: a fresh connection
            conn = conns[who] = h.connect()
        rid += 1
        try:
            request = parse_request({"id": rid, "type": kind, **fields})
        except ProtocolError as exc:  # the transport answers these itself
            check_reply(kind, Error.from_exception(exc))
            continue
        out = h.apply(h.handle(conn, request))
        assert out.reply is not None and out.reply.id == rid
        check_reply(kind, out.reply)
        assert out.reply.to_wire().get("code") != "internal_error", out.reply
        h.advance(0.5)
    # the bystander was never disturbed and the server still serves
    h.take(bystander)
    h.ok(bystander, "send", room="quiet", text="still here", client_id="last")
    assert h.texts(bystander) == ["still here"]
