"""Read a capture file record by record with bounded memory, keeping every complete packet.

:class:`CaptureStream` reads pcap and pcapng files in chunks (one megabyte at a time), so a
capture of any size is read in constant memory. Like tshark, a file that ends in the middle of
a record, or whose later records are damaged, still yields every complete record before the
problem; the problem is then in :attr:`CaptureStream.problem` for the caller to report. A file
that is not a capture at all raises :class:`CaptureFormatError` at once.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from parlour.packets.files.pcap import MAGIC_NS, MAGIC_US
from parlour.packets.files.pcapng import SHB, PcapngSection
from parlour.packets.files.records import MAX_SNAPLEN, CaptureFormatError, Record

__all__ = ["CHUNK", "CUT_SHORT", "CaptureStream"]

#: bytes read from the file at a time
CHUNK = 1 << 20
#: what :attr:`CaptureStream.problem` says when the file ends inside a record (tshark's words)
CUT_SHORT = "appears to have been cut short in the middle of a packet"


class CaptureStream:
    """The records of a pcap or pcapng file, read lazily (use as an iterable, once).

    *source* is a path, the file's bytes, or a binary stream. After iteration,
    :attr:`problem` is ``None`` when the whole file was read, or says why reading stopped
    early (the file was cut short, or a record is damaged); the records before it were all
    yielded.
    """

    def __init__(self, source: str | Path | bytes | BinaryIO, chunk: int = CHUNK) -> None:
        self._own = False
        if isinstance(source, bytes):
            self._f: BinaryIO = BytesIO(source)
        elif isinstance(source, str | Path):
            try:
                self._f = open(source, "rb")  # noqa: SIM115 - closed in close()/__exit__
            except OSError as exc:
                raise CaptureFormatError(f"cannot read {source}: {exc.strerror or exc}") from exc
            self._own = True
        else:
            self._f = source
        self._chunk = max(chunk, 64)
        self.problem: str | None = None
        try:
            self._head = self._f.read(24)
            self.format = _detect(self._head)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> CaptureStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self._f.close()

    def __iter__(self) -> Iterator[Record]:
        try:
            if self.format == "pcap":
                yield from self._pcap()
            else:
                yield from self._pcapng()
        finally:
            self.close()

    # ------------------------------------------------------------------------------ pcap

    def _pcap(self) -> Iterator[Record]:
        head = self._head
        if len(head) < 24:
            self.problem = CUT_SHORT
            return
        magic_le = int.from_bytes(head[:4], "little")
        order = "<" if magic_le in (MAGIC_US, MAGIC_NS) else ">"
        magic = int.from_bytes(head[:4], "little" if order == "<" else "big")
        major, _minor, _tz, _sig, _snap, network = struct.unpack_from(order + "HHiIII", head, 4)
        if major != 2:
            raise CaptureFormatError(f"unsupported pcap version {major}")
        linktype = network & 0x0FFFFFFF
        mult = 1 if magic == MAGIC_NS else 1000
        unpack = struct.Struct(order + "IIII").unpack_from
        read = self._f.read
        chunk = self._chunk
        buf = b""
        off = 0
        pos = 24  # file offset of buf[0]
        new = tuple.__new__
        while True:
            if len(buf) - off < 16:
                more = read(chunk)
                buf = buf[off:] + more
                pos += off
                off = 0
                if len(buf) < 16:
                    if buf:
                        self.problem = CUT_SHORT
                    return
            sec, frac, cap, wire = unpack(buf, off)
            if cap > MAX_SNAPLEN:
                self.problem = (
                    f"appears to be damaged or corrupt (the record at offset {pos + off} "
                    f"claims {cap} bytes, more than the maximum of {MAX_SNAPLEN})"
                )
                return
            end = off + 16 + cap
            if end > len(buf):
                more = read(max(chunk, end - off))
                buf = buf[off:] + more
                pos += off
                end -= off
                off = 0
                if end > len(buf):
                    self.problem = CUT_SHORT
                    return
            yield new(Record, (sec * 1_000_000_000 + frac * mult, buf[off + 16 : end], wire,
                               linktype, None, 0))  # fmt: skip
            off = end

    # ---------------------------------------------------------------------------- pcapng

    def _pcapng(self) -> Iterator[Record]:
        section = PcapngSection()
        pending = self._head  # the first 24 bytes were read to detect the format
        read = self._f.read
        off = 0
        while True:
            if len(pending) < 12:
                pending += read(12 - len(pending))
                if len(pending) < 12:
                    if pending:
                        self.problem = CUT_SHORT
                    return
            try:
                btype, total = section.header(pending[:12], off)
            except CaptureFormatError as exc:
                if off == 0:
                    raise
                self.problem = f"appears to be damaged or corrupt ({exc})"
                return
            if total > 16 * MAX_SNAPLEN:
                self.problem = (
                    f"appears to be damaged or corrupt (the block at offset {off} claims "
                    f"{total} bytes)"
                )
                return
            if len(pending) < total:
                pending += read(total - len(pending))
                if len(pending) < total:
                    self.problem = CUT_SHORT
                    return
            block, pending = pending[:total], pending[total:]
            try:
                rec = section.block(btype, block, off)
            except CaptureFormatError as exc:
                if off == 0:
                    raise
                self.problem = f"appears to be damaged or corrupt ({exc})"
                return
            if rec is not None:
                yield rec
            off += total


def _detect(head: bytes) -> str:
    if len(head) < 4:
        raise CaptureFormatError(f"file too short to be a capture ({len(head)} bytes)")
    if int.from_bytes(head[:4], "little") == SHB:
        return "pcapng"
    if {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")} & {
        MAGIC_US,
        MAGIC_NS,
    }:
        return "pcap"
    raise CaptureFormatError(f"not a pcap or pcapng file (starts with {head[:4].hex()})")
