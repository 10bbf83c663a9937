"""The wire seam: how one kind of door turns bytes into requests and messages into bytes.

Sans-I/O (no sockets, no clock). A door (transport adapter: TCP, WebSocket, later IRC) gives
every connection its own :class:`Wire` and feeds it what arrives; the wire answers with the
requests it could decode, in order, and a :class:`~parlour.protocol.errors.ProtocolError` for
every input it could not. One input may yield zero or several requests (an IRC line), and one
event may become zero or several frames on the wire (the bytes returned are simply their
concatenation, each frame complete: a stream door writes them as they are, and a door that
needs message boundaries, such as WebSocket, gets complete frames of its own framing).

Event encoding belongs to the wire's :class:`WireKind`, shared by every connection of that
kind and independent of the connection: the hub encodes a fan-out event **once per kind**
present among its recipients and writes the same bytes to each (docs/design/chat-architecture.md).
Replies are encoded by the connection's own wire, which may keep per-connection state.

:class:`NdjsonWire` is the first implementation: newline-delimited JSON, the TCP door's format
(docs/protocol.md).
"""

from __future__ import annotations

from typing import Protocol

from parlour.protocol.codec import FrameDecoder, encode
from parlour.protocol.errors import ProtocolError
from parlour.protocol.events import Event
from parlour.protocol.limits import DEFAULT_MAX_FRAME
from parlour.protocol.replies import Reply
from parlour.protocol.requests import Request, parse_request

__all__ = ["NDJSON", "NdjsonKind", "NdjsonWire", "Wire", "WireInput", "WireKind"]

#: what a wire decodes from its input: a request, or why a part of the input was refused
WireInput = Request | ProtocolError


class WireKind(Protocol):
    """What every connection of one wire kind shares: its name and its event encoding."""

    @property
    def name(self) -> str: ...

    def encode_event(self, event: Event) -> bytes:
        """The event as this kind's frames (possibly none: ``b""``), the same bytes for every
        connection of the kind."""
        ...


class Wire(Protocol):
    """One connection's codec: bytes in, requests out; replies and events out as bytes."""

    @property
    def kind(self) -> WireKind: ...

    def feed(self, data: bytes) -> list[WireInput]:
        """Add received input; return the requests (and refusals) it completes, in order.
        A refusal whose ``fatal`` is set ends the connection (after its error reply)."""
        ...

    def encode_reply(self, reply: Reply) -> bytes:
        """The reply to one request (or an error not tied to one, ``id`` None) as bytes."""
        ...


class NdjsonKind:
    """Newline-delimited JSON: one compact JSON object per line (docs/protocol.md)."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return "ndjson"

    def encode_event(self, event: Event) -> bytes:
        return encode(event.to_wire())

    def __repr__(self) -> str:
        return "NDJSON"


#: the one NDJSON kind (kinds are compared by identity in the hub)
NDJSON = NdjsonKind()


class NdjsonWire:
    """The TCP door's wire: :class:`~parlour.protocol.codec.FrameDecoder` lines, each parsed
    with :func:`~parlour.protocol.requests.parse_request`."""

    __slots__ = ("_decoder",)

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._decoder = FrameDecoder(max_frame)

    @property
    def kind(self) -> NdjsonKind:
        return NDJSON

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete line."""
        return self._decoder.buffered

    def feed(self, data: bytes) -> list[WireInput]:
        out: list[WireInput] = []
        for frame in self._decoder.feed(data):
            if isinstance(frame, ProtocolError):
                out.append(frame)
                continue
            try:
                out.append(parse_request(frame))
            except ProtocolError as exc:
                out.append(exc)
        return out

    def encode_reply(self, reply: Reply) -> bytes:
        return encode(reply.to_wire())
