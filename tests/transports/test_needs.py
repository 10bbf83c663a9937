"""The adapter's side of the core's needs: a bounded password pool that drops the work of
departed connections, and store reads that never block other connections."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from parlour.core.needs import HashPassword, Verified, VerifyPassword
from parlour.core.records import StoredMessage
from parlour.server.app import ChatServer
from parlour.server.config import Settings
from parlour.server.testing import PlainHasher
from parlour.storage.memory import MemoryStore
from parlour.storage.reads import InlineReads
from parlour.transports.needs import NeedRunner, ServerBusy

TIMEOUT = 10


class GateHasher(PlainHasher):
    """Blocks every hash until `gate` opens; counts the hashes that ran."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)
        self.ran: list[str] = []

    def hash(self, password: str) -> str:
        self.started.release()
        if not self.gate.wait(TIMEOUT):
            raise AssertionError("gate never opened")
        self.ran.append(password)
        return super().hash(password)


async def test_password_answers() -> None:
    runner = NeedRunner(PlainHasher(), InlineReads(MemoryStore()))
    try:
        answers = await runner.satisfy(
            1, (HashPassword("pw-1"), VerifyPassword("plain$pw-2", "pw-2"))
        )
        assert answers == {
            HashPassword("pw-1"): "plain$pw-1",
            VerifyPassword("plain$pw-2", "pw-2"): Verified(True),
        }
        wrong = await runner.satisfy(1, (VerifyPassword("plain$pw-2", "nope"),))
        assert wrong == {VerifyPassword("plain$pw-2", "nope"): Verified(False)}
        assert runner.hashed == 3 and runner.queued == 0
    finally:
        runner.close()


async def test_full_queue_refuses_at_once_and_a_departed_connection_costs_nothing() -> None:
    hasher = GateHasher()
    runner = NeedRunner(hasher, InlineReads(MemoryStore()), threads=1, max_queued=3)
    try:
        running = asyncio.ensure_future(runner.satisfy(1, (HashPassword("first"),)))
        assert await asyncio.to_thread(hasher.started.acquire, True, TIMEOUT)
        queued = [
            asyncio.ensure_future(runner.satisfy(2, (HashPassword(f"gone-{i}"),))) for i in range(2)
        ]
        await asyncio.sleep(0)
        assert runner.queued == 3
        with pytest.raises(ServerBusy) as busy:
            await runner.satisfy(3, (HashPassword("one-too-many"),))
        assert busy.value.retry_after > 0 and runner.refused == 1
        assert runner.cancel(2) == 2  # connection 2 went away: its queued hashes are dropped
        for task in queued:
            with pytest.raises(asyncio.CancelledError):
                await task
        assert runner.queued == 1
        hasher.gate.set()
        assert await asyncio.wait_for(running, TIMEOUT) == {HashPassword("first"): "plain$first"}
        assert hasher.ran == ["first"] and runner.dropped == 2 and runner.queued == 0
    finally:
        hasher.gate.set()
        runner.close()


