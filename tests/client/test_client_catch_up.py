"""The client follows a bounded (truncated) catch-up to the end, against the real server.

An in-process ``parlour serve`` on 127.0.0.1 with a small send queue (so each ``login``/``sync``
pushes only a few dozen messages) and a relay in front of alice's connection that the test
cuts and holds shut while others talk, so alice reconnects after a long absence.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from parlour.client import Backoff, Client, ConnectionState
from parlour.core.passwords import Argon2Hasher
from parlour.protocol import EventName
from parlour.server.app import ChatServer
from parlour.server.config import Settings

PASSWORD = "correct horse"
FAST = Backoff(base=0.01, maximum=0.05)


class Relay:
    """A TCP relay on 127.0.0.1:0 that can cut its connections and refuse new ones."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.open = asyncio.Event()
        self.open.set()
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open.is_set():
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._links.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._links.difference_update((writer, up_writer))

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones until :meth:`restore`."""
        self.open.clear()
        for link in list(self._links):
            link.transport.abort()

    def restore(self) -> None:
        self.open.set()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ChatServer]:
    settings = dataclasses.replace(
        Settings(port=0, data_dir=tmp_path / "data", admin_password="admin-password-1"),
        max_frame=4096,
        send_queue_max=16384,  # catch-up budget: 8 KiB per login/sync, a few dozen messages
        rate=1e6,
        burst=1_000_000,
    )
    srv = await ChatServer.start(
        settings,
        password_hasher=Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1),
        tick_interval=0.2,
    )
    yield srv
    await srv.stop(grace=2)


@pytest.fixture
async def relay(server: ChatServer) -> AsyncIterator[Relay]:
    r = Relay(server.port)
    await r.start()
    yield r
    await r.close()


class Collector:
    """Consumes a client's events; remembers message/dm seqs per room and peer."""

    def __init__(self, client: Client) -> None:
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.texts: dict[str, list[str]] = defaultdict(list)
        self.changed = asyncio.Event()
        self.pause = asyncio.Event()
        self.pause.set()
        self._task = asyncio.create_task(self._run(client))

    async def _run(self, client: Client) -> None:
        async for event in client.events():
            await self.pause.wait()
            if event.name is EventName.MESSAGE:
                key = f"#{event.fields['room']}"
            elif event.name is EventName.DM:
                key = f"@{event.fields['peer']}"
            else:
                continue
            self.seqs[key].append(event.fields["seq"])
            self.texts[key].append(event.fields["text"])
            self.changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            ranges = {k: (len(v), v[:1], v[-1:]) for k, v in self.seqs.items()}
            raise AssertionError(f"not all messages arrived: {ranges}") from None

    def count(self) -> int:
        return sum(len(v) for v in self.seqs.values())

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def member(port: int, name: str, rooms: tuple[str, ...]) -> Client:
    client = Client("127.0.0.1", port, backoff=FAST)
    await client.connect()
    await client.signup(name, PASSWORD)
    for room in rooms:
        await client.join(room)
    return client


async def burst(make: Callable[[int], Awaitable[object]], n: int, width: int = 100) -> None:
    for start in range(0, n, width):
        await asyncio.gather(*(make(i) for i in range(start, min(n, start + width))))


async def cut_off(relay: Relay, wait_state: Callable[[ConnectionState], Awaitable[None]]) -> None:
    """Cut the client's connection at the relay and wait until the client has noticed."""
    disconnected = asyncio.ensure_future(wait_state(ConnectionState.DISCONNECTED))
    relay.cut()
    await disconnected


