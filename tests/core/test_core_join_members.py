"""The join reply's member list is bounded (online members first) with the full counts."""

from __future__ import annotations

from core_harness import Harness

from parlour.core.config import CoreConfig


def test_join_reply_lists_at_most_join_members_names_online_first() -> None:
    h = Harness(CoreConfig(join_members=3, rate_per_second=1000.0, rate_burst=1000.0))
    for name in ("Zed", "amy", "Bob", "cat", "dan"):
        conn = h.signup(name)
        h.ok(conn, "join", room="general")
        if name in ("amy", "Bob", "cat"):
            h.apply(h.svc.disconnect(conn, h.now, "away"))
    me = h.signup("eve")
    data = h.ok(me, "join", room="general")
    # online: dan, eve, Zed (case-insensitive order); then the first away ones
    assert data["members"] == ["dan", "eve", "Zed"]
    assert data["online"] == ["dan", "eve", "Zed"]
    assert (data["members_total"], data["online_total"]) == (6, 3)
    assert data["members_truncated"] is True
    h.apply(h.svc.disconnect(me, h.now, "away"))
    other = h.login("amy")
    data = h.ok(other, "join", room="general")
    assert data["members"] == ["amy", "dan", "Zed"]
    assert data["online"] == ["amy", "dan", "Zed"]


def test_small_room_lists_everyone_and_is_not_truncated() -> None:
    h = Harness()
    a = h.signup("alice")
    h.register("bob")
    b = h.login("bob")
    h.ok(b, "join", room="general")
    h.apply(h.svc.disconnect(b, h.now, "away"))
    data = h.ok(a, "join", room="general")
    assert data["members"] == ["alice", "bob"]
    assert data["online"] == ["alice"]
    assert (data["members_total"], data["online_total"], data["members_truncated"]) == (
        2,
        1,
        False,
    )
