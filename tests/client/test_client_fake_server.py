"""The client library against the in-memory fake server over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from parlour.client import (
    Backoff,
    Client,
    ClientClosed,
    ConnectionLost,
    ConnectionState,
    ServerError,
)
from parlour.protocol import ErrorCode, Event, EventName, Resume
from parlour.server.testing import ChatTestServer

FAST = Backoff(base=0.01, maximum=0.05)


@pytest.fixture
async def server() -> AsyncIterator[ChatTestServer]:
    async with ChatTestServer() as srv:
        await srv.add_user("alice", "alice-password")
        await srv.add_user("bob", "bob-password")
        yield srv


async def next_event(client: Client, name: EventName, timeout: float = 5.0) -> Event:
    async def find() -> Event:
        async for event in client.events():
            if event.name is name:
                return event
        raise AssertionError(f"events ended before {name}")

    return await asyncio.wait_for(find(), timeout)


async def test_hello_login_join_send_and_events(server: ChatTestServer) -> None:
    async with Client("127.0.0.1", server.port) as alice:
        assert alice.welcome is not None and alice.welcome.version == 1
        session = await alice.login("alice", "alice-password")
        assert session.username == "alice" and not session.is_admin
        joined = await alice.join("general")
        assert joined.room == "general" and "alice" in joined.members
        ack = await alice.send("general", "hello")
        assert (ack.room, ack.seq, ack.duplicate) == ("general", 1, False)
        event = await next_event(alice, EventName.MESSAGE)
        assert event["text"] == "hello" and event["from"] == "alice"
        page = await alice.history("general")
        assert [m.text for m in page.messages] == ["hello"]
        assert [r.name for r in await alice.rooms()] == ["general", "random"]
        assert await alice.ping() > 0


async def test_server_errors_are_typed(server: ChatTestServer) -> None:
    async with Client("127.0.0.1", server.port) as c:
        with pytest.raises(ServerError) as info:
            await c.login("alice", "wrong-password")
        assert info.value.code is ErrorCode.BAD_CREDENTIALS
        with pytest.raises(ServerError) as info:
            await c.rooms()
        assert info.value.code is ErrorCode.NOT_AUTHENTICATED
        await c.login("alice", "alice-password")
        with pytest.raises(ServerError) as info:
            await c.send("general", "not a member yet")
        assert info.value.code is ErrorCode.NOT_MEMBER
        with pytest.raises(ServerError) as info:
            await c.dm("alice", "me")
        assert info.value.code is ErrorCode.SELF_MESSAGE
        with pytest.raises(ServerError) as info:
            await c.kick("bob")
        assert info.value.code is ErrorCode.FORBIDDEN


async def test_dm_between_two_clients_and_offline_delivery(server: ChatTestServer) -> None:
    async with Client("127.0.0.1", server.port) as alice:
        await alice.login("alice", "alice-password")
        await alice.dm("bob", "while you were out")
        async with Client("127.0.0.1", server.port) as bob:
            await bob.login("bob", "bob-password")
            offline = await next_event(bob, EventName.DM)
            assert offline["text"] == "while you were out" and offline["peer"] == "alice"
            await alice.dm("bob", "live now")
            live = await next_event(bob, EventName.DM)
            assert live["text"] == "live now" and live["seq"] == 2


async def test_resend_after_lost_reply_uses_same_client_id(server: ChatTestServer) -> None:
    states: list[ConnectionState] = []
    async with Client(
        "127.0.0.1", server.port, backoff=FAST, on_state=lambda s, _: states.append(s)
    ) as alice:
        await alice.login("alice", "alice-password")
        await alice.join("general")
        server.drop_reply("send")  # stored, then the connection dies before the ack
        ack = await alice.send("general", "exactly once")
        assert ack.duplicate is True and ack.seq == 1
        sends = server.requests_of("send")
        assert len(sends) == 2 and sends[0]["client_id"] == sends[1]["client_id"]
        assert sends[0]["id"] != sends[1]["id"]
        assert [m.text for m in server.room_messages("general")] == ["exactly once"]
        assert alice.reconnects == 1
        assert ConnectionState.DISCONNECTED in states and states[-1] is ConnectionState.CONNECTED
        # the re-login happened with the stored credentials before the resend
        assert [r["type"] for r in server.received[-3:]] == ["hello", "login", "send"]


async def test_dm_resend_is_idempotent(server: ChatTestServer) -> None:
    async with Client("127.0.0.1", server.port, backoff=FAST) as alice:
        await alice.login("alice", "alice-password")
        server.drop_reply("dm")
        ack = await alice.dm("bob", "once")
        assert ack.duplicate and ack.peer == "bob"
        assert len(server.dm_messages("alice", "bob")) == 1


async def test_reconnect_resumes_missed_room_messages_in_order(server: ChatTestServer) -> None:
    async with (
        Client("127.0.0.1", server.port, backoff=FAST) as alice,
        Client("127.0.0.1", server.port, backoff=FAST) as bob,
    ):
        await alice.login("alice", "alice-password")
        await bob.login("bob", "bob-password")
        await alice.join("general")
        await bob.join("general")
        await bob.send("general", "one")
        assert (await next_event(alice, EventName.MESSAGE))["seq"] == 1
        # the server goes away; bob's messages written meanwhile are missed by alice
        await server.stop()
        await server.start()
        await bob.send("general", "two")  # bob reconnects (resend) and posts
        await bob.send("general", "three")
        got = [await next_event(alice, EventName.MESSAGE) for _ in range(2)]
        assert [(e["seq"], e["text"]) for e in got] == [(2, "two"), (3, "three")]
        logins = [r for r in server.requests_of("login") if r["username"] == "alice"]
        assert logins[-1]["resume"]["rooms"]["general"] >= 1
        assert alice.cursors.rooms["general"] == 3


async def test_resume_overlap_is_deduplicated(server: ChatTestServer) -> None:
    async with Client("127.0.0.1", server.port, backoff=FAST) as alice:
        await alice.login("alice", "alice-password")
        await alice.join("general")
        await alice.send("general", "a")
        await alice.send("general", "b")
        first = [await next_event(alice, EventName.MESSAGE) for _ in range(2)]
        assert [e["seq"] for e in first] == [1, 2]
        await alice.sync(Resume(rooms={"general": 0}))
        await alice.send("general", "c")
        event = await next_event(alice, EventName.MESSAGE)
        assert event["seq"] == 3  # 1 and 2 were replayed by sync and dropped as duplicates


async def test_non_idempotent_request_is_not_retried(server: ChatTestServer) -> None:
    async with Client("127.0.0.1", server.port, backoff=FAST) as alice:
        await alice.login("alice", "alice-password")
        server.drop_reply("block")
        with pytest.raises(ConnectionLost):
            await alice.block("bob")
        # the client reconnects by itself and stays usable
        assert await alice.blocks() == ["bob"]


async def test_heartbeat_pings_when_idle(server: ChatTestServer) -> None:
    async with Client("127.0.0.1", server.port, heartbeat_s=0.02) as c:
        await server.wait_for(lambda: len(server.requests_of("ping")) >= 2)
        assert c.connected


async def test_kick_ends_the_client_without_reconnect(server: ChatTestServer) -> None:
    async with (
        Client("127.0.0.1", server.port, backoff=FAST) as admin,
        Client("127.0.0.1", server.port, backoff=FAST) as bob,
    ):
        await admin.login("admin", "admin-password")
        await bob.login("bob", "bob-password")
        result = await admin.kick("bob", reason="flooding")
        assert result.sessions == 1
        kicked = await next_event(bob, EventName.KICKED)
        assert kicked["reason"] == "flooding"
        reason = await asyncio.wait_for(bob.wait_closed(), 5)
        assert "kicked" in reason
        with pytest.raises(ClientClosed):
            await bob.rooms()


async def test_gives_up_after_max_attempts(server: ChatTestServer) -> None:
    c = Client("127.0.0.1", server.port, backoff=Backoff(base=0.001, max_attempts=2))
    await c.connect()
    await server.stop()
    reason = await asyncio.wait_for(c.wait_closed(), 5)
    assert "gave up" in reason
    with pytest.raises(ClientClosed):
        await c.ping()
    events = [e async for e in c.events()]  # ends at once
    assert events == []
    await c.close()


async def test_bad_credentials_on_relogin_stop_the_client(server: ChatTestServer) -> None:
    async with Client("127.0.0.1", server.port, backoff=FAST) as alice:
        await alice.login("alice", "alice-password")
        server.set_password("alice", "changed-elsewhere")
        server.disconnect_all()
        reason = await asyncio.wait_for(alice.wait_closed(), 5)
        assert "cannot log in again" in reason


async def test_connect_refused_raises_oserror() -> None:
    async with ChatTestServer() as srv:
        port = srv.port
    with pytest.raises(OSError):
        await Client("127.0.0.1", port).connect()


async def test_moderation_and_misc_requests(server: ChatTestServer) -> None:
    async with Client("127.0.0.1", server.port) as admin:
        await admin.login("admin", "admin-password")
        ban = await admin.ban("bob", duration=60, reason="spam")
        assert ban.user == "bob" and ban.until is not None
        assert [b.user for b in await admin.bans()] == ["bob"]
        await admin.unban("bob")
        assert await admin.bans() == []
        with pytest.raises(ServerError) as not_banned:
            await admin.unban("bob")
        assert not_banned.value.code is ErrorCode.NOT_BANNED
        assert await admin.broadcast("hi all") == 1
        await admin.join("general")
        ack = await admin.send("general", "typo")
        edited = await admin.edit(ack.seq, "fixed", room="general")
        assert edited.text == "fixed" and edited.edited
        deleted = await admin.delete(ack.seq, room="general")
        assert deleted.deleted and deleted.text is None
        page = await admin.since(0)
        assert [m.deleted for m in page.messages] == [True]
        who = await admin.who()
        assert [u.username for u in who] == ["admin"]
        await admin.passwd("admin-password", "new-admin-password")
        await admin.leave("general")
        await admin.logout()
        assert admin.session is None


async def test_truncated_catch_up_is_followed_to_the_end() -> None:
    async with ChatTestServer(catch_up_messages=7) as srv:
        await srv.add_user("alice", "alice-password")
        await srv.add_user("bob", "bob-password")
        async with Client("127.0.0.1", srv.port) as bob:
            await bob.login("bob", "bob-password")
            for i in range(20):
                await bob.dm("alice", f"d{i}")  # alice is offline
        got: dict[str, list[str]] = {"dm": [], "message": []}
        changed = asyncio.Event()
        async with Client("127.0.0.1", srv.port, backoff=FAST) as alice:

            async def collect() -> None:
                async for event in alice.events():
                    if event.name in (EventName.DM, EventName.MESSAGE):
                        got[event.name.value].append(event["text"])
                        changed.set()

            async def until(n_dm: int, n_msg: int) -> None:
                while (len(got["dm"]), len(got["message"])) != (n_dm, n_msg):
                    changed.clear()
                    await asyncio.wait_for(changed.wait(), 10)

            collector = asyncio.create_task(collect())
            session = await alice.login("alice", "alice-password")
            assert session.truncated  # 20 offline DMs, 7 per push: synced in parts
            await alice.join("general")  # empty: resumed from 0
            await until(20, 0)
            await asyncio.wait_for(alice.wait_caught_up(), 10)
            await srv.stop()  # alice is away ...
            for i in range(50):
                srv.post("general", "bob", f"g{i}")  # ... while #general goes on
            await srv.start()
            await until(20, 50)
            await asyncio.wait_for(alice.wait_caught_up(), 10)
            assert got["dm"] == [f"d{i}" for i in range(20)]
            assert got["message"] == [f"g{i}" for i in range(50)]
            assert alice.catch_up_rounds >= 2 + 7 and alice.reconnects == 1
            assert alice.cursors.snapshot() == {
                "rooms": {"general": 50},
                "dms": {"bob": 20},
                "broadcasts": None,
            }
            cursors = [s["resume"]["rooms"].get("general", 0) for s in srv.requests_of("sync")]
            assert cursors == sorted(cursors)  # each sync from further on
            collector.cancel()
