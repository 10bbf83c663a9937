"""Room messages: sequence and order, idempotent resend, history paging, since, edit/delete,
length and rate limits."""

from __future__ import annotations

from core_harness import Harness

from parlour.core.config import CoreConfig
from parlour.core.writes import AppendRoomMessage


def _room(h: Harness, *names: str, room: str = "general") -> list[int]:
    conns = [h.signup(n) for n in names]
    for c in conns:
        h.ok(c, "join", room=room)
    for c in conns:
        h.take(c)
    return conns


def _appends(h: Harness) -> list[AppendRoomMessage]:
    return [w for o in h.outcomes for w in o.writes if isinstance(w, AppendRoomMessage)]


def test_sequence_and_order_to_every_member(h: Harness) -> None:
    a, b, c = _room(h, "alice", "bob", "carol")
    for i in range(5):
        sender = (a, b, c)[i % 3]
        data = h.ok(sender, "send", room="general", text=f"t{i}", client_id=f"id{i}")
        assert data["seq"] == i + 1 and data["duplicate"] is False and data["ts"] == h.now
        h.advance(1)
    for conn in (a, b, c):
        evs = h.take(conn, "message")
        assert [e["seq"] for e in evs] == [1, 2, 3, 4, 5]
        assert [e["text"] for e in evs] == [f"t{i}" for i in range(5)]
        assert [e["from"] for e in evs] == ["alice", "bob", "carol", "alice", "bob"]
    # the write carries exactly what was acknowledged
    w = _appends(h)[0]
    assert (w.room, w.seq, w.sender, w.text, w.client_id) == ("general", 1, "alice", "t0", "id0")


def test_fanout_is_one_delivery(h: Harness) -> None:
    a, b, c = _room(h, "alice", "bob", "carol")
    out = h.handle(a, _send_req("general", "x", "1"))
    assert len(out.deliveries) == 1
    assert set(out.deliveries[0].to) == {a, b, c}
    assert out.deliveries[0].event.name == "message"


def _send_req(room: str, text: str, cid: str) -> object:
    from parlour.protocol import SendRequest

    return SendRequest(id=99, room=room, text=text, client_id=cid)


def test_resend_same_client_id_stored_once(h: Harness) -> None:
    a, b = _room(h, "alice", "bob")
    first = h.ok(a, "send", room="general", text="hello", client_id="abc")
    h.advance(5)
    again = h.ok(a, "send", room="general", text="hello", client_id="abc")
    assert again == {**first, "duplicate": True}
    assert len(_appends(h)) == 1
    assert h.texts(b) == ["hello"]
    # another user may use the same client id
    assert h.ok(b, "send", room="general", text="mine", client_id="abc")["seq"] == 2
    # and after a restart the resend is still recognised
    h2 = h.restart()
    a2 = h2.login("alice")
    assert h2.ok(a2, "send", room="general", text="hello", client_id="abc")["duplicate"] is True
    assert h2.ok(a2, "send", room="general", text="new", client_id="abd")["seq"] == 3


def test_history_paging_backwards(h: Harness) -> None:
    h = Harness(CoreConfig(recent_window=8, rate_burst=1000))
    (a,) = _room(h, "alice")
    for i in range(1, 31):
        h.ok(a, "send", room="general", text=f"m{i}", client_id=str(i))
        h.advance(1)
    page = h.ok(a, "history", room="general", limit=10)
    assert [m["seq"] for m in page["messages"]] == list(range(21, 31))
    assert page["has_more"] is True
    seen: list[int] = [m["seq"] for m in page["messages"]]
    while page["has_more"]:
        page = h.ok(a, "history", room="general", before=seen[0], limit=7)
        seen[:0] = [m["seq"] for m in page["messages"]]
    assert seen == list(range(1, 31))
    # a page that straddles memory and the store
    assert [
        m["seq"] for m in h.ok(a, "history", room="general", before=25, limit=5)["messages"]
    ] == [20, 21, 22, 23, 24]
    last = h.ok(a, "history", room="general", before=3, limit=10)
    assert [m["seq"] for m in last["messages"]] == [1, 2] and last["has_more"] is False
    empty = h.ok(a, "history", room="general", before=1)
    assert empty == {"room": "general", "messages": [], "has_more": False}


def test_history_needs_membership(h: Harness) -> None:
    a = h.signup("alice")
    assert h.err(a, "history", room="general").code == "not_member"
    assert h.err(a, "history", room="nowhere").code == "unknown_room"


def test_since_timestamp(h: Harness) -> None:
    h = Harness(CoreConfig(recent_window=4, rate_burst=1000))
    (a,) = _room(h, "alice")
    h.ok(a, "join", room="random")
    t0 = h.now
    for i in range(6):
        h.ok(a, "send", room="general" if i % 2 == 0 else "random", text=f"m{i}", client_id=str(i))
        h.advance(10)
    got = h.ok(a, "since", ts=t0 + 15)
    assert [(m["room"], m["text"]) for m in got["messages"]] == [
        ("general", "m2"),
        ("random", "m3"),
        ("general", "m4"),
        ("random", "m5"),
    ]
    assert got["has_more"] is False
    only = h.ok(a, "since", ts=t0, rooms=["random"], limit=2)
    assert [m["text"] for m in only["messages"]] == ["m1", "m3"] and only["has_more"] is True
    assert h.err(a, "since", ts=t0, rooms=["help"]).code == "not_member"
    # messages not yet committed are served from memory
    h.store.apply = lambda writes: None  # type: ignore[method-assign]
    h.ok(a, "send", room="general", text="fresh", client_id="f")
    assert h.ok(a, "since", ts=h.now)["messages"][-1]["text"] == "fresh"


