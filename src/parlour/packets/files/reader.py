"""Open any supported capture file: detect pcap vs pcapng by magic number."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

from parlour.packets.files.pcap import MAGIC_NS, MAGIC_US, iter_pcap
from parlour.packets.files.pcapng import SHB, iter_pcapng
from parlour.packets.files.records import CaptureFormatError, Record

__all__ = ["capture_format", "iter_records", "read_capture"]


def capture_format(data: bytes) -> str:
    """``"pcap"`` or ``"pcapng"``; :class:`CaptureFormatError` for anything else."""
    if len(data) < 4:
        raise CaptureFormatError(f"file too short to be a capture ({len(data)} bytes)")
    if int.from_bytes(data[:4], "little") == SHB:
        return "pcapng"
    if {int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big")} & {MAGIC_US, MAGIC_NS}:
        return "pcap"
    raise CaptureFormatError(f"not a pcap or pcapng file (starts with {data[:4].hex()})")


def iter_records(data: bytes) -> Iterator[Record]:
    if capture_format(data) == "pcapng":
        return iter_pcapng(data)
    return iter_pcap(data)


def read_capture(source: str | Path | bytes) -> list[Record]:
    """Every record of a capture given as a path or as the file's bytes."""
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise CaptureFormatError(f"cannot read {source}: {exc.strerror}") from exc
    enabled = gc.isenabled()
    gc.disable()  # a list of many new records and no cycles: nothing for the GC to find
    try:
        return list(iter_records(data))
    finally:
        if enabled:
            gc.enable()
