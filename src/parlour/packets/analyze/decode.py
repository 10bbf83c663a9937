"""Decode captured frames into IPv4/IPv6, TCP, UDP and ICMP fields (pure; never raises).

Two layers:

* :func:`decode_record` is the careful, general decoder used by the analysis: link layers,
  IPv4 (options, fragments, TSO zero lengths), IPv6 (extension headers), TCP (the one
  :class:`~parlour.packets.wire.tcp.TcpHeader` type), UDP, ICMP and ICMPv6, checksums.
  Lengths follow tshark: a segment's length comes from the IP header (what was on the wire),
  not from the bytes a snap length let through; :attr:`DecodedPacket.complete` says whether
  all of it was captured.
* :func:`decode_capture` is the bulk path for whole files in memory: it keeps only each
  record's offset and unpacks the fixed IPv4+TCP header fields of a frame with one
  ``struct.unpack_from`` (:meth:`PacketTable.tcp_headers`), building careful
  :class:`DecodedPacket` objects only for the frames somebody indexes.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from socket import AF_INET6, inet_ntoa, inet_ntop
from typing import TypeAlias, overload

from parlour.packets.files.pcap import MAGIC_NS, MAGIC_US, iter_pcap
from parlour.packets.files.reader import capture_format, iter_records
from parlour.packets.files.records import CaptureFormatError, Record
from parlour.packets.wire.checksum import internet_checksum
from parlour.packets.wire.ipv4 import IPv4Header, parse_ipv4
from parlour.packets.wire.linktypes import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    ethertype_name,
    network_payload,
)
from parlour.packets.wire.tcp import TCP_HEADER, TcpHeader

__all__ = [
    "DecodedPacket",
    "Header",
    "PacketTable",
    "decode_capture",
    "decode_record",
    "decode_records",
    "read_capture_bytes",
]

_IP_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 2: "IGMP", 47: "GRE", 50: "ESP", 58: "ICMPv6"}
_UDP = struct.Struct("!HHHH")
_new_tcp = tuple.__new__


class DecodedPacket:
    """One frame, decoded as far as it goes. ``problem`` says why decoding stopped early.

    ``payload`` holds the captured bytes after the TCP/UDP header (the whole ICMP message for
    ICMP); ``seglen`` is the TCP payload length the IP header announces (tshark's
    ``tcp.len``), which is larger than ``len(payload)`` when a snap length cut the frame
    (``complete`` is false then), and for UDP the length its header announces minus 8;
    ``l4_len`` is the transport segment's length on the wire. The :class:`IPv4Header` is
    built only when :attr:`ip` is read. Treat instances as read-only.
    """

    __slots__ = (
        "_frame",
        "_ip",
        "_l3",
        "cap_len",
        "comment",
        "complete",
        "dst",
        "ip_checksum_ok",
        "l4_len",
        "number",
        "payload",
        "problem",
        "protocol",
        "seglen",
        "src",
        "tcp",
        "tcp_checksum_ok",
        "ts_ns",
        "ttl",
        "udp_ports",
        "wire_len",
    )  # fmt: skip

    def __init__(
        self, number: int, ts_ns: int, cap_len: int, wire_len: int, protocol: str, src: str,
        dst: str, payload: bytes = b"", ip_checksum_ok: bool | None = None,
        tcp_checksum_ok: bool | None = None, udp_ports: tuple[int, int] | None = None,
        problem: str | None = None, comment: str | None = None, *, frame: bytes = b"",
        l3: int = -1, tcp: TcpHeader | None = None, seglen: int = 0, l4_len: int = 0,
        complete: bool = True, ttl: int = 0,
    ) -> None:  # fmt: skip
        self.number = number
        self.ts_ns = ts_ns
        self.cap_len = cap_len
        self.wire_len = wire_len
        self.protocol = protocol
        self.src = src
        self.dst = dst
        self.payload = payload
        self.ip_checksum_ok = ip_checksum_ok
        self.tcp_checksum_ok = tcp_checksum_ok
        self.udp_ports = udp_ports
        self.problem = problem
        self.comment = comment
        self._frame = frame
        self._l3 = l3
        self.tcp = tcp
        self.seglen = seglen
        self.l4_len = l4_len
        self.complete = complete
        self.ttl = ttl
        self._ip: IPv4Header | None = None

    def __repr__(self) -> str:
        return (
            f"DecodedPacket(number={self.number}, protocol={self.protocol!r}, src={self.src!r}, "
            f"dst={self.dst!r}, len={self.wire_len}, problem={self.problem!r})"
        )

    @property
    def ip(self) -> IPv4Header | None:
        """The IPv4 header (``None`` when the frame has no parseable one)."""
        if self._ip is None and self._l3 >= 0:
            self._ip = parse_ipv4(memoryview(self._frame)[self._l3 :])
        return self._ip

    @property
    def tcp_options(self) -> bytes:
        """The raw TCP options (``b""`` when there are none or this is not TCP)."""
        return b"" if self.tcp is None else self.tcp.options_raw


_IPH = struct.Struct("!BBHHHBBH4s4s")
_IP6H = struct.Struct("!4xHBB16s16s")
#: IPv6 extension headers walked to find TCP/UDP (hop-by-hop, routing, destination options)
_IP6_EXT = frozenset({0, 43, 60})


_ADDRS: dict[int, str] = {}


def _addr(value: int) -> str:
    """Dotted quad of a 32-bit address (cached: captures repeat a few addresses)."""
    text = _ADDRS.get(value)
    if text is None:
        if len(_ADDRS) > 65536:
            _ADDRS.clear()
        text = _ADDRS[value] = inet_ntoa(value.to_bytes(4, "big"))
    return text


def _fast_tcp(number: int, rec: Record, verify: bool) -> DecodedPacket | None:
    """The common frame — IPv4 without options or fragmentation, carrying TCP — with one
    ``struct.unpack_from``; ``None`` for anything else (the careful path decodes it the same
    way, only slower)."""
    fast = _FAST.get(rec.linktype)
    frame = rec.data
    n = len(frame)
    if fast is None or n < fast[2]:
        return None
    (link, vihl, tos, total, ident, ff, ttl, proto, ipsum, sip, dip, sp, dp, seq, ack, doff, fl,
     win, csum, urg) = fast[0].unpack_from(frame)  # fmt: skip
    if vihl != 0x45 or proto != 6 or ff & 0x3FFF or total < 40 or link not in fast[1]:
        return None
    l3 = _L3_OFFSET[rec.linktype]
    wire = rec.wire_len
    reported = (wire if wire > n else n) - l3
    if total <= reported:
        reported = total
    end = l3 + (n - l3 if n - l3 < reported else reported)
    thlen = (doff >> 4) * 4
    l4_reported = reported - 20
    l4 = l3 + 20
    if thlen < 20 or thlen > l4_reported or l4 + thlen > end:
        return None
    complete = end - l4 >= l4_reported
    ip_ok = tcp_ok = None
    if verify:
        ip_ok = (((vihl << 8) | tos) + total + ident + ff + ((ttl << 8) | proto) + ipsum + sip
                 + dip) % 0xFFFF == 0  # fmt: skip
        if complete:
            pseudo = sip + dip + 6 + l4_reported
            if csum != _fold(pseudo):  # not checksum offload's pseudo-header sum
                seg = int.from_bytes(frame[l4 : l4 + l4_reported], "big")
                if l4_reported & 1:
                    seg <<= 8
                tcp_ok = (seg + pseudo) % 0xFFFF == 0
    h = _new_tcp(TcpHeader, (sp, dp, seq, ack, thlen, fl, win, csum, urg,
                             frame[l4 + 20 : l4 + thlen] if thlen > 20 else b""))  # fmt: skip
    return DecodedPacket(
        number, rec.ts_ns, n, wire, "TCP", _addr(sip), _addr(dip),
        frame[l4 + thlen : end] if l4 + thlen < end else b"", ip_ok, tcp_ok, None, None,
        rec.comment, frame=frame, l3=l3, tcp=h, seglen=l4_reported - thlen, l4_len=l4_reported,
        complete=complete, ttl=ttl,
    )  # fmt: skip


def decode_record(number: int, rec: Record, verify_checksums: bool = True) -> DecodedPacket:
    """Decode one capture record (never raises: problems go to ``problem``)."""
    fast = _fast_tcp(number, rec, verify_checksums)
    if fast is not None:
        return fast
    frame = rec.data
    off, et = network_payload(rec.linktype, frame)
    base = (number, rec.ts_ns, len(frame), rec.wire_len)
    comment = rec.comment
    if et == -1:
        return DecodedPacket(*base, "?", "", "", problem=f"undecodable link type {rec.linktype}",
                             comment=comment)  # fmt: skip
    n = len(frame) - off
    # what the wire carried after the link header (tshark's "reported length")
    reported = max(rec.wire_len, len(frame)) - off
    if et == 0x86DD:
        return _decode_ipv6(base, frame, off, n, reported, verify_checksums, comment)
    if et != 0x0800:
        name = ethertype_name(et)
        return DecodedPacket(*base, name, "", "", problem=f"{name} (not decoded)",
                             comment=comment)  # fmt: skip
    if n < 20:
        return DecodedPacket(*base, "IPv4", "", "", problem=f"IPv4 header truncated: {n} bytes",
                             comment=comment)  # fmt: skip
    vihl, _tos, total, _id, ff, ttl, proto, _c, sip, dip = _IPH.unpack_from(frame, off)
    hlen = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or hlen < 20 or hlen > n:
        problem = f"not IPv4 (version {vihl >> 4})" if vihl >> 4 != 4 else (
            f"bad IPv4 header length {hlen}")  # fmt: skip
        return DecodedPacket(*base, "IPv4", "", "", problem=problem, comment=comment)
    src, dst = inet_ntoa(sip), inet_ntoa(dip)
    ip_ok = internet_checksum(frame[off : off + hlen]) == 0 if verify_checksums else None
    if total < hlen:
        if total:
            return DecodedPacket(*base, "IPv4", src, dst, ip_checksum_ok=ip_ok, comment=comment,
                                 problem=f"Bogus IP length ({total}, less than header length "
                                 f"{hlen})", frame=frame, l3=off)  # fmt: skip
        total = reported  # zero: TCP segmentation offload, the capture has the real size
    if total <= reported:
        reported = total
    if ff & 0x3FFF:  # fragment offset or more-fragments
        return DecodedPacket(*base, "IPv4", src, dst, ip_checksum_ok=ip_ok, problem="IP fragment",
                             comment=comment, frame=frame, l3=off, ttl=ttl)  # fmt: skip
    addr_sum = int.from_bytes(sip, "big") + int.from_bytes(dip, "big")
    return _decode_l4(base, frame, off, off + hlen, min(n, reported), reported - hlen, proto,
                      src, dst, ip_ok, addr_sum, verify_checksums, comment, ttl)  # fmt: skip


def _decode_ipv6(
    base: tuple[int, int, int, int], frame: bytes, off: int, n: int, reported: int, verify: bool,
    comment: str | None,
) -> DecodedPacket:  # fmt: skip
    if n < 40:
        return DecodedPacket(*base, "IPv6", "", "", problem=f"IPv6 header truncated: {n} bytes",
                             comment=comment)  # fmt: skip
    plen, nxt, hop, sip, dip = _IP6H.unpack_from(frame, off)
    src, dst = inet_ntop(AF_INET6, sip), inet_ntop(AF_INET6, dip)
    if 40 + plen <= reported:
        reported = 40 + plen
    end = off + min(n, reported)
    l4 = off + 40
    while nxt in _IP6_EXT and l4 + 8 <= end:
        nxt, ext_len = frame[l4], (frame[l4 + 1] + 1) * 8
        l4 += ext_len
    if nxt == 44:
        return DecodedPacket(*base, "IPv6", src, dst, problem="IP fragment", comment=comment,
                             ttl=hop)  # fmt: skip
    if l4 > end:
        return DecodedPacket(*base, "IPv6", src, dst, problem="IPv6 extension header truncated",
                             comment=comment)  # fmt: skip
    addr_sum = int.from_bytes(sip, "big") + int.from_bytes(dip, "big")
    return _decode_l4(base, frame, -1, l4, end - off, reported - (l4 - off), nxt, src, dst,
                      None, addr_sum, verify, comment, hop, off)  # fmt: skip


def _decode_l4(
    base: tuple[int, int, int, int], frame: bytes, l3: int, l4: int, captured: int,
    l4_reported: int, proto: int, src: str, dst: str, ip_ok: bool | None, addr_sum: int,
    verify: bool, comment: str | None, ttl: int, ip_start: int = -1,
) -> DecodedPacket:  # fmt: skip
    """*captured*: bytes of the IP datagram in the frame; *l4_reported*: the transport
    segment's length on the wire."""
    start = l3 if l3 >= 0 else ip_start
    end = start + captured  # captured end of the datagram
    have = end - l4  # captured bytes of the transport segment
    complete = have >= l4_reported
    if proto == 6:
        if have < 20:  # payload: the header bytes there are (the ports, perhaps)
            return DecodedPacket(*base, "TCP", src, dst, frame[l4:end], ip_checksum_ok=ip_ok,
                                 comment=comment,
                                 problem=f"TCP header truncated: {max(0, have)} bytes",
                                 frame=frame, l3=l3, ttl=ttl, complete=False,
                                 l4_len=l4_reported)  # fmt: skip
        sp, dp, seq, ack, doff, fl, win, csum, urg = TCP_HEADER.unpack_from(frame, l4)
        thlen = (doff >> 4) * 4
        if thlen < 20 or thlen > l4_reported:
            return DecodedPacket(*base, "TCP", src, dst, ip_checksum_ok=ip_ok, comment=comment,
                                 problem=f"bad TCP data offset {thlen} (segment has "
                                 f"{l4_reported} bytes)", frame=frame, l3=l3,
                                 ttl=ttl)  # fmt: skip
        # options cut short by the snap length keep what was captured (the header's length
        # says how much is missing)
        h = _new_tcp(TcpHeader, (sp, dp, seq, ack, thlen, fl, win, csum, urg,
                                 frame[l4 + 20 : min(l4 + thlen, end)]))  # fmt: skip
        tcp_ok = None
        if verify and complete:
            pseudo = addr_sum + 6 + l4_reported
            tcp_ok = internet_checksum(frame[l4 : l4 + l4_reported], pseudo) == 0
            if not tcp_ok and csum == _fold(pseudo):
                # checksum offload: the sender's kernel left only the pseudo-header sum for
                # the NIC to complete (every packet captured on Linux loopback looks so)
                tcp_ok = None
        return DecodedPacket(*base, "TCP", src, dst, frame[l4 + thlen : end] if l4 + thlen < end
                             else b"", ip_ok, tcp_ok,
                             comment=comment, frame=frame, l3=l3, tcp=h, ttl=ttl,
                             seglen=max(0, l4_reported - thlen), l4_len=l4_reported,
                             complete=complete)  # fmt: skip
    if proto == 17 and have >= 8:
        sport, dport, ulen, _uc = _UDP.unpack_from(frame, l4)
        return DecodedPacket(*base, "UDP", src, dst, frame[l4 + 8 : end], ip_ok,
                             udp_ports=(sport, dport), comment=comment, frame=frame, l3=l3,
                             ttl=ttl, l4_len=l4_reported, seglen=ulen - 8,
                             complete=complete)  # fmt: skip
    name = _IP_NAMES.get(proto, f"IP proto {proto}")
    if name == "ICMPv6" and l3 >= 0:
        name = "IP proto 58"
    elif name == "ICMP" and l3 < 0:
        name = "IP proto 1"
    return DecodedPacket(*base, name, src, dst, frame[l4:end], ip_ok, comment=comment,
                         frame=frame, l3=l3, ttl=ttl, l4_len=l4_reported,
                         complete=complete)  # fmt: skip


