"""Three nodes in one process on one store (the memory store, which assigns sequence numbers
the way PostgreSQL does) and an in-process bus: the cluster logic without any service —
one order for everyone, DMs across nodes, idempotent resends on another node, bans,
presence and the duplicate-login policy across nodes, gaps filled from the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from cluster_helpers import PASSWORD, close_all, eventually, recording_client, tally

from cluster_services import FlakyStore
from parlour.bus.memory import InProcessBus
from parlour.client import Client, ServerError
from parlour.core.ports import BusMessage
from parlour.protocol import JoinedEvent, PresenceEvent, ReadMarkerEvent
from parlour.server.app import ChatServer
from parlour.server.config import Settings
from parlour.server.testing import PlainHasher
from parlour.storage.memory import MemoryStore

Nodes = Callable[..., Awaitable[list[ChatServer]]]


class LossyBus(InProcessBus):
    """An in-process bus that can drop messages (what Redis pub/sub does to a node that is
    disconnected)."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = False
        self.dropped = 0

    def publish(self, message: BusMessage) -> None:
        if self.drop:
            self.dropped += 1
            return
        super().publish(message)


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    started: list[ChatServer] = []

    async def make(
        n: int = 3,
        *,
        bus: InProcessBus | None = None,
        store: MemoryStore | None = None,
        first: int = 0,
        **settings: Any,
    ) -> list[ChatServer]:
        store = store or MemoryStore()
        shared = bus or InProcessBus()
        base = Settings(
            port=0,
            store="memory",
            web=False,
            admin_password="admin-password-1",
            rate=10_000.0,
            burst=10_000,
            max_connections_per_address=0,
            **settings,
        )
        out = []
        for i in range(n):
            server = await ChatServer.start(
                base,
                password_hasher=PlainHasher(),
                store=store,
                bus=shared,
                bus_node=f"n{first + i}",
                core_overrides={"cluster": True},
            )
            started.append(server)
            out.append(server)
        return out

    yield make
    for server in started:
        with contextlib.suppress(Exception):
            await server.stop(grace=1.0)


async def test_users_on_three_nodes_see_one_order(nodes: Nodes) -> None:
    servers = await nodes(3)
    clients: list[Client] = []
    recs = []
    try:
        for i, server in enumerate(servers * 2):  # two users per node
            c, rec = await recording_client(server.port)
            await c.signup(f"user{i}", PASSWORD)
            await c.join("general")
            clients.append(c)
            recs.append(rec)
        acks = await asyncio.gather(
            *(c.send("general", f"{i}-{k}") for k in range(20) for i, c in enumerate(clients))
        )
        acked = {a.seq for a in acks}
        assert acked == set(range(1, len(acks) + 1))  # gap-free, each once
        await eventually(
            lambda: all(set(r.room.get("general", [])) >= acked for r in recs), "every delivery"
        )
        t = tally(acked, [r.room["general"] for r in recs])
        print("in-process, 3 nodes:", t)
        assert (t.lost, t.duplicated, t.out_of_order) == (0, 0, 0)
        # a resend to another node (user0's second session, on node 1) is recognised
        first = next(a for a in acks if a.seq == 1)
        sender = next(i for i, c in enumerate(clients) for a in [first] if a in acks[i::6])
        other, _ = await recording_client(servers[(sender + 1) % 3].port)
        clients.append(other)
        await other.login(f"user{sender}", PASSWORD)
        again = await other.send("general", "again", client_id=first.client_id)
        assert again.duplicate and again.seq == first.seq
    finally:
        await close_all(clients)


async def test_dms_presence_ban_and_login_policy_across_nodes(nodes: Nodes) -> None:
    a_node, b_node, c_node = await nodes(3, duplicate_login="replace")
    alice, arec = await recording_client(a_node.port)
    bob, brec = await recording_client(b_node.port)
    admin, _ = await recording_client(c_node.port)
    extra: list[Client] = []
    try:
        await alice.signup("alice", PASSWORD)
        await bob.signup("bob", PASSWORD)
        await admin.login("admin", "admin-password-1")
        for c in (alice, bob):
            await c.join("general")
        # DMs between nodes, both ways, in order
        for k in range(5):
            await alice.dm("bob", f"a{k}")
            await bob.dm("alice", f"b{k}")
        await eventually(lambda: len(brec.dm.get("alice", [])) == 10, "bob's DMs")
        await eventually(lambda: len(arec.dm.get("bob", [])) == 10, "alice's DMs")
        assert brec.dm["alice"] == list(range(1, 11)) == arec.dm["bob"]
        # presence: bob (node b) sees carol come online on node c
        carol, _ = await recording_client(c_node.port)
        extra.append(carol)
        await carol.signup("carol", PASSWORD)
        await carol.join("general")
        who = {u.username: u.online for u in await alice.who()}
        assert who.get("carol") is True and who.get("bob") is True
        # duplicate login, `replace`: carol logs in on node a, her session on c ends
        carol2, _ = await recording_client(a_node.port, reconnect=False)
        extra.append(carol2)
        await carol2.login("carol", PASSWORD)
        await asyncio.wait_for(carol.wait_closed(), 10)
        # a ban on node c ends bob's session on node b at once
        started = asyncio.get_running_loop().time()
        await admin.ban("bob", reason="spam")
        reason = await asyncio.wait_for(bob.wait_closed(), 5)
        assert "banned" in reason
        assert asyncio.get_running_loop().time() - started < 1.0
        again = Client("127.0.0.1", b_node.port, reconnect=False)
        extra.append(again)
        await again.connect()
        with pytest.raises(ServerError) as info:
            await again.login("bob", PASSWORD)
        assert info.value.code == "banned"
    finally:
        await close_all([alice, bob, admin, *extra])


