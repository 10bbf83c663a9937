"""Direct messages: delivery, offline delivery at next login, errors, history, edit/delete,
broadcast."""

from __future__ import annotations

from core_harness import Harness

from parlour.core.writes import AppendDm, SetDmCursor


def test_dm_online(h: Harness) -> None:
    a = h.signup("alice")
    b = h.signup("bob")
    data = h.ok(a, "dm", to="BOB", text="hi bob", client_id="d1")
    assert data == {"peer": "bob", "seq": 1, "ts": h.now, "client_id": "d1", "duplicate": False}
    (ev,) = h.take(b, "dm")
    assert (ev["peer"], ev["from"], ev["text"], ev["seq"]) == ("alice", "alice", "hi bob", 1)
    (mine,) = h.take(a, "dm")  # the sender's connections see the conversation too
    assert (mine["peer"], mine["from"]) == ("bob", "alice")
    assert h.ok(b, "dm", to="alice", text="hi alice", client_id="d1")["seq"] == 2
    w = [w for o in h.outcomes for w in o.writes if isinstance(w, AppendDm)]
    assert [x.delivered for x in w] == [True, True]


def test_dm_errors(h: Harness) -> None:
    a = h.signup("alice")
    assert h.err(a, "dm", to="alice", text="me", client_id="1").code == "self_message"
    assert h.err(a, "dm", to="ghost", text="boo", client_id="1").code == "unknown_user"
    assert h.err(a, "history", peer="ghost").code == "unknown_user"


def test_dm_to_offline_user_delivered_at_next_login_in_order(h: Harness) -> None:
    h.register("bob")
    a = h.signup("alice")
    for i in range(3):
        h.ok(a, "dm", to="bob", text=f"m{i}", client_id=str(i))
        h.advance(1)
    w = [w for o in h.outcomes for w in o.writes if isinstance(w, AppendDm)]
    assert [x.delivered for x in w] == [False, False, False]
    b = h.login("bob")
    evs = h.take(b, "dm")
    assert [(e["seq"], e["text"], e["peer"]) for e in evs] == [
        (1, "m0", "alice"),
        (2, "m1", "alice"),
        (3, "m2", "alice"),
    ]
    cursors = [w for w in h.outcomes[-1].writes if isinstance(w, SetDmCursor)]
    assert [(c.user, c.seq) for c in cursors] == [("bob", 3)]
    # delivered once: the next login brings nothing new
    h.ok(b, "logout")
    b2 = h.login("bob")
    assert h.take(b2, "dm") == []


def test_offline_delivery_survives_restart(h: Harness) -> None:
    h.register("bob")
    a = h.signup("alice")
    h.ok(a, "dm", to="bob", text="while you were out", client_id="1")
    h.ok(a, "dm", to="bob", text="and again", client_id="2")
    h2 = h.restart()
    b = h2.login("bob")
    assert h2.texts(b, "dm") == ["while you were out", "and again"]
    h3 = h2.restart()
    assert h3.texts(h3.login("bob"), "dm") == []


def test_offline_delivery_skips_own_messages() -> None:
    h = Harness()
    h.register("bob")
    a = h.signup("alice")
    h.ok(a, "dm", to="bob", text="one", client_id="1")
    b = h.login("bob")
    h.ok(b, "dm", to="alice", text="reply", client_id="1")
    h.ok(a, "logout")
    h.ok(b, "dm", to="alice", text="later", client_id="2")
    h.ok(b, "logout")
    a2 = h.login("alice")
    assert h.texts(a2, "dm") == ["later"]
    b2 = h.login("bob")
    assert h.texts(b2, "dm") == []


def test_dm_resend_is_idempotent(h: Harness) -> None:
    a = h.signup("alice")
    b = h.signup("bob")
    first = h.ok(a, "dm", to="bob", text="x", client_id="same")
    again = h.ok(a, "dm", to="bob", text="x", client_id="same")
    assert again == {**first, "duplicate": True}
    assert len(h.take(b, "dm")) == 1


