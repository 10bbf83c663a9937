"""Resume: after a reconnect the client gets exactly what it missed, in order."""

from __future__ import annotations

from core_harness import Harness


def test_login_resume_rooms_and_dms(h: Harness) -> None:
    a = h.signup("alice")
    b = h.signup("bob")
    for conn in (a, b):
        h.ok(conn, "join", room="general")
        h.ok(conn, "join", room="random")
    for i in range(3):
        h.ok(a, "send", room="general", text=f"g{i}", client_id=f"g{i}")
    h.ok(a, "dm", to="bob", text="d0", client_id="d0")
    seen_general = [e["seq"] for e in h.take(b, "message")][-1]
    assert seen_general == 3
    h.apply(h.svc.disconnect(b, h.now, "network"))  # connection lost
    for i in range(3, 6):
        h.ok(a, "send", room="general", text=f"g{i}", client_id=f"g{i}")
    h.ok(a, "send", room="random", text="r0", client_id="r0")
    h.ok(a, "dm", to="bob", text="d1", client_id="d1")
    h.ok(a, "dm", to="bob", text="d2", client_id="d2")
    b2 = h.connect()
    h.ok(
        b2,
        "login",
        username="bob",
        password="password1",
        resume={"rooms": {"general": 3, "random": 0}, "dms": {"alice": 1}},
    )
    evs = h.take(b2)
    got = [(e.name.value, e.get("room") or e.get("peer"), e["seq"], e["text"]) for e in evs]
    assert got == [
        ("message", "general", 4, "g3"),
        ("message", "general", 5, "g4"),
        ("message", "general", 6, "g5"),
        ("message", "random", 1, "r0"),
        ("dm", "alice", 2, "d1"),
        ("dm", "alice", 3, "d2"),
    ]
    # nothing twice: the DM cursor moved on
    h.ok(b2, "logout")
    assert h.take(h.login("bob")) == []


def test_sync_without_relogin(h: Harness) -> None:
    a = h.signup("alice")
    b = h.signup("bob")
    for conn in (a, b):
        h.ok(conn, "join", room="general")
    for i in range(4):
        h.ok(a, "send", room="general", text=f"m{i}", client_id=str(i))
    h.take(b)
    assert h.ok(b, "sync", resume={"rooms": {"general": 2}}) == {}
    assert [e["seq"] for e in h.take(b, "message")] == [3, 4]
    # rooms the user is not in, and unknown names, are ignored
    h.ok(b, "sync", resume={"rooms": {"help": 0, "nowhere": 0}, "dms": {"ghost": 0}})
    assert h.take(b) == []


def test_resume_after_restart_reads_the_store(h: Harness) -> None:
    a = h.signup("alice")
    h.ok(a, "join", room="general")
    for i in range(5):
        h.ok(a, "send", room="general", text=f"m{i}", client_id=str(i))
    h2 = h.restart()
    c = h2.connect()
    h2.ok(c, "login", username="alice", password="password1", resume={"rooms": {"general": 2}})
    assert [e["text"] for e in h2.take(c, "message")] == ["m2", "m3", "m4"]


def test_catch_up_budget_truncates_and_sync_continues() -> None:
    from parlour.core.config import CoreConfig

    h = Harness(CoreConfig(catch_up_messages=3, rate_burst=1000))
    h.register("bob")
    a = h.signup("alice")
    for i in range(5):
        h.ok(a, "dm", to="bob", text=f"d{i}", client_id=str(i))
    b = h.connect()
    data = h.ok(b, "login", username="bob", password="password1")
    assert data["truncated"] is True
    assert h.texts(b, "dm") == ["d0", "d1", "d2"]
    assert h.ok(b, "sync", resume={}) == {}
    assert h.texts(b, "dm") == ["d3", "d4"]
    # room resume too
    h.ok(a, "join", room="general")
    h.ok(b, "join", room="general")
    for i in range(5):
        h.ok(a, "send", room="general", text=f"m{i}", client_id=f"m{i}")
    h.take(b)
    assert h.ok(b, "sync", resume={"rooms": {"general": 0}}) == {"truncated": True}
    got = [e["seq"] for e in h.take(b, "message")]
    assert got == [1, 2, 3]
    assert h.ok(b, "sync", resume={"rooms": {"general": got[-1]}}) == {}
    assert [e["seq"] for e in h.take(b, "message")] == [4, 5]