def test_edit_own_message(h: Harness) -> None:
    a, b = _room(h, "alice", "bob")
    seq = h.ok(a, "send", room="general", text="helo", client_id="1")["seq"]
    h.take(a)
    h.take(b)
    rec = h.ok(a, "edit", room="general", seq=seq, text="hello")["message"]
    assert (rec["text"], rec["edited"], rec["deleted"]) == ("hello", True, False)
    ev = h.take(b, "message_edited")
    assert [(e["seq"], e["text"], e["edited"]) for e in ev] == [(seq, "hello", True)]
    assert h.err(b, "edit", room="general", seq=seq, text="hijack").code == "forbidden"
    assert h.err(a, "edit", room="general", seq=99, text="x").code == "message_not_found"
    hist = h.ok(b, "history", room="general")["messages"]
    assert (hist[0]["text"], hist[0]["edited"]) == ("hello", True)
    # after a restart the edit is still there (it was written)
    h.apply(h.svc.disconnect(b, h.now, "bye"))
    h2 = h.restart()
    b2 = h2.login("bob")
    hist = h2.ok(b2, "history", room="general")["messages"]
    assert (hist[0]["text"], hist[0]["edited"]) == ("hello", True)


def test_delete_own_and_admin_deletes_any(h: Harness) -> None:
    a, b = _room(h, "alice", "bob")
    s1 = h.ok(a, "send", room="general", text="one", client_id="1")["seq"]
    s2 = h.ok(a, "send", room="general", text="two", client_id="2")["seq"]
    h.take(b)
    assert h.err(b, "delete", room="general", seq=s1).code == "forbidden"
    rec = h.ok(a, "delete", room="general", seq=s1)["message"]
    assert (rec["text"], rec["deleted"]) == (None, True)
    assert [(e["seq"], e["text"], e["deleted"]) for e in h.take(b, "message_deleted")] == [
        (s1, None, True)
    ]
    assert h.err(a, "delete", room="general", seq=s1).code == "message_not_found"
    assert h.err(a, "edit", room="general", seq=s1, text="back").code == "message_not_found"
    adm = h.admin()  # not a member of the room: admins may delete anywhere
    h.ok(adm, "delete", room="general", seq=s2)
    hist = h.ok(b, "history", room="general")["messages"]
    assert [(m["seq"], m["text"], m["deleted"]) for m in hist] == [(1, None, True), (2, None, True)]
    assert h.ok(adm, "audit")["entries"][0]["action"] == "delete_message"
    # tombstones survive a restart
    h2 = h.restart()
    c = h2.login("bob")
    assert [m["deleted"] for m in h2.ok(c, "join", room="general")["messages"]] == [True, True]


def test_edit_and_delete_old_message_outside_memory() -> None:
    h = Harness(CoreConfig(recent_window=2, rate_burst=1000))
    (a,) = _room(h, "alice")
    for i in range(5):
        h.ok(a, "send", room="general", text=f"m{i}", client_id=str(i))
    h.ok(a, "edit", room="general", seq=1, text="first!")
    h.ok(a, "delete", room="general", seq=2)
    msgs = h.ok(a, "history", room="general", limit=3, before=4)["messages"]
    assert [(m["text"], m["edited"], m["deleted"]) for m in msgs] == [
        ("first!", True, False),
        (None, False, True),
        ("m2", False, False),
    ]


def test_text_too_long() -> None:
    h = Harness(CoreConfig(max_message_length=10, rate_burst=100))
    (a,) = _room(h, "alice")
    err = h.err(a, "send", room="general", text="x" * 11, client_id="1")
    assert err.code == "text_too_long" and err.extra["max_text"] == 10
    h.ok(a, "send", room="general", text="x" * 10, client_id="1")
    assert h.err(a, "edit", room="general", seq=1, text="y" * 11).code == "text_too_long"


def test_rate_limit_triggers_and_recovers() -> None:
    h = Harness(CoreConfig(rate_per_second=20, rate_burst=30))
    (a,) = _room(h, "alice")
    for i in range(30):
        h.ok(a, "send", room="general", text="x", client_id=str(i))
    err = h.err(a, "send", room="general", text="x", client_id="over")
    assert err.code == "rate_limited" and err.extra["retry_after"] == 0.05
    h.advance(0.05)
    h.ok(a, "send", room="general", text="x", client_id="over")
    assert h.err(a, "send", room="general", text="x", client_id="o2").code == "rate_limited"
    h.advance(1.0)  # 20 more tokens
    for i in range(20):
        h.ok(a, "send", room="general", text="x", client_id=f"p{i}")
    assert h.err(a, "send", room="general", text="x", client_id="o3").code == "rate_limited"
    # rate limits are per connection: another user is unaffected
    b = h.signup("bob")
    h.ok(b, "join", room="general")
    h.ok(b, "send", room="general", text="x", client_id="1")


def test_uncommitted_edits_of_old_messages_are_seen() -> None:
    h = Harness(CoreConfig(recent_window=2, rate_burst=1000))
    (a,) = _room(h, "alice")
    for i in range(5):
        h.ok(a, "send", room="general", text=f"m{i}", client_id=str(i))
    h.store.apply = lambda writes: None  # type: ignore[method-assign]  # writer lags behind
    h.ok(a, "delete", room="general", seq=1)
    assert h.err(a, "edit", room="general", seq=1, text="zombie").code == "message_not_found"
    h.ok(a, "edit", room="general", seq=2, text="changed")
    msgs = h.ok(a, "history", room="general", before=3)["messages"]
    assert [(m["text"], m["deleted"], m["edited"]) for m in msgs] == [
        (None, True, False),
        ("changed", False, True),
    ]
    since = h.ok(a, "since", ts=0)["messages"]
    assert [m["text"] for m in since][:2] == [None, "changed"]
