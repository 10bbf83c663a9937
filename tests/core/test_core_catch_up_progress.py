"""Every truncated login/sync pushes at least one message, so syncing from what was received
always terminates (a message bigger than the byte budget; long runs from blocked users)."""

from __future__ import annotations

from typing import Any

from core_harness import Harness

from parlour.core.config import CoreConfig


def _config(**kw: Any) -> CoreConfig:
    return CoreConfig(rate_per_second=1000.0, rate_burst=1000.0, **kw)


def _follow(h: Harness, conn: int, rooms: dict[str, int], dms: dict[str, int]) -> list[str]:
    """Sync from the cursors (like the client) until a reply is not truncated; the texts."""
    texts: list[str] = []
    for _ in range(100):
        data = h.ok(conn, "sync", resume={"rooms": dict(rooms), "dms": dict(dms)})
        events = h.take(conn)
        for e in events:
            if e.name == "message":
                rooms[e["room"]] = e["seq"]
            elif e.name == "dm":
                dms[e["peer"]] = e["seq"]
            else:
                continue
            texts.append(e["text"])
        if not data.get("truncated"):
            return texts
        assert events, "truncated without pushing anything"
    raise AssertionError("sync did not terminate")


def test_message_bigger_than_the_byte_budget_is_still_pushed() -> None:
    h = Harness(_config(catch_up_bytes=600))
    a = h.signup("alice")
    b = h.signup("bob")
    for conn in (a, b):
        h.ok(conn, "join", room="general")
    h.take(b)
    big = '"\\' * 400  # escapes make the JSON text twice as long as the text
    h.ok(a, "send", room="general", text=big, client_id="big")
    h.ok(a, "send", room="general", text="small", client_id="small")
    h.ok(a, "send", room="general", text=big + "2", client_id="big2")
    h.take(b)
    assert _follow(h, b, {"general": 0}, {}) == [big, "small", big + "2"]


def test_offline_dm_bigger_than_the_byte_budget_is_delivered() -> None:
    h = Harness(_config(catch_up_bytes=600))
    h.register("bob")
    a = h.signup("alice")
    big = "é\\" * 300
    h.ok(a, "dm", to="bob", text=big, client_id="1")
    h.ok(a, "dm", to="bob", text=big + "!", client_id="2")
    b = h.connect()
    data = h.ok(b, "login", username="bob", password="password1")
    assert data.get("truncated") is True
    first = [e["text"] for e in h.take(b, "dm")]
    assert first == [big]
    assert _follow(h, b, {}, {}) == [big + "!"]


def test_long_run_from_a_blocked_user_does_not_stall_the_catch_up() -> None:
    h = Harness(_config(catch_up_messages=3))
    a, c = h.signup("alice"), h.signup("carol")
    b = h.signup("bob")
    for conn in (a, b, c):
        h.ok(conn, "join", room="general")
    h.ok(b, "block", user="carol")
    h.ok(a, "send", room="general", text="a0", client_id="a0")
    for i in range(700):  # more than a scan page and many budgets
        h.ok(c, "send", room="general", text=f"c{i}", client_id=f"c{i}")
    for i in range(1, 5):
        h.ok(a, "send", room="general", text=f"a{i}", client_id=f"a{i}")
    for i in range(10):
        h.ok(c, "send", room="general", text=f"c-{i}", client_id=f"c-{i}")
    h.take(b)
    assert _follow(h, b, {"general": 0}, {}) == [f"a{i}" for i in range(5)]


def test_blocked_sender_dms_are_skipped_in_resume_and_offline_delivery() -> None:
    h = Harness(_config(catch_up_messages=2))
    h.register("bob")
    a, c = h.signup("alice"), h.signup("carol")
    b = h.login("bob")
    h.ok(b, "block", user="carol")
    h.apply(h.svc.disconnect(b, h.now, "bye"))
    for i in range(600):
        h.ok(c, "dm", to="bob", text=f"c{i}", client_id=f"c{i}")
    h.ok(c, "dm", to="bob", text="x", client_id="x")
    for i in range(3):
        h.ok(a, "dm", to="bob", text=f"a{i}", client_id=f"a{i}")
    b = h.login("bob")
    got = [e["text"] for e in h.take(b, "dm")]
    got += _follow(h, b, {}, {})
    assert got == ["a0", "a1", "a2"]
    # resuming carol's conversation explicitly: nothing to push, and it terminates
    assert _follow(h, b, {}, {"carol": 0}) == []