def _fold(n: int) -> int:
    while n >> 16:
        n = (n & 0xFFFF) + (n >> 16)
    return n


def decode_records(records: Iterable[Record], verify_checksums: bool = True) -> list[DecodedPacket]:
    return [decode_record(i, r, verify_checksums) for i, r in enumerate(records, 1)]


# --- fast path ----------------------------------------------------------------------------

#: fixed IPv4 (no options) + TCP header fields, after one link-layer field (index 0):
#: 1 vihl, 2 tos, 3 total length, 4 ident, 5 flags/fragment, 6 ttl, 7 protocol, 8 IP checksum,
#: 9 src, 10 dst (32-bit ints), 11 sport, 12 dport, 13 seq, 14 ack, 15 data offset<<4,
#: 16 flags, 17 window, 18 TCP checksum, 19 urgent pointer
_IPTCP_FIELDS = "BBHHHBBHIIHHIIBBHHH"
Header: TypeAlias = tuple[int | bytes, ...]

# link type -> (struct for link field + IPv4/TCP, accepted link-field values, minimum length)
_FAST: dict[int, tuple[struct.Struct, frozenset[int | bytes], int]] = {
    LINKTYPE_ETHERNET: (struct.Struct("!12xH" + _IPTCP_FIELDS), frozenset({0x0800}), 54),
    LINKTYPE_RAW: (struct.Struct("!0s" + _IPTCP_FIELDS), frozenset({b""}), 40),
    LINKTYPE_IPV4: (struct.Struct("!0s" + _IPTCP_FIELDS), frozenset({b""}), 40),
    14: (struct.Struct("!0s" + _IPTCP_FIELDS), frozenset({b""}), 40),
    LINKTYPE_LINUX_SLL: (struct.Struct("!14xH" + _IPTCP_FIELDS), frozenset({0x0800}), 56),
    LINKTYPE_LINUX_SLL2: (struct.Struct("!H18x" + _IPTCP_FIELDS), frozenset({0x0800}), 60),
    # null: address family in the capturing host's order; loop: always big-endian
    LINKTYPE_NULL: (struct.Struct("!I" + _IPTCP_FIELDS), frozenset({2, 0x02000000}), 44),
    LINKTYPE_LOOP: (struct.Struct("!I" + _IPTCP_FIELDS), frozenset({2}), 44),
}
_NO_FAST = (struct.Struct("!0s"), frozenset[int | bytes](), 1 << 62)
_L3_OFFSET = {
    LINKTYPE_ETHERNET: 14, LINKTYPE_RAW: 0, LINKTYPE_IPV4: 0, 14: 0, LINKTYPE_LINUX_SLL: 16,
    LINKTYPE_LINUX_SLL2: 20, LINKTYPE_NULL: 4, LINKTYPE_LOOP: 4,
}  # fmt: skip


