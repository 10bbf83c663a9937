"""A second wire, for tests: length-prefixed JSON frames.

It exists to show (and test) that a door is a `Wire` plus a thin adapter: the whole chat
end-to-end suite runs over it unchanged (tests/e2e). A frame is a 4-byte big-endian length
followed by that many bytes of one compact JSON object, the same objects as the NDJSON wire's
(docs/protocol.md); the same frame limit applies to the JSON. A length over the limit is fatal
(`frame_too_large`: the rest of the stream cannot be trusted), as is the stream ending inside a
frame. Everything else is reported per frame, like NDJSON lines.
"""

from __future__ import annotations

import struct

from parlour.protocol.codec import decode_line, encode
from parlour.protocol.errors import ErrorCode, ProtocolError
from parlour.protocol.events import Event
from parlour.protocol.limits import DEFAULT_MAX_FRAME
from parlour.protocol.replies import Reply
from parlour.protocol.requests import parse_request
from parlour.protocol.wire import WireInput

__all__ = ["LENGTH_PREFIXED", "LengthPrefixedKind", "LengthPrefixedWire", "frame", "unframe"]

_HEADER = struct.Struct(">I")


def frame(payload: bytes) -> bytes:
    """One length-prefixed frame around `payload`."""
    return _HEADER.pack(len(payload)) + payload


def unframe(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete frames' payloads at the start of `data`, and what is left over."""
    out: list[bytes] = []
    pos = 0
    while len(data) - pos >= 4:
        (size,) = _HEADER.unpack_from(data, pos)
        if len(data) - pos - 4 < size:
            break
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out, data[pos:]


class LengthPrefixedKind:
    __slots__ = ()

    @property
    def name(self) -> str:
        return "length-prefixed"

    def encode_event(self, event: Event) -> bytes:
        return frame(encode(event.to_wire())[:-1])

    def __repr__(self) -> str:
        return "LENGTH_PREFIXED"


LENGTH_PREFIXED = LengthPrefixedKind()


class LengthPrefixedWire:
    __slots__ = ("_buf", "_dead", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._dead = False

    @property
    def kind(self) -> LengthPrefixedKind:
        return LENGTH_PREFIXED

    def feed(self, data: bytes) -> list[WireInput]:
        if self._dead:
            return []
        buf = self._buf
        buf += data
        out: list[WireInput] = []
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            if size > self.max_frame:
                self._dead = True
                buf.clear()
                out.append(
                    ProtocolError(
                        ErrorCode.FRAME_TOO_LARGE,
                        f"frame of {size} bytes exceeds the maximum of {self.max_frame} bytes",
                        max_frame=self.max_frame,
                    )
                )
                return out
            if len(buf) - pos - 4 < size:
                break
            payload = bytes(buf[pos + 4 : pos + 4 + size])
            pos += 4 + size
            if not payload:
                out.append(ProtocolError(ErrorCode.BAD_FRAME, "empty frame"))
                continue
            obj = decode_line(payload)
            if isinstance(obj, ProtocolError):
                out.append(obj)
                continue
            try:
                out.append(parse_request(obj))
            except ProtocolError as exc:
                out.append(exc)
        del buf[:pos]
        return out

    def encode_reply(self, reply: Reply) -> bytes:
        return frame(encode(reply.to_wire())[:-1])
