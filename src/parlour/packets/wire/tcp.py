"""TCP header: flags, options (MSS, window scale, SACK-permitted, SACK, timestamps), parse/build."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntFlag
from typing import NamedTuple

from parlour.packets.wire.checksum import BytesLike, tcp_checksum

__all__ = [
    "TCP_HEADER",
    "TcpFlags",
    "TcpHeader",
    "TcpOptions",
    "TcpParseError",
    "build_tcp_segment",
    "decode_options",
    "encode_options",
    "flags_text",
    "parse_tcp",
]

TCP_HEADER = struct.Struct("!HHIIBBHHH")


class TcpParseError(ValueError):
    """A TCP header that cannot be parsed."""


class TcpFlags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


# Wireshark's order in the Info column: [SYN, ACK] / [PSH, ACK] / [FIN, ACK] / [RST, ACK]
_FLAG_ORDER = (
    (TcpFlags.FIN, "FIN"),
    (TcpFlags.SYN, "SYN"),
    (TcpFlags.RST, "RST"),
    (TcpFlags.PSH, "PSH"),
    (TcpFlags.ACK, "ACK"),
    (TcpFlags.URG, "URG"),
    (TcpFlags.ECE, "ECE"),
    (TcpFlags.CWR, "CWR"),
)
_FLAGS_TEXT = [
    ", ".join(name for bit, name in _FLAG_ORDER if value & bit) or "<None>" for value in range(256)
]


def flags_text(flags: int) -> str:
    """``SYN, ACK`` style text in Wireshark's order."""
    return _FLAGS_TEXT[flags & 0xFF]


@dataclass(frozen=True, slots=True)
class TcpOptions:
    """The options Parlour builds and understands; unknown kinds are kept raw in ``other``."""

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    timestamps: tuple[int, int] | None = None
    sack_blocks: tuple[tuple[int, int], ...] = ()
    other: tuple[tuple[int, bytes], ...] = ()


def encode_options(opts: TcpOptions, syn: bool) -> bytes:
    """Options in Linux's layout, padded with NOPs to a multiple of 4 bytes.

    SYN: MSS, SACK_PERM, TS, NOP, WS (20 bytes). Others: NOP, NOP, TS; then SACK blocks.
    """
    out = bytearray()
    if opts.mss is not None:
        out += struct.pack("!BBH", 2, 4, opts.mss)
    if opts.sack_permitted and opts.timestamps is not None:
        out += struct.pack("!BBBBII", 4, 2, 8, 10, *opts.timestamps)
    else:
        if opts.sack_permitted:
            out += b"\x01\x01\x04\x02"
        if opts.timestamps is not None:
            out += struct.pack("!BBBBII", 1, 1, 8, 10, *opts.timestamps)
    if opts.wscale is not None:
        out += struct.pack("!BBBB", 1, 3, 3, opts.wscale)
    if opts.sack_blocks:
        out += struct.pack("!BBBB", 1, 1, 5, 2 + 8 * len(opts.sack_blocks))
        for left, right in opts.sack_blocks:
            out += struct.pack("!II", left, right)
    for kind, data in opts.other:
        out += bytes((kind, 2 + len(data))) + data
    while len(out) % 4:
        out += b"\x01"
    if len(out) > 40:
        raise ValueError(f"TCP options too long: {len(out)} bytes (max 40)")
    _ = syn
    return bytes(out)


def decode_options(raw: BytesLike) -> TcpOptions:
    """Parse an options area; raises :class:`TcpParseError` on a truncated option."""
    data = bytes(raw)
    mss: int | None = None
    wscale: int | None = None
    sack_perm = False
    ts: tuple[int, int] | None = None
    blocks: list[tuple[int, int]] = []
    other: list[tuple[int, bytes]] = []
    i = 0
    n = len(data)
    while i < n:
        kind = data[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n or data[i + 1] < 2 or i + data[i + 1] > n:
            raise TcpParseError(f"truncated TCP option kind {kind} at offset {i}")
        length = data[i + 1]
        body = data[i + 2 : i + length]
        if kind == 2 and length == 4:
            mss = int.from_bytes(body, "big")
        elif kind == 3 and length == 3:
            wscale = body[0]
        elif kind == 4 and length == 2:
            sack_perm = True
        elif kind == 8 and length == 10:
            ts = (int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big"))
        elif kind == 5 and (length - 2) % 8 == 0:
            for j in range(0, length - 2, 8):
                blocks.append(
                    (
                        int.from_bytes(body[j : j + 4], "big"),
                        int.from_bytes(body[j + 4 : j + 8], "big"),
                    )
                )
        else:
            other.append((kind, body))
        i += length
    return TcpOptions(mss, wscale, sack_perm, ts, tuple(blocks), tuple(other))


class TcpHeader(NamedTuple):
    """A TCP header: the fixed fields and the raw options (decoded on demand by
    :attr:`options`). A named tuple, because readers make one per segment: this is the one
    TCP header type of the packet lab (the careful parser and the capture decoder both
    return it)."""

    sport: int
    dport: int
    seq: int
    ack: int
    header_len: int
    flags: int
    window: int
    checksum: int
    urgent: int
    options_raw: bytes = b""

    @property
    def options(self) -> TcpOptions:
        return decode_options(self.options_raw)


def parse_tcp(segment: BytesLike) -> TcpHeader:
    """Parse the TCP header at the start of *segment*."""
    mv = memoryview(segment)
    if len(mv) < 20:
        raise TcpParseError(f"TCP header truncated: {len(mv)} bytes")
    sport, dport, seq, ack, off, flags, win, csum, urg = TCP_HEADER.unpack_from(mv)
    hlen = (off >> 4) * 4
    if hlen < 20 or hlen > len(mv):
        raise TcpParseError(f"bad TCP data offset {hlen} (segment has {len(mv)} bytes)")
    return TcpHeader(sport, dport, seq, ack, hlen, flags, win, csum, urg, bytes(mv[20:hlen]))


def build_tcp_segment(
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
    urgent: int = 0,
) -> bytes:
    """TCP header + options + payload with a correct checksum over the IPv4 pseudo-header."""
    if len(options) % 4 or len(options) > 40:
        raise ValueError("TCP options must be padded to 4 bytes and at most 40")
    hdr = TCP_HEADER.pack(
        sport,
        dport,
        seq & 0xFFFFFFFF,
        ack & 0xFFFFFFFF,
        (5 + len(options) // 4) << 4,
        flags,
        window,
        0,
        urgent,
    )
    seg = bytearray(hdr + options + payload)
    struct.pack_into("!H", seg, 16, tcp_checksum(src, dst, seg))
    return bytes(seg)
