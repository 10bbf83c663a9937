"""Classic libpcap files: writer and reader (both byte orders, micro- and nanosecond stamps)."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO

from parlour.packets.files.records import MAX_SNAPLEN, CaptureFormatError, Record

__all__ = ["PcapWriter", "iter_pcap", "pcap_header"]

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D


def pcap_header(
    linktype: int, nanosecond: bool = False, big_endian: bool = False, snaplen: int = MAX_SNAPLEN
) -> bytes:
    order = ">" if big_endian else "<"
    magic = MAGIC_NS if nanosecond else MAGIC_US
    return struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


class PcapWriter:
    """Write frames to a binary stream as a pcap file.

    ``write(ts_ns, frame)`` appends one record; ``write_many`` takes ``(ts_ns, frame)`` pairs
    and joins them into one ``write`` call (the fast path).
    """

    __slots__ = ("_div", "_frac", "_rec", "_stream", "linktype")

    def __init__(
        self,
        stream: BinaryIO,
        linktype: int,
        *,
        nanosecond: bool = False,
        big_endian: bool = False,
        snaplen: int = MAX_SNAPLEN,
    ) -> None:
        self._stream = stream
        self.linktype = linktype
        self._rec = struct.Struct((">" if big_endian else "<") + "IIII")
        self._div = 1_000_000_000
        self._frac = 1 if nanosecond else 1000
        stream.write(pcap_header(linktype, nanosecond, big_endian, snaplen))

    def write(self, ts_ns: int, frame: bytes, wire_len: int | None = None) -> None:
        sec, frac = divmod(ts_ns, self._div)
        n = len(frame)
        self._stream.write(
            self._rec.pack(sec, frac // self._frac, n, n if wire_len is None else wire_len) + frame
        )

    def write_many(self, frames: Iterable[Sequence[Any]]) -> int:
        """Append ``(ts_ns, frame, ...)`` items — pairs, or anything indexable the same way
        such as :class:`~parlour.packets.build.conversation.BuiltPacket` — in batched writes."""
        pack = self._rec.pack
        div = self._div
        fr = self._frac
        chunks: list[bytes] = []
        extend = chunks.extend
        write = self._stream.write
        join = b"".join
        count = 0
        for item in frames:
            frame = item[1]
            n = len(frame)
            sec, ns = divmod(item[0], div)
            extend((pack(sec, ns // fr, n, n), frame))
            count += 1
            if not count & 0x7FFF:
                write(join(chunks))
                chunks.clear()
        write(join(chunks))
        return count


def iter_pcap(data: bytes) -> Iterator[Record]:
    """Records of a pcap file held in memory; :class:`CaptureFormatError` on bad input."""
    if len(data) < 24:
        raise CaptureFormatError(f"pcap global header truncated ({len(data)} of 24 bytes)")
    magic_le = int.from_bytes(data[:4], "little")
    if magic_le in (MAGIC_US, MAGIC_NS):
        order = "<"
        magic = magic_le
    else:
        magic = int.from_bytes(data[:4], "big")
        if magic not in (MAGIC_US, MAGIC_NS):
            raise CaptureFormatError(f"not a pcap file (magic {data[:4].hex()})")
        order = ">"
    major, _minor, _tz, _sig, _snap, network = struct.unpack_from(order + "HHiIII", data, 4)
    if major != 2:
        raise CaptureFormatError(f"unsupported pcap version {major}")
    linktype = network & 0x0FFFFFFF
    mult = 1 if magic == MAGIC_NS else 1000
    rec = struct.Struct(order + "IIII")
    unpack = rec.unpack_from
    off = 24
    end = len(data)
    while off < end:
        if off + 16 > end:
            raise CaptureFormatError(f"pcap record header truncated at offset {off}")
        sec, frac, caplen, wirelen = unpack(data, off)
        off += 16
        if caplen > MAX_SNAPLEN:
            raise CaptureFormatError(f"pcap record at offset {off - 16} claims {caplen} bytes")
        if off + caplen > end:
            raise CaptureFormatError(
                f"pcap record at offset {off - 16} truncated ({end - off} of {caplen} bytes)"
            )
        yield Record(sec * 1_000_000_000 + frac * mult, data[off : off + caplen], wirelen, linktype)
        off += caplen
