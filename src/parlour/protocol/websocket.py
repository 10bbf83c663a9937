"""The WebSocket door's wire: one protocol message per WebSocket message (sans-I/O).

The door (``parlour.transports.websocket``) lets aiohttp do the HTTP upgrade and parse the
client's frames (masked, possibly fragmented, with control frames in between); it hands each
complete data message to :meth:`WebSocketWire.feed`. So what this wire decodes is one JSON
object per call, with no newline framing: the same objects as the NDJSON wire's
(docs/protocol.md), the same frame limit and the same per-frame errors.

On the way out, server frames are never masked (RFC 6455 §5.1), so a WebSocket frame is the
same bytes for every recipient: :class:`WebSocketKind` encodes each event once as one complete
unfragmented text frame, and the hub writes those bytes straight to every WebSocket
connection's transport (docs/design/web-client.md). This module also builds the few control
frames the door writes itself (ping, pong, close).
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

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "WEBSOCKET",
    "WebSocketKind",
    "WebSocketWire",
    "close_frame",
    "server_frame",
    "text_frame",
]

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_LEN16 = struct.Struct(">BBH")
_LEN64 = struct.Struct(">BBQ")
#: the longest reason a close frame can carry (125 bytes of payload less the 2-byte code)
MAX_CLOSE_REASON = 123


def server_frame(opcode: int, payload: bytes | memoryview) -> bytes:
    """One final, unmasked frame (FIN set) with ``payload``: what a server sends."""
    size = len(payload)
    first = 0x80 | opcode
    if size < 126:
        header = bytes((first, size))
    elif size < 65536:
        header = _LEN16.pack(first, 126, size)
    else:
        header = _LEN64.pack(first, 127, size)
    return header + payload


def text_frame(json_line: bytes) -> bytes:
    """A text frame holding one encoded JSON object (``json_line`` from
    :func:`~parlour.protocol.codec.encode`, whose trailing newline is left out)."""
    end = len(json_line) - 1 if json_line.endswith(b"\n") else len(json_line)
    return server_frame(OP_TEXT, memoryview(json_line)[:end])


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    """A close frame with a status code and a reason cut to fit (whole UTF-8 characters)."""
    raw = reason.encode()[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode()
    return server_frame(OP_CLOSE, struct.pack(">H", code) + raw)


class WebSocketKind:
    """Every event as one unmasked text frame: identical bytes for every recipient."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return "websocket"

    def encode_event(self, event: Event) -> bytes:
        return text_frame(encode(event.to_wire()))

    def __repr__(self) -> str:
        return "WEBSOCKET"


#: the one WebSocket kind (kinds are compared by identity in the hub)
WEBSOCKET = WebSocketKind()


class WebSocketWire:
    """One WebSocket connection's codec: a whole data message in, its request out.

    ``feed`` takes the payload of one complete text (or binary) message. An empty payload is
    nothing (the door also feeds ``b""`` to report a pong: life without a request). A message
    over ``max_frame`` bytes is ``frame_too_large`` and ends the connection, like an oversize
    NDJSON line; a message that is not UTF-8, not JSON or not an object gets the same per-frame
    error as on the other wires and the connection goes on.
    """

    __slots__ = ("max_frame",)

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame

    @property
    def kind(self) -> WebSocketKind:
        return WEBSOCKET

    def feed(self, data: bytes) -> list[WireInput]:
        size = len(data)
        if not size:
            return []
        if size > self.max_frame:
            return [
                ProtocolError(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"frame of {size} bytes exceeds the maximum of {self.max_frame} bytes",
                    max_frame=self.max_frame,
                )
            ]
        obj = decode_line(data)
        if isinstance(obj, ProtocolError):
            return [obj]
        try:
            return [parse_request(obj)]
        except ProtocolError as exc:
            return [exc]

    def encode_reply(self, reply: Reply) -> bytes:
        return text_frame(encode(reply.to_wire()))
