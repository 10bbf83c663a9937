"""TCP (optionally TLS) door: an ``asyncio.Protocol`` per connection feeding the Endpoint.

Each connection gets a fresh wire from the listener's ``wire_factory`` (the NDJSON wire by
default): the door only moves bytes, the wire decides what they mean.

Protocol callbacks rather than streams: no per-connection task, no reader buffer copies, and the
transport's own write buffer serves as the second half of the hub's bounded send queue.

With TLS the listener accepts plain TCP and runs the handshake itself (``loop.start_tls``), so
that a connection takes its slot (``Endpoint.reserve``: the connection limits, per address
too) *before* the handshake: connections stuck in their handshake count, and a refused one
costs no TLS work. A handshake must finish within ``handshake_timeout`` seconds.

Behind a proxy every client would have the proxy's address, and every per-address limit and
lockout would count them all as one. So the listener can open a second port (`proxy_port`)
for connections from `trusted_proxies` only, each of which must begin with a PROXY protocol
header (v1 or v2) naming the real client: that address then stands for the connection
everywhere (limits, login throttles, logs). The header is read to its last byte and no
further (`ProxyHeaderReader`), so a TLS handshake can follow it; it must arrive within
``handshake_timeout`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import cast

from parlour.core.outcome import ConnId
from parlour.core.sessions import peer_name
from parlour.protocol import Error, ErrorCode, Wire
from parlour.transports.endpoint import Endpoint, Ticket
from parlour.transports.proxy_header import (
    MAX_HEADER,
    Networks,
    ProxyHeaderError,
    ProxyHeaderReader,
    trusted,
)

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
        return peer_name(str(peer[0]), peer[1])
    return str(peer)


#: makes the wire of a new connection (it may look at the transport, e.g. to log or to
#: inject faults in tests)
WireFactory = Callable[[asyncio.BaseTransport], Wire]


class _ChatProtocol(asyncio.Protocol):
    __slots__ = (
        "_conn",
        "_early",
        "_endpoint",
        "_high_water",
        "_peer",
        "_ticket",
        "_wire_factory",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        high_water: int,
        wire_factory: WireFactory,
        ticket: Ticket | None = None,
        peer: str | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._high_water = high_water
        self._wire_factory = wire_factory
        self._ticket = ticket
        #: the client as a PROXY protocol header named it (None: the socket's peer)
        self._peer = peer
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
        peer = self._peer or _peer_name(transport)
        self._conn = self._endpoint.open(transport, peer, wire, ticket)
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

    __slots__ = ("_listener", "_peer", "_task")

    def __init__(self, listener: TcpListener, peer: str | None = None) -> None:
        self._listener = listener
        self._peer = peer
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        transport.pause_reading()  # the ClientHello is for the TLS layer, not for us
        peer = self._peer or _peer_name(transport)
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
        chat = listener.protocol(ticket, self._peer)
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


class _ProxyPrelude(asyncio.BufferedProtocol):
    """A connection on the proxy port until its PROXY header is read: only trusted proxies
    may connect; the header is read exactly (`get_buffer` hands out what it still holds),
    then the connection goes on as a chat (or TLS) connection of the client it names."""

    __slots__ = ("_buffer", "_deadline", "_listener", "_reader", "_transport")

    def __init__(self, listener: TcpListener) -> None:
        self._listener = listener
        self._reader = ProxyHeaderReader()
        self._buffer = bytearray(MAX_HEADER)
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not trusted(host, self._listener.trusted_proxies):
            self._listener.untrusted += 1
            log.warning(
                "connection to the proxy port from an address that is not a trusted proxy",
                extra={"fields": {"peer": _peer_name(transport)}},
            )
            transport.abort()
            return
        self._transport = transport
        self._deadline = asyncio.get_running_loop().call_later(
            self._listener.handshake_timeout, self._too_slow
        )

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)[: max(1, self._reader.want())]

    def buffer_updated(self, nbytes: int) -> None:
        transport = self._transport
        if transport is None:
            return
        try:
            self._reader.feed(bytes(self._buffer[:nbytes]))
        except ProxyHeaderError as exc:
            self._listener.bad_headers += 1
            log.warning(
                "connection closed: bad PROXY protocol header",
                extra={"fields": {"peer": _peer_name(transport), "why": str(exc)}},
            )
            self._end()
            transport.abort()
            return
        if not self._reader.done:
            return
        self._end()
        source = self._reader.source
        peer = peer_name(*source) if source is not None else None
        listener = self._listener
        nxt: asyncio.Protocol = (
            _TlsHandshake(listener, peer)
            if listener.ssl_context is not None
            else listener.protocol(None, peer)
        )
        transport.set_protocol(nxt)
        nxt.connection_made(transport)

    def _too_slow(self) -> None:
        self._deadline = None
        if self._transport is not None:
            self._listener.bad_headers += 1
            self._transport.abort()
            self._transport = None

    def _end(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        self._transport = None


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
        proxy_port: int | None = None,
        trusted_proxies: Networks = (),
    ) -> None:
        self.endpoint = endpoint
        #: the PROXY protocol port (None: none) and who may connect to it
        self.proxy_port = proxy_port
        self.trusted_proxies = trusted_proxies
        self.untrusted = 0
        self.bad_headers = 0
        self._proxy_server: asyncio.Server | None = None
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

    def protocol(self, ticket: Ticket | None = None, peer: str | None = None) -> _ChatProtocol:
        return _ChatProtocol(self.endpoint, self.write_high_water, self.wire_factory, ticket, peer)

    def _factory(self) -> asyncio.Protocol:
        if self.ssl_context is not None:
            return _TlsHandshake(self)
        return self.protocol()

    async def start(self) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, self.host, self.port, backlog=self.backlog, reuse_address=True
        )
        if self.proxy_port is not None:
            self._proxy_server = await loop.create_server(
                lambda: _ProxyPrelude(self),
                self.host,
                self.proxy_port,
                backlog=self.backlog,
                reuse_address=True,
            )
        return self.addresses

    @property
    def proxy_addresses(self) -> list[tuple[str, int]]:
        """Where the PROXY protocol port listens (empty: it does not)."""
        return _bound(self._proxy_server)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return _bound(self._server)

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._proxy_server is not None:
            self._proxy_server.close()
        for task in list(self.handshakes):
            task.cancel()

    async def wait_closed(self) -> None:
        if self._server is not None:
            # Python 3.12+ waits for connections here; they are closed by Endpoint.shutdown.
            await self._server.wait_closed()
            self._server = None
        if self._proxy_server is not None:
            await self._proxy_server.wait_closed()
            self._proxy_server = None


def _bound(server: asyncio.Server | None) -> list[tuple[str, int]]:
    if server is None:
        return []
    return [(str(n[0]), int(n[1])) for n in (sock.getsockname() for sock in server.sockets)]
