"""The codec's orjson fast path agrees with the standard-library reference codec.

The reference below is the codec as it was before orjson (``json`` only). Every line must get
the same verdict, error message and value from both, except the one deliberate change: a string
with a lone surrogate escape is rejected (``invalid_json``) instead of being decoded into a
string that can be neither stored nor sent on as UTF-8.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from parlour.protocol import ErrorCode, FrameDecoder, ProtocolError, decode_line, encode

_REF_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_REF_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def reference_encode(obj: Any) -> bytes:
    return (_REF_ENCODER.encode(obj) + "\n").encode()


def reference_decode(line: bytes) -> dict[str, Any] | ProtocolError:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ProtocolError(ErrorCode.INVALID_UTF8, f"frame is not valid UTF-8 (byte {exc.start})")
    try:
        obj = _REF_DECODER.decode(text)
    except RecursionError:
        return ProtocolError(ErrorCode.INVALID_JSON, "frame is nested too deeply")
    except ValueError as exc:
        detail = str(exc).splitlines()[0][:120]
        return ProtocolError(ErrorCode.INVALID_JSON, f"frame is not valid JSON: {detail}")
    if not isinstance(obj, dict):
        return ProtocolError(
            ErrorCode.BAD_FRAME, f"frame must be a JSON object, not {type(obj).__name__}"
        )
    return obj


def has_surrogate(obj: Any) -> bool:
    if isinstance(obj, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in obj)
    if isinstance(obj, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(has_surrogate(v) for v in obj)
    return False


def verdict(result: dict[str, Any] | ProtocolError) -> tuple[str, str]:
    """Code and message, or "ok" and a repr that tells 1 from 1.0 and keeps key order."""
    if isinstance(result, ProtocolError):
        return result.code.value, result.message
    return "ok", repr(result)


def assert_same_as_reference(line: bytes) -> None:
    got = decode_line(line)
    want = reference_decode(line[:-1] if line[-1:] == b"\r" else line)
    if not isinstance(want, ProtocolError) and has_surrogate(want):
        assert isinstance(got, ProtocolError) and got.code is ErrorCode.INVALID_JSON
        assert "lone surrogate" in got.message
        return
    assert verdict(got) == verdict(want)


TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"a"',
    b'"b"',
    b":",
    b",",
    b" ",
    b"\t",
    b"\r",
    b"\x0c",
    b"0",
    b"1",
    b"-",
    b"+",
    b".",
    b"e",
    b"E",
    b"9" * 19,
    b"9" * 25,
    b"18446744073709551616",
    b"1e400",
    b"NaN",
    b"Infinity",
    b"true",
    b"false",
    b"null",
    b'"',
    b"\\",
    b"u",
    b"\\u0000",
    b"\\ud800",
    b"\\udc00",
    b"\\ud83d\\ude00",
    b"\\n",
    b"\\x",
    b"\x00",
    b"\x1f",
    b"\x7f",
    b"\xc3\xa9",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xf4\x90\x80\x80",
    b"\xff",
    b"\xef\xbb\xbf",
]

JSON_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=["Cs"])
    | st.sampled_from(["\ud800", "\udfff", "\x00", "\x1f", '"', "\\", "\u2028"]),
    max_size=12,
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**18, max_value=10**40).flatmap(lambda n: st.sampled_from([n, -n]))
    | st.floats(allow_nan=False)
    | JSON_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(JSON_TEXT, children, max_size=4)
    ),
    max_leaves=8,
)
OBJECTS = st.dictionaries(JSON_TEXT, JSON_VALUES, max_size=5)


def ref_dumps(obj: Any) -> bytes:
    """Any JSON (also NaN, infinity and lone surrogates) as bytes, as a client could send it."""
    return json.dumps(obj, ensure_ascii=True).encode()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=14).map(b"".join))
@example(b'{"a":"\\ud800"}')
@example(b'{"\\udc00":1}')
@example(b'{"a":[1,{"b":' + b"9" * 30 + b"}]}")
@example(b'{"a":-' + b"9" * 30 + b"}")
@example(b'{"a":1e400}')
@example(b'{"a":1,"a":2}')
@example(b'{"a":1,"b":2,"a":{"c":3}}')
@example(b"\xef\xbb\xbf{}")
def test_token_soup_gets_the_reference_verdict(line: bytes) -> None:
    assert_same_as_reference(line)


@settings(max_examples=300, deadline=None)
@given(OBJECTS | JSON_VALUES)
def test_valid_json_decodes_to_the_reference_value(obj: Any) -> None:
    assert_same_as_reference(ref_dumps(obj))
    assert_same_as_reference(json.dumps(obj, ensure_ascii=False).encode("utf-8", "replace"))


def test_huge_integers_stay_exact_integers() -> None:
    big = 123456789012345678901234567890
    assert decode_line(b'{"n":%d,"m":[-%d,{"k":%d}]}' % (big, big, big)) == {
        "n": big,
        "m": [-big, {"k": big}],
    }
    assert decode_line(b'{"n":18446744073709551615}') == {"n": 2**64 - 1}
    assert decode_line(b'{"n":1e30}') == {"n": 1e30}


def test_lone_surrogate_is_a_clear_per_line_error() -> None:
    d = FrameDecoder()
    out = d.feed(b'{"id":1,"type":"send","text":"a\\ud800b"}\n{"id":2,"ok":"\\ud83d\\ude00"}\n')
    assert isinstance(out[0], ProtocolError)
    assert out[0].code is ErrorCode.INVALID_JSON
    assert "lone surrogate" in out[0].message
    assert out[1] == {"id": 2, "ok": "\U0001f600"}


def _finite(obj: Any) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v) for v in obj)
    return True


@settings(max_examples=300, deadline=None)
@given(OBJECTS)
def test_encode_matches_the_reference_encoder(obj: dict[str, Any]) -> None:
    try:
        want = reference_encode(obj)
    except ValueError as exc:  # NaN/infinity, or a lone surrogate (UnicodeEncodeError)
        with pytest.raises(type(exc)):
            encode(obj)
        return
    got = encode(obj)
    assert json.loads(got) == json.loads(want)
    assert got.endswith(b"\n") and got.count(b"\n") == 1
    # bytes are the reference's except for floats below 1e-4 (written without an exponent)
    if "e-" not in want.decode():
        assert got == want


@pytest.mark.parametrize(
    "obj",
    [
        {"ts": math.nan},
        {"a": [1, {"b": math.inf}]},
        {"a": -math.inf, "b": None},
    ],
)
def test_encode_rejects_nan_and_infinity(obj: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        encode(obj)


def test_encode_keeps_key_order_and_compact_form() -> None:
    frame = {"id": 7, "type": "ok", "data": {"ts": 1732215600.25, "z": [True, None], "a": "é"}}
    assert encode(frame) == (
        b'{"id":7,"type":"ok","data":{"ts":1732215600.25,"z":[true,null],"a":"\xc3\xa9"}}\n'
    )
    assert encode({"type": "event", "seq": 2**70, 1: "x"}) == reference_encode(
        {"type": "event", "seq": 2**70, 1: "x"}
    )
