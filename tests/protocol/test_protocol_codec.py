"""The NDJSON frame codec: framing, limits and hostile input."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.protocol import ErrorCode, FrameDecoder, ProtocolError, decode_line, encode

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=4,
)
OBJECTS = st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=4)

#: lines a hostile or broken client might send, each as (the error it must produce, line)
HOSTILE_LINES: st.SearchStrategy[tuple[str, bytes]] = st.one_of(
    st.binary(max_size=40)
    .filter(lambda b: b"\n" not in b)
    .map(lambda b: ("invalid_utf8", b"\xff" + b)),
    st.sampled_from(
        [
            ("invalid_json", b"{"),
            ("invalid_json", b"NaN"),
            ("invalid_json", b'{"a": Infinity}'),
            ("invalid_json", b'{"a": 1,}'),
            ("invalid_json", b"{'single': 1}"),
            ("invalid_json", b"[" * 120 + b"]" * 120 + b" x"),
            ("invalid_json", b"\x00"),
            ("bad_frame", b"[1, 2]"),
            ("bad_frame", b'"text"'),
            ("bad_frame", b"null"),
            ("bad_frame", b"42"),
            ("invalid_utf8", b"\xed\xa0\x80"),  # a UTF-8 encoded surrogate
            ("invalid_utf8", b"\xc0\xaf"),  # overlong encoding
        ]
    ),
    st.integers(257, 600).map(lambda n: ("frame_too_large", b'{"x":"' + b"y" * n + b'"}')),
)
#: valid frames that fit the 256-byte limit used with HOSTILE_LINES
SMALL_FRAMES = (
    st.dictionaries(
        st.text(max_size=8),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12),
        max_size=3,
    )
    .map(encode)
    .filter(lambda b: len(b) <= 257)
    .map(lambda b: ("ok", b[:-1]))
)


def codes(frames: list[dict[str, object] | ProtocolError]) -> list[str]:
    return [f.code.value if isinstance(f, ProtocolError) else "ok" for f in frames]


def test_encode_is_compact_utf8_with_newline() -> None:
    assert encode({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}\n'.encode()


def test_decode_one_frame_and_crlf() -> None:
    d = FrameDecoder()
    assert d.feed(b'{"id":1}\r\n{"id":2}\n') == [{"id": 1}, {"id": 2}]
    assert d.buffered == 0


def test_blank_lines_are_ignored() -> None:
    assert FrameDecoder().feed(b'\n\r\n{"x":1}\n\n') == [{"x": 1}]


def test_partial_frames_are_buffered() -> None:
    d = FrameDecoder()
    assert d.feed(b'{"id"') == []
    assert d.feed(b":7") == []
    assert d.feed(b"}\n") == [{"id": 7}]


def test_per_line_errors_do_not_stop_the_stream() -> None:
    d = FrameDecoder()
    out = d.feed(b'\xff\xfe\n{bad json\n[1,2]\n"s"\nNaN\n{"ok":true}\n')
    assert codes(out) == [
        "invalid_utf8",
        "invalid_json",
        "bad_frame",
        "bad_frame",
        "invalid_json",
        "ok",
    ]


def test_oversize_complete_line() -> None:
    d = FrameDecoder(max_frame=16)
    out = d.feed(b'{"a":"' + b"x" * 40 + b'"}\n{"b":1}\n')
    assert codes(out) == ["frame_too_large", "ok"]
    err = out[0]
    assert isinstance(err, ProtocolError) and err.fatal and err.extra["max_frame"] == 16


def test_oversize_is_reported_before_the_newline_and_not_buffered() -> None:
    d = FrameDecoder(max_frame=16)
    out = d.feed(b"x" * 17)
    assert codes(out) == ["frame_too_large"]
    assert d.buffered == 0
    # the rest of that line is skipped, however long
    assert d.feed(b"y" * 100_000) == []
    assert d.buffered == 0
    assert d.feed(b'zz\n{"c":3}\n') == [{"c": 3}]


def test_exactly_max_frame_is_accepted_with_and_without_cr() -> None:
    body = b'{"a":"' + b"x" * 8 + b'"}'
    assert len(body) == 16
    for tail in (b"\n", b"\r\n"):
        d = FrameDecoder(max_frame=16)
        for i in range(len(body + tail)):  # byte by byte
            got = d.feed((body + tail)[i : i + 1])
        assert got == [{"a": "x" * 8}]


def test_deep_nesting_and_huge_numbers_are_invalid_json() -> None:
    d = FrameDecoder(max_frame=1 << 20)
    deep = b"[" * 100_000 + b"]" * 100_000
    huge = b'{"n":' + b"9" * 5000 + b"}"
    out = d.feed(b'{"a":' + deep + b"}\n" + huge + b"\n")
    assert codes(out) == ["invalid_json", "invalid_json"]


def test_decode_line_helper() -> None:
    assert decode_line(b'{"a":1}\r') == {"a": 1}
    err = decode_line(b"1")
    assert isinstance(err, ProtocolError) and err.code is ErrorCode.BAD_FRAME


@settings(deadline=None, max_examples=100)
@given(st.lists(OBJECTS, max_size=3), st.data())
def test_round_trip_split_anywhere(objs: list[dict[str, object]], data: st.DataObject) -> None:
    stream = b"".join(encode(o) for o in objs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    d = FrameDecoder(max_frame=1 << 20)
    out: list[dict[str, object] | ProtocolError] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += d.feed(stream[prev:cut])
        prev = cut
    assert out == [json.loads(json.dumps(o)) for o in objs]
    assert d.buffered == 0


@settings(deadline=None, max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=10), st.integers(2, 300))
def test_hostile_bytes_never_raise_and_stay_bounded(chunks: list[bytes], limit: int) -> None:
    d = FrameDecoder(max_frame=limit)
    for chunk in chunks:
        for item in d.feed(chunk):
            assert isinstance(item, dict | ProtocolError)
            if isinstance(item, ProtocolError):
                assert item.code in {
                    ErrorCode.INVALID_UTF8,
                    ErrorCode.INVALID_JSON,
                    ErrorCode.BAD_FRAME,
                    ErrorCode.FRAME_TOO_LARGE,
                }
        assert d.buffered <= limit + 1


@settings(deadline=None, max_examples=200)
@given(st.binary(max_size=300), st.data())
def test_splitting_does_not_change_the_result(stream: bytes, data: st.DataObject) -> None:
    whole = FrameDecoder(max_frame=64).feed(stream)
    cut = data.draw(st.integers(0, len(stream)))
    d = FrameDecoder(max_frame=64)
    parts = d.feed(stream[:cut]) + d.feed(stream[cut:])

    def key(items: list[dict[str, object] | ProtocolError]) -> list[object]:
        return [i.code if isinstance(i, ProtocolError) else i for i in items]

    # the early oversize report may be emitted while the line is still incomplete, but the
    # sequence of outcomes is identical
    assert key(parts) == key(whole)


@settings(deadline=None, max_examples=200)
@given(st.lists(st.one_of(SMALL_FRAMES, HOSTILE_LINES), max_size=12), st.data())
def test_hostile_lines_get_their_error_and_valid_frames_around_them_survive(
    lines: list[tuple[str, bytes]], data: st.DataObject
) -> None:
    """A stream mixing valid frames with hostile lines, cut anywhere: exactly one outcome per
    line, in order — the right error for each hostile line, the exact object for each valid
    one; the buffer never holds more than one frame."""
    stream = b"".join(line + b"\n" for _, line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    d = FrameDecoder(max_frame=256)
    out: list[dict[str, object] | ProtocolError] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += d.feed(stream[prev:cut])
        prev = cut
        assert d.buffered <= 257
    assert codes(out) == [kind for kind, _ in lines]
    for (kind, line), item in zip(lines, out, strict=True):
        if kind == "ok":
            assert item == json.loads(line)
