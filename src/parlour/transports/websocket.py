"""WebSocket door: aiohttp upgrades the request and parses client frames; the endpoint, the
core and the hub do the rest, as for every door.

Per connection:

* **in** — each complete data message (aiohttp reassembles fragments and answers nothing on
  its own: ``autoping`` is off) goes to :meth:`Endpoint.received`, where the connection's
  :class:`~parlour.protocol.websocket.WebSocketWire` decodes it. A pong is fed as ``b""``:
  life without a request, so the idle timeout counts it.
* **out** — the hub writes already-encoded frames (replies and events, each one complete
  unmasked text frame, the same bytes for every recipient of an event) straight to the
  connection's socket transport through :class:`_WsTransport`; nothing goes through
  ``send_str``. The transport's write buffer is the second half of the hub's bounded send
  queue, and its pause/resume callbacks reach the hub (a tap on aiohttp's protocol), so the
  slow-consumer cut-off works as on TCP.
* **read throttling** — when the endpoint pauses reading, the door stops taking messages from
  aiohttp; aiohttp's bounded message queue fills and pauses the socket.
* **pings** — every ``ping_interval`` seconds the door pings the connections it has not heard
  from for that long. Browsers answer pings even when a background tab's timers are
  throttled, so a live page never times out, and a dead one does after ``idle_timeout``.
* **size** — aiohttp refuses a message longer than twice ``max_frame`` from its header,
  without reading it (close code 1009). Anything up to that reaches the wire, which answers
  ``frame_too_large`` and closes, exactly as on the other doors.
* **close** — the hub's close (after the ``disconnect`` event) becomes a WebSocket close
  frame (1000) and the closing handshake; a peer that does not answer is cut after aiohttp's
  close timeout (and the hub aborts it after ``close_grace`` anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Any, cast

from aiohttp import WSMsgType, web

from parlour.core.outcome import ConnId
from parlour.core.sessions import peer_name
from parlour.protocol.websocket import OP_PING, OP_PONG, WebSocketWire, server_frame
from parlour.transports.endpoint import Endpoint
from parlour.transports.proxy_header import Networks, trusted

__all__ = ["WebSocketDoor"]

log = logging.getLogger("parlour.transports.websocket")

_PING = server_frame(OP_PING, b"")
_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)


class _WsTransport:
    """What the endpoint and the hub see of one WebSocket connection: writes go to the
    socket transport as they are (whole frames), reading is gated in the door's loop, and
    closing is the WebSocket closing handshake."""

    __slots__ = ("_closing", "_gate", "_task", "raw", "ws")

    def __init__(self, ws: web.WebSocketResponse, raw: asyncio.Transport) -> None:
        self.ws = ws
        self.raw = raw
        self._gate = asyncio.Event()
        self._gate.set()
        self._closing = False
        self._task: asyncio.Task[Any] | None = None

    # -- writing (the hub)
    def write(self, data: bytes) -> None:
        if not self._closing:
            self.raw.write(data)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        if not self._closing:
            self.raw.writelines(chunks)

    def get_write_buffer_size(self) -> int:
        return int(self.raw.get_write_buffer_size())

    def is_closing(self) -> bool:
        return self._closing or self.raw.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.raw.get_extra_info(name, default)

    # -- reading (the endpoint's throttle)
    def pause_reading(self) -> None:
        self._gate.clear()

    def resume_reading(self) -> None:
        self._gate.set()

    async def wait_readable(self) -> None:
        await self._gate.wait()

    # -- closing
    def close(self) -> None:
        """Send a close frame after what is buffered and end the connection."""
        if self._closing:
            return
        self._closing = True
        self._gate.set()  # the door's loop sees the close
        self._task = asyncio.ensure_future(self._close())

    async def _close(self) -> None:
        try:
            await self.ws.close(code=1000)
        except Exception:  # the socket is already gone: nothing left to tell
            self.raw.abort()

    def abort(self) -> None:
        self._closing = True
        self._gate.set()
        self.raw.abort()


class _FlowTap(asyncio.Protocol):
    """Sits between the socket transport and aiohttp's protocol: forwards every callback and
    also tells the endpoint when the transport pauses or resumes writing (aiohttp keeps
    that to itself)."""

    def __init__(self, inner: asyncio.Protocol, endpoint: Endpoint) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self.conn: ConnId | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()
        if self.conn is not None:
            self.endpoint.pause_writing(self.conn)

    def resume_writing(self) -> None:
        self.inner.resume_writing()
        if self.conn is not None:
            self.endpoint.resume_writing(self.conn)


def forwarded_client(forwarded_for: str, proxies: Networks) -> str | None:
    """The client's address in an ``X-Forwarded-For`` value: the right-most entry that is
    not one of our own proxies (the entries left of it are the client's word, which anyone
    can forge); None when there is no usable entry."""
    entries = [e.strip() for e in forwarded_for.split(",")]
    for entry in reversed(entries):
        host = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
        try:
            address = str(ipaddress.ip_address(host))
        except ValueError:
            return None  # a garbled hop: believe nothing before it
        if not trusted(address, proxies):
            return address
    return None


def _peer_name(request: web.BaseRequest, proxies: Networks = ()) -> str:
    """The client as "host:port": the socket's peer, or — when that peer is a trusted proxy
    — the client its ``X-Forwarded-For`` names (port 0: the proxy does not say it)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not (isinstance(peer, tuple) and len(peer) >= 2):
        return str(peer)
    host = str(peer[0])
    if proxies and trusted(host, proxies):
        forwarded = request.headers.getall("X-Forwarded-For", [])
        client = forwarded_client(",".join(forwarded), proxies) if forwarded else None
        if client is not None:
            return peer_name(client, 0)
    return peer_name(host, peer[1])