def read_capture_bytes(source: str | Path | bytes) -> bytes:
    """The bytes of a capture given as a path or as bytes (clear error when unreadable)."""
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise CaptureFormatError(f"cannot read {source}: {exc.strerror or exc}") from exc


class _PcapLayout:
    """What the offsets of a pcap file need to be turned back into records."""

    __slots__ = ("linktype", "mult", "rec")

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise CaptureFormatError(f"pcap global header truncated ({len(data)} of 24 bytes)")
        magic_le = int.from_bytes(data[:4], "little")
        order = "<" if magic_le in (MAGIC_US, MAGIC_NS) else ">"
        magic = int.from_bytes(data[:4], "little" if order == "<" else "big")
        major, _mi, _tz, _sig, _snap, network = struct.unpack_from(order + "HHiIII", data, 4)
        if major != 2:
            raise CaptureFormatError(f"unsupported pcap version {major}")
        self.linktype = network & 0x0FFFFFFF
        self.mult = 1 if magic == MAGIC_NS else 1000
        self.rec = struct.Struct(order + "IIII")


def _walk_pcap(data: bytes, layout: _PcapLayout) -> array[int]:
    """Offsets of every record (negative when the frame is too short for the fast header)."""
    caplen = struct.Struct(layout.rec.format[0] + "8xI").unpack_from
    minlen = _FAST.get(layout.linktype, _NO_FAST)[2]
    offsets = array("q")
    append = offsets.append
    off = 24
    end = len(data)
    try:
        while off < end:
            cap = caplen(data, off)[0]
            append(off if cap >= minlen else -off)
            off += 16 + cap
    except struct.error:
        off = end + 1
    if off != end:
        for _ in iter_pcap(data):  # the careful reader names the exact problem
            pass
        raise CaptureFormatError("pcap file truncated")  # pragma: no cover (reader raises)
    return offsets


