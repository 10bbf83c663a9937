"""Satisfying the core's needs: Argon2 in a bounded pool, history from the store's reads.

`NeedRunner.satisfy(conn, needs)` computes the answers to what one round of the core asked
for (`parlour.core.needs`). Password work runs in a small thread pool whose queue is bounded:
when `max_queued` hashes are waiting or running, a new one is refused at once with
`ServerBusy` (the client is told to retry later) rather than queued behind work nobody may be
waiting for. `cancel(conn)` drops the queued work of a connection that went away, so a crowd
of clients that gave up (a reconnect storm after a restart) costs nothing once they are gone.
Store reads go through the `Reads` port (a thread pool for SQLite, natively asynchronous for
PostgreSQL).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from parlour.core.needs import (
    HashPassword,
    Need,
    ReadDm,
    ReadRoom,
    ReadSince,
    Verified,
    VerifyPassword,
)
from parlour.core.ports import PasswordHasher, Reads

__all__ = ["NeedRunner", "ServerBusy"]

log = logging.getLogger("parlour.transports.needs")

T = TypeVar("T")


class ServerBusy(Exception):
    """Too much password work is queued: refuse, and say when to try again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"password work queue full; retry in {retry_after:g} s")
        self.retry_after = retry_after


class NeedRunner:
    def __init__(
        self,
        hasher: PasswordHasher,
        reads: Reads,
        *,
        threads: int = 2,
        max_queued: int = 1024,
        retry_after: float = 1.0,
    ) -> None:
        self._hasher = hasher
        self._reads = reads
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, threads), thread_name_prefix="parlour-hash"
        )
        self.max_queued = max(1, max_queued)
        self.retry_after = retry_after
        self._jobs: dict[concurrent.futures.Future[Any], int | None] = {}
        self.hashed = 0
        self.refused = 0
        self.dropped = 0

    @property
    def queued(self) -> int:
        """Password jobs waiting or running."""
        return len(self._jobs)

    async def satisfy(self, conn: int | None, needs: tuple[Need, ...]) -> dict[Need, Any]:
        """The answers to `needs` (for connection `conn`, None for the server itself)."""
        if len(needs) == 1:
            return {needs[0]: await self._one(conn, needs[0])}
        answers = await asyncio.gather(*(self._one(conn, n) for n in needs))
        return dict(zip(needs, answers, strict=True))

    async def _one(self, conn: int | None, need: Need) -> Any:
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
        if isinstance(need, HashPassword):
            password = need.password
            return await self._hash(conn, lambda: self._hasher.hash(password))
        if isinstance(need, VerifyPassword):
            return await self._hash(conn, lambda: self._verify(need))
        raise TypeError(f"unknown need {type(need).__name__}")

    def _verify(self, need: VerifyPassword) -> Verified:
        hasher = self._hasher
        if not hasher.verify(need.hash, need.password):
            return Verified(False)
        new = hasher.hash(need.password) if hasher.needs_rehash(need.hash) else None
        return Verified(True, new)

    async def _hash(self, conn: int | None, work: Callable[[], T]) -> T:
        if len(self._jobs) >= self.max_queued:
            self.refused += 1
            raise ServerBusy(self.retry_after)
        job = self._executor.submit(work)
        self._jobs[job] = conn
        waiting = asyncio.wrap_future(job)
        waiting.add_done_callback(lambda _: self._jobs.pop(job, None))
        result: T = await waiting
        self.hashed += 1
        return result

    def cancel(self, conn: int) -> int:
        """Drop the password work of `conn` that has not started; returns how many jobs."""
        dropped = 0
        for job, owner in list(self._jobs.items()):
            if owner == conn and job.cancel():
                dropped += 1
        self.dropped += dropped
        return dropped

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
