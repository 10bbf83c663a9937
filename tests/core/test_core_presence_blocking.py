"""Presence (who, who --since, presence events) and blocking semantics."""

from __future__ import annotations

from core_harness import Harness

from parlour.core.config import CoreConfig


def _names(rows: list[dict[str, object]]) -> list[object]:
    return [r["username"] for r in rows]


def test_who_online_server_wide_and_per_room(h: Harness) -> None:
    a = h.signup("alice")
    h.advance(10)
    b = h.signup("bob")
    h.register("carol")
    h.ok(a, "join", room="general")
    rows = h.ok(a, "who")["users"]
    assert _names(rows) == ["alice", "bob"]
    alice = rows[0]
    assert alice["online"] is True and alice["login_ts"] == h.now - 10
    assert alice["rooms"] == ["general"] and alice["role"] == "member"
    room = h.ok(b, "who", room="general")
    assert room["room"] == "general" and _names(room["users"]) == ["alice"]


def test_who_since_lists_online_users_who_logged_in_within_the_window(h: Harness) -> None:
    """Seed 002: "users online who logged in within the last hour" is exactly that filter;
    offline accounts are never listed (issue 10: `who` cannot enumerate the accounts)."""
    a = h.signup("alice")
    h.register("old")  # logged in long ago, offline
    h.advance(4000)
    b = h.signup("bob")
    h.advance(100)
    h.ok(b, "join", room="general")
    rows = h.ok(a, "who", since=3600)["users"]
    assert _names(rows) == ["bob"]
    assert rows[0]["online"] is True and rows[0]["login_ts"] == h.now - 100
    assert _names(h.ok(a, "who", since=50)["users"]) == []
    assert _names(h.ok(a, "who", since=5000)["users"]) == ["alice", "bob"]
    assert _names(h.ok(a, "who")["users"]) == ["alice", "bob"]
    assert h.ok(a, "who", since=50)["since"] == 50.0
    assert h.ok(a, "who")["since"] is None
    h.apply(h.svc.disconnect(b, h.now, "bye"))  # offline now: not listed, whatever the window
    assert _names(h.ok(a, "who", since=5000)["users"]) == ["alice"]
    assert _names(h.ok(a, "who", since=1e9)["users"]) == ["alice"]


def test_who_recent_uses_the_configured_presence_window() -> None:
    h = Harness(CoreConfig(presence_window=600, rate_burst=100))
    a = h.signup("alice")
    h.register("gone")
    h.advance(700)
    h.signup("recent")  # alice logged in 700 s ago, `recent` now; `gone` is offline
    data = h.ok(a, "who", recent=True)
    assert data["since"] == 600 and _names(data["users"]) == ["recent"]
    assert _names(h.ok(a, "who", recent=True, since=1000)["users"]) == ["alice", "recent"]
    assert _names(h.ok(a, "who")["users"]) == ["alice", "recent"]


def test_presence_events_to_co_members(h: Harness) -> None:
    a = h.signup("alice")
    b = h.signup("bob")
    h.ok(a, "join", room="general")
    h.ok(b, "join", room="general")
    h.take(a)
    h.apply(h.svc.disconnect(b, h.now, "gone"))
    (ev,) = h.take(a, "presence")
    assert (ev["user"], ev["online"]) == ("bob", False)
    b2 = h.login("bob")
    (ev,) = h.take(a, "presence")
    assert (ev["user"], ev["online"]) == ("bob", True)
    assert h.take(b2, "presence") == []
    # online member counts follow
    assert next(r for r in h.ok(a, "rooms")["rooms"] if r["name"] == "general")["online"] == 2


def test_presence_events_skipped_in_huge_rooms() -> None:
    h = Harness(CoreConfig(presence_room_limit=1))
    a, b, c = (h.signup(n) for n in ("alice", "bob", "carol"))
    for conn in (a, b, c):
        h.ok(conn, "join", room="general")
    h.take(a)
    h.apply(h.svc.disconnect(b, h.now, "gone"))
    assert h.take(a, "presence") == []


def test_block_list_unblock(h: Harness) -> None:
    a = h.signup("alice")
    h.register("bob")
    assert h.ok(a, "block", user="BOB") == {"user": "bob"}
    h.ok(a, "block", user="bob")  # idempotent
    assert h.ok(a, "blocks") == {"users": ["bob"]}
    assert h.err(a, "block", user="alice").code == "self_message"
    assert h.err(a, "block", user="ghost").code == "unknown_user"
    assert h.ok(a, "unblock", user="bob") == {"user": "bob"}
    assert h.ok(a, "blocks") == {"users": []}


def test_blocked_dms_are_stored_but_never_delivered(h: Harness) -> None:
    a = h.signup("alice")
    b = h.signup("bob")
    h.ok(a, "block", user="bob")
    data = h.ok(b, "dm", to="alice", text="let me in", client_id="1")
    assert data["duplicate"] is False and data["seq"] == 1  # sender sees a normal ack
    assert h.take(a, "dm") == []
    assert h.texts(b, "dm") == ["let me in"]  # sender's own view
    assert [m["text"] for m in h.ok(b, "history", peer="alice")["messages"]] == ["let me in"]
    assert h.ok(a, "history", peer="bob")["messages"] == []
    # not later either: offline DMs from a blocked user are dropped at login
    h.ok(a, "logout")
    h.ok(b, "dm", to="alice", text="still here", client_id="2")
    a2 = h.login("alice")
    assert h.take(a2, "dm") == []
    h.ok(a2, "unblock", user="bob")
    h.ok(a2, "logout")
    a3 = h.login("alice")
    assert h.take(a3, "dm") == []  # what was sent while blocked stays undelivered
    h.ok(b, "dm", to="alice", text="after unblock", client_id="3")
    assert h.texts(a3, "dm") == ["after unblock"]


