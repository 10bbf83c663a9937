"""Read markers and broadcast resume through the client library, over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from parlour.client import Backoff, Client, Unread
from parlour.protocol import BroadcastEvent, EventName, ReadMarkerEvent
from parlour.server.testing import ChatTestServer

FAST = Backoff(base=0.01, maximum=0.05)


@pytest.fixture
async def server() -> AsyncIterator[ChatTestServer]:
    async with ChatTestServer() as srv:
        await srv.add_user("alice", "alice-password")
        await srv.add_user("bob", "bob-password")
        yield srv


async def first(client: Client, name: EventName) -> object:
    async def find() -> object:
        async for event in client.events():
            if event.name is name:
                return event
        raise AssertionError(f"events ended before {name}")

    return await asyncio.wait_for(find(), 5)


async def test_unread_counts_and_a_marker_shared_by_two_sessions(server: ChatTestServer) -> None:
    async with (
        Client("127.0.0.1", server.port) as laptop,
        Client("127.0.0.1", server.port) as phone,
        Client("127.0.0.1", server.port) as bob,
    ):
        await laptop.login("alice", "alice-password")
        await phone.login("alice", "alice-password")
        await bob.login("bob", "bob-password")
        await laptop.join("general")
        await bob.join("general")
        acks = [await bob.send("general", text) for text in ("hi", "@alice look", "bye")]
        await bob.dm("alice", "psst")
        rows = {(r.room, r.peer): r for r in await phone.unread()}
        general = rows[("general", None)]
        assert (general.unread, general.mentions, general.read_seq) == (3, 1, 0)
        assert general.last_seq == acks[-1].seq and not general.capped
        assert (rows[(None, "bob")].unread, rows[(None, "bob")].mentions) == (1, 1)

        assert await laptop.mark_read(acks[1].seq, "general") == acks[1].seq
        moved = await first(phone, EventName.READ_MARKER)
        assert isinstance(moved, ReadMarkerEvent)
        assert (moved.room, moved.peer, moved.seq) == ("general", None, acks[1].seq)
        assert await phone.mark_read(1, "general") == acks[1].seq  # never back
        assert await phone.mark_read(10, peer="bob") == 1
        after = {(r.room, r.peer): r for r in await laptop.unread()}
        assert after[("general", None)] == Unread("general", None, 3, 2, 1, 0, False)
        assert after[(None, "bob")].unread == 0


async def test_a_reconnect_resumes_broadcasts_without_repeats(server: ChatTestServer) -> None:
    async with (
        Client("127.0.0.1", server.port, backoff=FAST) as alice,
        Client("127.0.0.1", server.port, backoff=FAST) as admin,
    ):
        await alice.login("alice", "alice-password")
        await admin.login("admin", server.admin_password)
        await admin.broadcast("one")
        got = await first(alice, EventName.BROADCAST)
        assert isinstance(got, BroadcastEvent) and got.text == "one"
        assert alice.cursors.broadcasts == got.seq

        server.disconnect_all()
        await server.wait_for(lambda: len(server.requests_of("login")) >= 4)
        resumed = server.requests_of("login")[-2:]
        mine = next(r for r in resumed if r["username"] == "alice")
        assert mine["resume"]["broadcasts"] == got.seq
        await alice.ping()
        await admin.ping()
        await admin.broadcast("two")
        second = await first(alice, EventName.BROADCAST)
        assert isinstance(second, BroadcastEvent)
        assert (second.text, second.seq) == ("two", got.seq + 1)
