"""The datagram format: headers, the frames inside a sealed packet, and their limits.

Every datagram fits a 1280-byte path (the IPv6 minimum MTU) after the IPv6 and UDP headers:
at most :data:`MAX_DATAGRAM` = 1232 bytes. Layouts (big-endian integers)::

    HELLO   0x11 | transfer id (8) | role (1) | random (16) | echo (16) | zero padding | mac (16)
            always exactly 1232 bytes (it proves the path carries full-size datagrams and a
            reply is never larger than what provoked it); mac = HMAC-SHA256 under the hello key
    SEALED  0x12 | transfer id (8) | packet number (6) | ChaCha20-Poly1305(frames) + tag (16)
            the 15 header bytes are the associated data; the packet number is the nonce counter
    RELAY_BIND  0x18 | transfer id (8) | side (1) | ticket (16)        client -> relay
    RELAY_BOUND 0x19 | transfer id (8) | side (1) | family (1) | port (2) | address (4 or 16)
            relay -> client: the binding holds; the address is what the relay observed
    PROBE   0x1a | token (16) | zero padding to 64 bytes        client -> chat server's relay
    PROBED  0x1b | token (16) | family (1) | port (2) | address (4 or 16)
            relay -> client: the client's address as observed (the token was issued by the
            chat server to one connection: ``file_probe``, docs/protocol.md)

Frames inside a sealed packet (one type byte each)::

    PING  0x01                                  ack-eliciting, no body
    ACK   0x02 | ack delay us (4) | max offset (8) | n (1) | n x (start (8), end (8))
            packet-number ranges [start, end), highest first; max offset = flow-control limit
    HAVE  0x03 | size (8) | sha256 (32) | max offset (8) | n (2) | n x (start (8), end (8))
            receiver -> sender, once, ack-eliciting: byte ranges it already holds (resume)
    DONE  0x04                                  receiver -> sender: verified and in place
    CLOSE 0x05 | code (1) | length (1) | utf-8 reason text
    DATA  0x06 | offset (6) | bytes to the end of the packet (always the last frame)
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "ACK_MAX_RANGES",
    "DONE_FRAME",
    "HAVE_MAX_RANGES",
    "HELLO_LEN",
    "MAX_CHUNK",
    "MAX_DATAGRAM",
    "MAX_OFFSET",
    "MAX_PACKET_NUMBER",
    "MAX_PLAINTEXT",
    "PING_FRAME",
    "PROBE_LEN",
    "SEALED_HEADER_LEN",
    "TAG_LEN",
    "TRANSFER_ID_LEN",
    "Ack",
    "Close",
    "Data",
    "Done",
    "Frame",
    "FrameType",
    "Have",
    "Hello",
    "Kind",
    "Ping",
    "Probed",
    "RelayBind",
    "RelayBound",
    "WireError",
    "encode_ack",
    "encode_close",
    "encode_have",
    "parse_frames",
    "parse_probe",
    "parse_probed",
    "parse_relay_bind",
    "parse_relay_bound",
    "peek_kind",
    "probe",
    "probed",
    "relay_bind",
    "relay_bound",
]

MAX_DATAGRAM = 1232  # 1280 (IPv6 minimum MTU) - 40 (IPv6 header) - 8 (UDP header)
TRANSFER_ID_LEN = 8
PN_LEN = 6
SEALED_HEADER_LEN = 1 + TRANSFER_ID_LEN + PN_LEN  # 15
TAG_LEN = 16
MAX_PLAINTEXT = MAX_DATAGRAM - SEALED_HEADER_LEN - TAG_LEN  # 1201
DATA_HEADER_LEN = 7
MAX_CHUNK = MAX_PLAINTEXT - DATA_HEADER_LEN  # 1194 file bytes per datagram
MAX_PACKET_NUMBER = (1 << 48) - 1
MAX_OFFSET = (1 << 48) - 1  # largest file: 256 TiB
HELLO_LEN = MAX_DATAGRAM
ACK_MAX_RANGES = 64
HAVE_MAX_RANGES = 64
CLOSE_TEXT_MAX = 200
RANDOM_LEN = 16
MAC_LEN = 16
TICKET_LEN = 16
TOKEN_LEN = 16
PROBE_LEN = 64

_VERSION_NIBBLE = 0x10


class Kind(IntEnum):
    HELLO = _VERSION_NIBBLE | 0x1
    SEALED = _VERSION_NIBBLE | 0x2
    RELAY_BIND = _VERSION_NIBBLE | 0x8
    RELAY_BOUND = _VERSION_NIBBLE | 0x9
    PROBE = _VERSION_NIBBLE | 0xA
    PROBED = _VERSION_NIBBLE | 0xB


class FrameType(IntEnum):
    PING = 0x01
    ACK = 0x02
    HAVE = 0x03
    DONE = 0x04
    CLOSE = 0x05
    DATA = 0x06


class WireError(ValueError):
    """A datagram or frame that does not follow the format."""


_KINDS = frozenset(int(k) for k in Kind)


def peek_kind(data: bytes | memoryview) -> Kind | None:
    """The datagram's kind from its first byte, or None for anything unknown or too short."""
    if len(data) < 1 + TRANSFER_ID_LEN or data[0] not in _KINDS:
        return None
    return Kind(data[0])