async def test_a_lost_bus_message_is_read_from_the_store(nodes: Nodes) -> None:
    bus = LossyBus()
    a_node, b_node = await nodes(2, bus=bus)
    alice, _ = await recording_client(a_node.port)
    bob, brec = await recording_client(b_node.port)
    try:
        await alice.signup("alice", PASSWORD)
        await bob.signup("bob", PASSWORD)
        await alice.join("general")
        await bob.join("general")
        bus.drop = True
        lost = [await alice.send("general", f"lost {k}") for k in range(3)]
        bus.drop = False
        later = await alice.send("general", "after")  # reveals the gap on node b
        assert bus.dropped >= 3
        want = [a.seq for a in [*lost, later]]
        await eventually(lambda: brec.room.get("general", []) == want, "the gap filled")
        # and a lost message followed by silence is found by the heads check
        bus.drop = True
        quiet = await alice.send("general", "nobody follows")
        bus.drop = False
        b_node.cluster.poll_interval = 0.1  # type: ignore[union-attr]
        await eventually(lambda: brec.room["general"][-1:] == [quiet.seq], "the heads check")
    finally:
        await close_all([alice, bob])


async def test_reject_policy_kick_and_password_change_across_nodes(nodes: Nodes) -> None:
    a_node, b_node = await nodes(2, duplicate_login="reject")
    frank, _ = await recording_client(a_node.port, reconnect=False)
    admin, _ = await recording_client(b_node.port)
    extra: list[Client] = []
    try:
        await frank.signup("frank", PASSWORD)
        await admin.login("admin", "admin-password-1")
        # `reject`: frank is live on node a, so a second login on node b is refused
        second = Client("127.0.0.1", b_node.port, reconnect=False)
        extra.append(second)
        await second.connect()
        with pytest.raises(ServerError) as info:
            await second.login("frank", PASSWORD)
        assert info.value.code == "already_logged_in"
        # a server-wide kick on node b ends frank's session on node a
        await admin.kick("frank", reason="testing")
        assert "kicked" in await asyncio.wait_for(frank.wait_closed(), 5)
        # now he may log in on node b; he changes his password there and logs out
        on_b = Client("127.0.0.1", b_node.port, reconnect=False)
        extra.append(on_b)
        await on_b.connect()
        await on_b.login("frank", PASSWORD)
        await on_b.passwd(PASSWORD, "new-password-456")
        await on_b.logout()
        # node a knows the new password (and not the old one any more)
        on_a = Client("127.0.0.1", a_node.port, reconnect=False)
        extra.append(on_a)
        await on_a.connect()
        with pytest.raises(ServerError) as info:
            await on_a.login("frank", PASSWORD)
        assert info.value.code == "bad_credentials"
        await on_a.login("frank", "new-password-456")
    finally:
        await close_all([frank, admin, *extra])


async def test_a_sign_up_the_store_did_not_take_leaves_no_session(nodes: Nodes) -> None:
    """The store is down when a sign-up is committed: the client is told `unavailable`, the
    session it would have opened is undone, and the library's retry on the same connection
    signs up for real; nobody was told of the first attempt."""
    store = FlakyStore()
    (node,) = await nodes(1, store=store)
    watcher, wrec = await recording_client(node.port)
    newcomer, _ = await recording_client(node.port)
    try:
        await watcher.signup("watcher", PASSWORD)
        await watcher.join("general")
        store.down = 1
        session = await newcomer.signup("newcomer", PASSWORD)  # retried after `unavailable`
        assert session.username == "newcomer"
        await newcomer.join("general")
        ack = await newcomer.send("general", "here at last")
        await eventually(lambda: ack.seq in wrec.room.get("general", []), "the message")
        assert store.down == 0  # the first attempt did fail
        assert [u.name for u in store.load().users].count("newcomer") == 1
    finally:
        await close_all([watcher, newcomer])


