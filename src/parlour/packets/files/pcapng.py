"""pcapng: writer (SHB, IDB, EPB with comments) and reader (SHB/IDB/EPB/SPB/PB, both orders)."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from parlour.packets.files.records import MAX_SNAPLEN, CaptureFormatError, Record

__all__ = ["PcapngSection", "PcapngWriter", "iter_pcapng"]

SHB = 0x0A0D0D0A
IDB = 0x00000001
PB = 0x00000002
SPB = 0x00000003
EPB = 0x00000006
BOM = 0x1A2B3C4D

OPT_END = 0
OPT_COMMENT = 1
IF_NAME = 2
IF_TSRESOL = 9
SHB_USERAPPL = 4


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _options(opts: Iterable[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for code, value in opts:
        out += struct.pack("<HH", code, len(value)) + value + b"\0" * _pad4(len(value))
    if out:
        out += b"\0\0\0\0"
    return bytes(out)


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


class PcapngWriter:
    """Write one section with one interface; frames as Enhanced Packet Blocks."""

    __slots__ = ("_div", "_stream", "linktype")

    def __init__(
        self,
        stream: BinaryIO,
        linktype: int,
        *,
        nanosecond: bool = False,
        comment: str | None = None,
        if_name: str | None = None,
        snaplen: int = MAX_SNAPLEN,
        application: str = "parlour packets",
    ) -> None:
        self._stream = stream
        self.linktype = linktype
        self._div = 1 if nanosecond else 1000
        shb_opts: list[tuple[int, bytes]] = [(SHB_USERAPPL, application.encode())]
        if comment:
            shb_opts.insert(0, (OPT_COMMENT, comment.encode()))
        shb = struct.pack("<IHHq", BOM, 1, 0, -1) + _options(shb_opts)
        idb_opts: list[tuple[int, bytes]] = []
        if if_name:
            idb_opts.append((IF_NAME, if_name.encode()))
        if nanosecond:
            idb_opts.append((IF_TSRESOL, b"\x09"))
        idb = struct.pack("<HHI", linktype, 0, snaplen) + _options(idb_opts)
        stream.write(_block(SHB, shb) + _block(IDB, idb))

    def _epb(self, ts_ns: int, frame: bytes, wire_len: int, comment: str | None) -> bytes:
        ts = ts_ns // self._div
        n = len(frame)
        opts = _options([(OPT_COMMENT, comment.encode())]) if comment else b""
        body = (
            struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, n, wire_len)
            + frame
            + b"\0" * _pad4(n)
            + opts
        )
        return _block(EPB, body)

    def write(
        self, ts_ns: int, frame: bytes, wire_len: int | None = None, comment: str | None = None
    ) -> None:
        self._stream.write(
            self._epb(ts_ns, frame, len(frame) if wire_len is None else wire_len, comment)
        )

    def write_many(self, frames: Iterable[tuple[int, bytes]]) -> int:
        head = struct.Struct("<IIIIIII").pack
        tail = struct.Struct("<I").pack
        div = self._div
        chunks: list[bytes] = []
        append = chunks.append
        count = 0
        for ts_ns, frame in frames:
            n = len(frame)
            pad = (4 - n % 4) % 4
            total = 32 + n + pad
            ts = ts_ns // div
            append(head(EPB, total, 0, ts >> 32, ts & 0xFFFFFFFF, n, n))
            append(frame + b"\0" * pad if pad else frame)
            append(tail(total))
            count += 1
            if len(chunks) >= 98304:
                self._stream.write(b"".join(chunks))
                chunks.clear()
        self._stream.write(b"".join(chunks))
        return count


def _parse_options(body: bytes, order: str) -> Iterator[tuple[int, bytes]]:
    off = 0
    n = len(body)
    while off + 4 <= n:
        code, length = struct.unpack_from(order + "HH", body, off)
        off += 4
        if code == OPT_END:
            return
        if off + length > n:
            raise CaptureFormatError("pcapng option runs past its block")
        yield code, body[off : off + length]
        off += length + _pad4(length)


def _tsresol(value: bytes) -> int:
    """Ticks per second from an ``if_tsresol`` option value."""
    v = value[0]
    base = 2 if v & 0x80 else 10
    result: int = base ** (v & 0x7F)
    return result


class PcapngSection:
    """What reading a pcapng file needs to remember between blocks (byte order, interfaces).

    :meth:`block` takes one whole block and returns the record it carries, if any; both the
    in-memory reader (:func:`iter_pcapng`) and the streaming one feed it block by block.
    """

    __slots__ = ("interfaces", "order")

    def __init__(self) -> None:
        self.order = "<"
        self.interfaces: list[tuple[int, int]] = []  # (linktype, ticks per second)

    def header(self, head: bytes, off: int) -> tuple[int, int]:
        """``(type, total length)`` of the block whose first 12 bytes are *head*."""
        btype = int.from_bytes(head[:4], "little")
        if btype == SHB:
            bom = head[8:12]
            if bom == b"\x4d\x3c\x2b\x1a":
                self.order = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                self.order = ">"
            else:
                raise CaptureFormatError(
                    f"pcapng section at offset {off} has a bad byte-order mark"
                )
            self.interfaces = []
        elif off == 0:
            raise CaptureFormatError(f"not a pcapng file (first block type 0x{btype:08x})")
        btype, total = struct.unpack_from(self.order + "II", head, 0)
        if total < 12 or total % 4:
            raise CaptureFormatError(f"pcapng block at offset {off} has bad length {total}")
        return btype, total

    def block(self, btype: int, block: bytes, off: int) -> Record | None:
        """The record in *block* (the whole block, header and trailer included)."""
        order = self.order
        total = len(block)
        if struct.unpack_from(order + "I", block, total - 4)[0] != total:
            raise CaptureFormatError(f"pcapng block at offset {off}: trailing length mismatch")
        body = block[8 : total - 4]
        if btype == SHB:
            if len(body) < 16:
                raise CaptureFormatError(f"pcapng section header at offset {off} too short")
            major = struct.unpack_from(order + "H", body, 4)[0]
            if major != 1:
                raise CaptureFormatError(f"unsupported pcapng version {major}")
        elif btype == IDB:
            if len(body) < 8:
                raise CaptureFormatError(f"pcapng interface block at offset {off} too short")
            linktype = struct.unpack_from(order + "H", body, 0)[0]
            ticks = 1_000_000
            for code, value in _parse_options(body[8:], order):
                if code == IF_TSRESOL and value:
                    ticks = _tsresol(value)
            self.interfaces.append((linktype, ticks))
        elif btype in (EPB, PB):
            if len(body) < 20:
                raise CaptureFormatError(f"pcapng packet block at offset {off} too short")
            if btype == EPB:
                iface, hi, lo, caplen, wirelen = struct.unpack_from(order + "IIIII", body, 0)
            else:
                iface, _drops, hi, lo, caplen, wirelen = struct.unpack_from(
                    order + "HHIIII", body, 0
                )
            if iface >= len(self.interfaces):
                raise CaptureFormatError(f"packet block at offset {off} names unknown interface")
            if caplen > MAX_SNAPLEN or 20 + caplen > len(body):
                raise CaptureFormatError(f"packet block at offset {off} has bad length {caplen}")
            linktype, ticks = self.interfaces[iface]
            ts = (hi << 32) | lo
            ts_ns = (
                ts * (1_000_000_000 // ticks)
                if ticks <= 1_000_000_000 and 1_000_000_000 % ticks == 0
                else ts * 1_000_000_000 // ticks
            )
            comment = None
            for code, value in _parse_options(body[20 + caplen + _pad4(caplen) :], order):
                if code == OPT_COMMENT:
                    comment = value.decode("utf-8", "replace")
            return Record(ts_ns, body[20 : 20 + caplen], wirelen, linktype, comment, iface)
        elif btype == SPB:
            if not self.interfaces:
                raise CaptureFormatError(
                    f"simple packet block at offset {off} before any interface"
                )
            wirelen = struct.unpack_from(order + "I", body, 0)[0]
            caplen = min(wirelen, len(body) - 4)
            return Record(0, body[4 : 4 + caplen], wirelen, self.interfaces[0][0])
        return None


def iter_pcapng(data: bytes) -> Iterator[Record]:
    """Records of a pcapng file held in memory; :class:`CaptureFormatError` on bad input."""
    off = 0
    end = len(data)
    if end < 28:
        raise CaptureFormatError(f"pcapng file truncated ({end} bytes)")
    section = PcapngSection()
    while off < end:
        if off + 12 > end:
            raise CaptureFormatError(f"pcapng block header truncated at offset {off}")
        btype, total = section.header(data[off : off + 12], off)
        if off + total > end:
            raise CaptureFormatError(f"pcapng block at offset {off} has bad length {total}")
        rec = section.block(btype, data[off : off + total], off)
        if rec is not None:
            yield rec
        off += total
