"""IPv4 header: build and parse (RFC 791)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from parlour.packets.wire.checksum import BytesLike, internet_checksum

__all__ = ["IPV4_HEADER", "IPv4Header", "IPv4ParseError", "build_ipv4", "parse_ipv4"]

IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
DF = 0x4000
MF = 0x2000


class IPv4ParseError(ValueError):
    """An IPv4 header that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class IPv4Header:
    header_len: int
    dscp_ecn: int
    total_length: int
    ident: int
    flags_frag: int
    ttl: int
    protocol: int
    checksum: int
    src: bytes
    dst: bytes
    options: bytes = b""

    @property
    def dont_fragment(self) -> bool:
        return bool(self.flags_frag & DF)

    @property
    def fragment_offset(self) -> int:
        return (self.flags_frag & 0x1FFF) * 8

    @property
    def more_fragments(self) -> bool:
        return bool(self.flags_frag & MF)


def build_ipv4(
    src: bytes,
    dst: bytes,
    protocol: int,
    payload: bytes,
    ident: int = 0,
    ttl: int = 64,
    dont_fragment: bool = True,
    dscp_ecn: int = 0,
) -> bytes:
    """An IPv4 datagram (20-byte header, no options) carrying *payload*."""
    total = 20 + len(payload)
    if total > 0xFFFF:
        raise ValueError(f"IPv4 datagram too long: {total} bytes")
    hdr = bytearray(
        IPV4_HEADER.pack(
            0x45,
            dscp_ecn,
            total,
            ident & 0xFFFF,
            DF if dont_fragment else 0,
            ttl,
            protocol,
            0,
            src,
            dst,
        )
    )
    struct.pack_into("!H", hdr, 10, internet_checksum(hdr))
    return bytes(hdr) + payload


def parse_ipv4(datagram: BytesLike) -> IPv4Header:
    """Parse the IPv4 header at the start of *datagram*."""
    mv = memoryview(datagram)
    if len(mv) < 20:
        raise IPv4ParseError(f"IPv4 header truncated: {len(mv)} bytes")
    vihl, tos, total, ident, ff, ttl, proto, csum, src, dst = IPV4_HEADER.unpack_from(mv)
    if vihl >> 4 != 4:
        raise IPv4ParseError(f"not IPv4 (version {vihl >> 4})")
    hlen = (vihl & 0x0F) * 4
    if hlen < 20 or hlen > len(mv):
        raise IPv4ParseError(f"bad IPv4 header length {hlen}")
    return IPv4Header(hlen, tos, total, ident, ff, ttl, proto, csum, src, dst, bytes(mv[20:hlen]))
