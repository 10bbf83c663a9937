"""Limits for the web listener's HTTP connections, before aiohttp sees them.

aiohttp counts nothing and waits for request headers forever, so without this a slowloris
(headers a byte at a time) or a flood of idle connections would hold file descriptors the
chat's TCP door needs too. :class:`HttpGuard` wraps each connection's protocol:

* at most ``max_connections`` HTTP connections, and ``per_address`` from one address (0: no
  limit — behind a proxy every client has its address); a connection over a limit is answered
  ``503`` with ``Retry-After`` and closed before aiohttp reads anything;
* a connection must deliver the headers of its first request within ``header_timeout``
  seconds (:meth:`HttpGuard.started` marks it, from the application's middleware), or it is
  closed; between requests aiohttp's keep-alive timeout applies, and a WebSocket that took a
  chat connection slot is governed by the chat endpoint's limits from then on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from parlour.transports.proxy_header import Networks, trusted

__all__ = ["HttpGuard"]

log = logging.getLogger("parlour.transports.web")

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nConnection: close\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s"
)


def _address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "?"


class _Guarded(asyncio.Protocol):
    """Forwards everything to aiohttp's protocol once the connection is admitted."""

    __slots__ = ("_address", "_deadline", "_guard", "_inner", "_transport")

    def __init__(self, guard: HttpGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._address: str | None = None  # set once admitted
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # uvloop's transports are not subclasses
        guard = self._guard
        address = _address(transport)
        refusal = guard.admit(address)
        if refusal is not None:
            guard.refused += 1
            body = refusal.encode()
            transport.write(_BUSY % (len(body), body))
            transport.close()
            log.debug("http connection refused", extra={"fields": {"peer": address}})
            return
        self._address = address
        self._transport = transport
        guard.opened(self, transport, address)
        self._deadline = asyncio.get_running_loop().call_later(guard.header_timeout, self._too_slow)
        self._inner.connection_made(transport)

    def _too_slow(self) -> None:
        self._deadline = None
        if self._transport is not None and not self._transport.is_closing():
            self._guard.timed_out += 1
            log.info(
                "http connection closed: no request headers in time",
                extra={"fields": {"peer": self._address, "seconds": self._guard.header_timeout}},
            )
            self._transport.abort()

    def started(self) -> None:
        """Its first request's headers arrived."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def data_received(self, data: bytes) -> None:
        if self._address is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._address is None:
            return None
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._address is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._address is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._address is None:
            return
        self.started()
        self._guard.closed(self, self._transport, self._address)
        self._inner.connection_lost(exc)


class HttpGuard:
    """Connection limits and the header deadline for one HTTP listener."""

    def __init__(
        self,
        *,
        max_connections: int,
        per_address: int,
        header_timeout: float = 10.0,
        trusted_proxies: Networks = (),
    ) -> None:
        self.max_connections = max_connections
        self.per_address = per_address
        self.header_timeout = header_timeout
        #: proxies whose connections carry many clients: not limited per address (the
        #: WebSocket door counts each client by its X-Forwarded-For address instead)
        self.trusted_proxies = trusted_proxies
        self._open = 0
        self._by_address: dict[str, int] = {}
        self._by_transport: dict[asyncio.BaseTransport, _Guarded] = {}
        self.refused = 0
        self.timed_out = 0

    @classmethod
    def for_chat(
        cls,
        *,
        max_connections: int,
        per_address: int,
        header_timeout: float = 10.0,
        trusted_proxies: Networks = (),
    ) -> HttpGuard:
        """A guard for a listener whose WebSockets are chat connections with these limits.

        It admits a few more HTTP connections than the chat does, so that a WebSocket over
        the chat's limit is upgraded and answered ``server_full`` in band (a browser shows a
        refused upgrade only as a failed connection), and a full server's page still loads.
        """
        return cls(
            max_connections=max_connections + max(16, max_connections // 8),
            per_address=per_address + 8 if per_address else 0,
            header_timeout=header_timeout,
            trusted_proxies=trusted_proxies,
        )

    def __len__(self) -> int:
        return self._open

    def factory(self, make: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` around aiohttp's (``make``)."""
        return lambda: _Guarded(self, make())

    def admit(self, address: str) -> str | None:
        """None when a connection from `address` may open, else why not."""
        if self._open >= self.max_connections:
            return "the server is full; try again later"
        if (
            self.per_address
            and self._by_address.get(address, 0) >= self.per_address
            and not trusted(address, self.trusted_proxies)
        ):
            return "too many connections from your address; try again later"
        return None

    def opened(self, guarded: _Guarded, transport: asyncio.BaseTransport, address: str) -> None:
        self._open += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        self._by_transport[transport] = guarded

    def closed(
        self, guarded: _Guarded, transport: asyncio.BaseTransport | None, address: str
    ) -> None:
        self._open -= 1
        left = self._by_address.get(address, 1) - 1
        if left > 0:
            self._by_address[address] = left
        else:
            self._by_address.pop(address, None)
        if transport is not None and self._by_transport.get(transport) is guarded:
            del self._by_transport[transport]

    def started(self, transport: asyncio.BaseTransport | None) -> None:
        """The connection of `transport` delivered a request's headers."""
        if transport is None:
            return
        guarded = self._by_transport.get(transport)
        if guarded is not None:
            guarded.started()
