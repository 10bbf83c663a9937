"""Decode captured frames into IPv4/TCP fields (pure; tolerant of garbage, never raises)."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from parlour.packets.addresses import format_ipv4
from parlour.packets.checksum import internet_checksum
from parlour.packets.ipv4 import IPv4Header, IPv4ParseError, parse_ipv4
from parlour.packets.linktypes import ethertype_name, network_payload
from parlour.packets.records import Record
from parlour.packets.tcp import TcpHeader, TcpParseError, parse_tcp

__all__ = ["DecodedPacket", "decode_record", "decode_records", "iter_tcp_fields"]

_IP_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 2: "IGMP", 47: "GRE", 50: "ESP", 58: "ICMPv6"}
_UDP = struct.Struct("!HHHH")


@dataclass(frozen=True, slots=True)
class DecodedPacket:
    """One frame, decoded as far as it goes. ``problem`` says why decoding stopped early."""

    number: int
    ts_ns: int
    cap_len: int
    wire_len: int
    protocol: str
    src: str
    dst: str
    ip: IPv4Header | None = None
    tcp: TcpHeader | None = None
    payload: bytes = b""
    ip_checksum_ok: bool | None = None
    tcp_checksum_ok: bool | None = None
    udp_ports: tuple[int, int] | None = None
    problem: str | None = None
    comment: str | None = None

    @property
    def seglen(self) -> int:
        return len(self.payload) if self.tcp is not None else 0


def decode_record(number: int, rec: Record, verify_checksums: bool = True) -> DecodedPacket:
    frame = rec.data
    off, et = network_payload(rec.linktype, frame)
    base = (number, rec.ts_ns, len(frame), rec.wire_len)
    if et == -1:
        return DecodedPacket(*base, "?", "", "", problem=f"undecodable link type {rec.linktype}",
                             comment=rec.comment)  # fmt: skip
    if et != 0x0800:
        return DecodedPacket(*base, ethertype_name(et), "", "", comment=rec.comment)
    mv = memoryview(frame)[off:]
    try:
        ip = parse_ipv4(mv)
    except IPv4ParseError as exc:
        return DecodedPacket(*base, "IPv4", "", "", problem=str(exc), comment=rec.comment)
    src, dst = format_ipv4(ip.src), format_ipv4(ip.dst)
    ip_ok = internet_checksum(mv[: ip.header_len]) == 0 if verify_checksums else None
    end = min(len(mv), ip.total_length) if ip.total_length >= ip.header_len else len(mv)
    proto_name = _IP_NAMES.get(ip.protocol, f"IP proto {ip.protocol}")
    if ip.fragment_offset or ip.more_fragments:
        return DecodedPacket(*base, "IPv4", src, dst, ip, ip_checksum_ok=ip_ok,
                             problem="IP fragment", comment=rec.comment)  # fmt: skip
    l4 = mv[ip.header_len : end]
    if ip.protocol == 6:
        try:
            tcp = parse_tcp(l4)
        except TcpParseError as exc:
            return DecodedPacket(*base, "TCP", src, dst, ip, ip_checksum_ok=ip_ok,
                                 problem=str(exc), comment=rec.comment)  # fmt: skip
        complete = ip.total_length <= len(mv)
        tcp_ok = None
        if verify_checksums and complete:
            tcp_ok = (
                internet_checksum(l4, int.from_bytes(ip.src, "big") + int.from_bytes(ip.dst, "big")
                                  + 6 + len(l4)) == 0
            )  # fmt: skip
        return DecodedPacket(*base, "TCP", src, dst, ip, tcp, bytes(l4[tcp.header_len :]),
                             ip_ok, tcp_ok, comment=rec.comment)  # fmt: skip
    if ip.protocol == 17 and len(l4) >= 8:
        sport, dport, _ulen, _c = _UDP.unpack_from(l4)
        return DecodedPacket(*base, "UDP", src, dst, ip, None, bytes(l4[8:]), ip_ok,
                             udp_ports=(sport, dport), comment=rec.comment)  # fmt: skip
    return DecodedPacket(*base, proto_name, src, dst, ip, None, bytes(l4), ip_ok,
                         comment=rec.comment)  # fmt: skip


def decode_records(records: Iterable[Record], verify_checksums: bool = True) -> list[DecodedPacket]:
    return [decode_record(i, r, verify_checksums) for i, r in enumerate(records, 1)]


_ETH_IP_TCP = struct.Struct("!12xHBBHHHBBH4s4sHHIIBBHHH")
_IP_TCP = struct.Struct("!BBHHHBBH4s4sHHIIBBHHH")


def iter_tcp_fields(
    frames: Iterable[tuple[int, bytes]], ethernet: bool
) -> Iterator[tuple[int, ...] | None]:
    """Fast path: ``(ts_ns, frame)`` → tuple of IPv4+TCP header fields per frame.

    Yields ``None`` for frames that are not option-less IPv4 carrying TCP. Used by the
    benchmark and bulk tools; :func:`decode_record` is the careful, general decoder.
    """
    if ethernet:
        unpack = _ETH_IP_TCP.unpack_from
        for _ts, frame in frames:
            if len(frame) < 54:
                yield None
                continue
            f = unpack(frame)
            yield f if f[0] == 0x0800 and f[1] == 0x45 and f[7] == 6 else None
    else:
        unpack = _IP_TCP.unpack_from
        for _ts, frame in frames:
            if len(frame) < 40:
                yield None
                continue
            f = unpack(frame)
            yield f if f[0] == 0x45 and f[6] == 6 else None
