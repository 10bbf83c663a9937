"""Satisfying the core's needs: Argon2 in a bounded, fair pool; history from the store's reads.

`NeedRunner.satisfy(conn, needs, address)` computes the answers to what one round of the core
asked for (`parlour.core.needs`).

Password work runs in a few threads. Jobs waiting for a thread are kept here, on the event
loop's thread, in one queue per client address, and threads take them **round robin across
addresses**: a hundred connections from one address sending sign-ups delay that address's own
work, not everyone else's login. Both the whole queue (`max_queued`) and each address's share
of it (`per_address`) are bounded: a job beyond either is refused at once with `ServerBusy`
(the client is told when to try again, from how long the queue takes to drain) rather than
queued behind work nobody may be waiting for. `cancel(conn)` drops the waiting jobs of a
connection that went away, so a crowd of clients that gave up (a reconnect storm after a
restart) costs nothing once they are gone.

A `VerifyPassword` with an empty hash (a login for a name that does not exist) is checked
against a dummy hash made with the same parameters, so that it costs the same time as a wrong
password and answers `Verified(False)`.

Store reads go through the `Reads` port (a thread pool for SQLite, natively asynchronous for
PostgreSQL). A file transfer's id is drawn here (`secrets`) with its relay tickets from the
`tickets` function of the node's relay (it holds the relay's secret).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from parlour.core.needs import (
    HashPassword,
    Need,
    ReadBroadcasts,
    ReadDm,
    ReadFile,
    ReadFileUsage,
    ReadRoom,
    ReadSince,
    RelayTickets,
    Verified,
    VerifyPassword,
)
from parlour.core.ports import PasswordHasher, Reads

__all__ = ["NeedRunner", "ServerBusy"]

log = logging.getLogger("parlour.transports.needs")


class ServerBusy(Exception):
    """Too much password work is queued: refuse, and say when to try again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"password work queue full; retry in {retry_after:g} s")
        self.retry_after = retry_after


class _Job:
    __slots__ = ("address", "conn", "future", "work")

    def __init__(
        self,
        work: Callable[[], Any],
        conn: int | None,
        address: str,
        future: asyncio.Future[Any],
    ) -> None:
        self.work = work
        self.conn = conn
        self.address = address
        self.future = future


