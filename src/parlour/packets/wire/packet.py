"""Fast one-shot builders for whole IPv4+TCP packets and Ethernet frames.

One precompiled ``struct.Struct`` packs both headers; the IPv4 checksum is computed with
integer arithmetic (no buffer walk) and the TCP checksum with one big-integer remainder.
"""

from __future__ import annotations

import struct

__all__ = ["ETHERTYPE_IPV4", "ethernet_frame", "ipv4_tcp_packet"]

ETHERTYPE_IPV4 = 0x0800
_IP_TCP = struct.Struct("!BBHHHBBHIIHHIIBBHHH")
_CSUMS = struct.Struct("!H")
_M = 0xFFFF


def ipv4_tcp_packet(
    src: int,
    dst: int,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes = b"",
    payload: bytes = b"",
    ident: int = 0,
    ttl: int = 64,
    dont_fragment: bool = True,
    dscp_ecn: int = 0,
) -> bytes:
    """A complete IPv4 datagram carrying one TCP segment, both checksums filled in.

    Addresses are 32-bit integers (see :func:`parlour.packets.wire.addresses.ipv4_to_int`).
    """
    olen = len(options)
    if olen & 3 or olen > 40:
        raise ValueError("TCP options must be padded to 4 bytes and at most 40")
    tcp_len = 20 + olen + len(payload)
    total = 20 + tcp_len
    if total > 0xFFFF:
        raise ValueError(f"IPv4 datagram too long: {total} bytes")
    ff = 0x4000 if dont_fragment else 0
    ident &= 0xFFFF
    r = (0x4500 + (dscp_ecn & 0xFF) + total + ident + ff + (ttl << 8) + 6 + src + dst) % _M
    ip_csum = _M - r if r else 0
    buf = bytearray(
        _IP_TCP.pack(
            0x45,
            dscp_ecn,
            total,
            ident,
            ff,
            ttl,
            6,
            ip_csum,
            src,
            dst,
            sport,
            dport,
            seq & 0xFFFFFFFF,
            ack & 0xFFFFFFFF,
            (5 + (olen >> 2)) << 4,
            flags,
            window,
            0,
            0,
        )
    )
    if olen:
        buf += options
    if payload:
        buf += payload
    n = int.from_bytes(memoryview(buf)[20:], "big")
    if tcp_len & 1:
        n <<= 8
    r = (n + src + dst + 6 + tcp_len) % _M
    _CSUMS.pack_into(buf, 36, _M - r if r else 0)
    return bytes(buf)


def ethernet_frame(
    dst_mac: bytes, src_mac: bytes, payload: bytes, ethertype: int = ETHERTYPE_IPV4
) -> bytes:
    """An Ethernet II frame (no FCS, no padding: captures show frames as the host sent them)."""
    return dst_mac + src_mac + ethertype.to_bytes(2, "big") + payload