def test_dm_history_both_sides(h: Harness) -> None:
    a = h.signup("alice")
    b = h.signup("bob")
    for i in range(6):
        sender, to = (a, "bob") if i % 2 == 0 else (b, "alice")
        h.ok(sender, "dm", to=to, text=f"t{i}", client_id=str(i))
    page = h.ok(a, "history", peer="bob", limit=4)
    assert [m["seq"] for m in page["messages"]] == [3, 4, 5, 6] and page["has_more"]
    assert {m["peer"] for m in page["messages"]} == {"bob"}
    older = h.ok(b, "history", peer="alice", before=3)
    assert [(m["text"], m["peer"]) for m in older["messages"]] == [("t0", "alice"), ("t1", "alice")]
    assert older["has_more"] is False
    # separate conversations have separate sequences
    c = h.signup("carol")
    assert h.ok(c, "dm", to="alice", text="hey", client_id="1")["seq"] == 1


def test_dm_edit_delete(h: Harness) -> None:
    a = h.signup("alice")
    b = h.signup("bob")
    h.ok(a, "dm", to="bob", text="typo", client_id="1")
    h.take(b)
    rec = h.ok(a, "edit", peer="bob", seq=1, text="fixed")["message"]
    assert (rec["peer"], rec["text"], rec["edited"]) == ("bob", "fixed", True)
    (ev,) = h.take(b, "dm_edited")
    assert (ev["peer"], ev["text"]) == ("alice", "fixed")
    assert h.err(b, "edit", peer="alice", seq=1, text="no").code == "forbidden"
    assert h.err(b, "delete", peer="alice", seq=1).code == "forbidden"
    h.ok(a, "delete", peer="bob", seq=1)
    (ev,) = h.take(b, "dm_deleted")
    assert (ev["text"], ev["deleted"]) == (None, True)
    assert h.ok(b, "history", peer="alice")["messages"][0]["deleted"] is True


def test_broadcast(h: Harness) -> None:
    adm = h.admin()
    a = h.signup("alice")
    b = h.signup("bob")
    h.register("offline")
    assert h.err(a, "broadcast", text="hi all").code == "forbidden"
    assert h.ok(adm, "broadcast", text="maintenance at 5") == {"delivered": 3, "seq": 1}
    for conn in (adm, a, b):
        (ev,) = h.take(conn, "broadcast")
        assert (ev["from"], ev["text"], ev["seq"]) == ("admin", "maintenance at 5", 1)


def test_a_broadcast_reaches_every_registered_user_offline_ones_at_their_next_login(
    h: Harness,
) -> None:
    """Seed 002: a broadcast goes to every registered user, not only online sessions."""
    adm = h.admin()
    a = h.signup("alice")
    h.register("offline")
    h.advance(1)
    h.ok(adm, "broadcast", text="first")
    h.advance(1)
    h.ok(adm, "broadcast", text="second")
    h.take(a)
    h.apply(h.svc.disconnect(a, h.now, "bye"))  # alice saw both live
    h.advance(1)
    h.ok(adm, "broadcast", text="third")  # alice is away now
    off = h.login("offline")
    assert [(e["text"], e["seq"]) for e in h.take(off, "broadcast")] == [
        ("first", 1),
        ("second", 2),
        ("third", 3),
    ]
    back = h.login("alice")
    assert [e["text"] for e in h.take(back, "broadcast")] == ["third"]  # not again
    h.apply(h.svc.disconnect(off, h.now, "bye"))
    again = h.login("offline")
    assert h.take(again, "broadcast") == []  # delivered once
    late = h.signup("newcomer")  # an account made after them does not get old ones
    assert h.take(late, "broadcast") == []


def test_who_may_broadcast_is_a_setting() -> None:
    from parlour.core.config import CoreConfig

    h = Harness(CoreConfig(broadcast_policy="everyone", rate_burst=100))
    a = h.signup("alice")
    b = h.signup("bob")
    assert h.ok(a, "broadcast", text="from a member")["delivered"] == 2
    assert h.take(b, "broadcast")[0]["from"] == "alice"
