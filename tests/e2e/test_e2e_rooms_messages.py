"""Sections 4-5 over real sockets: rooms, ordered messages, resend, history, since, edit/delete."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from e2e_helpers import Wire

UserFactory = Callable[..., Awaitable[Wire]]


def room_name(entry: dict[str, Any]) -> str:
    # docs/protocol.md names the key "name"; accept "room" as well
    name = entry.get("name", entry.get("room"))
    assert isinstance(name, str)
    return name


async def test_default_rooms_join_leave_and_admin_room_management(user: UserFactory) -> None:
    admin = await user("admin")
    alice = await user("alice")
    rooms = (await alice.ok("rooms"))["rooms"]
    assert {room_name(r) for r in rooms} == {"general", "random", "help"}

    await admin.ok("join", room="general")
    joined = await alice.ok("join", room="general")
    assert set(joined["members"]) == {"admin", "alice"} and joined["last_seq"] == 0
    await admin.event("joined", room="general", user="alice")
    await alice.ok("join", room="random")  # several rooms at once
    counts = {room_name(r): r for r in (await alice.ok("rooms"))["rooms"]}
    assert counts["general"]["online"] == 2 and counts["general"]["joined"]

    assert (await alice.error("room_create", room="ops"))["code"] == "forbidden"
    await admin.ok("room_create", room="ops")
    await alice.event("room_created", room="ops")
    await admin.ok("room_rename", room="ops", new_name="operations")
    await alice.event("room_renamed", room="ops", new_name="operations")
    await admin.ok("room_delete", room="operations")
    await alice.event("room_deleted", room="operations")
    assert (await alice.error("join", room="operations"))["code"] == "unknown_room"

    await alice.ok("leave", room="general")
    await admin.event("left", room="general", user="alice")


async def test_messages_reach_every_member_in_order(user: UserFactory) -> None:
    members = [await user(name) for name in ("alice", "bob", "carol")]
    for m in members:
        await m.ok("join", room="general")
    n = 30
    sends = [
        members[i % 3].send("send", room="general", text=f"m{i}", client_id=f"id-{i}")
        for i in range(n)
    ]
    acks = await asyncio.wait_for(asyncio.gather(*sends), 15)
    assert all(a["type"] == "ok" for a in acks), acks
    assert sorted(a["data"]["seq"] for a in acks) == list(range(1, n + 1))
    for m in members:
        got = [await m.event("message", room="general") for _ in range(n)]
        assert [e["seq"] for e in got] == list(range(1, n + 1))
        # the text order equals the sequence order, and seq matches each sender's ack
        by_seq = {a["data"]["seq"]: a["data"]["client_id"] for a in acks}
        assert all(by_seq[e["seq"]] == e["client_id"] for e in got)


async def test_resend_with_same_client_id_is_stored_once(user: UserFactory) -> None:
    alice, bob = await user("alice"), await user("bob")
    await alice.ok("join", room="general")
    await bob.ok("join", room="general")
    first = await alice.ok("send", room="general", text="only once", client_id="dup-1")
    again = await alice.ok("send", room="general", text="only once", client_id="dup-1")
    assert (first["seq"], first["ts"], first["duplicate"]) == (again["seq"], again["ts"], False)
    assert again["duplicate"] is True
    await alice.ok("send", room="general", text="next", client_id="dup-2")
    got = [await bob.event("message") for _ in range(2)]
    assert [e["text"] for e in got] == ["only once", "next"]
    await bob.roundtrip()
    assert bob.drain_events("message") == []
    history = (await bob.ok("history", room="general"))["messages"]
    assert [m["text"] for m in history] == ["only once", "next"]


async def test_history_paging_and_since(user: UserFactory) -> None:
    alice = await user("alice")
    await alice.ok("join", room="general")
    acks = [
        await alice.ok("send", room="general", text=f"t{i}", client_id=f"c{i}") for i in range(10)
    ]
    page = await alice.ok("history", room="general", before=6, limit=3)
    assert [m["seq"] for m in page["messages"]] == [3, 4, 5] and page["has_more"]
    first = await alice.ok("history", room="general", before=3, limit=5)
    assert [m["seq"] for m in first["messages"]] == [1, 2] and not first["has_more"]
    since = await alice.ok("since", ts=acks[7]["ts"], rooms=["general"])
    assert [m["seq"] for m in since["messages"]] == [8, 9, 10]
    joined = await (await user("bob")).ok("join", room="general", limit=4)
    assert [m["seq"] for m in joined["messages"]] == [7, 8, 9, 10]


async def test_edit_and_delete_own_messages_admin_deletes_any(user: UserFactory) -> None:
    alice, bob, admin = await user("alice"), await user("bob"), await user("admin")
    for c in (alice, bob, admin):
        await c.ok("join", room="general")
    s1 = await alice.ok("send", room="general", text="helo", client_id="a1")
    s2 = await alice.ok("send", room="general", text="second", client_id="a2")
    edited = await alice.ok("edit", room="general", seq=s1["seq"], text="hello")
    assert edited["message"]["text"] == "hello" and edited["message"]["edited"]
    ev = await bob.event("message_edited", seq=s1["seq"])
    assert ev["text"] == "hello"
    assert (await bob.error("edit", room="general", seq=s1["seq"], text="x"))["code"] == (
        "forbidden"
    )
    assert (await bob.error("delete", room="general", seq=s2["seq"]))["code"] == "forbidden"
    await admin.ok("delete", room="general", seq=s2["seq"])
    gone = await bob.event("message_deleted", seq=s2["seq"])
    assert gone["text"] is None and gone["deleted"]
    history = (await bob.ok("history", room="general"))["messages"]
    assert [(m["text"], m["edited"], m["deleted"]) for m in history] == [
        ("hello", True, False),  # current text with the edited mark
        (None, False, True),  # tombstone: the sequence has no hole
    ]
    await alice.ok("delete", room="general", seq=s1["seq"])  # edited, then deleted
    tomb = (await bob.ok("history", room="general", before=s2["seq"]))["messages"]
    assert [(m["text"], m["edited"], m["deleted"]) for m in tomb] == [(None, True, True)]
    assert (await alice.error("edit", room="general", seq=s1["seq"], text="x"))["code"] == (
        "message_not_found"
    )
    assert (await alice.error("edit", room="general", seq=99, text="x"))["code"] == (
        "message_not_found"
    )