class WebSocketDoor:
    """The chat protocol over WebSocket, as an aiohttp request handler (:meth:`handle`)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        max_frame: int,
        ping_interval: float,
        write_high_water: int = 256 * 1024,
        close_timeout: float = 5.0,
        trusted_proxies: Networks = (),
    ) -> None:
        self.endpoint = endpoint
        #: proxies whose X-Forwarded-For names the client (per-address limits, lockouts)
        self.trusted_proxies = trusted_proxies
        self.max_frame = max_frame
        self.ping_interval = ping_interval
        self.write_high_water = write_high_water
        self.close_timeout = close_timeout
        #: open connections: id -> (transport, loop time of the last message received)
        self._open: dict[ConnId, list[Any]] = {}
        self._pinger: asyncio.TimerHandle | None = None
        self.pings_sent = 0

    def __len__(self) -> int:
        return len(self._open)

    # ------------------------------------------------------------------ pings

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._pinger = loop.call_later(self.ping_interval, self._ping_quiet)

    def stop(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None

    def _ping_quiet(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        try:
            for transport, last in list(self._open.values()):
                if now - last >= self.ping_interval and not transport.is_closing():
                    transport.raw.write(_PING)
                    self.pings_sent += 1
        finally:
            self._pinger = loop.call_later(self.ping_interval, self._ping_quiet)

    # ------------------------------------------------------------------ connections

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws: web.WebSocketResponse = web.WebSocketResponse(
            autoping=False,
            compress=False,  # events are encoded once for every recipient: no per-socket deflate
            max_msg_size=2 * self.max_frame + 1,
            timeout=self.close_timeout,
            decode_text=False,
        )
        await ws.prepare(request)
        raw = request.transport
        if raw is None or raw.is_closing():
            return ws
        sock = raw.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # small frames go out at once, as on TCP
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.set_write_buffer_limits(high=self.write_high_water)
        transport = _WsTransport(ws, raw)
        tap = _FlowTap(cast(asyncio.Protocol, raw.get_protocol()), self.endpoint)
        raw.set_protocol(tap)
        peer = _peer_name(request, self.trusted_proxies)
        conn = self.endpoint.open(transport, peer, WebSocketWire(self.max_frame))
        if conn is None:  # refused (full, stopping): the endpoint wrote why and closed
            await self._closed(transport)
            return ws
        tap.conn = conn
        loop = asyncio.get_running_loop()
        record: list[Any] = [transport, loop.time()]
        self._open[conn] = record
        reason = "closed"
        try:
            while True:
                await transport.wait_readable()
                if transport.is_closing():
                    break
                msg = await ws.receive()
                kind = msg.type
                if kind in _DATA:
                    record[1] = loop.time()
                    data = msg.data
                    self.endpoint.received(conn, data if isinstance(data, bytes) else data.encode())
                elif kind is WSMsgType.PONG:
                    record[1] = loop.time()
                    self.endpoint.received(conn, b"")
                elif kind is WSMsgType.PING:
                    record[1] = loop.time()
                    transport.write(server_frame(OP_PONG, msg.data))
                else:
                    if kind is WSMsgType.ERROR:
                        reason = f"websocket error: {msg.data}"
                        log.info(
                            "websocket protocol error",
                            extra={"fields": {"conn": conn, "error": str(msg.data)}},
                        )
                    break
        except ConnectionError:
            reason = "connection reset"
        finally:
            self._open.pop(conn, None)
            self.endpoint.lost(conn, reason)
        await self._closed(transport)
        return ws

    @staticmethod
    async def _closed(transport: _WsTransport) -> None:
        """Let a close started by the hub finish its handshake before the handler returns."""
        task = transport._task
        if task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
