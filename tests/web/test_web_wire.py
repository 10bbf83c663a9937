"""The WebSocket wire, sans-I/O: frames out (byte-exact against RFC 6455), messages in (the same
requests and errors as the NDJSON wire gives for the same line)."""

from __future__ import annotations

import asyncio
import json
import struct

from hypothesis import given
from hypothesis import strategies as st

from parlour.protocol import (
    DisconnectEvent,
    ErrorCode,
    MessageEvent,
    NdjsonWire,
    ProtocolError,
    encode,
    parse_event,
)
from parlour.protocol.replies import Error
from parlour.protocol.websocket import (
    OP_CLOSE,
    OP_TEXT,
    WEBSOCKET,
    WebSocketWire,
    close_frame,
    server_frame,
    text_frame,
)


def parse_frame(data: bytes) -> tuple[bool, int, bytes, bytes]:
    """(fin, opcode, payload, rest): a reference reader written from RFC 6455 §5.2."""
    b0, b1 = data[0], data[1]
    assert not b1 & 0x80, "server frames are not masked"
    size, pos = b1 & 0x7F, 2
    if size == 126:
        (size,) = struct.unpack_from(">H", data, 2)
        pos = 4
        assert size >= 126, "the shortest length encoding must be used"
    elif size == 127:
        (size,) = struct.unpack_from(">Q", data, 2)
        pos = 10
        assert size >= 65536, "the shortest length encoding must be used"
    return bool(b0 & 0x80), b0 & 0x0F, data[pos : pos + size], data[pos + size :]


@given(st.binary(max_size=200), st.integers(0, 70000))
def test_server_frames_are_final_unmasked_with_the_shortest_length(head: bytes, pad: int) -> None:
    payload = head + b"p" * pad
    fin, opcode, body, rest = parse_frame(server_frame(OP_TEXT, payload))
    assert (fin, opcode, body, rest) == (True, OP_TEXT, payload, b"")


def test_length_encoding_boundaries() -> None:
    for size, header in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)]:
        frame = server_frame(OP_TEXT, b"x" * size)
        assert len(frame) == header + size, size


def test_an_event_is_one_text_frame_holding_its_json_without_the_newline() -> None:
    event = MessageEvent(
        room="general", seq=7, ts=1.5, sender="bob", text="hi <b>", edited=False,
        deleted=False, client_id="c",
    )  # fmt: skip
    frame = WEBSOCKET.encode_event(event)
    fin, opcode, body, rest = parse_frame(frame)
    assert fin and opcode == OP_TEXT and not rest
    assert body == encode(event.to_wire())[:-1]
    assert parse_event(json.loads(body)) == event
    # the same bytes every time: the hub writes one encoding to every recipient
    assert WEBSOCKET.encode_event(event) == frame


def test_reply_and_close_frames() -> None:
    reply = Error(3, ErrorCode.RATE_LIMITED.value, "slow down", {"retry_after": 0.5})
    _, opcode, body, _ = parse_frame(WebSocketWire().encode_reply(reply))
    assert opcode == OP_TEXT and json.loads(body)["code"] == "rate_limited"
    _, opcode, body, _ = parse_frame(close_frame(1000, "é" * 100))
    assert opcode == OP_CLOSE and struct.unpack(">H", body[:2])[0] == 1000
    assert len(body) <= 125 and body[2:].decode()  # cut to whole characters
    disconnect = WEBSOCKET.encode_event(DisconnectEvent(code="kicked", reason="bye"))
    assert json.loads(parse_frame(disconnect)[2])["event"] == "disconnect"


def _summary(items: list[object]) -> list[object]:
    return [
        (i.code, i.fatal) if isinstance(i, ProtocolError) else (type(i).__name__, i) for i in items
    ]


@given(
    st.one_of(
        st.binary(min_size=1, max_size=100)
        .map(lambda b: b.replace(b"\n", b"_"))
        .filter(lambda b: bool(b.strip())),
        st.dictionaries(
            st.sampled_from(["id", "type", "room", "text", "client_id", "limit", "x"]),
            st.one_of(st.integers(), st.text(max_size=20), st.none(), st.booleans()),
            max_size=5,
        ).map(lambda d: json.dumps(d).encode()),
        st.sampled_from(
            [b'{"id":1,"type":"ping"}', b'{"id":2,"type":"join","room":"general"}', b"[1]"]
        ),
    )
)
def test_a_message_means_what_the_same_ndjson_line_means(line: bytes) -> None:
    got = WebSocketWire(256).feed(line)
    want = NdjsonWire(256).feed(line + b"\n")
    assert _summary(list(got)) == _summary(list(want))


def test_size_limit_empty_messages_and_errors_are_per_message() -> None:
    wire = WebSocketWire(max_frame=64)
    assert wire.feed(b"") == []  # a pong reported by the door: nothing to decode
    [too_big] = wire.feed(b'{"id":1,"type":"ping","x":"' + b"y" * 64 + b'"}')
    assert isinstance(too_big, ProtocolError) and too_big.fatal
    assert too_big.code is ErrorCode.FRAME_TOO_LARGE and too_big.extra["max_frame"] == 64
    [bad] = wire.feed(b'{"id":1,"type":"ping","x":"\xff"}')
    assert isinstance(bad, ProtocolError) and bad.code is ErrorCode.INVALID_UTF8
    assert not bad.fatal
    [ok] = wire.feed(b'{"id":2,"type":"ping"}')
    assert not isinstance(ok, ProtocolError) and ok.id == 2  # type: ignore[union-attr]
    # exactly the limit is accepted
    exact = b'{"id":3,"type":"ping","x":"' + b"z" * (64 - 29) + b'"}'
    assert len(exact) == 64
    assert not isinstance(wire.feed(exact)[0], ProtocolError)


def test_frames_read_back_with_the_test_client_reader() -> None:
    from ws_raw import read_frame

    async def read_all(data: bytes) -> list[tuple[bool, int, bytes]]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        out = []
        while not reader.at_eof():
            out.append(await read_frame(reader))
        return out

    blob = text_frame(b'{"a":1}\n') + server_frame(OP_TEXT, b"x" * 70000) + close_frame(1001)
    frames = asyncio.run(read_all(blob))
    assert [(f[1], len(f[2])) for f in frames] == [(OP_TEXT, 7), (OP_TEXT, 70000), (OP_CLOSE, 2)]
