"""What a transfer connection tells its adapter (events out), and why a transfer ends."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "Completed",
    "Connected",
    "Event",
    "Failed",
    "PathChanged",
    "ReadRequest",
    "ReadyToVerify",
    "Reason",
    "RelayBound",
    "RelayFallback",
    "WriteData",
]

Address = tuple[str, int]


class Reason(Enum):
    """Why a transfer failed. ``value`` is (wire code, message for the user)."""

    CANCELLED = (1, "the transfer was cancelled")
    IDLE_TIMEOUT = (2, "the peer went silent (idle timeout)")
    NO_PATH = (3, "no datagram got through to the peer, directly or through the relay")
    FILE_CHANGED = (4, "the file changed or disappeared while it was being sent")
    READ_FAILED = (5, "the sender could not read the file")
    DISK_FULL = (6, "the receiver's disk is full")
    WRITE_FAILED = (7, "the receiver could not write the file")
    HASH_MISMATCH = (8, "the received file does not match its SHA-256")
    OFFER_MISMATCH = (9, "the two sides disagree on the file (size or SHA-256)")
    FLOOD = (10, "too many forged or replayed datagrams")
    PROTOCOL = (11, "the peer broke the transfer protocol")
    SHUTDOWN = (12, "the client is shutting down")
    STALLED = (13, "the transfer made no progress")

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def message(self) -> str:
        return self.value[1]

    @classmethod
    def from_code(cls, code: int) -> Reason:
        for reason in cls:
            if reason.code == code:
                return reason
        return cls.PROTOCOL


@dataclass(frozen=True, slots=True)
class Connected:
    """Both sides proved they hold the key; packets now go to ``path``."""

    path: Address
    via_relay: bool


@dataclass(frozen=True, slots=True)
class PathChanged:
    """The peer's authenticated packets now come from ``path`` (NAT rebinding, relay)."""

    path: Address
    via_relay: bool


@dataclass(frozen=True, slots=True)
class RelayFallback:
    """No datagram got through directly in time: the transfer now tries the relay."""


@dataclass(frozen=True, slots=True)
class RelayBound:
    """The relay accepted this side; ``observed`` is this side's address as the relay saw it."""

    observed: Address


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """Sender: read ``length`` bytes at ``offset`` and pass them to ``provide_data``."""

    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class WriteData:
    """Receiver: write ``data`` at ``offset``, then call ``data_written``."""

    offset: int
    data: bytes | bytearray


@dataclass(frozen=True, slots=True)
class ReadyToVerify:
    """Receiver: every byte is written; check the SHA-256, then ``finish`` or ``abort``."""


@dataclass(frozen=True, slots=True)
class Completed:
    """The receiver verified the file and put it in place."""


@dataclass(frozen=True, slots=True)
class Failed:
    reason: Reason
    detail: str
    by_peer: bool

    def describe(self) -> str:
        who = "peer: " if self.by_peer else ""
        extra = f" ({self.detail})" if self.detail and self.detail != self.reason.message else ""
        return f"{who}{self.reason.message}{extra}"


Event = (
    Connected
    | PathChanged
    | RelayFallback
    | RelayBound
    | ReadRequest
    | WriteData
    | ReadyToVerify
    | Completed
    | Failed
)