class GatedReads(InlineReads):
    """`since` reads wait for `gate` (a slow store)."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def messages_since(
        self, rooms: Sequence[str], ts: float, limit: int
    ) -> list[StoredMessage]:
        self.waiting.set()
        await self.gate.wait()
        return await super().messages_since(rooms, ts, limit)


class Line:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.rid = 0

    def send(self, type: str, **fields: Any) -> int:
        import json

        self.rid += 1
        self.writer.write(json.dumps({"id": self.rid, "type": type, **fields}).encode() + b"\n")
        return self.rid

    async def reply(self, rid: int) -> dict[str, Any]:
        import json

        while True:
            line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
            assert line, "connection closed"
            frame: dict[str, Any] = json.loads(line)
            if frame.get("id") == rid:
                return frame

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def ok(self, type: str, **fields: Any) -> dict[str, Any]:
        frame = await self.reply(self.send(type, **fields))
        assert frame["type"] == "ok", frame
        return frame


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[ChatServer, GatedReads]]:
    store = MemoryStore()
    reads = GatedReads(store)
    settings = Settings(port=0, store="memory", admin_password="admin-password", rate=1000.0)
    server = await ChatServer.start(
        settings, password_hasher=PlainHasher(), store=store, reads=reads
    )
    yield server, reads
    reads.gate.set()
    await server.stop(grace=2)


async def _user(port: int, name: str) -> Line:
    line = Line(*await asyncio.open_connection("127.0.0.1", port))
    await line.ok("hello", version=1)
    await line.ok("signup", username=name, password="password-1")
    await line.ok("join", room="general")
    return line


async def test_a_slow_store_read_does_not_block_other_connections(
    gated: tuple[ChatServer, GatedReads],
) -> None:
    server, reads = gated
    alice, bob = await _user(server.port, "alice"), await _user(server.port, "bob")
    since = alice.send("since", ts=0)  # needs the store: the read hangs
    after = alice.send("ping")  # alice's next request waits for its turn
    await asyncio.wait_for(reads.waiting.wait(), TIMEOUT)
    # meanwhile bob is served at once: a send, its event, history from memory, a ping
    sent = await bob.ok("send", room="general", text="while alice waits", client_id="b1")
    assert sent["data"]["seq"] == 1
    assert (await bob.ok("history", room="general"))["data"]["messages"][0]["text"] == (
        "while alice waits"
    )
    await bob.ok("ping")
    assert not reads.gate.is_set()
    reads.gate.set()
    answer = await alice.reply(since)
    assert answer["type"] == "ok" and [m["text"] for m in answer["data"]["messages"]] == [
        "while alice waits"
    ]
    assert (await alice.reply(after))["type"] == "ok"
    await alice.close()
    await bob.close()


class OrderHasher(PlainHasher):
    """Blocks the first hash until `gate` opens, then records the order hashes ran in."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)
        self.order: list[str] = []

    def hash(self, password: str) -> str:
        if not self.order and not self.gate.is_set():
            self.started.release()
            self.gate.wait(TIMEOUT)
        self.order.append(password)
        return super().hash(password)


async def test_password_work_is_served_round_robin_across_addresses() -> None:
    """A flood of sign-ups from one address delays that address, not another's login."""
    hasher = OrderHasher()
    runner = NeedRunner(hasher, InlineReads(MemoryStore()), threads=1)
    try:
        flood = [
            asyncio.ensure_future(runner.satisfy(1, (HashPassword(f"a{i}"),), "10.0.0.1"))
            for i in range(10)
        ]
        assert await asyncio.to_thread(hasher.started.acquire, True, TIMEOUT)
        other = asyncio.ensure_future(runner.satisfy(2, (HashPassword("b0"),), "10.0.0.2"))
        await asyncio.sleep(0)
        hasher.gate.set()
        await asyncio.wait_for(asyncio.gather(other, *flood), TIMEOUT)
        assert hasher.order.index("b0") <= 2  # behind at most the job running and one more
        assert sorted(hasher.order) == sorted([f"a{i}" for i in range(10)] + ["b0"])
    finally:
        hasher.gate.set()
        runner.close()


async def test_one_address_cannot_fill_the_queue_for_everyone() -> None:
    hasher = GateHasher()
    runner = NeedRunner(hasher, InlineReads(MemoryStore()), threads=1, per_address=4)
    try:
        mine = [
            asyncio.ensure_future(runner.satisfy(1, (HashPassword(f"m{i}"),), "10.0.0.1"))
            for i in range(4)
        ]
        await asyncio.sleep(0)
        with pytest.raises(ServerBusy):
            await runner.satisfy(1, (HashPassword("one-more"),), "10.0.0.1")
        others = asyncio.ensure_future(runner.satisfy(2, (HashPassword("o"),), "10.0.0.2"))
        hasher.gate.set()
        assert await asyncio.wait_for(others, TIMEOUT) == {HashPassword("o"): "plain$o"}
        await asyncio.wait_for(asyncio.gather(*mine), TIMEOUT)
    finally:
        hasher.gate.set()
        runner.close()


async def test_an_unknown_user_costs_a_real_verification() -> None:
    """Issue 10: an unknown name was answered at once, a wrong password after Argon2."""

    class Counting(PlainHasher):
        verifies = 0

        def verify(self, hash: str, password: str) -> bool:
            Counting.verifies += 1
            return super().verify(hash, password)

    runner = NeedRunner(Counting(), InlineReads(MemoryStore()))
    try:
        need = VerifyPassword("", "guess")
        assert await runner.satisfy(1, (need,), "10.0.0.1") == {need: Verified(False)}
        assert Counting.verifies == 1 and runner.hashed == 1
    finally:
        runner.close()
