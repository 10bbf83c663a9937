"""The door-independent server side of a chat connection.

:class:`Endpoint` owns the connections of one server process. A door (a transport adapter:
TCP, WebSocket) calls :meth:`Endpoint.open` with the connection's
:class:`~parlour.protocol.wire.Wire` when a connection starts, :meth:`Endpoint.received` with
what arrives and :meth:`Endpoint.lost` when it ends. The wire decodes requests; the endpoint
hands each to the core and applies the outcome through the
:class:`~parlour.transports.pipeline.Pipeline` (durable, then dispatched in order). When the
core answers with *needs* (password work, store reads), the endpoint has them computed by its
:class:`~parlour.transports.needs.NeedRunner` and hands the request to the core again with the
answers; later requests of that connection wait their turn meanwhile.

Liveness and limits handled here: maximum connections (``server_full``), idle timeout,
per-connection read throttling (at most ``max_in_flight`` undispatched outcomes before the
transport stops reading), oversize frames (error, then close) and malformed frames (error, the
connection goes on). A periodic timer calls ``service.tick(now)`` and sweeps stalled writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from parlour.core.needs import Answers, Need
from parlour.core.outcome import ConnId, Outcome
from parlour.protocol import (
    Error,
    ErrorCode,
    NdjsonWire,
    ProtocolError,
    Request,
    Wire,
    WireInput,
)
from parlour.transports.hub import Hub
from parlour.transports.needs import NeedRunner, ServerBusy
from parlour.transports.pipeline import Pipeline, StoreWriter

__all__ = ["Endpoint", "EndpointLimits", "Service"]

#: rounds of needs one request may take before it is answered `internal_error` (a catch-up
#: reads page after page; a handful is normal)
MAX_NEED_ROUNDS = 64

log = logging.getLogger("parlour.transports")


class Service(Protocol):
    """What the endpoint needs from the chat core (``parlour.core.service.ChatService``)."""

    def connect(self, conn: ConnId, peer: str, now: float) -> Outcome: ...

    def handle(self, conn: ConnId, request: Any, now: float, answers: Answers = ...) -> Outcome: ...

    def abandon(self, conn: ConnId) -> None: ...

    def disconnect(self, conn: ConnId, now: float, reason: str) -> Outcome: ...

    def tick(self, now: float) -> Outcome: ...


@dataclass(frozen=True, slots=True)
class EndpointLimits:
    max_frame: int = 65536
    max_connections: int = 10000
    idle_timeout: float = 90.0
    max_in_flight: int = 64
    tick_interval: float = 1.0


class _Transport(Protocol):
    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class _Conn:
    __slots__ = (
        "backlog",
        "busy",
        "closing",
        "id",
        "in_flight",
        "last_seen",
        "peer",
        "read_paused",
        "transport",
        "wire",
    )

    def __init__(self, conn: ConnId, peer: str, transport: Any, wire: Wire, now: float):
        self.id = conn
        self.peer = peer
        self.transport: _Transport = transport
        self.wire = wire
        self.last_seen = now
        self.in_flight = 0
        self.busy = False  # the core's needs are being computed; later input waits in backlog
        self.backlog: deque[WireInput] | None = None
        self.read_paused = False
        self.closing = False


class Endpoint:
    def __init__(
        self,
        service: Service,
        writer: StoreWriter,
        hub: Hub,
        *,
        limits: EndpointLimits | None = None,
        needs: NeedRunner | None = None,
        pipeline: Pipeline | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.writer = writer
        self.hub = hub
        self.pipeline = pipeline if pipeline is not None else Pipeline(writer, hub)
        self.limits = limits or EndpointLimits()
        self.needs = needs
        self._clock = clock
        self._conns: dict[ConnId, _Conn] = {}
        self._next_id = 1
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._all_closed: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepting = True
        self.rejected_full = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._schedule_tick()

    def _schedule_tick(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(self.limits.tick_interval, self._tick)

    def _tick(self) -> None:
        try:
            now = self._clock()
            self.pipeline.apply(self.service.tick(now), None)
            self.sweep_idle()
            self.hub.sweep()
        except Exception:
            log.exception("tick failed")
        finally:
            if self._timer is not None:
                self._schedule_tick()

    def __len__(self) -> int:
        return len(self._conns)

    # ------------------------------------------------------------------ transport callbacks

    def new_wire(self) -> Wire:
        """The default wire (NDJSON with the configured frame limit)."""
        return NdjsonWire(self.limits.max_frame)

    def open(self, transport: Any, peer: str, wire: Wire | None = None) -> ConnId | None:
        """A new connection speaking `wire` (NDJSON when None). Returns its id, or None when
        refused (server full / stopping)."""
        if wire is None:
            wire = self.new_wire()
        if not self.accepting or len(self._conns) >= self.limits.max_connections:
            self.rejected_full += 1
            code = ErrorCode.SERVER_FULL if self.accepting else ErrorCode.SHUTTING_DOWN
            text = (
                f"server is full ({self.limits.max_connections} connections); try again later"
                if self.accepting
                else "server shutting down"
            )
            transport.write(wire.encode_reply(Error(None, code.value, text)))
            transport.close()
            log.warning("connection refused", extra={"fields": {"peer": peer, "code": code}})
            return None
        conn_id = self._next_id
        self._next_id += 1
        conn = _Conn(conn_id, peer, transport, wire, self._loop_time())
        self._conns[conn_id] = conn
        self.hub.add(conn_id, transport, wire)
        log.info("connection opened", extra={"fields": {"conn": conn_id, "peer": peer}})
        self.pipeline.apply(self.service.connect(conn_id, peer, self._clock()), conn_id)
        return conn_id

    def received(self, conn_id: ConnId, data: bytes) -> None:
        conn = self._conns.get(conn_id)
        if conn is None or conn.closing:
            return
        conn.last_seen = self._loop_time()
        items = conn.wire.feed(data)
        if not items:
            return
        if conn.busy:
            assert conn.backlog is not None
            conn.backlog.extend(items)
            self._throttle(conn)
            return
        self._process(conn, items)

    def lost(self, conn_id: ConnId, reason: str) -> None:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        conn.closing = True
        self.hub.remove(conn_id)
        if self.needs is not None:
            self.needs.cancel(conn_id)
        log.info(
            "connection closed",
            extra={"fields": {"conn": conn_id, "peer": conn.peer, "reason": reason}},
        )
        self.pipeline.apply(self.service.disconnect(conn_id, self._clock(), reason), None)
        if not self._conns and self._all_closed is not None:
            self._all_closed.set()

    def pause_writing(self, conn_id: ConnId) -> None:
        self.hub.pause_writing(conn_id)

    def resume_writing(self, conn_id: ConnId) -> None:
        self.hub.resume_writing(conn_id)

    # ------------------------------------------------------------------ requests

    def _process(self, conn: _Conn, items: list[WireInput] | deque[WireInput]) -> None:
        for index, item in enumerate(items):
            if conn.closing:
                return
            if isinstance(item, ProtocolError):
                self._frame_error(conn, item)
                continue
            if not self._handle(conn, item):
                # the core needs work done first: the rest waits for the request's turn
                assert conn.backlog is not None
                conn.backlog.extend(itertools.islice(items, index + 1, None))
                self._throttle(conn)
                return

    def _handle(self, conn: _Conn, request: Request) -> bool:
        """Hand `request` to the core. False when the core asked for needs: they are being
        computed and the connection is busy until the request is answered."""
        try:
            outcome = self.service.handle(conn.id, request, self._clock())
        except Exception:
            log.exception("core failed on a request", extra={"fields": {"conn": conn.id}})
            rid = getattr(request, "id", None)
            outcome = Outcome(reply=Error(rid, ErrorCode.INTERNAL_ERROR.value, "internal error"))
        if outcome.needs:
            conn.busy = True
            conn.backlog = deque()
            task = asyncio.ensure_future(self._after_needs(conn, request, outcome.needs))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return False
        self._apply(conn, request, outcome)
        return True

    def _apply(self, conn: _Conn, request: Request, outcome: Outcome) -> None:
        conn.in_flight += 1
        try:
            self.pipeline.apply(outcome, conn.id, lambda: self._dispatched(conn))
        except Exception:
            # The pipeline turns writer and hub failures into replies itself; this is the
            # last resort so that the request still gets its one reply.
            log.exception("applying an outcome failed", extra={"fields": {"conn": conn.id}})
            conn.in_flight -= 1
            self._internal_error(conn, request)
        self._throttle(conn)

    def _internal_error(self, conn: _Conn, request: Request, why: str = "internal error") -> None:
        rid = getattr(request, "id", None)
        reply = Error(rid, ErrorCode.INTERNAL_ERROR.value, f"{why}; try again")
        with contextlib.suppress(Exception):
            self.hub.reply(conn.id, reply)

    async def _after_needs(self, conn: _Conn, request: Request, needs: tuple[Need, ...]) -> None:
        """Compute the needs, hand the request to the core again with the answers, until it is
        answered; then go on with what the connection sent meanwhile."""
        answered = False
        try:
            answers: dict[Need, Any] = {}
            for _ in range(MAX_NEED_ROUNDS):
                if self.needs is None:
                    raise RuntimeError("the core needs work done but no NeedRunner is set")
                answers.update(await self.needs.satisfy(conn.id, needs))
                if conn.closing:
                    return
                outcome = self.service.handle(conn.id, request, self._clock(), answers)
                if not outcome.needs:
                    answered = True
                    self._apply(conn, request, outcome)
                    break
                needs = outcome.needs
            else:
                log.error("too many rounds of needs", extra={"fields": {"conn": conn.id}})
        except ServerBusy as busy:
            if not conn.closing:
                answered = True
                rid = getattr(request, "id", None)
                reply = Error(
                    rid,
                    ErrorCode.SERVER_BUSY.value,
                    f"the server is busy; retry in {busy.retry_after:g} s",
                    {"retry_after": busy.retry_after},
                )
                self._apply(conn, request, Outcome(reply=reply))
        except asyncio.CancelledError:
            if not conn.closing:
                raise
            return
        except Exception:
            log.exception("computing a request's needs failed", extra={"fields": {"conn": conn.id}})
        finally:
            if not answered:
                self.service.abandon(conn.id)
                if not conn.closing:
                    self._internal_error(conn, request)
            backlog = conn.backlog or deque()
            conn.busy = False
            conn.backlog = None
        if conn.closing:
            return
        if backlog:
            self._process(conn, backlog)
        self._throttle(conn)

    def _frame_error(self, conn: _Conn, exc: ProtocolError) -> None:
        self._reply_error(conn, exc)
        if exc.fatal:
            log.warning(
                "closing connection after a fatal frame error",
                extra={"fields": {"conn": conn.id, "peer": conn.peer, "code": exc.code.value}},
            )
            self.close(conn.id, exc.code.value, exc.message)

    def _reply_error(self, conn: _Conn, exc: ProtocolError) -> None:
        conn.in_flight += 1
        self.pipeline.apply(
            Outcome(reply=Error.from_exception(exc)), conn.id, lambda: self._dispatched(conn)
        )

    def _dispatched(self, conn: _Conn) -> None:
        conn.in_flight -= 1
        if conn.read_paused:
            self._throttle(conn)

    def _throttle(self, conn: _Conn) -> None:
        """Stop reading while too much of this connection's work is outstanding."""
        limit = self.limits.max_in_flight
        backlog = len(conn.backlog) if conn.backlog else 0
        load = conn.in_flight + backlog
        if not conn.read_paused and load >= limit:
            conn.read_paused = True
            with contextlib.suppress(RuntimeError):
                conn.transport.pause_reading()
        elif conn.read_paused and load <= limit // 2 and not conn.closing:
            conn.read_paused = False
            with contextlib.suppress(RuntimeError):
                conn.transport.resume_reading()

    # ------------------------------------------------------------------ closing

    def close(self, conn_id: ConnId, code: str, reason: str) -> None:
        """Close a connection after telling it why; what is queued before is still sent."""
        conn = self._conns.get(conn_id)
        if conn is None or conn.closing:
            return
        conn.closing = True
        self.pipeline.apply(Outcome(close=((conn_id, code, reason),)), None)

    def sweep_idle(self) -> None:
        """Close connections that sent nothing for ``idle_timeout`` seconds."""
        deadline = self._loop_time() - self.limits.idle_timeout
        stale = [c for c in self._conns.values() if c.last_seen < deadline and not c.closing]
        for conn in stale:
            log.info("idle timeout", extra={"fields": {"conn": conn.id, "peer": conn.peer}})
            self.close(
                conn.id,
                ErrorCode.IDLE_TIMEOUT.value,
                f"no data received for {self.limits.idle_timeout:g}s",
            )

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop taking requests, finish in-flight work, tell every client, close, flush."""
        self.accepting = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conn in self._conns.values():
            conn.closing = True  # ignore anything that still arrives
            with contextlib.suppress(RuntimeError):
                conn.transport.pause_reading()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pipeline.drained(), grace)
        if self._conns:
            self._all_closed = asyncio.Event()
            for conn_id in list(self._conns):
                self.hub.close(conn_id, ErrorCode.SHUTTING_DOWN.value, "server shutting down")
            try:
                await asyncio.wait_for(self._all_closed.wait(), grace)
            except TimeoutError:
                for conn in list(self._conns.values()):
                    conn.transport.abort()
                await asyncio.sleep(0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pipeline.drained(), grace)

    def _loop_time(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else time.monotonic()
