"""The one place where "acknowledge only after durable" is enforced.

Every outcome of the core goes through :meth:`Pipeline.apply`: its writes are submitted to the
store writer (group commit) and the outcome is dispatched by the hub only once they are
committed. Outcomes are dispatched strictly in the order the core produced them (an outcome
without writes waits behind earlier ones that are still being committed), so per-room order on
the wire equals sequence order and a reply never overtakes the effects it reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from parlour.core.outcome import ConnId, Delivery, Outcome
from parlour.core.ports import StoreUnavailable
from parlour.protocol import Error, ErrorCode
from parlour.transports.hub import Hub

__all__ = ["Admit", "Complete", "InlineWriter", "Pipeline", "StoreWriter"]

#: seconds a client is told to wait after `unavailable` (the store could not be reached)
UNAVAILABLE_RETRY = 1.0

log = logging.getLogger("parlour.transports.pipeline")


class StoreWriter(Protocol):
    """Applies writes durably; ``submit`` resolves after they are committed."""

    @property
    def pending(self) -> int: ...

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None: ...

    def submit(self, writes: Sequence[Any]) -> asyncio.Future[Any]: ...

    async def close(self) -> None: ...


class InlineWriter:
    """Applies writes synchronously on the loop (for the memory store: nothing to wait for)."""

    def __init__(self, apply: Callable[[Sequence[Any]], Any]) -> None:
        self._apply = apply
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pending(self) -> int:
        return 0

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop if loop is not None else asyncio.get_running_loop()

    def submit(self, writes: Sequence[Any]) -> asyncio.Future[Any]:
        assert self._loop is not None, "writer not started"
        fut: asyncio.Future[Any] = self._loop.create_future()
        try:
            result = self._apply(writes)
        except Exception as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
        return fut

    async def close(self) -> None:
        return None


Done = Callable[[], None]

#: hands an outcome's deliveries on (the server publishes them on the bus, whose subscriber
#: for this node gives them to the hub; without one they go straight to the hub)
Deliver = Callable[[tuple[Delivery, ...]], None]

#: several nodes: called when an outcome is applied, before its writes are committed
Admit = Callable[[Outcome, "ConnId | None"], None]
#: several nodes: called when an outcome's writes are committed (with what the writer
#: returned) or failed (with the exception), before it is dispatched, with the outcome as
#: applied and the one the pipeline would dispatch (on failure: the error reply only);
#: returns the outcome to dispatch (its reply completed with what the store assigned)
Complete = Callable[[Outcome, Any, "ConnId | None", Outcome], Outcome]


class Pipeline:
    """Orders outcomes through the store writer and hands them to the hub."""

    def __init__(
        self,
        writer: StoreWriter,
        hub: Hub,
        deliver: Deliver | None = None,
        *,
        admit: Admit | None = None,
        complete: Complete | None = None,
    ) -> None:
        self._writer = writer
        self._hub = hub
        self.deliver: Deliver = deliver if deliver is not None else hub.deliver_all
        self.admit = admit
        self.complete = complete
        self._queue: deque[tuple[asyncio.Future[None] | None, Outcome, ConnId | None, Done | None]]
        self._queue = deque()
        self._idle: asyncio.Event | None = None
        # A writer that reports each resolved batch (the SQLite group-commit writer) saves a
        # done-callback per outcome; any other writer is followed future by future.
        listen = getattr(writer, "add_resolved_listener", None)
        self._per_future = not callable(listen)
        if callable(listen):
            listen(self._drain)
        self.storage_failures = 0
        self.dispatch_failures = 0

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def apply(self, outcome: Outcome, conn: ConnId | None, done: Done | None = None) -> None:
        """Commit ``outcome.writes`` (if any), then dispatch the outcome, in order.

        ``done`` is called right after the outcome has been dispatched.
        """
        if self.admit is not None:
            self.admit(outcome, conn)
        fut = self._submit(outcome.writes) if outcome.writes else None
        if not self._queue and (fut is None or fut.done()):
            self._dispatch(fut, outcome, conn, done)
            return
        self._queue.append((fut, outcome, conn, done))
        if fut is not None and (self._per_future or fut.done()):
            # (a future already done was refused by the writer: its listener never fires)
            fut.add_done_callback(self._drain)

    def _submit(self, writes: Sequence[Any]) -> asyncio.Future[Any]:
        """Submit to the writer; a writer that refuses (closed during shutdown, or any other
        error) yields a failed future, so the outcome takes the storage-failure path: its
        requester gets ``internal_error`` in order and the caller carries on."""
        try:
            return self._writer.submit(writes)
        except Exception as exc:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            fut.set_exception(exc)
            return fut

    def _drain(self, _fut: object = None) -> None:
        q = self._queue
        while q:
            fut = q[0][0]
            if fut is not None and not fut.done():
                break
            _, outcome, conn, done = q.popleft()
            self._dispatch(fut, outcome, conn, done)
        if not q and self._idle is not None:
            self._idle.set()

    def _dispatch(
        self,
        fut: asyncio.Future[Any] | None,
        outcome: Outcome,
        conn: ConnId | None,
        done: Done | None,
    ) -> None:
        failed = fut.exception() if fut is not None else None
        applied = outcome
        if failed is not None:
            # Not durable: never acknowledge. The requester learns it failed; nobody else
            # hears of it. The core's hot state may be ahead of the store until restart.
            self.storage_failures += 1
            if isinstance(failed, StoreUnavailable):
                log.warning(
                    "store unavailable; outcome not delivered",
                    extra={"fields": {"conn": conn, "why": str(failed)}},
                )
            else:
                log.error(
                    "storage write failed; outcome not delivered",
                    exc_info=failed,
                    extra={"fields": {"conn": conn}},
                )
            reply = outcome.reply
            if conn is not None and reply is not None:
                rid = getattr(reply, "id", None)
                if isinstance(failed, StoreUnavailable):
                    failure = Error(
                        rid,
                        ErrorCode.UNAVAILABLE.value,
                        "the database cannot be reached; nothing was done; try again",
                        {"retry_after": UNAVAILABLE_RETRY},
                    )
                else:
                    failure = Error(
                        rid, ErrorCode.INTERNAL_ERROR.value, "storage failure; try again"
                    )
                outcome = Outcome(reply=failure)
            else:
                outcome = Outcome()
        complete = self.complete
        if complete is not None:
            try:
                result = failed if failed is not None else fut.result() if fut is not None else None
                outcome = complete(applied, result, conn, outcome)
            except Exception:
                self.dispatch_failures += 1
                log.exception("completing an outcome failed", extra={"fields": {"conn": conn}})
        try:
            hub = self._hub
            if outcome.reply is not None and conn is not None:
                hub.reply(conn, outcome.reply)
            if outcome.deliveries:
                self.deliver(outcome.deliveries)
            for target, code, reason in outcome.close:
                hub.close(target, code, reason)
        except Exception:
            # One outcome that cannot be sent (a bug: an unencodable value, say) must not
            # hold up the ones queued behind it: log it and go on in order.
            self.dispatch_failures += 1
            log.exception("dispatching an outcome failed", extra={"fields": {"conn": conn}})
            self._reply_instead(outcome, conn)
        if done is not None:
            try:
                done()
            except Exception:
                log.exception("outcome callback failed", extra={"fields": {"conn": conn}})

    def _reply_instead(self, outcome: Outcome, conn: ConnId | None) -> None:
        """After a failed dispatch: if its reply could not even be encoded (so it was never
        sent), the requester still gets its one reply, ``internal_error``."""
        reply = outcome.reply
        if conn is None or reply is None:
            return
        if not self._hub.encodes(conn, reply):
            rid = getattr(reply, "id", None)
            failure = Error(rid, ErrorCode.INTERNAL_ERROR.value, "internal error")
            with contextlib.suppress(Exception):
                self._hub.dispatch(Outcome(reply=failure), conn)

    async def drained(self) -> None:
        """Wait until every outcome applied so far has been dispatched."""
        if not self._queue:
            return
        self._idle = asyncio.Event()
        await self._idle.wait()
        self._idle = None
