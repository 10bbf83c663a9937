"""The relay, sans-I/O: forwards a transfer's datagrams between its two bound sides.

The chat server (later) hosts one UDP socket running :class:`Relay` and hands each side of a
transfer a ticket, ``HMAC-SHA256(relay secret, "parlour-relay/1" + transfer id + side)[:16]``.
A side binds with ``RELAY_BIND(transfer id, side, ticket)``; the relay answers
``RELAY_BOUND`` with the address it observed (a STUN-like hint the client may report). From
then on every HELLO or SEALED datagram of that transfer id that comes from one bound side goes
to the other, unchanged: the relay never holds a key and cannot read or alter what it carries
(a change fails the receiver's authentication).

Everything is bounded: the number of transfers, the bytes per second per transfer and in all
(token buckets; excess is dropped, which the transfer's congestion control reads as loss),
and idle bindings expire.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from .wire import (
    TICKET_LEN,
    Kind,
    WireError,
    parse_relay_bind,
    relay_bound,
)

__all__ = ["Relay", "RelayConfig", "RelayStats", "ticket_for"]

Address = tuple[str, int]


def ticket_for(secret: bytes, transfer_id: bytes, side: int) -> bytes:
    """The ticket the server gives side ``side`` (0 sender, 1 receiver) of a transfer."""
    msg = b"parlour-relay/1" + transfer_id + bytes([side])
    return hmac.new(secret, msg, hashlib.sha256).digest()[:TICKET_LEN]


@dataclass(frozen=True, slots=True)
class RelayConfig:
    max_transfers: int = 1024
    rate_per_transfer: float = 4e6  # bytes per second
    burst_per_transfer: int = 256 * 1024
    total_rate: float = 50e6
    total_burst: int = 2 << 20
    idle_timeout: float = 60.0


@dataclass(slots=True)
class RelayStats:
    forwarded: int = 0
    forwarded_bytes: int = 0
    bound: int = 0
    dropped_unknown: int = 0  # no binding for the transfer id, or from a stranger
    dropped_bad_ticket: int = 0
    dropped_rate: int = 0
    dropped_full: int = 0
    dropped_malformed: int = 0
    expired: int = 0


class _Bucket:
    __slots__ = ("_capacity", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        self._rate = rate
        self._capacity = float(capacity)
        self._tokens = float(capacity)
        self._last = now

    def take(self, amount: int, now: float) -> bool:
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < amount:
            return False
        self._tokens -= amount
        return True


@dataclass(slots=True)
class _Binding:
    sides: list[Address | None]
    bucket: _Bucket
    last_seen: float
    counts: list[int] = field(default_factory=lambda: [0, 0])


class Relay:
    def __init__(self, secret: bytes, now: float, config: RelayConfig | None = None) -> None:
        if len(secret) < 16:
            raise ValueError("the relay secret must be at least 16 bytes")
        self.config = config or RelayConfig()
        self.stats = RelayStats()
        self._secret = secret
        self._bindings: dict[bytes, _Binding] = {}
        self._total = _Bucket(self.config.total_rate, self.config.total_burst, now)

    def __len__(self) -> int:
        return len(self._bindings)

    def datagram_received(
        self, data: bytes | memoryview, addr: Address, now: float
    ) -> list[tuple[bytes | memoryview, Address]]:
        """What to send (and where) in answer to one datagram from ``addr``."""
        if len(data) < 9:
            self.stats.dropped_malformed += 1
            return []
        kind = data[0]
        if kind == Kind.RELAY_BIND:
            return self._bind(data, addr, now)
        if kind not in (Kind.HELLO, Kind.SEALED):
            self.stats.dropped_malformed += 1
            return []
        binding = self._bindings.get(bytes(data[1:9]))
        if binding is None:
            self.stats.dropped_unknown += 1
            return []
        a, b = binding.sides
        if addr == a:
            dest = b
        elif addr == b:
            dest = a
        else:
            self.stats.dropped_unknown += 1
            return []
        if dest is None:
            self.stats.dropped_unknown += 1
            return []
        size = len(data)
        if not binding.bucket.take(size, now) or not self._total.take(size, now):
            self.stats.dropped_rate += 1
            return []
        binding.last_seen = now
        self.stats.forwarded += 1
        self.stats.forwarded_bytes += size
        return [(data, dest)]

    def _bind(
        self, data: bytes | memoryview, addr: Address, now: float
    ) -> list[tuple[bytes | memoryview, Address]]:
        try:
            bind = parse_relay_bind(data)
        except WireError:
            self.stats.dropped_malformed += 1
            return []
        expected = ticket_for(self._secret, bind.transfer_id, bind.side)
        if not hmac.compare_digest(expected, bind.ticket):
            self.stats.dropped_bad_ticket += 1
            return []
        binding = self._bindings.get(bind.transfer_id)
        if binding is None:
            if len(self._bindings) >= self.config.max_transfers:
                self.expire(now)
            if len(self._bindings) >= self.config.max_transfers:
                self.stats.dropped_full += 1
                return []
            cfg = self.config
            binding = _Binding(
                [None, None], _Bucket(cfg.rate_per_transfer, cfg.burst_per_transfer, now), now
            )
            self._bindings[bind.transfer_id] = binding
        binding.sides[bind.side] = addr  # the latest bind of a ticket holder wins (rebinding)
        binding.last_seen = now
        self.stats.bound += 1
        return [(relay_bound(bind.transfer_id, bind.side, addr), addr)]

    def expire(self, now: float) -> int:
        """Drop bindings idle for ``idle_timeout``; returns how many went."""
        limit = now - self.config.idle_timeout
        stale = [tid for tid, b in self._bindings.items() if b.last_seen <= limit]
        for tid in stale:
            del self._bindings[tid]
        self.stats.expired += len(stale)
        return len(stale)

    def forget(self, transfer_id: bytes) -> None:
        """The server ends a transfer's relaying (declined, finished, user gone)."""
        self._bindings.pop(transfer_id, None)
