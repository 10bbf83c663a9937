"""Link-layer types (LINKTYPE_* values) and how to find the IPv4 datagram inside a frame."""

from __future__ import annotations

import struct

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_LOOP",
    "LINKTYPE_NAMES",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "ethertype_name",
    "network_payload",
]

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_LINUX_SLL2 = 276

LINKTYPE_NAMES = {
    LINKTYPE_NULL: "null/loopback",
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP",
    12: "raw IP",
    14: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}

_ETHERTYPE_NAMES = {0x0800: "IPv4", 0x86DD: "IPv6", 0x0806: "ARP", 0x8100: "802.1Q"}
_U16 = struct.Struct("!H")


def ethertype_name(ethertype: int) -> str:
    return _ETHERTYPE_NAMES.get(ethertype, f"0x{ethertype:04x}")


def network_payload(linktype: int, frame: bytes) -> tuple[int, int]:
    """Return ``(offset, ethertype)`` of the network-layer packet inside *frame*.

    ``ethertype`` is 0x0800 for IPv4, 0x86DD for IPv6, another value for other payloads,
    or -1 when the frame is too short or the link type is unknown.
    """
    n = len(frame)
    if linktype == LINKTYPE_ETHERNET:
        if n < 14:
            return 0, -1
        et = _U16.unpack_from(frame, 12)[0]
        off = 14
        while et in (0x8100, 0x88A8) and n >= off + 4:
            et = _U16.unpack_from(frame, off + 2)[0]
            off += 4
        return off, et
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, 12, 14):
        if n < 1:
            return 0, -1
        version = frame[0] >> 4
        return 0, 0x0800 if version == 4 else (0x86DD if version == 6 else 0)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if n < 4:
            return 0, -1
        fam_le = int.from_bytes(frame[:4], "little")
        fam_be = int.from_bytes(frame[:4], "big")
        fam = fam_be if linktype == LINKTYPE_LOOP else (fam_le if fam_le < 0x10000 else fam_be)
        if fam == 2:
            return 4, 0x0800
        if fam in (10, 24, 28, 30):
            return 4, 0x86DD
        return 4, 0
    if linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            return 0, -1
        return 16, _U16.unpack_from(frame, 14)[0]
    if linktype == LINKTYPE_LINUX_SLL2:
        if n < 20:
            return 0, -1
        return 20, _U16.unpack_from(frame, 0)[0]
    return 0, -1
