"""Group-commit writer: a dedicated thread that applies queued writes in batches.

``submit(writes)`` is called on the event loop and returns a future that resolves after the
transaction holding those writes has committed (durable). The thread takes *everything* queued
(up to ``max_batch`` outcomes) into one transaction, so under load one fsync covers hundreds of
messages; when idle a single write commits at once. Futures are resolved in submission order,
with one thread-to-loop hop per batch (not per write).

If a batch fails as a whole, its outcomes are retried one by one so that one bad write only fails
its own future.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["GroupCommitWriter", "WriterClosed", "WriterStats"]

log = logging.getLogger("parlour.storage.writer")

ApplyBatch = Callable[[Sequence[Sequence[Any]]], None]


class WriterClosed(RuntimeError):
    """The writer is closed; nothing more can be submitted."""


@dataclass(slots=True)
class WriterStats:
    batches: int = 0
    outcomes: int = 0
    largest_batch: int = 0
    busy_seconds: float = 0.0
    slowest_commit: float = 0.0


class GroupCommitWriter:
    def __init__(self, apply_batch: ApplyBatch, *, max_batch: int = 4096, name: str) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._apply_batch = apply_batch
        self._max_batch = max_batch
        self._name = name
        self._queue: deque[tuple[Sequence[Any], asyncio.Future[None]]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done = threading.Event()
        self._pending = 0
        #: the writer thread is about to wait (or waits) for work: submit must notify it.
        #: Set before the thread checks the queue, so a submit never goes unnoticed; while
        #: the thread is busy committing, submit takes no lock at all.
        self._idle = False
        self._listeners: list[Callable[[], None]] = []
        self.stats = WriterStats()

    @property
    def pending(self) -> int:
        """Outcomes submitted and not yet resolved (queued or being committed)."""
        return self._pending

    def add_resolved_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` on the loop after each batch's futures are resolved: one call per
        batch, so a consumer need not add a done-callback to every future."""
        self._listeners.append(listener)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self._thread is not None:
            raise RuntimeError("writer already started")
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def submit(self, writes: Sequence[Any]) -> asyncio.Future[None]:
        """Queue ``writes`` (one outcome's); the future resolves once they are committed."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("writer not started")
        if self._closing:  # set on the loop thread, like every submit
            raise WriterClosed("the store writer is closed")
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.append((writes, fut))  # deque.append is atomic
        self._pending += 1
        if self._idle:
            with self._cond:
                self._cond.notify()
        return fut

    async def close(self) -> None:
        """Commit everything already submitted, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._done.wait)
            self._thread.join()
        # Let the last resolve callbacks run.
        await asyncio.sleep(0)

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        try:
            while True:
                if not self._queue:
                    with self._cond:
                        self._idle = True
                        while not self._queue and not self._closing:
                            self._cond.wait()
                        self._idle = False
                    if not self._queue:
                        return
                queue = self._queue
                n = min(len(queue), self._max_batch)
                batch = [queue.popleft() for _ in range(n)]
                started = time.perf_counter()
                results = self._commit(batch)
                st = self.stats
                took = time.perf_counter() - started
                st.busy_seconds += took
                st.slowest_commit = max(st.slowest_commit, took)
                st.batches += 1
                st.outcomes += n
                st.largest_batch = max(st.largest_batch, n)
                assert self._loop is not None
                try:
                    self._loop.call_soon_threadsafe(self._resolve, batch, results)
                except RuntimeError:  # loop closed: nobody is waiting any more
                    return
        finally:
            self._done.set()

    def _commit(
        self, batch: list[tuple[Sequence[Any], asyncio.Future[None]]]
    ) -> list[BaseException | None]:
        try:
            self._apply_batch([writes for writes, _ in batch])
            return [None] * len(batch)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("store write failed")
                return [exc]
        results: list[BaseException | None] = []
        for writes, _ in batch:
            try:
                self._apply_batch([writes])
                results.append(None)
            except Exception as exc:
                log.exception("store write failed")
                results.append(exc)
        return results

    def _resolve(
        self,
        batch: list[tuple[Sequence[Any], asyncio.Future[None]]],
        results: list[BaseException | None],
    ) -> None:
        self._pending -= len(batch)
        for (_, fut), exc in zip(batch, results, strict=True):
            if fut.done():
                continue
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
        for listener in self._listeners:
            listener()