class NeedRunner:
    def __init__(
        self,
        hasher: PasswordHasher,
        reads: Reads,
        *,
        threads: int = 2,
        max_queued: int = 256,
        per_address: int = 32,
        tickets: Callable[[bytes], tuple[bytes, bytes]] | None = None,
    ) -> None:
        self._hasher = hasher
        self._reads = reads
        self._tickets = tickets
        self.threads = max(1, threads)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.threads, thread_name_prefix="parlour-hash"
        )
        self.max_queued = max(1, max_queued)
        self.per_address = max(1, per_address)
        #: waiting jobs per address, in the order addresses are served (round robin)
        self._waiting: OrderedDict[str, deque[_Job]] = OrderedDict()
        self._waiting_count = 0
        self._running = 0
        #: waiting or running jobs per address and per connection
        self._per_address: dict[str, int] = {}
        self._per_conn: dict[int, set[_Job]] = {}
        self._dummy: str | None = None
        #: seconds one password job takes (moving average; for `retry_after`)
        self.job_seconds = 0.05
        self.hashed = 0
        self.refused = 0
        self.dropped = 0

    @property
    def queued(self) -> int:
        """Password jobs waiting or running."""
        return self._waiting_count + self._running

    async def satisfy(
        self, conn: int | None, needs: tuple[Need, ...], address: str = ""
    ) -> dict[Need, Any]:
        """The answers to `needs` (for connection `conn` from `address`; None and "" for the
        server itself)."""
        if len(needs) == 1:
            return {needs[0]: await self._one(conn, address, needs[0])}
        answers = await asyncio.gather(*(self._one(conn, address, n) for n in needs))
        return dict(zip(needs, answers, strict=True))

    async def _one(self, conn: int | None, address: str, need: Need) -> Any:
        if isinstance(need, RelayTickets):
            if self._tickets is None:
                raise RuntimeError("relay tickets asked for but this node runs no relay")
            transfer_id = secrets.token_bytes(8)
            return (transfer_id, *self._tickets(transfer_id))
        reads = self._reads
        if isinstance(need, ReadRoom):
            return await reads.room_messages(
                need.room, before=need.before, after=need.after, limit=need.limit
            )
        if isinstance(need, ReadDm):
            return await reads.dm_messages(
                need.conv, before=need.before, after=need.after, limit=need.limit
            )
        if isinstance(need, ReadSince):
            return await reads.messages_since(need.rooms, need.ts, need.limit)
        if isinstance(need, ReadBroadcasts):
            return await reads.broadcasts(after=need.after, limit=need.limit)
        if isinstance(need, ReadFile):
            return await reads.file(need.file_id)
        if isinstance(need, ReadFileUsage):
            return await reads.file_usage(need.user)
        if isinstance(need, HashPassword):
            password = need.password
            return await self._hash(conn, address, lambda: self._hasher.hash(password))
        if isinstance(need, VerifyPassword):
            return await self._hash(conn, address, lambda: self._verify(need))
        raise TypeError(f"unknown need {type(need).__name__}")

    def _verify(self, need: VerifyPassword) -> Verified:
        hasher = self._hasher
        if not need.hash:
            dummy = self._dummy
            if dummy is None:  # made once, with the parameters every real hash has
                dummy = self._dummy = hasher.hash(secrets.token_hex(16))
            hasher.verify(dummy, need.password)
            return Verified(False)
        if not hasher.verify(need.hash, need.password):
            return Verified(False)
        new = hasher.hash(need.password) if hasher.needs_rehash(need.hash) else None
        return Verified(True, new)

    # ------------------------------------------------------------------ the fair pool

    def _retry_after(self) -> float:
        """How long the work queued now takes to drain (at least a second)."""
        backlog = self.queued * self.job_seconds / self.threads
        return float(max(1, math.ceil(backlog)))

    async def _hash(self, conn: int | None, address: str, work: Callable[[], Any]) -> Any:
        if self.queued >= self.max_queued or self._per_address.get(address, 0) >= (
            self.per_address
        ):
            self.refused += 1
            raise ServerBusy(self._retry_after())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        job = _Job(work, conn, address, future)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        if conn is not None:
            self._per_conn.setdefault(conn, set()).add(job)
        queue = self._waiting.get(address)
        if queue is None:
            queue = self._waiting[address] = deque()
        queue.append(job)
        self._waiting_count += 1
        self._pump()
        try:
            result = await future
        finally:
            self._forget(job)
        self.hashed += 1
        return result

    def _forget(self, job: _Job) -> None:
        left = self._per_address.get(job.address, 1) - 1
        if left > 0:
            self._per_address[job.address] = left
        else:
            self._per_address.pop(job.address, None)
        if job.conn is not None:
            jobs = self._per_conn.get(job.conn)
            if jobs is not None:
                jobs.discard(job)
                if not jobs:
                    del self._per_conn[job.conn]

    def _pump(self) -> None:
        """Start waiting jobs while threads are free, one address after another."""
        while self._running < self.threads and self._waiting:
            address, queue = next(iter(self._waiting.items()))
            job = queue.popleft()
            self._waiting_count -= 1
            if queue:
                self._waiting.move_to_end(address)  # its next job waits for the others' turn
            else:
                del self._waiting[address]
            if job.future.done():  # cancelled while it waited
                continue
            self._running += 1
            started = time.perf_counter()
            done = self._executor.submit(job.work)
            done.add_done_callback(functools.partial(self._from_thread, job, started))

    def _from_thread(self, job: _Job, started: float, done: concurrent.futures.Future[Any]) -> None:
        # runs in the worker thread (or where the job was cancelled): back to the loop
        job.future.get_loop().call_soon_threadsafe(self._finished, job, done, started)

    def _finished(self, job: _Job, done: concurrent.futures.Future[Any], started: float) -> None:
        self._running -= 1
        elapsed = time.perf_counter() - started
        self.job_seconds += 0.1 * (elapsed - self.job_seconds)
        if not job.future.done():
            exc = done.exception()
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(done.result())
        self._pump()

    def cancel(self, conn: int) -> int:
        """Drop the password work of `conn` that has not started; returns how many jobs."""
        dropped = 0
        for job in list(self._per_conn.get(conn, ())):
            queue = self._waiting.get(job.address)
            if queue is not None and job in queue:
                queue.remove(job)
                self._waiting_count -= 1
                if not queue:
                    del self._waiting[job.address]
                job.future.cancel()
                dropped += 1
        self.dropped += dropped
        return dropped

    def close(self) -> None:
        for queue in self._waiting.values():
            for job in queue:
                job.future.cancel()
        self._waiting.clear()
        self._waiting_count = 0
        self._executor.shutdown(wait=True, cancel_futures=True)
