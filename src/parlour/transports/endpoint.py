"""The transport-independent server side of a chat connection.

:class:`Endpoint` owns the connections of one server process. A byte-stream transport (TCP
today, WebSocket later) calls :meth:`Endpoint.open` when a connection starts,
:meth:`Endpoint.received` with its bytes and :meth:`Endpoint.lost` when it ends. The endpoint
decodes frames with the protocol codec, hands each request to the core, and applies the outcome
through the :class:`~parlour.transports.pipeline.Pipeline` (durable, then dispatched in order).

Liveness and limits handled here: maximum connections (``server_full``), idle timeout,
per-connection read throttling (at most ``max_in_flight`` undispatched outcomes before the
transport stops reading), oversize frames (error, then close) and malformed frames (error, the
connection goes on). A periodic timer calls ``service.tick(now)`` and sweeps stalled writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from parlour.core.outcome import ConnId, Outcome
from parlour.protocol import (
    Error,
    ErrorCode,
    FrameDecoder,
    ProtocolError,
    Request,
    encode,
    parse_request,
)
from parlour.transports.hub import Hub
from parlour.transports.pipeline import Pipeline, StoreWriter

__all__ = ["Endpoint", "EndpointLimits", "Prepare", "Service"]

log = logging.getLogger("parlour.transports")


class Service(Protocol):
    """What the endpoint needs from the chat core (``parlour.core.service.ChatService``)."""

    def connect(self, conn: ConnId, peer: str, now: float) -> Outcome: ...

    def handle(self, conn: ConnId, request: Any, now: float) -> Outcome: ...

    def disconnect(self, conn: ConnId, now: float, reason: str) -> Outcome: ...

    def tick(self, now: float) -> Outcome: ...


#: Optional async work before the core sees a request (e.g. Argon2 hashing in a thread pool).
#: Returns None when nothing needs doing (the common case: no task is created).
Prepare = Callable[[ConnId, Request], Awaitable[None] | None]


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
        "decoder",
        "id",
        "in_flight",
        "last_seen",
        "peer",
        "read_paused",
        "transport",
    )

    def __init__(self, conn: ConnId, peer: str, transport: Any, max_frame: int, now: float):
        self.id = conn
        self.peer = peer
        self.transport: _Transport = transport
        self.decoder = FrameDecoder(max_frame)
        self.last_seen = now
        self.in_flight = 0
        self.busy = False  # a prepare step is running; later frames wait in backlog
        self.backlog: deque[dict[str, Any] | ProtocolError] | None = None
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
        prepare: Prepare | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.writer = writer
        self.hub = hub
        self.pipeline = Pipeline(writer, hub)
        self.limits = limits or EndpointLimits()
        self._prepare = prepare
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

    def open(self, transport: Any, peer: str) -> ConnId | None:
        """A new connection. Returns its id, or None when refused (server full / stopping)."""
        if not self.accepting or len(self._conns) >= self.limits.max_connections:
            self.rejected_full += 1
            code = ErrorCode.SERVER_FULL if self.accepting else ErrorCode.SHUTTING_DOWN
            text = (
                f"server is full ({self.limits.max_connections} connections); try again later"
                if self.accepting
                else "server shutting down"
            )
            transport.write(encode(Error(None, code.value, text).to_wire()))
            transport.close()
            log.warning("connection refused", extra={"fields": {"peer": peer, "code": code}})
            return None
        conn_id = self._next_id
        self._next_id += 1
        conn = _Conn(conn_id, peer, transport, self.limits.max_frame, self._loop_time())
        self._conns[conn_id] = conn
        self.hub.add(conn_id, transport)
        log.info("connection opened", extra={"fields": {"conn": conn_id, "peer": peer}})
        self.pipeline.apply(self.service.connect(conn_id, peer, self._clock()), conn_id)
        return conn_id

    def received(self, conn_id: ConnId, data: bytes) -> None:
        conn = self._conns.get(conn_id)
        if conn is None or conn.closing:
            return
        conn.last_seen = self._loop_time()
        frames = conn.decoder.feed(data)
        if not frames:
            return
        if conn.busy:
            assert conn.backlog is not None
            conn.backlog.extend(frames)
            self._throttle(conn)
            return
        self._process(conn, frames)

    def lost(self, conn_id: ConnId, reason: str) -> None:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        conn.closing = True
        self.hub.remove(conn_id)
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

    def _process(self, conn: _Conn, frames: list[dict[str, Any] | ProtocolError]) -> None:
        for index, frame in enumerate(frames):
            if conn.closing:
                return
            if isinstance(frame, ProtocolError):
                self._frame_error(conn, frame)
                continue
            try:
                request = parse_request(frame)
            except ProtocolError as exc:
                self._reply_error(conn, exc)
                continue
            waiting = self._prepare(conn.id, request) if self._prepare is not None else None
            if waiting is not None:
                conn.busy = True
                conn.backlog = deque(frames[index + 1 :])
                task = asyncio.ensure_future(self._after_prepare(conn, request, waiting))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                self._throttle(conn)
                return
            self._handle(conn, request)

    def _handle(self, conn: _Conn, request: Request) -> None:
        try:
            outcome = self.service.handle(conn.id, request, self._clock())
        except Exception:
            log.exception("core failed on a request", extra={"fields": {"conn": conn.id}})
            rid = getattr(request, "id", None)
            outcome = Outcome(reply=Error(rid, ErrorCode.INTERNAL_ERROR.value, "internal error"))
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

    def _internal_error(self, conn: _Conn, request: Request) -> None:
        rid = getattr(request, "id", None)
        reply = Error(rid, ErrorCode.INTERNAL_ERROR.value, "internal error; try again")
        with contextlib.suppress(Exception):
            self.hub.send(conn.id, encode(reply.to_wire()))

    async def _after_prepare(self, conn: _Conn, request: Request, waiting: Awaitable[None]) -> None:
        try:
            try:
                await waiting
            except Exception:
                log.exception("request preparation failed", extra={"fields": {"conn": conn.id}})
            if conn.closing:
                return
            self._handle(conn, request)
        except Exception:
            # Never leave the connection busy: it would get no reply again.
            log.exception("handling a prepared request failed", extra={"fields": {"conn": conn.id}})
            self._internal_error(conn, request)
        finally:
            backlog = list(conn.backlog or ())
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
