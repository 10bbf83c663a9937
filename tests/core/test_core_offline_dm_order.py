"""Offline DMs are delivered in order and never skipped by a live DM during a cut-short
catch-up (the delivery cursor only moves over DMs pushed in order)."""

from __future__ import annotations

from core_harness import Harness

from parlour.core.config import CoreConfig


def _dm_seqs(h: Harness, conn: int, peer: str) -> list[int]:
    return [e["seq"] for e in h.take(conn, "dm") if e["peer"] == peer]


def test_live_dm_during_truncated_catch_up_does_not_skip_older_offline_dms() -> None:
    h = Harness(CoreConfig(catch_up_messages=3, rate_per_second=1000.0, rate_burst=1000.0))
    for name in ("bob", "carol"):
        h.register(name)
    a, c = h.signup("alice"), h.signup("carol2")
    for i in range(4):
        h.ok(a, "dm", to="bob", text=f"a{i}", client_id=f"a{i}")
    for i in range(3):
        h.ok(c, "dm", to="bob", text=f"c{i}", client_id=f"c{i}")
    b = h.connect()
    # conversations are caught up in a fixed order: alice's first, cut short after 3
    assert h.ok(b, "login", username="bob", password="password1")["truncated"] is True
    assert _dm_seqs(h, b, "alice") == [1, 2, 3]
    h.take(b)
    # a live DM from carol2, whose offline DMs were not pushed yet, and one from alice
    h.ok(c, "dm", to="bob", text="c-live", client_id="c-live")
    h.ok(a, "dm", to="bob", text="a-live", client_id="a-live")
    assert h.take(b, "dm") == []  # they wait behind the older ones
    got: list[tuple[str, int]] = []
    for _ in range(5):
        data = h.ok(b, "sync", resume={})
        got += [(e["peer"], e["seq"]) for e in h.take(b, "dm")]
        if not data.get("truncated"):
            break
    assert [s for p, s in got if p == "alice"] == [4, 5]
    assert [s for p, s in got if p == "carol2"] == [1, 2, 3, 4]
    # caught up: live DMs are pushed live again
    h.ok(c, "dm", to="bob", text="after", client_id="after")
    assert _dm_seqs(h, b, "carol2") == [5]


def test_offline_dms_survive_relogin_after_a_live_dm_during_catch_up() -> None:
    h = Harness(CoreConfig(catch_up_messages=2, rate_per_second=1000.0, rate_burst=1000.0))
    h.register("bob")
    a, c = h.signup("alice"), h.signup("carol")
    for i in range(3):
        h.ok(a, "dm", to="bob", text=f"a{i}", client_id=f"a{i}")
    for i in range(3):
        h.ok(c, "dm", to="bob", text=f"c{i}", client_id=f"c{i}")
    b = h.connect()
    assert h.ok(b, "login", username="bob", password="password1")["truncated"] is True
    h.ok(c, "dm", to="bob", text="c-live", client_id="c-live")
    # bob goes away without syncing; at the next login everything from carol is there
    h.apply(h.svc.disconnect(b, h.now, "gone"))
    b2 = h.connect()
    texts: list[str] = []
    data = h.ok(b2, "login", username="bob", password="password1")
    texts += [e["text"] for e in h.take(b2, "dm")]
    while data.get("truncated"):
        data = h.ok(b2, "sync", resume={})
        texts += [e["text"] for e in h.take(b2, "dm")]
    assert texts == ["a2", "c0", "c1", "c2", "c-live"]


def test_dms_between_two_online_users_stay_live_both_ways() -> None:
    h = Harness()
    a, b = h.signup("alice"), h.signup("bob")
    for i in range(3):
        h.ok(a, "dm", to="bob", text=f"a{i}", client_id=f"a{i}")
        h.ok(a, "dm", to="bob", text=f"a{i}'", client_id=f"a{i}'")
        h.ok(b, "dm", to="alice", text=f"b{i}", client_id=f"b{i}")
    assert [e["text"] for e in h.take(b, "dm") if e["from"] == "alice"] == [
        "a0",
        "a0'",
        "a1",
        "a1'",
        "a2",
        "a2'",
    ]
    assert [e["text"] for e in h.take(a, "dm") if e["from"] == "bob"] == ["b0", "b1", "b2"]
    # after a restart (in-memory cursors of own messages lost) too
    h2 = h.restart()
    a2, b2 = h2.login("alice"), h2.login("bob")
    h2.take(a2)
    h2.take(b2)
    h2.ok(a2, "dm", to="bob", text="x", client_id="x")
    h2.ok(a2, "dm", to="bob", text="y", client_id="y")
    h2.ok(b2, "dm", to="alice", text="z", client_id="z")
    assert [e["text"] for e in h2.take(a2, "dm") if e["from"] == "bob"] == ["z"]
    assert [e["text"] for e in h2.take(b2, "dm") if e["from"] == "alice"] == ["x", "y"]
