"""The chat server's UDP door: the file-transfer relay, plus endpoint probes.

It is :class:`parlour.p2p.relay_udp.RelayServer` (tickets, bounded table, per-transfer and
total rate limits: a transfer falls back to it when no direct path works) with one more
datagram: ``PROBE(token)``. A client sends it from the socket it transfers files with, after
``file_probe`` gave it the token; the core records the address the datagram came from as that
connection's *observed* endpoint (``ChatService.udp_probe``) and this answers ``PROBED`` with
the address, so the client knows it arrived (docs/protocol.md, file transfers).

Probes are rate-limited as a whole (a flood of made-up tokens costs a dict lookup each and is
dropped beyond the bucket), a probe is answered only for a token the core knows, and the
answer is never larger than the probe (no amplification). The file bytes of a direct transfer
never come here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from parlour.p2p.config import TokenBucket
from parlour.p2p.relay import Address, RelayConfig, ticket_for
from parlour.p2p.relay_udp import RelayServer
from parlour.p2p.wire import Kind, WireError, parse_probe, probed

__all__ = ["ChatRelay", "ProbeStats", "public_address"]

log = logging.getLogger("parlour.transports.udp")

#: token (16 bytes), the address it came from -> whether a connection holds the token
Observe = Callable[[bytes, Address], bool]
_PROBE = int(Kind.PROBE)


def public_address(addr: tuple[str, int]) -> Address:
    """The address as peers would use it: an IPv4-mapped IPv6 address (a dual-stack socket)
    as plain IPv4, without a scope."""
    host = addr[0].split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return (host, addr[1])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return (str(ip.ipv4_mapped), addr[1])
    return (str(ip), addr[1])


@dataclass(slots=True)
class ProbeStats:
    answered: int = 0
    unknown: int = 0  # no connection holds the token (or it was seen from elsewhere)
    malformed: int = 0
    rate_limited: int = 0


class ChatRelay(RelayServer):
    def __init__(
        self,
        secret: bytes,
        config: RelayConfig | None,
        observe: Observe,
        *,
        probe_rate: float = 200.0,
        probe_burst: int = 400,
    ) -> None:
        super().__init__(secret, config)
        self._secret = secret
        self._observe = observe
        self._probes = TokenBucket(probe_burst, probe_rate)
        self.probe_stats = ProbeStats()

    @classmethod
    async def open(
        cls,
        secret: bytes,
        observe: Observe,
        *,
        host: str,
        port: int,
        config: RelayConfig | None = None,
        probe_rate: float = 200.0,
    ) -> ChatRelay:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(
            lambda: cls(secret, config, observe, probe_rate=probe_rate),
            local_addr=(host, port),
        )
        return proto

    def tickets(self, transfer_id: bytes) -> tuple[bytes, bytes]:
        """The relay tickets of the sender (side 0) and the receiver (side 1)."""
        return ticket_for(self._secret, transfer_id, 0), ticket_for(self._secret, transfer_id, 1)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data and data[0] == _PROBE:
            self._probe(data, addr)
            return
        super().datagram_received(data, addr)

    def _probe(self, data: bytes, addr: tuple[str, int]) -> None:
        stats = self.probe_stats
        if not self._probes.take(self._loop.time()):
            stats.rate_limited += 1
            return
        try:
            token = parse_probe(data)
        except WireError:
            stats.malformed += 1
            return
        seen = public_address(addr)
        if not self._observe(token, seen):
            stats.unknown += 1
            return
        stats.answered += 1
        self.forward(probed(token, seen), (addr[0], addr[1]))
