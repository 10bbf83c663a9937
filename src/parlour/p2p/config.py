"""Plain data of a transfer connection: its settings, states, counters and small helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .wire import MAX_CHUNK

__all__ = ["Address", "RelayInfo", "State", "Stats", "TokenBucket", "TransferConfig"]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class TransferConfig:
    """Tunables of one transfer (the defaults suit both a LAN and the Internet)."""

    idle_timeout: float = 15.0  # no authenticated datagram from the peer for this long
    stall_timeout: float = 60.0  # the peer answers but no file byte moves for this long
    connect_timeout: float = 20.0  # no path at all by then: NO_PATH
    direct_timeout: float = 3.0  # no direct path by then: try the relay
    window: int = 8 << 20  # receiver flow-control window, bytes
    read_block: int = 1 << 20  # sender reads the file in blocks of this size
    read_ahead: int = 4 << 20  # and this far ahead of what it sends
    max_ack_delay: float = 0.010
    initial_rtt: float = 0.333
    beta: float = 0.5  # multiplicative decrease of the congestion window
    invalid_burst: int = 1000  # forged datagrams tolerated at once ...
    invalid_rate: float = 200.0  # ... and per second after that, before FLOOD
    replay_burst: int = 20000  # duplicated/replayed datagrams likewise
    replay_rate: float = 5000.0
    replay_window: int = 1 << 15  # packet numbers this far below the largest are too old
    chunk: int = 1194  # file bytes per datagram (at most wire.MAX_CHUNK)

    def __post_init__(self) -> None:
        if not 1 <= self.chunk <= MAX_CHUNK:
            raise ValueError(f"chunk must be 1..{MAX_CHUNK}")
        if self.window < 64 * 1024 or self.read_block < 4096 or self.read_ahead < 0:
            raise ValueError("window >= 64 KiB and read_block >= 4 KiB")


@dataclass(frozen=True, slots=True)
class RelayInfo:
    """Where the relay listens and this side's ticket for this transfer."""

    address: Address
    ticket: bytes


class State(Enum):
    PROBING = "probing"
    ESTABLISHED = "established"
    FINISHING = "finishing"  # receiver: verified, DONE not yet acknowledged
    FINISHED = "finished"  # sender: got DONE, acknowledging repeats for a while
    CLOSING = "closing"  # we sent CLOSE
    DRAINING = "draining"  # the peer sent CLOSE
    CLOSED = "closed"


@dataclass(slots=True)
class Stats:
    datagrams_sent: int = 0
    datagrams_received: int = 0
    wire_bytes_sent: int = 0
    data_bytes_sent: int = 0  # file bytes in DATA frames, first sends and resends
    data_bytes_resent: int = 0
    packets_lost: int = 0
    forged_dropped: int = 0  # failed authentication or malformed
    replays_dropped: int = 0  # duplicated, replayed or too old
    pto_count: int = 0
    path_changes: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class TokenBucket:
    """Counts events against a burst and a rate (1 token each)."""

    __slots__ = ("_last", "_rate", "_tokens", "capacity")

    def __init__(self, capacity: int, rate: float) -> None:
        self.capacity = float(capacity)
        self._rate = rate
        self._tokens = float(capacity)
        self._last: float | None = None

    def take(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