def state_waiter(client: Client) -> Callable[[ConnectionState], Awaitable[None]]:
    """``await wait_for(state)``: the next time the client reports ``state``."""
    waiting: dict[ConnectionState, asyncio.Future[None]] = {}

    def on_state(state: ConnectionState, detail: str) -> None:
        fut = waiting.pop(state, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    client._on_state = on_state

    async def wait(state: ConnectionState) -> None:
        fut = waiting.setdefault(state, asyncio.get_running_loop().create_future())
        await asyncio.wait_for(fut, 30)

    return wait


async def absent_alice(
    server: ChatServer, relay: Relay, **options: object
) -> tuple[Client, Client, Client, Collector, Callable[[ConnectionState], Awaitable[None]]]:
    """alice (through the relay), bob and carol in #general and #random; alice has seen one
    message in each room and one DM from bob, then loses her connection (held down)."""
    alice = Client("127.0.0.1", relay.port, backoff=FAST, **options)  # type: ignore[arg-type]
    wait_state = state_waiter(alice)
    await alice.connect()
    await alice.signup("alice", PASSWORD)
    await alice.join("general")
    await alice.join("random")
    bob = await member(server.port, "bob", ("general", "random"))
    carol = await member(server.port, "carol", ("general", "random"))
    seen = Collector(alice)
    await bob.send("general", "g-warm")
    await carol.send("random", "r-warm")
    await bob.dm("alice", "d-warm")
    await seen.until(lambda: seen.count() == 3)
    await cut_off(relay, wait_state)
    return alice, bob, carol, seen, wait_state


def assert_in_order_once(seen: Collector, key: str, first: int, last: int) -> None:
    got = seen.seqs[key]
    breaks = [(a, b) for a, b in itertools.pairwise(got) if b != a + 1]
    assert got == list(range(first, last + 1)), f"{key}: {len(got)} messages, breaks {breaks[:5]}"


async def test_client_gets_5000_missed_messages_once_and_in_order(
    server: ChatServer, relay: Relay
) -> None:
    alice, bob, carol, seen, wait_state = await absent_alice(server, relay)
    # while alice is away: 2000 + 1500 room messages, 800 DMs from bob (a peer she has a
    # cursor for) and 700 from carol (new: offline delivery)
    await burst(lambda i: bob.send("general", f"g{i}"), 2000)
    await burst(lambda i: carol.send("random", f"r{i}"), 1500)
    await burst(lambda i: bob.dm("alice", f"b{i}"), 800)
    await burst(lambda i: carol.dm("alice", f"c{i}"), 700)

    connected = asyncio.ensure_future(wait_state(ConnectionState.CONNECTED))
    relay.restore()
    await connected
    assert alice.session is not None and alice.session.truncated
    await asyncio.wait_for(alice.wait_caught_up(), 60)
    await seen.until(lambda: seen.count() == 3 + 5000)

    assert_in_order_once(seen, "#general", 1, 2001)
    assert_in_order_once(seen, "#random", 1, 1501)
    assert_in_order_once(seen, "@bob", 1, 801)
    assert_in_order_once(seen, "@carol", 1, 700)
    assert seen.texts["#general"][1:] == [f"g{i}" for i in range(2000)]
    assert seen.texts["@carol"] == [f"c{i}" for i in range(700)]
    assert alice.catch_up_rounds > 10  # it really came in many parts
    assert alice.dropped_events == 0
    assert server.endpoint.hub.stats.slow_consumers == 0
    # nothing more arrives afterwards (no duplicates trickling in): a round trip settles it
    await alice.ping()
    assert seen.count() == 3 + 5000
    for c in (alice, bob, carol):
        await c.close()
    await seen.stop()


async def test_client_catch_up_with_live_traffic_interleaved(
    server: ChatServer, relay: Relay
) -> None:
    alice, bob, carol, seen, wait_state = await absent_alice(server, relay)
    await burst(lambda i: bob.send("general", f"g{i}"), 1000)
    await burst(lambda i: bob.dm("alice", f"b{i}"), 300)
    await burst(lambda i: carol.send("random", f"r{i}"), 500)

    connected = asyncio.ensure_future(wait_state(ConnectionState.CONNECTED))
    relay.restore()

    async def live() -> None:  # goes on while alice catches up, in rooms she is behind in
        await connected
        for i in range(1000, 1600, 20):
            await asyncio.gather(
                *(bob.send("general", f"g{j}") for j in range(i, i + 20)),
                carol.dm("alice", f"c{i}"),
            )

    await live()
    await asyncio.wait_for(alice.wait_caught_up(), 60)
    total = 3 + 1600 + 300 + 500 + 30
    await seen.until(lambda: seen.count() >= total)
    assert_in_order_once(seen, "#general", 1, 1601)
    assert_in_order_once(seen, "@bob", 1, 301)
    assert_in_order_once(seen, "#random", 1, 501)
    assert_in_order_once(seen, "@carol", 1, 30)
    assert seen.texts["#general"][1:] == [f"g{i}" for i in range(1600)]
    await alice.ping()
    assert seen.count() == total
    for c in (alice, bob, carol):
        await c.close()
    await seen.stop()


async def test_client_catch_up_pauses_for_a_slow_event_consumer(
    server: ChatServer, relay: Relay
) -> None:
    alice, bob, carol, seen, wait_state = await absent_alice(server, relay, max_events=300)
    await burst(lambda i: bob.send("general", f"g{i}"), 1200)
    seen.pause.clear()  # the application stops reading events for a while
    connected = asyncio.ensure_future(wait_state(ConnectionState.CONNECTED))
    relay.restore()
    await connected

    # the catch-up waits for room instead of dropping events
    await asyncio.wait_for(alice.catch_up_paused.wait(), 30)
    assert alice.catching_up and alice.dropped_events == 0
    # joining the room again (the terminal client's "switch to it") skips nothing
    assert (await alice.join("general")).last_seq == 1201
    seen.pause.set()
    await asyncio.wait_for(alice.wait_caught_up(), 60)
    await seen.until(lambda: len(seen.seqs["#general"]) == 1201)
    assert_in_order_once(seen, "#general", 1, 1201)
    assert alice.dropped_events == 0
    for c in (alice, bob, carol):
        await c.close()
    await seen.stop()


async def test_client_joined_empty_room_is_resumed(server: ChatServer, relay: Relay) -> None:
    """A room joined while empty has a cursor (0), so what was said in it while the client
    was away comes with the resume."""
    alice = Client("127.0.0.1", relay.port, backoff=FAST)
    wait_state = state_waiter(alice)
    await alice.connect()
    await alice.signup("alice", PASSWORD)
    assert (await alice.join("help")).last_seq == 0
    bob = await member(server.port, "bob", ("help",))
    seen = Collector(alice)
    await cut_off(relay, wait_state)
    await burst(lambda i: bob.send("help", f"h{i}"), 5)
    relay.restore()
    await seen.until(lambda: len(seen.seqs["#help"]) == 5)
    assert_in_order_once(seen, "#help", 1, 5)
    await alice.close()
    await bob.close()
    await seen.stop()


async def test_client_member_rooms_without_messages_are_resumed(
    server: ChatServer, relay: Relay
) -> None:
    """Rooms the account is a member of (from an earlier session) get a cursor at login, so
    what was said in them while this client was disconnected comes with the resume."""
    first = await member(server.port, "alice", ("general",))
    await first.close()
    bob = await member(server.port, "bob", ("general",))
    await bob.send("general", "before alice logged in")
    alice = Client("127.0.0.1", relay.port, backoff=FAST)
    wait_state = state_waiter(alice)
    await alice.connect()
    session = await alice.login("alice", PASSWORD)
    assert session.rooms == ("general",) and alice.cursors.rooms == {"general": 1}
    seen = Collector(alice)
    await cut_off(relay, wait_state)
    await burst(lambda i: bob.send("general", f"g{i}"), 5)
    relay.restore()
    await seen.until(lambda: len(seen.seqs["#general"]) == 5)
    assert_in_order_once(seen, "#general", 2, 6)
    await alice.close()
    await bob.close()
    await seen.stop()
