"""Sections 6-9 over real sockets: DMs (offline delivery), broadcast, presence, blocking,
moderation (kick, ban, unban, audit)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from e2e_helpers import PASSWORD, ClientFactory, FakeClock, Wire

UserFactory = Callable[..., Awaitable[Wire]]


def who_name(entry: dict[str, Any]) -> str:
    # docs/protocol.md names the key "username"; accept "user" as well
    name = entry.get("username", entry.get("user"))
    assert isinstance(name, str)
    return name


async def test_dm_online_offline_delivery_and_errors(
    user: UserFactory, connect: ClientFactory
) -> None:
    alice = await user("alice")
    bob = await user("bob")
    first = await alice.ok("dm", to="bob", text="hi bob", client_id="d1")
    ev = await bob.event("dm", peer="alice")
    assert (ev["seq"], ev["text"], ev["from"]) == (first["seq"], "hi bob", "alice")
    await bob.ok("logout")

    texts = [f"while away {i}" for i in range(5)]
    for i, text in enumerate(texts):
        await alice.ok("dm", to="bob", text=text, client_id=f"off{i}")
    assert (await alice.error("dm", to="alice", text="me", client_id="x"))["code"] == (
        "self_message"
    )
    assert (await alice.error("dm", to="nobody", text="?", client_id="y"))["code"] == (
        "unknown_user"
    )

    bob2 = await connect()
    await bob2.login("bob", PASSWORD)
    got = [await bob2.event("dm", peer="alice") for _ in texts]
    assert [e["text"] for e in got] == texts
    assert [e["seq"] for e in got] == list(range(2, 7))
    history = (await bob2.ok("history", peer="alice"))["messages"]
    assert [m["text"] for m in history] == ["hi bob", *texts]
    # delivered once: another login does not replay them
    await bob2.ok("logout")
    bob3 = await connect()
    await bob3.login("bob", PASSWORD)
    await bob3.roundtrip()
    assert bob3.drain_events("dm") == []


async def test_dm_edit_delete_and_history_paging(user: UserFactory) -> None:
    alice, bob = await user("alice"), await user("bob")
    acks = [await alice.ok("dm", to="bob", text=f"d{i}", client_id=f"d{i}") for i in range(4)]
    assert [a["seq"] for a in acks] == [1, 2, 3, 4]  # the conversation's own sequence
    again = await alice.ok("dm", to="bob", text="d0", client_id="d0")
    assert again["duplicate"] is True and again["seq"] == 1
    for _ in acks:
        await bob.event("dm", peer="alice")
    edited = await alice.ok("edit", peer="bob", seq=2, text="d1 (fixed)")
    assert edited["message"]["edited"] and edited["message"]["peer"] == "bob"
    ev = await bob.event("dm_edited", peer="alice", seq=2)
    assert ev["text"] == "d1 (fixed)"
    assert (await bob.error("delete", peer="alice", seq=3))["code"] == "forbidden"
    await alice.ok("delete", peer="bob", seq=3)
    assert (await bob.event("dm_deleted", peer="alice", seq=3))["text"] is None
    page = await bob.ok("history", peer="alice", before=4, limit=2)
    assert page["peer"] == "alice" and page["has_more"]
    assert [(m["seq"], m["text"], m["edited"], m["deleted"]) for m in page["messages"]] == [
        (2, "d1 (fixed)", True, False),
        (3, None, False, True),
    ]
    assert (await bob.error("history", peer="bob"))["code"] == "self_message"


async def test_dm_resume_is_exact_and_replaces_offline_delivery(
    user: UserFactory, connect: ClientFactory
) -> None:
    alice, bob = await user("alice"), await user("bob")
    for i in range(3):
        await alice.ok("dm", to="bob", text=f"seen {i}", client_id=f"s{i}")
    seen = [await bob.event("dm", peer="alice") for _ in range(3)]
    await bob.close()  # gone without a logout; seen 1..3
    await alice.roundtrip()
    for i in range(4):
        await alice.ok("dm", to="bob", text=f"missed {i}", client_id=f"m{i}")
    back = await connect()
    await back.login("bob", PASSWORD, resume={"rooms": {}, "dms": {"alice": seen[-1]["seq"]}})
    await back.roundtrip()
    got = back.drain_events("dm")
    assert [(e["seq"], e["text"]) for e in got] == [(4 + i, f"missed {i}") for i in range(4)]


async def test_broadcast_reaches_every_online_user(user: UserFactory) -> None:
    admin, alice, bob = await user("admin"), await user("alice"), await user("bob")
    assert (await alice.error("broadcast", text="hey"))["code"] == "forbidden"
    data = await admin.ok("broadcast", text="maintenance at noon")
    assert data["delivered"] >= 2
    for c in (alice, bob):
        ev = await c.event("broadcast")
        assert (ev["from"], ev["text"]) == ("admin", "maintenance at noon")


async def test_presence_who(user: UserFactory, clock: FakeClock) -> None:
    alice, bob = await user("alice"), await user("bob")
    await alice.ok("join", room="general")
    await bob.ok("join", room="general")
    everyone = {who_name(u): u for u in (await alice.ok("who"))["users"]}
    assert everyone["alice"]["online"] and everyone["bob"]["online"]
    assert everyone["bob"]["login_ts"] > 0
    in_room = {who_name(u) for u in (await alice.ok("who", room="general"))["users"]}
    assert in_room == {"alice", "bob"}
    # "online users who logged in within the last hour": both, for now
    recent = {who_name(u): u for u in (await alice.ok("who", since=3600))["users"]}
    assert set(recent) == {"alice", "bob"} and recent["bob"]["online"] is True
    assert recent["bob"]["last_active"] >= recent["bob"]["login_ts"] > 0
    assert (await alice.ok("who", recent=True))["since"] == 3600
    clock.advance(2 * 3600)
    await bob.ok("logout")
    bob = await user("bob")  # bob logs in again; alice logged in two hours ago
    recent = {who_name(u) for u in (await alice.ok("who", since=3600))["users"]}
    assert recent == {"bob"}
    assert {who_name(u) for u in (await alice.ok("who", recent=True))["users"]} == {"bob"}
    await bob.ok("logout")
    ev = await alice.event("presence", user="bob", online=False)
    assert ev["online"] is False
    # offline users are never listed, whatever the window (no account enumeration)
    assert "bob" not in {who_name(u) for u in (await alice.ok("who", since=10**8))["users"]}


async def test_blocking_filters_dms_and_room_messages(user: UserFactory) -> None:
    alice, mallory, bob = await user("alice"), await user("mallory"), await user("bob")
    for c in (alice, mallory, bob):
        await c.ok("join", room="general")
    await alice.ok("block", user="mallory")
    assert (await alice.ok("blocks"))["users"] == ["mallory"]
    # the blocked sender gets a normal ack; the blocker never sees the DM
    ack = await mallory.ok("dm", to="alice", text="hey", client_id="m1")
    assert ack["duplicate"] is False
    await mallory.ok("send", room="general", text="from mallory", client_id="m2")
    await bob.ok("send", room="general", text="from bob", client_id="b1")
    assert (await alice.event("message", room="general"))["text"] == "from bob"
    await alice.roundtrip()
    assert alice.drain_events("dm") == []
    assert all(e["from"] != "mallory" for e in alice.drain_events("message"))
    assert all(
        m["from"] != "mallory" for m in (await alice.ok("history", room="general"))["messages"]
    )
    # bob is not affected
    assert (await bob.event("message", room="general"))["text"] == "from mallory"
    await alice.ok("unblock", user="mallory")
    await mallory.ok("dm", to="alice", text="again", client_id="m3")
    assert (await alice.event("dm", peer="mallory"))["text"] == "again"


async def test_kick_ban_unban_and_audit(
    user: UserFactory, connect: ClientFactory, clock: FakeClock
) -> None:
    admin, mallory = await user("admin"), await user("mallory")
    assert (await mallory.error("kick", user="admin", reason="x"))["code"] == "forbidden"
    await admin.ok("kick", user="mallory", reason="flooding")
    kicked = await mallory.event("kicked")
    assert kicked["reason"] == "flooding"
    await mallory.wait_closed()
    # a kicked user may come back
    mallory = await connect()
    await mallory.login("mallory", PASSWORD)

    data = await admin.ok("ban", user="mallory", duration=600, reason="spam")
    assert data["until"] is not None
    banned = await mallory.event("banned")
    assert banned["reason"] == "spam"
    await mallory.wait_closed()
    again = await connect()
    await again.hello()
    err = await again.error("login", username="mallory", password=PASSWORD)
    assert err["code"] == "banned" and err["until"] == data["until"] and "spam" in err["message"]
    bans = (await admin.ok("bans"))["bans"]
    assert [b["user"] for b in bans] == ["mallory"]

    await admin.ok("unban", user="mallory")
    err = await admin.error("unban", user="MALLORY")
    assert err == {
        "id": err["id"],
        "type": "error",
        "code": "not_banned",
        "message": "mallory is not banned",
        "user": "mallory",
    }
    await again.ok("login", username="mallory", password=PASSWORD)
    await again.ok("logout")

    # a timed ban expires by itself
    await admin.ok("ban", user="mallory", duration=60, reason="cool down")
    later = await connect()
    await later.hello()
    assert (await later.error("login", username="mallory", password=PASSWORD))["code"] == ("banned")
    clock.advance(61)
    await later.ok("login", username="mallory", password=PASSWORD)

    entries = (await admin.ok("audit", limit=10))["entries"]
    actions = [(e["actor"], e["action"], e["target"], e["reason"]) for e in entries]
    assert actions[:4] == [  # newest first: who, what, whom, why (and when)
        ("admin", "ban", "mallory", "cool down"),
        ("admin", "unban", "mallory", ""),
        ("admin", "ban", "mallory", "spam"),
        ("admin", "kick", "mallory", "flooding"),
    ]
    assert all(e["ts"] > 0 for e in entries)
    for request in ("audit", "bans", "kick", "ban", "unban"):
        fields = {} if request in ("audit", "bans") else {"user": "admin"}
        assert (await later.error(request, **fields))["code"] == "forbidden"


async def test_kick_from_a_room_and_permanent_ban(
    user: UserFactory, connect: ClientFactory
) -> None:
    admin, mallory, bob = await user("admin"), await user("mallory"), await user("bob")
    await mallory.ok("join", room="general")
    await bob.ok("join", room="general")
    data = await admin.ok("kick", user="mallory", room="general", reason="off topic")
    assert data == {"user": "mallory", "room": "general", "sessions": 1}
    kicked = await mallory.event("kicked", room="general")
    assert (kicked["by"], kicked["reason"]) == ("admin", "off topic")
    await bob.event("left", room="general", user="mallory")
    assert (await mallory.error("send", room="general", text="x", client_id="k"))["code"] == (
        "not_member"
    )
    await mallory.ok("join", room="general")  # they may come back
    err = await admin.error("kick", user="mallory", room="help")
    assert err["code"] == "not_member"
    assert (await admin.error("kick", user="nobody"))["code"] == "unknown_user"

    await admin.ok("ban", user="mallory")  # no duration: until unbanned
    banned = await mallory.event("banned")
    assert banned["until"] is None
    assert (await mallory.event("disconnect"))["code"] == "banned"
    again = await connect()
    await again.hello()
    err = await again.error("login", username="mallory", password=PASSWORD)
    assert err["code"] == "banned" and err["until"] is None and "permanently" in err["message"]
    # a wrong password does not reveal the ban
    err = await again.error("login", username="mallory", password="not-the-password")
    assert err["code"] == "bad_credentials"
    assert (await admin.ok("bans"))["bans"][0]["until"] is None
    assert (await admin.error("unban", user="bob"))["code"] == "not_banned"


async def test_blocked_users_are_left_out_of_the_blockers_presence(user: UserFactory) -> None:
    alice, mallory, bob = await user("alice"), await user("mallory"), await user("bob")
    for c in (alice, mallory, bob):
        await c.ok("join", room="general")
    await alice.ok("block", user="mallory")
    names = {who_name(u) for u in (await alice.ok("who"))["users"]}
    assert names == {"alice", "bob"}
    room = await alice.ok("who", room="general", since=3600)
    assert {who_name(u) for u in room["users"]} == {"alice", "bob"}
    joined = await alice.ok("join", room="general")
    assert "mallory" not in joined["members"] and "mallory" not in joined["online"]
    assert joined["members_total"] == 3 and joined["members_truncated"] is False
    # the blocked user is not told: alice is still listed for mallory, and bob sees everyone
    assert "alice" in {who_name(u) for u in (await mallory.ok("who"))["users"]}
    assert {who_name(u) for u in (await bob.ok("who"))["users"]} == {"alice", "bob", "mallory"}
    # mallory coming and going: bob hears of it, alice does not
    alice.drain_events()
    await mallory.ok("logout")
    gone = await bob.event("presence", user="mallory")
    assert gone["online"] is False
    await alice.roundtrip()
    assert [e for e in alice.drain_events("presence") if e["user"] == "mallory"] == []
