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

Liveness and limits handled here, for every door alike:

* admission: at most ``max_connections`` connections, and at most
  ``max_connections_per_address`` from one address (``server_full``); a door that has work to
  do before a connection can speak (a TLS handshake) *reserves* its slot first, so connections
  still in their handshake count too;
* deadlines: a connection must be logged in within ``login_timeout`` seconds of connecting
  (sending bytes does not extend it), and a logged-in one closes after ``idle_timeout``
  seconds without a byte (``idle_timeout``);
* fairness: one connection's input is handled at most ``batch`` requests at a time; the rest
  waits for the next turn of the event loop, behind everyone else's (a 256 KB read of tiny
  frames cannot stall the others), and read throttling stops reading while more than
  ``max_in_flight`` of its outcomes or backlog are outstanding;
* bad input: oversize frames (error, then close), malformed frames (error, the connection goes
  on) and at most ``max_errors`` refused inputs within ``error_window`` seconds
  (``too_many_errors``, then close); anything the wire itself fails on is answered and closes
  the connection, never the server.

A periodic timer calls ``service.tick(now)`` and sweeps idle connections and stalled writers.
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
from parlour.core.sessions import address_of
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
    #: connections from one address (0: no limit); behind a proxy every client has its address
    max_connections_per_address: int = 256
    idle_timeout: float = 90.0
    #: seconds from connecting to a completed login
    login_timeout: float = 30.0
    max_in_flight: int = 64
    #: requests of one connection handled per turn of the event loop
    batch: int = 64
    #: refused inputs (malformed frames, invalid requests) tolerated within error_window seconds
    max_errors: int = 100
    error_window: float = 10.0
    #: seconds an address that was closed for too many invalid inputs may not connect again
    #: (0: no cool-down; behind a proxy every client has the proxy's address)
    abuse_cooldown: float = 10.0
    tick_interval: float = 1.0


_RATE_LIMITED = ErrorCode.RATE_LIMITED.value

#: addresses remembered in the cool-down at most (the oldest are forgotten first)
_COOLDOWN_MAX = 10_000