# --- HELLO -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    transfer_id: bytes
    role: int  # 0 = file sender, 1 = file receiver
    random: bytes
    echo: bytes  # the peer's random this side has seen, or 16 zero bytes

    _HEAD = struct.Struct("!B8sB16s16s")

    def body(self) -> bytes:
        """Everything but the MAC (the MAC is computed over exactly this)."""
        head = self._HEAD.pack(Kind.HELLO, self.transfer_id, self.role, self.random, self.echo)
        return head + bytes(HELLO_LEN - MAC_LEN - len(head))

    @classmethod
    def parse(cls, data: bytes | memoryview) -> tuple[Hello, bytes, bytes]:
        """(hello, body, mac); raises WireError on a wrong length or field."""
        if len(data) != HELLO_LEN:
            raise WireError(f"HELLO must be {HELLO_LEN} bytes, got {len(data)}")
        body = bytes(data[: HELLO_LEN - MAC_LEN])
        kind, tid, role, rnd, echo = cls._HEAD.unpack_from(body)
        if kind != Kind.HELLO or role not in (0, 1):
            raise WireError("bad HELLO")
        return cls(tid, role, rnd, echo), body, bytes(data[HELLO_LEN - MAC_LEN :])


# --- frames ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Ack:
    ack_delay_us: int
    max_offset: int
    ranges: tuple[tuple[int, int], ...]  # packet numbers [start, end), highest first


@dataclass(frozen=True, slots=True)
class Have:
    size: int
    sha256: bytes
    max_offset: int
    ranges: tuple[tuple[int, int], ...]  # byte ranges [start, end), ascending


@dataclass(frozen=True, slots=True)
class Done:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Data:
    offset: int
    data: bytes | memoryview


Frame = Ping | Ack | Have | Done | Close | Data

PING_FRAME = bytes([FrameType.PING])
DONE_FRAME = bytes([FrameType.DONE])
_ACK_HEAD = struct.Struct("!BIQB")
_HAVE_HEAD = struct.Struct("!BQ32sQH")
_RANGE = struct.Struct("!QQ")
_U48 = 1 << 48


def encode_ack(ack_delay_us: int, max_offset: int, ranges: list[tuple[int, int]]) -> bytes:
    ranges = ranges[:ACK_MAX_RANGES]
    parts = [_ACK_HEAD.pack(FrameType.ACK, min(ack_delay_us, 0xFFFFFFFF), max_offset, len(ranges))]
    parts.extend(_RANGE.pack(s, e) for s, e in ranges)
    return b"".join(parts)


def encode_have(size: int, sha256: bytes, max_offset: int, ranges: list[tuple[int, int]]) -> bytes:
    ranges = ranges[:HAVE_MAX_RANGES]
    parts = [_HAVE_HEAD.pack(FrameType.HAVE, size, sha256, max_offset, len(ranges))]
    parts.extend(_RANGE.pack(s, e) for s, e in ranges)
    return b"".join(parts)


def encode_close(code: int, reason: str) -> bytes:
    text = reason.encode("utf-8", "replace")[:CLOSE_TEXT_MAX]
    text = text.decode("utf-8", "ignore").encode()  # never cut a character in half
    return bytes([FrameType.CLOSE, code, len(text)]) + text


def _ranges(
    buf: bytes, pos: int, count: int, *, descending: bool, limit: int
) -> tuple[tuple[tuple[int, int], ...], int]:
    end = pos + count * _RANGE.size
    if end > len(buf):
        raise WireError("truncated ranges")
    out = tuple(_RANGE.iter_unpack(buf[pos:end]))
    prev: int | None = None
    for start, stop in out:
        if not 0 <= start < stop <= limit:
            raise WireError("bad range")
        if prev is not None and (stop >= prev if descending else start <= prev):
            raise WireError("ranges out of order or overlapping")
        prev = start if descending else stop
    return out, end


