"""Read positions stored on the server; unread and mention counts; offline delivery in the
order things were sent (issue 15)."""

from __future__ import annotations

from core_harness import Harness

from parlour.core.config import CoreConfig


def _rows(data: dict[str, object], kind: str) -> dict[str, dict[str, object]]:
    rows = data[kind]
    assert isinstance(rows, list)
    key = "room" if kind == "rooms" else "peer"
    return {row[key]: row for row in rows}


def test_read_markers_are_stored_never_go_back_and_reach_the_other_sessions() -> None:
    h = Harness(CoreConfig(duplicate_login="allow", rate_burst=1000, read_burst=1000))
    a, b = h.signup("alice"), h.signup("bob")
    for conn in (a, b):
        h.ok(conn, "join", room="general")
    for i in range(5):
        h.ok(b, "send", room="general", text=f"m{i}", client_id=f"m{i}")
    other = h.login("alice")  # a second client of alice's
    h.take(other)
    assert h.ok(a, "mark_read", room="general", seq=3) == {"room": "general", "seq": 3}
    (ev,) = h.take(other, "read_marker")
    assert (ev["room"], ev["peer"], ev["seq"]) == ("general", None, 3)
    assert h.take(a, "read_marker") == []  # not to the session that moved it
    assert h.ok(other, "mark_read", room="general", seq=2)["seq"] == 3  # never back
    assert h.ok(a, "mark_read", room="general", seq=99)["seq"] == 5  # not past the last
    # stored: a restarted server knows it
    h2 = h.restart()
    c = h2.login("alice")
    row = _rows(h2.ok(c, "unread"), "rooms")["general"]
    assert (row["last_seq"], row["read_seq"], row["unread"]) == (5, 5, 0)


def test_unread_and_mention_counts_per_room_and_conversation(h: Harness) -> None:
    a, b, c = h.signup("alice"), h.signup("bob"), h.signup("carol")
    for conn in (a, b, c):
        h.ok(conn, "join", room="general")
    h.ok(a, "send", room="general", text="mine", client_id="a1")
    h.ok(b, "send", room="general", text="hey @Alice, look", client_id="b1")
    h.ok(b, "send", room="general", text="email@alice.example is not a mention", client_id="b2")
    h.ok(c, "send", room="general", text="@alicette is someone else", client_id="c1")
    h.ok(c, "send", room="general", text="@alice!", client_id="c2")
    h.ok(a, "block", user="carol")  # carol's messages do not count for alice
    h.ok(b, "dm", to="alice", text="psst", client_id="d1")
    h.ok(b, "dm", to="alice", text="psst 2", client_id="d2")
    h.ok(a, "dm", to="bob", text="mine", client_id="d3")
    data = h.ok(a, "unread")
    general = _rows(data, "rooms")["general"]
    assert (general["unread"], general["mentions"], general["capped"]) == (2, 1, False)
    assert general["read_seq"] == 0 and general["last_seq"] == 5
    bob = _rows(data, "dms")["bob"]
    assert (bob["unread"], bob["mentions"], bob["last_seq"]) == (2, 2, 3)
    h.ok(a, "mark_read", peer="bob", seq=3)
    h.ok(a, "mark_read", room="general", seq=2)
    data = h.ok(a, "unread")
    assert _rows(data, "dms")["bob"]["unread"] == 0
    assert _rows(data, "rooms")["general"]["unread"] == 1  # b2 (carol's are blocked)


def test_offline_messages_arrive_in_the_order_they_were_sent_with_their_times(
    h: Harness,
) -> None:
    """Seed 002: not grouped by sender."""
    h.register("dana")
    adm = h.admin()
    b, c = h.signup("bob"), h.signup("carol")
    script = [(b, "b1"), (c, "c1"), (b, "b2"), ("broadcast", "all1"), (c, "c2"), (b, "b3")]
    for who, text in script:
        h.advance(1)
        if who == "broadcast":
            h.ok(adm, "broadcast", text=text)
        else:
            h.ok(who, "dm", to="dana", text=text, client_id=text)
    d = h.login("dana")
    got = [(e.name, e["text"], e["ts"]) for e in h.take(d) if e.name in ("dm", "broadcast")]
    assert [t for _, t, _ in got] == ["b1", "c1", "b2", "all1", "c2", "b3"]
    times = [ts for _, _, ts in got]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_offline_order_holds_across_truncated_rounds() -> None:
    h = Harness(CoreConfig(catch_up_messages=2, rate_burst=1000))
    h.register("dana")
    b, c = h.signup("bob"), h.signup("carol")
    order = []
    for i in range(5):
        for who, name in ((b, "b"), (c, "c")):
            h.advance(1)
            h.ok(who, "dm", to="dana", text=f"{name}{i}", client_id=f"{name}{i}")
            order.append(f"{name}{i}")
    d = h.connect()
    data = h.ok(d, "login", username="dana", password="password1")
    texts = [e["text"] for e in h.take(d, "dm")]
    while data.get("truncated"):
        data = h.ok(d, "sync", resume={"rooms": {}, "dms": {}})
        texts += [e["text"] for e in h.take(d, "dm")]
    assert texts == order