async def test_a_read_marker_moved_on_one_node_reaches_sessions_on_another(nodes: Nodes) -> None:
    """Alice reads on her laptop (node a); her phone (node b) hears `read_marker`, for the room
    and for her DM conversation with bob, and the marker never moves back."""
    a_node, b_node = await nodes(2)
    laptop, lrec = await recording_client(a_node.port)
    phone, prec = await recording_client(b_node.port)
    bob, _ = await recording_client(b_node.port)
    try:
        await laptop.signup("alice", PASSWORD)
        await phone.login("alice", PASSWORD)
        await bob.signup("bob", PASSWORD)
        for c in (laptop, bob):
            await c.join("general")
        acks = [await bob.send("general", f"m{k}") for k in range(3)]
        dm = await bob.dm("alice", "psst")

        def markers() -> list[tuple[str | None, str | None, int]]:
            return [(e.room, e.peer, e.seq) for e in prec.other if isinstance(e, ReadMarkerEvent)]

        await eventually(
            lambda: (
                acks[-1].seq in lrec.room.get("general", []) and dm.seq in lrec.dm.get("bob", [])
            ),
            "node a has the messages",
        )
        assert await laptop.mark_read(acks[1].seq, "general") == acks[1].seq
        await eventually(lambda: ("general", None, acks[1].seq) in markers(), "room marker")
        assert await laptop.mark_read(dm.seq, peer="bob") == dm.seq
        await eventually(lambda: (None, "bob", dm.seq) in markers(), "DM marker")
        assert await laptop.mark_read(1, "general") == acks[1].seq  # never back
        rows = {(r.room, r.peer): r for r in await phone.unread()}
        assert rows[("general", None)].read_seq == acks[1].seq
        assert rows[(None, "bob")].unread == 0
        assert markers() == [("general", None, acks[1].seq), (None, "bob", dm.seq)]
    finally:
        await close_all([laptop, phone, bob])


async def test_login_throttles_hold_on_every_node_and_on_a_node_started_later(
    nodes: Nodes,
) -> None:
    store, bus = MemoryStore(), InProcessBus()
    a, b = await nodes(2, store=store, bus=bus)
    clients: list[Client] = []
    try:
        owner = Client("127.0.0.1", a.port)
        clients.append(owner)
        await owner.connect()
        await owner.signup("vic", PASSWORD)
        await owner.close()
        guesser = Client("127.0.0.1", a.port)
        clients.append(guesser)
        await guesser.connect()
        codes = []
        for k in range(3):  # three wrong passwords on node 0 lock the (name, address) pair
            with pytest.raises(ServerError) as wrong:
                await guesser.login("vic", f"guess-{k}")
            codes.append(wrong.value.code)
        assert codes == ["bad_credentials", "bad_credentials", "locked_out"]

        async def login_on(server: ChatServer) -> str:
            c = Client("127.0.0.1", server.port)
            clients.append(c)
            await c.connect()
            try:
                await c.login("vic", PASSWORD)
            except ServerError as exc:
                return exc.code
            return "ok"

        # node 1 heard of the failures: the right password waits there too
        assert await login_on(b) == "locked_out"
        # a node that starts now replays the bus's journal: no fresh start for the guesser
        [c] = await nodes(1, store=store, bus=bus, first=2)
        assert await login_on(c) == "locked_out"
        # and without the journal it would have let the password through (the test can fail)
        bus._journal.clear()
        [d] = await nodes(1, store=store, bus=bus, first=3)
        assert await login_on(d) == "ok"
    finally:
        await close_all(clients)


async def test_events_for_sessions_only_on_other_nodes_reach_them(nodes: Nodes) -> None:
    """An event nobody on the origin node receives still travels: dana, alone on node 0,
    joins a room and comes online again; erin, in that room on node 1, hears both."""
    a, b = await nodes(2)
    dana, _ = await recording_client(a.port, reconnect=False)
    erin, erec = await recording_client(b.port)
    clients = [dana, erin]
    try:
        await erin.signup("erin", PASSWORD)
        await erin.join("general")
        await dana.signup("dana", PASSWORD)
        await dana.join("general")  # nobody else is on node 0
        await eventually(
            lambda: any(isinstance(e, JoinedEvent) and e.user == "dana" for e in erec.other),
            "erin hears dana join",
        )
        await dana.close()
        await eventually(
            lambda: any(
                isinstance(e, PresenceEvent) and e.user == "dana" and not e.online
                for e in erec.other
            ),
            "erin hears dana go offline",
        )
        again, _ = await recording_client(a.port)
        clients.append(again)
        await again.login("dana", PASSWORD)
        await eventually(
            lambda: any(
                isinstance(e, PresenceEvent) and e.user == "dana" and e.online for e in erec.other
            ),
            "erin hears dana come online",
        )
    finally:
        await close_all(clients)