def parse_frames(plaintext: bytes) -> list[Frame]:
    """Decode the frames of an opened packet; raises WireError on anything malformed."""
    frames: list[Frame] = []
    pos, n = 0, len(plaintext)
    if n == 0:
        raise WireError("empty packet")
    while pos < n:
        ftype = plaintext[pos]
        if ftype == FrameType.DATA:
            if n - pos < DATA_HEADER_LEN + 1:
                raise WireError("truncated DATA")
            offset = int.from_bytes(plaintext[pos + 1 : pos + 7], "big")
            data = memoryview(plaintext)[pos + 7 :]
            if offset + len(data) > MAX_OFFSET:
                raise WireError("DATA beyond the largest offset")
            frames.append(Data(offset, data))
            return frames
        if ftype == FrameType.PING:
            frames.append(Ping())
            pos += 1
        elif ftype == FrameType.DONE:
            frames.append(Done())
            pos += 1
        elif ftype == FrameType.ACK:
            if n - pos < _ACK_HEAD.size:
                raise WireError("truncated ACK")
            _, delay, max_offset, count = _ACK_HEAD.unpack_from(plaintext, pos)
            if count == 0 or count > ACK_MAX_RANGES or max_offset > MAX_OFFSET:
                raise WireError("bad ACK")
            ranges, pos = _ranges(
                plaintext, pos + _ACK_HEAD.size, count, descending=True, limit=_U48
            )
            frames.append(Ack(delay, max_offset, ranges))
        elif ftype == FrameType.HAVE:
            if n - pos < _HAVE_HEAD.size:
                raise WireError("truncated HAVE")
            _, size, digest, max_offset, count = _HAVE_HEAD.unpack_from(plaintext, pos)
            if count > HAVE_MAX_RANGES or size > MAX_OFFSET or max_offset > MAX_OFFSET:
                raise WireError("bad HAVE")
            ranges, pos = _ranges(
                plaintext, pos + _HAVE_HEAD.size, count, descending=False, limit=size
            )
            frames.append(Have(size, digest, max_offset, ranges))
        elif ftype == FrameType.CLOSE:
            if n - pos < 3 or n - pos < 3 + plaintext[pos + 2]:
                raise WireError("truncated CLOSE")
            length = plaintext[pos + 2]
            if length > CLOSE_TEXT_MAX:
                raise WireError("CLOSE reason too long")
            text = plaintext[pos + 3 : pos + 3 + length].decode("utf-8", "replace")
            frames.append(Close(plaintext[pos + 1], text))
            pos += 3 + length
        else:
            raise WireError(f"unknown frame type {ftype:#x}")
    return frames


# --- relay control -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayBind:
    transfer_id: bytes
    side: int
    ticket: bytes


@dataclass(frozen=True, slots=True)
class RelayBound:
    transfer_id: bytes
    side: int
    observed: tuple[str, int]


_BIND = struct.Struct("!B8sB16s")


def relay_bind(transfer_id: bytes, side: int, ticket: bytes) -> bytes:
    return _BIND.pack(Kind.RELAY_BIND, transfer_id, side, ticket)


def parse_relay_bind(data: bytes | memoryview) -> RelayBind:
    if len(data) != _BIND.size:
        raise WireError("bad RELAY_BIND length")
    kind, tid, side, ticket = _BIND.unpack(data)
    if kind != Kind.RELAY_BIND or side not in (0, 1):
        raise WireError("bad RELAY_BIND")
    return RelayBind(tid, side, ticket)


def relay_bound(transfer_id: bytes, side: int, observed: tuple[str, int]) -> bytes:
    ip = ipaddress.ip_address(observed[0])
    return (
        struct.pack("!B8sBBH", Kind.RELAY_BOUND, transfer_id, side, ip.version, observed[1])
        + ip.packed
    )


def parse_relay_bound(data: bytes | memoryview) -> RelayBound:
    if len(data) not in (13 + 4, 13 + 16):
        raise WireError("bad RELAY_BOUND length")
    kind, tid, side, family, port = struct.unpack_from("!B8sBBH", data)
    raw = bytes(data[13:])
    if (
        kind != Kind.RELAY_BOUND
        or side not in (0, 1)
        or (family, len(raw)) not in ((4, 4), (6, 16))
    ):
        raise WireError("bad RELAY_BOUND")
    return RelayBound(tid, side, (str(ipaddress.ip_address(raw)), port))


# --- endpoint probes (the chat server learns a client's public address) ------------------


@dataclass(frozen=True, slots=True)
class Probed:
    token: bytes
    observed: tuple[str, int]


def probe(token: bytes) -> bytes:
    """The probe a client sends to the chat server's relay (always :data:`PROBE_LEN` bytes:
    the answer is never larger, so the relay cannot be used to amplify)."""
    if len(token) != TOKEN_LEN:
        raise ValueError("a probe token is 16 bytes")
    return bytes([Kind.PROBE]) + token + bytes(PROBE_LEN - 1 - TOKEN_LEN)


def parse_probe(data: bytes | memoryview) -> bytes:
    """The token of a PROBE datagram."""
    if len(data) != PROBE_LEN or data[0] != Kind.PROBE:
        raise WireError("bad PROBE")
    return bytes(data[1 : 1 + TOKEN_LEN])


def probed(token: bytes, observed: tuple[str, int]) -> bytes:
    ip = ipaddress.ip_address(observed[0])
    return struct.pack("!B16sBH", Kind.PROBED, token, ip.version, observed[1]) + ip.packed


def parse_probed(data: bytes | memoryview) -> Probed:
    if len(data) not in (20 + 4, 20 + 16):
        raise WireError("bad PROBED length")
    kind, token, family, port = struct.unpack_from("!B16sBH", data)
    raw = bytes(data[20:])
    if kind != Kind.PROBED or (family, len(raw)) not in ((4, 4), (6, 16)):
        raise WireError("bad PROBED")
    return Probed(token, (str(ipaddress.ip_address(raw)), port))