def test_blocked_room_messages_filtered_for_blocker_only(h: Harness) -> None:
    a, b, c = (h.signup(n) for n in ("alice", "bob", "carol"))
    for conn in (a, b, c):
        h.ok(conn, "join", room="general")
    h.ok(a, "block", user="bob")
    h.take(a)
    h.take(c)
    h.ok(b, "send", room="general", text="from bob", client_id="1")
    h.ok(c, "send", room="general", text="from carol", client_id="1")
    assert h.texts(a) == ["from carol"]
    assert h.texts(c) == ["from bob", "from carol"]
    assert [m["text"] for m in h.ok(a, "history", room="general")["messages"]] == ["from carol"]
    assert [m["text"] for m in h.ok(a, "join", room="general")["messages"]] == ["from carol"]
    assert [m["text"] for m in h.ok(a, "since", ts=0)["messages"]] == ["from carol"]
    assert [m["text"] for m in h.ok(c, "history", room="general")["messages"]] == [
        "from bob",
        "from carol",
    ]
    h.ok(b, "edit", room="general", seq=1, text="edited")
    assert h.take(a, "message_edited") == []
    h.ok(a, "unblock", user="bob")
    h.ok(b, "send", room="general", text="visible again", client_id="2")
    assert h.texts(a) == ["visible again"]


def test_blocks_survive_restart(h: Harness) -> None:
    a = h.signup("alice")
    h.register("bob")
    h.ok(a, "block", user="bob")
    h2 = h.restart()
    assert h2.ok(h2.login("alice"), "blocks") == {"users": ["bob"]}


def test_who_leaves_out_users_the_requester_blocks(h: Harness) -> None:
    a, b, c = (h.signup(n) for n in ("alice", "bob", "carol"))
    for conn in (a, b, c):
        h.ok(conn, "join", room="general")
    h.signup("dave")  # online
    h.ok(a, "block", user="BOB")
    h.ok(a, "block", user="dave")
    assert _names(h.ok(a, "who")["users"]) == ["alice", "carol"]
    assert _names(h.ok(a, "who", room="general")["users"]) == ["alice", "carol"]
    assert _names(h.ok(a, "who", since=3600)["users"]) == ["alice", "carol"]
    assert _names(h.ok(a, "who", recent=True)["users"]) == ["alice", "carol"]
    # the block is invisible to the blocked user, and others are not affected
    assert _names(h.ok(b, "who")["users"]) == ["alice", "bob", "carol", "dave"]
    assert _names(h.ok(b, "who", room="general")["users"]) == ["alice", "bob", "carol"]
    assert _names(h.ok(c, "who", since=3600)["users"]) == ["alice", "bob", "carol", "dave"]
    assert "dave" not in _names(h.ok(a, "who", since=3600)["users"])
    h.ok(a, "unblock", user="bob")
    assert _names(h.ok(a, "who")["users"]) == ["alice", "bob", "carol"]  # dave still blocked


def test_join_member_lists_leave_out_users_the_joiner_blocks() -> None:
    h = Harness(CoreConfig(join_members=2, rate_burst=100))
    a, b = h.signup("alice"), h.signup("bob")
    h.register("carol")
    c = h.login("carol")
    h.ok(c, "join", room="general")
    h.apply(h.svc.disconnect(c, h.now, "bye"))  # carol: member, offline
    h.ok(b, "join", room="general")  # bob: member, online
    h.ok(a, "block", user="bob")
    data = h.ok(a, "join", room="general")
    assert data["members"] == ["alice", "carol"] and data["online"] == ["alice"]
    # the totals count the whole room; the cap of 2 names did not cut anyone visible
    assert (data["members_total"], data["online_total"]) == (3, 2)
    assert data["members_truncated"] is False
    seen_by_bob = h.ok(b, "join", room="general")
    assert seen_by_bob["members"] == ["alice", "bob"] and seen_by_bob["members_truncated"] is True
    h.ok(a, "unblock", user="bob")
    data = h.ok(a, "join", room="general")
    assert data["members"] == ["alice", "bob"] and data["members_truncated"] is True


def test_presence_events_skip_users_who_block_the_user() -> None:
    h = Harness(CoreConfig(duplicate_login="allow", rate_burst=100))
    a, b, c = (h.signup(n) for n in ("alice", "bob", "carol"))
    a2 = h.login("alice")  # every session of the blocker
    for conn in (a, b, c):
        h.ok(conn, "join", room="general")
    h.ok(a, "block", user="bob")
    for conn in (a, a2, b, c):
        h.take(conn)
    h.apply(h.svc.disconnect(b, h.now, "gone"))
    b = h.login("bob")
    assert h.take(a, "presence") == [] and h.take(a2, "presence") == []
    assert [(e["user"], e["online"]) for e in h.take(c, "presence")] == [
        ("bob", False),
        ("bob", True),
    ]
    # the blocked user still sees the blocker come and go
    h.apply(h.svc.disconnect(a, h.now, "gone"))
    h.apply(h.svc.disconnect(a2, h.now, "gone"))
    a = h.login("alice")
    assert [(e["user"], e["online"]) for e in h.take(b, "presence")] == [
        ("alice", False),
        ("alice", True),
    ]
    h.ok(a, "unblock", user="bob")
    h.apply(h.svc.disconnect(b, h.now, "gone"))
    assert [(e["user"], e["online"]) for e in h.take(a, "presence")] == [("bob", False)]
