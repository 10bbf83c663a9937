"""TCP (optionally TLS) door: an ``asyncio.Protocol`` per connection feeding the Endpoint.

Each connection gets a fresh wire from the listener's ``wire_factory`` (the NDJSON wire by
default): the door only moves bytes, the wire decides what they mean.

Protocol callbacks rather than streams: no per-connection task, no reader buffer copies, and the
transport's own write buffer serves as the second half of the hub's bounded send queue.

With TLS the listener accepts plain TCP and runs the handshake itself (``loop.start_tls``), so
that a connection takes its slot (``Endpoint.reserve``: the connection limits, per address
too) *before* the handshake: connections stuck in their handshake count, and a refused one
costs no TLS work. A handshake must finish within ``handshake_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from parlour.core.outcome import ConnId
from parlour.protocol import Error, ErrorCode, Wire
from parlour.transports.endpoint import Endpoint, Ticket

__all__ = ["TcpListener", "WireFactory", "make_server_ssl_context"]

log = logging.getLogger("parlour.transports.tcp")

#: the kernel's send buffer of a connection (the default lets it grow to megabytes): what a
#: slow reader has buffered ahead of a `disconnect` reason, and kernel memory per connection,
#: stay bounded (the hub's own queue is bounded by send_queue_max)
SEND_BUFFER = 128 * 1024


def make_server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context from PEM files (clear errors for unreadable/mismatched files)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from exc
    return ctx


def _peer_name(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(peer)


#: makes the wire of a new connection (it may look at the transport, e.g. to log or to
#: inject faults in tests)
WireFactory = Callable[[asyncio.BaseTransport], Wire]


class _ChatProtocol(asyncio.Protocol):
    __slots__ = ("_conn", "_early", "_endpoint", "_high_water", "_ticket", "_wire_factory")

    def __init__(
        self,
        endpoint: Endpoint,
        high_water: int,
        wire_factory: WireFactory,
        ticket: Ticket | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._high_water = high_water
        self._wire_factory = wire_factory
        self._ticket = ticket
        self._conn: ConnId | None = None
        #: application data that came with the end of a TLS handshake, before
        #: `connection_made` (start_tls returns after the TLS layer may have passed it on)
        self._early: list[bytes] | None = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        if isinstance(transport, asyncio.WriteTransport):
            transport.set_write_buffer_limits(high=self._high_water)
        wire = self._wire_factory(transport)
        ticket, self._ticket = self._ticket, None
        self._conn = self._endpoint.open(transport, _peer_name(transport), wire, ticket)
        early, self._early = self._early, None
        if self._conn is not None and early:
            for data in early:
                self._endpoint.received(self._conn, data)

    def data_received(self, data: bytes) -> None:
        if self._conn is not None:
            self._endpoint.received(self._conn, data)
        elif self._early is not None and sum(map(len, self._early)) < 65536:
            self._early.append(bytes(data))

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            reason = "connection reset" if exc is not None else "closed"
            self._endpoint.lost(self._conn, reason)
            self._conn = None

    def pause_writing(self) -> None:
        if self._conn is not None:
            self._endpoint.pause_writing(self._conn)

    def resume_writing(self) -> None:
        if self._conn is not None:
            self._endpoint.resume_writing(self._conn)


class _TlsHandshake(asyncio.Protocol):
    """A TLS connection until its handshake is done: it holds a reserved slot meanwhile."""

    __slots__ = ("_listener", "_task")

    def __init__(self, listener: TcpListener) -> None:
        self._listener = listener
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the ClientHello is for the TLS layer, not for us
        peer = _peer_name(transport)
        ticket = self._listener.endpoint.reserve(peer)
        if isinstance(ticket, Error):
            self._listener.endpoint.rejected_full += 1
            cooling = ticket.code == ErrorCode.TOO_MANY_ERRORS  # reconnects in a loop: quietly
            log.log(
                logging.DEBUG if cooling else logging.WARNING,
                "connection refused before its TLS handshake",
                extra={"fields": {"peer": peer, "code": ticket.code, "why": ticket.message}},
            )
            transport.abort()
            return
        self._task = asyncio.ensure_future(self._handshake(transport, ticket))
        self._listener.handshakes.add(self._task)
        self._task.add_done_callback(self._listener.handshakes.discard)

    async def _handshake(self, transport: asyncio.Transport, ticket: Ticket) -> None:
        listener = self._listener
        assert listener.ssl_context is not None
        chat = listener.protocol(ticket)
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport,
                chat,
                listener.ssl_context,
                server_side=True,
                ssl_handshake_timeout=listener.handshake_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, asyncio.CancelledError):
            listener.endpoint.release(ticket)
            transport.abort()
            return
        if tls is None:  # the connection went away
            listener.endpoint.release(ticket)
            return
        chat.connection_made(tls)  # start_tls does not call it

    def connection_lost(self, exc: Exception | None) -> None:
        # only before start_tls took the transport over (then the handshake task sees it)
        if self._task is not None and not self._task.done():
            self._task.cancel()


class TcpListener:
    """Listens on host:port and hands connections to an Endpoint."""

    def __init__(
        self,
        endpoint: Endpoint,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 1024,
        write_high_water: int = 256 * 1024,
        wire_factory: WireFactory | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.handshake_timeout = handshake_timeout
        self.handshakes: set[asyncio.Task[None]] = set()
        self.wire_factory: WireFactory = (
            wire_factory if wire_factory is not None else lambda _: endpoint.new_wire()
        )
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.backlog = backlog
        self.write_high_water = write_high_water
        self._server: asyncio.Server | None = None

    def protocol(self, ticket: Ticket | None = None) -> _ChatProtocol:
        return _ChatProtocol(self.endpoint, self.write_high_water, self.wire_factory, ticket)

    def _factory(self) -> asyncio.Protocol:
        if self.ssl_context is not None:
            return _TlsHandshake(self)
        return self.protocol()

    async def start(self) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, self.host, self.port, backlog=self.backlog, reuse_address=True
        )
        return self.addresses

    @property
    def addresses(self) -> list[tuple[str, int]]:
        if self._server is None:
            return []
        out: list[tuple[str, int]] = []
        for sock in self._server.sockets:
            name = sock.getsockname()
            out.append((str(name[0]), int(name[1])))
        return out

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self.handshakes):
            task.cancel()

    async def wait_closed(self) -> None:
        if self._server is not None:
            # Python 3.12+ waits for connections here; they are closed by Endpoint.shutdown.
            await self._server.wait_closed()
            self._server = None
