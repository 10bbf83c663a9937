"""The relay on a UDP socket (asyncio): a thin adapter around :class:`~parlour.p2p.relay.Relay`.

The chat server will start one with the same secret it signs tickets with; tests and the
benchmark start it standalone. Idle bindings are swept every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

from .relay import Address, Relay, RelayConfig

__all__ = ["RelayServer"]


class RelayServer(asyncio.DatagramProtocol):
    def __init__(self, secret: bytes, config: RelayConfig | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self.relay = Relay(secret, self._loop.time(), config)
        self.transport: asyncio.DatagramTransport | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    @classmethod
    async def start(
        cls,
        secret: bytes,
        host: str = "127.0.0.1",
        port: int = 0,
        config: RelayConfig | None = None,
    ) -> RelayServer:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(
            lambda: cls(secret, config), local_addr=(host, port)
        )
        return proto

    @property
    def address(self) -> Address:
        assert self.transport is not None
        name = self.transport.get_extra_info("sockname")
        return (name[0], name[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (asyncio's selector datagram transport does not subclass DatagramTransport in 3.11)
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._sweep()

    def _sweep(self) -> None:
        self.relay.expire(self._loop.time())
        self._sweeper = self._loop.call_later(5.0, self._sweep)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = self.relay.datagram_received(data, (addr[0], addr[1]), self._loop.time())
        for payload, dest in out:
            self.forward(bytes(payload), dest)

    def forward(self, data: bytes, dest: Address) -> None:
        """Send one datagram on (tests override this to impair the path)."""
        if self.transport is not None:
            self.transport.sendto(data, dest)

    def error_received(self, exc: Exception) -> None:  # ICMP errors: nothing to do
        pass

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()