def _fast_header(rec: Record) -> Header | None:
    fast, ok, minlen = _FAST.get(rec.linktype, _NO_FAST)
    if len(rec.data) < minlen:
        return None
    h = fast.unpack_from(rec.data)
    return h if h[1] == 0x45 and h[7] == 6 and h[0] in ok else None


def decode_capture(source: str | Path | bytes) -> PacketTable:
    """Read a whole pcap or pcapng capture (path or bytes) into a :class:`PacketTable`;
    :class:`CaptureFormatError` when it is not a readable capture."""
    data = read_capture_bytes(source)
    if capture_format(data) == "pcap":
        layout = _PcapLayout(data)
        return PacketTable(data, _walk_pcap(data, layout), layout)
    return PacketTable(data, None, None, list(iter_records(data)))


class PacketTable(Sequence[DecodedPacket]):
    """A decoded capture: the file's bytes plus where each frame is, decoded on demand.

    Indexing returns a :class:`DecodedPacket` (numbered from 1, like Wireshark) built by the
    careful decoder; :meth:`tcp_headers` gives the raw header tuples for bulk work.
    """

    __slots__ = ("_data", "_layout", "_offsets", "_records", "verify_checksums")

    def __init__(
        self,
        data: bytes,
        offsets: array[int] | None,
        layout: _PcapLayout | None,
        records: list[Record] | None = None,
        verify_checksums: bool = True,
    ) -> None:
        self._data = data
        self._offsets = offsets
        self._layout = layout
        self._records = records
        self.verify_checksums = verify_checksums

    def __len__(self) -> int:
        if self._records is not None:
            return len(self._records)
        assert self._offsets is not None
        return len(self._offsets)

    @overload
    def __getitem__(self, index: int) -> DecodedPacket: ...
    @overload
    def __getitem__(self, index: slice) -> list[DecodedPacket]: ...
    def __getitem__(self, index: int | slice) -> DecodedPacket | list[DecodedPacket]:
        n = len(self)
        if isinstance(index, slice):
            return [self._packet(i) for i in range(*index.indices(n))]
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("packet index out of range")
        return self._packet(index)

    def __iter__(self) -> Iterator[DecodedPacket]:
        for i in range(len(self)):
            yield self._packet(i)

    def record(self, index: int) -> Record:
        """The capture record of frame *index* (0-based)."""
        if self._records is not None:
            return self._records[index]
        assert self._offsets is not None and self._layout is not None
        off = abs(self._offsets[index])
        sec, frac, cap, wire = self._layout.rec.unpack_from(self._data, off)
        data = self._data[off + 16 : off + 16 + cap]
        return Record(sec * 1_000_000_000 + frac * self._layout.mult, data, wire,
                      self._layout.linktype)  # fmt: skip

    def _packet(self, index: int) -> DecodedPacket:
        return decode_record(index + 1, self.record(index), self.verify_checksums)

    def tcp_headers(self) -> Iterator[Header | None]:
        """Per frame: the link field + fixed IPv4/TCP header fields (see ``_IPTCP_FIELDS``), or
        ``None`` when the frame is not an option-less IPv4 datagram carrying TCP (index the
        table for those: the careful decoder handles IP options, fragments, UDP ...)."""
        if self._records is not None:
            for rec in self._records:
                yield _fast_header(rec)
            return
        assert self._offsets is not None and self._layout is not None
        fast, ok, _minlen = _FAST.get(self._layout.linktype, _NO_FAST)
        unpack = fast.unpack_from
        data = self._data
        for off in self._offsets:
            if off < 0:
                yield None
                continue
            h = unpack(data, off + 16)
            yield h if h[1] == 0x45 and h[7] == 6 and h[0] in ok else None

    def tcp_payload_len(self, header: Header) -> int:
        """TCP payload length from a fast header (as captured on the wire, by IP length)."""
        total, doff = header[3], header[15]
        assert isinstance(total, int) and isinstance(doff, int)
        return max(0, total - 20 - (doff >> 4) * 4)
