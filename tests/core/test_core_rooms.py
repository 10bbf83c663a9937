"""Rooms: list, create/rename/delete by admins, join/leave events, join history and members."""

from __future__ import annotations

from core_harness import Harness

from parlour.core.config import CoreConfig


def test_rooms_list_with_online_counts(h: Harness) -> None:
    a = h.signup("alice")
    b = h.signup("bob")
    h.ok(a, "join", room="general")
    h.ok(b, "join", room="general")
    h.ok(b, "join", room="help")
    h.apply(h.svc.disconnect(b, h.now, "bye"))
    rooms = {r["name"]: r for r in h.ok(a, "rooms")["rooms"]}
    assert set(rooms) == {"general", "random", "help"}
    assert rooms["general"] == {"name": "general", "members": 2, "online": 1, "joined": True}
    assert rooms["help"] == {"name": "help", "members": 1, "online": 0, "joined": False}


def test_member_cannot_manage_rooms(h: Harness) -> None:
    a = h.signup("alice")
    assert h.err(a, "room_create", room="dev").code == "forbidden"
    assert h.err(a, "room_rename", room="general", new_name="x").code == "forbidden"
    assert h.err(a, "room_delete", room="general").code == "forbidden"


def test_admin_creates_renames_deletes(h: Harness) -> None:
    adm = h.admin()
    a = h.signup("alice")
    assert h.ok(adm, "room_create", room="dev") == {"room": "dev"}
    assert [e["room"] for e in h.take(a, "room_created")] == ["dev"]
    assert h.err(adm, "room_create", room="DEV").code == "room_exists"
    h.ok(a, "join", room="dev")
    h.ok(a, "send", room="dev", text="one", client_id="c1")
    assert h.ok(adm, "room_rename", room="dev", new_name="devel") == {
        "room": "devel",
        "new_name": "devel",
    }
    ev = h.take(a, "room_renamed")[0]
    assert (ev["room"], ev["new_name"], ev["by"]) == ("dev", "devel", "admin")
    assert h.err(adm, "room_rename", room="devel", new_name="general").code == "room_exists"
    assert h.err(adm, "room_rename", room="nope", new_name="x").code == "unknown_room"
    # the renamed room keeps members, messages and sequence
    assert h.ok(a, "send", room="devel", text="two", client_id="c2")["seq"] == 2
    assert [m["text"] for m in h.ok(a, "history", room="devel")["messages"]] == ["one", "two"]
    assert h.err(a, "send", room="dev", text="x", client_id="c3").code == "unknown_room"
    # survives a restart
    h2 = h.restart()
    a2 = h2.login("alice")
    assert h2.ok(a2, "join", room="devel")["last_seq"] == 2
    assert h.ok(adm, "room_delete", room="devel") == {"room": "devel"}
    assert h.take(a, "room_deleted")[0]["room"] == "devel"
    assert h.err(a, "join", room="devel").code == "unknown_room"
    assert "devel" not in {r["name"] for r in h.ok(a, "rooms")["rooms"]}
    assert h.err(adm, "room_delete", room="devel").code == "unknown_room"
    actions = [e["action"] for e in h.ok(adm, "audit")["entries"]]
    assert actions[:3] == ["room_delete", "room_rename", "room_create"]


def test_recreated_room_starts_fresh(h: Harness) -> None:
    adm = h.admin()
    h.ok(adm, "room_create", room="tmp")
    h.ok(adm, "join", room="tmp")
    h.ok(adm, "send", room="tmp", text="old", client_id="c1")
    h.ok(adm, "room_delete", room="tmp")
    h.ok(adm, "room_create", room="tmp")
    data = h.ok(adm, "join", room="tmp")
    assert data["messages"] == [] and data["last_seq"] == 0
    # the old client id does not count as a duplicate in the new room
    assert h.ok(adm, "send", room="tmp", text="new", client_id="c1")["duplicate"] is False


def test_join_leave_events_and_member_list(h: Harness) -> None:
    a = h.signup("alice")
    b = h.signup("bob")
    h.ok(a, "join", room="general")
    data = h.ok(b, "join", room="general")
    assert data["members"] == ["alice", "bob"]
    assert data["online"] == ["alice", "bob"]
    # the other members hear about a join; the joiner has the reply
    assert [(e["room"], e["user"]) for e in h.take(a, "joined")] == [("general", "bob")]
    assert h.take(b, "joined") == []
    h.ok(b, "join", room="general")  # joining again: no event, same answer
    assert h.take(a, "joined") == []
    assert h.ok(b, "leave", room="general") == {"room": "general"}
    assert [e["user"] for e in h.take(a, "left")] == ["bob"]
    assert h.take(b, "left") == []
    assert h.err(b, "leave", room="general").code == "not_member"
    assert h.err(b, "send", room="general", text="x", client_id="1").code == "not_member"
    h.ok(a, "send", room="general", text="after", client_id="1")
    assert h.take(b, "message") == []


def test_several_rooms_at_once(h: Harness) -> None:
    a = h.signup("alice")
    b = h.signup("bob")
    for room in ("general", "random"):
        h.ok(a, "join", room=room)
        h.ok(b, "join", room=room)
    h.ok(a, "send", room="general", text="g", client_id="1")
    h.ok(a, "send", room="random", text="r", client_id="2")
    assert [(e["room"], e["text"]) for e in h.take(b, "message")] == [
        ("general", "g"),
        ("random", "r"),
    ]
    assert h.ok(b, "logout") == {}
    b2 = h.login("bob")
    assert sorted(h.ok(b2, "rooms")["rooms"][i]["name"] for i in range(3)) == [
        "general",
        "help",
        "random",
    ]


def test_membership_is_persistent(h: Harness) -> None:
    a = h.signup("alice")
    h.ok(a, "join", room="help")
    h.ok(a, "logout")
    h2 = h.restart()
    c = h2.connect()
    assert h2.ok(c, "login", username="alice", password="password1")["rooms"] == ["help"]


def test_join_returns_newest_n(h: Harness) -> None:
    a = h.signup("alice")
    h.ok(a, "join", room="general")
    for i in range(60):
        h.ok(a, "send", room="general", text=f"m{i}", client_id=str(i))
    b = h.signup("bob")
    data = h.ok(b, "join", room="general")
    assert [m["seq"] for m in data["messages"]] == list(range(11, 61))
    assert data["last_seq"] == 60
    assert data["messages"][0] == {
        "room": "general",
        "seq": 11,
        "ts": h.now,
        "from": "alice",
        "text": "m10",
        "edited": False,
        "deleted": False,
        "client_id": "10",
        "attachment": None,
    }
    assert len(h.ok(b, "join", room="general", limit=5)["messages"]) == 5


def test_join_history_configurable() -> None:
    h = Harness(CoreConfig(join_history=3, recent_window=4, rate_burst=100))
    a = h.signup("alice")
    h.ok(a, "join", room="general")
    for i in range(10):
        h.ok(a, "send", room="general", text=f"m{i}", client_id=str(i))
    assert [m["text"] for m in h.ok(a, "join", room="general")["messages"]] == ["m7", "m8", "m9"]


def test_unknown_room(h: Harness) -> None:
    a = h.signup("alice")
    assert h.err(a, "join", room="nowhere").code == "unknown_room"
    assert h.err(a, "who", room="nowhere").code == "unknown_room"
