"""A captured frame as stored in a capture file, and the error readers raise."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["MAX_SNAPLEN", "CaptureFormatError", "Record"]

#: largest frame a reader accepts (Wireshark's own limit is 256 KiB for most link types)
MAX_SNAPLEN = 262_144


class CaptureFormatError(ValueError):
    """The bytes are not a readable pcap/pcapng capture (truncated, garbage, unsupported)."""


class Record(NamedTuple):
    """One frame: time in integer nanoseconds since the epoch, captured bytes, wire length.

    A named tuple (immutable, cheap to create: readers make millions of them).
    """

    ts_ns: int
    data: bytes
    wire_len: int
    linktype: int
    comment: str | None = None
    interface: int = 0