class Ticket:
    """A reserved connection slot (see :meth:`Endpoint.reserve`)."""

    __slots__ = ("address", "used")

    def __init__(self, address: str) -> None:
        self.address = address
        self.used = False


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
        "connected",
        "deferred",
        "errors",
        "errors_since",
        "id",
        "in_flight",
        "last_seen",
        "peer",
        "read_paused",
        "refused_until",
        "ticket",
        "transport",
        "wire",
    )

    def __init__(
        self, conn: ConnId, peer: str, transport: Any, wire: Wire, now: float, ticket: Ticket
    ):
        self.id = conn
        self.peer = peer
        self.transport: _Transport = transport
        self.wire = wire
        self.ticket = ticket
        self.connected = now
        self.last_seen = now
        self.in_flight = 0
        self.busy = False  # the core's needs are being computed; later input waits in backlog
        self.deferred = False  # its turn ended with input left; the rest comes next turn
        self.backlog: deque[WireInput] | None = None
        self.read_paused = False
        self.closing = False
        self.errors = 0
        self.errors_since = now
        #: loop time until which the client was told to wait (`rate_limited`)
        self.refused_until = 0.0


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
        #: slots taken (open connections and reservations), in all and per address
        self._slots = 0
        self._per_address: dict[str, int] = {}
        #: address -> until when it may not connect (closed for too many invalid inputs)
        self._cooldown: dict[str, float] = {}
        self.accepting = True
        self.rejected_full = 0
        self.wire_failures = 0

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

    def reserve(self, peer: str) -> Ticket | Error:
        """Take a connection slot for `peer` before it can speak (a TLS handshake): a ticket
        to hand to :meth:`open`, or to :meth:`release` if the connection never gets there;
        or the error that refuses it (server full, too many from the address, stopping)."""
        limits = self.limits
        address = address_of(peer)
        if not self.accepting:
            return Error(None, ErrorCode.SHUTTING_DOWN.value, "server shutting down")
        if self._slots >= limits.max_connections:
            text = f"server is full ({limits.max_connections} connections); try again later"
            return Error(None, ErrorCode.SERVER_FULL.value, text)
        until = self._cooldown.get(address)
        if until is not None:
            wait = until - self._clock()
            if wait > 0:
                return Error(
                    None,
                    ErrorCode.TOO_MANY_ERRORS.value,
                    f"your address sent too many invalid requests; try again in {wait:.0f} s",
                    {"retry_after": round(wait, 3)},
                )
            del self._cooldown[address]
        per = limits.max_connections_per_address
        if per and self._per_address.get(address, 0) >= per:
            text = f"too many connections from your address ({per}); try again later"
            return Error(None, ErrorCode.SERVER_FULL.value, text)
        self._slots += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        return Ticket(address)

    def release(self, ticket: Ticket) -> None:
        """Give a reserved or used slot back (once)."""
        if ticket.used:
            return
        ticket.used = True
        self._slots -= 1
        left = self._per_address.get(ticket.address, 1) - 1
        if left > 0:
            self._per_address[ticket.address] = left
        else:
            self._per_address.pop(ticket.address, None)

    def open(
        self, transport: Any, peer: str, wire: Wire | None = None, ticket: Ticket | None = None
    ) -> ConnId | None:
        """A new connection speaking `wire` (NDJSON when None), with the slot `ticket`
        reserved for it (one is taken now when None). Returns its id, or None when refused
        (server full, too many from the address, stopping)."""
        if wire is None:
            wire = self.new_wire()
        if ticket is None or ticket.used or not self.accepting:
            if ticket is not None:
                self.release(ticket)
            taken = self.reserve(peer)
            if isinstance(taken, Error):
                self.rejected_full += 1
                transport.write(wire.encode_reply(taken))
                transport.close()
                # an address in its cool-down reconnects in a loop: not a warning each time
                cooling = taken.code == ErrorCode.TOO_MANY_ERRORS
                log.log(
                    logging.DEBUG if cooling else logging.WARNING,
                    "connection refused",
                    extra={"fields": {"peer": peer, "code": taken.code, "why": taken.message}},
                )
                return None
            ticket = taken
        conn_id = self._next_id
        self._next_id += 1
        conn = _Conn(conn_id, peer, transport, wire, self._loop_time(), ticket)
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
        try:
            items = conn.wire.feed(data)
        except Exception:
            # A bug in a wire must cost this connection, never the server or the replies
            # already queued for it: say so, close, and log the first few with a traceback.
            self.wire_failures += 1
            if self.wire_failures <= 10:
                log.exception("wire failed", extra={"fields": {"conn": conn.id}})
            self.hub.reply(
                conn.id, Error(None, ErrorCode.INTERNAL_ERROR.value, "cannot read that input")
            )
            self.close(conn.id, ErrorCode.INTERNAL_ERROR.value, "cannot read that input")
            return
        if not items:
            return
        if conn.busy or conn.deferred:
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
        self.release(conn.ticket)
        self.hub.remove(conn_id)
        if self.needs is not None:
            self.needs.cancel(conn_id)
        session_user = getattr(self.service, "session_user", None)
        user = session_user(conn_id) if session_user is not None else None
        log.info(
            "connection closed",
            extra={"fields": {"conn": conn_id, "peer": conn.peer, "user": user, "reason": reason}},
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
        batch = self.limits.batch
        for index, item in enumerate(items):
            if conn.closing:
                return
            if index >= batch:
                # this connection's turn is over: the rest comes after everyone else's
                conn.deferred = True
                conn.backlog = deque(itertools.islice(items, index, None))
                self._throttle(conn)
                assert self._loop is not None
                self._loop.call_soon(self._next_turn, conn)
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

    def _next_turn(self, conn: _Conn) -> None:
        if not conn.deferred:
            return
        conn.deferred = False
        backlog, conn.backlog = conn.backlog or deque(), None
        if conn.closing:
            return
        if backlog:
            self._process(conn, backlog)
        self._throttle(conn)

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
        reply = outcome.reply
        if type(reply) is Error and reply.code == _RATE_LIMITED:
            self._refused(conn, reply)
        return True

    def _refused(self, conn: _Conn, reply: Error) -> None:
        """A `rate_limited` refusal: one error per wait the client is told of. Requests
        already on their way when the first refusal left (a client with many in flight, all
        refused until their `retry_after`) count once; a client that keeps sending as it is
        refused — a flood — counts once per wait, and `max_errors` waits close it."""
        now = self._loop_time()
        if now < conn.refused_until:
            return
        wait = reply.extra.get("retry_after")
        conn.refused_until = now + (float(wait) if isinstance(wait, int | float) else 0.0)
        self._count_error(conn)

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
                answers.update(await self.needs.satisfy(conn.id, needs, conn.ticket.address))
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
            return
        self._count_error(conn)

    def _count_error(self, conn: _Conn) -> None:
        """One more refused input of `conn` (invalid, or sent while told to wait); too many
        within the window close it, and its address waits before it may connect again."""
        now = self._loop_time()
        limits = self.limits
        if now - conn.errors_since > limits.error_window:
            conn.errors, conn.errors_since = 0, now
        conn.errors += 1
        if conn.errors > limits.max_errors:
            log.warning(
                "closing connection after too many invalid inputs",
                extra={"fields": {"conn": conn.id, "peer": conn.peer, "errors": conn.errors}},
            )
            if limits.abuse_cooldown > 0:  # and its address waits before connecting again
                address = conn.ticket.address
                self._cooldown.pop(address, None)
                self._cooldown[address] = self._clock() + limits.abuse_cooldown
                if len(self._cooldown) > _COOLDOWN_MAX:
                    del self._cooldown[next(iter(self._cooldown))]
            self.close(
                conn.id,
                ErrorCode.TOO_MANY_ERRORS.value,
                f"more than {limits.max_errors} invalid or refused requests in"
                f" {limits.error_window:g} s",
            )

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
        """Close connections that sent nothing for ``idle_timeout`` seconds, and those not
        logged in ``login_timeout`` seconds after connecting (bytes do not extend that)."""
        now = self._loop_time()
        deadline = now - self.limits.idle_timeout
        login_deadline = now - self.limits.login_timeout
        for conn in list(self._conns.values()):
            if conn.closing:
                continue
            if conn.last_seen < deadline:
                log.info("idle timeout", extra={"fields": {"conn": conn.id, "peer": conn.peer}})
                self.close(
                    conn.id,
                    ErrorCode.IDLE_TIMEOUT.value,
                    f"no data received for {self.limits.idle_timeout:g}s",
                )
            elif conn.connected < login_deadline and not conn.busy and not self._logged_in(conn):
                log.info("login timeout", extra={"fields": {"conn": conn.id, "peer": conn.peer}})
                self.close(
                    conn.id,
                    ErrorCode.IDLE_TIMEOUT.value,
                    f"not logged in within {self.limits.login_timeout:g}s of connecting",
                )

    def _logged_in(self, conn: _Conn) -> bool:
        session_user = getattr(self.service, "session_user", None)
        return session_user is None or session_user(conn.id) is not None

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
