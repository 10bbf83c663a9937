"""Sans-I/O framing: newline-delimited JSON objects, UTF-8, with a maximum frame size.

:class:`FrameDecoder` takes bytes as they arrive (split anywhere) and returns, in order, one
item per complete line: the decoded ``dict`` or a :class:`ProtocolError` describing why that
line was rejected. It never touches a socket or a clock, so the same decoder serves TCP,
WebSocket text frames (feed the text plus ``b"\\n"``) and the client library.

Rules:

* a line ends at ``\\n``; one trailing ``\\r`` is stripped; blank lines are ignored;
* a line longer than ``max_frame`` bytes (excluding the newline) yields ``frame_too_large``
  as soon as the limit is passed, without buffering the rest: the decoder skips to the next
  newline. The server closes the connection after that error (it is *fatal*);
* invalid UTF-8 -> ``invalid_utf8``; not JSON (including ``NaN``/``Infinity``, over-deep
  nesting or integers beyond Python's digit limit) -> ``invalid_json``; a string with a lone
  surrogate escape (``"\\ud800"`` without its pair: not Unicode, so it could be neither stored
  nor sent on as UTF-8) -> ``invalid_json``; JSON that is not an object -> ``bad_frame``.
  These are per-line: the next line is decoded normally.

:func:`encode` produces compact JSON + ``\\n``; call it once per fan-out message and write the
same bytes to every recipient.

Implementation (docs/design/protocol-json-library.md): ``orjson`` does the work on the fast
path and the standard library's :mod:`json` is the reference for everything else. A line that
``orjson`` rejects is decoded again by the reference decoder, so every error (and its message)
and every value only the reference accepts (``1e400`` as infinity, integers beyond 64 bits) is
exactly what it was; a result in which ``orjson`` may have turned an integer beyond 64 bits into
a float is decoded again as well. On the encoding side an object ``orjson`` cannot encode (keys
that are not strings, integers beyond 64 bits, lone surrogates, over 254 levels) or whose
output contains ``null`` (which is also how ``orjson`` writes NaN and infinities) is encoded by
the reference encoder, which raises ``ValueError`` for NaN/infinity as before. The bytes agree
with the reference encoder's except that floats below 1e-4 are written without an exponent
(``0.00001`` rather than ``1e-05``): the same numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

from parlour.protocol.errors import ErrorCode, ProtocolError
from parlour.protocol.limits import DEFAULT_MAX_FRAME

__all__ = ["Frame", "FrameDecoder", "decode_line", "encode"]

#: What :meth:`FrameDecoder.feed` yields per line.
Frame = dict[str, Any] | ProtocolError

# The reference codec (the standard library): the semantics every frame keeps.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_encode_str = _ENCODER.encode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_decode_str = _DECODER.decode

# The fast codec.
_dumps = orjson.dumps
_loads = orjson.loads
_NEWLINE = orjson.OPT_APPEND_NEWLINE
_OrjsonEncodeError = orjson.JSONEncodeError
_OrjsonDecodeError = orjson.JSONDecodeError
#: orjson returns an integer literal beyond 64 bits as a float of at least this magnitude
_BIG = 9.2e18
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_LONE_SURROGATE_ERROR = (
    "frame is not valid JSON: a string has a lone surrogate escape"
    " (\\ud800-\\udfff without its pair), which is not Unicode"
)


def encode(obj: Mapping[str, Any]) -> bytes:
    """One frame: compact UTF-8 JSON followed by ``\\n`` (``ValueError`` on NaN/inf)."""
    try:
        out = _dumps(obj, option=_NEWLINE)
    except _OrjsonEncodeError:
        return (_encode_str(obj) + "\n").encode()  # the reference result or its error
    if b"null" in out:  # None, the text "null", or a NaN/infinity orjson wrote as null
        return (_encode_str(obj) + "\n").encode()
    return out


def decode_line(line: bytes | bytearray | memoryview) -> Frame:
    """Decode one line (without its ``\\n``; a trailing ``\\r`` is tolerated).

    Does not check the size limit; :class:`FrameDecoder` does.
    """
    if line[-1:] == b"\r":
        line = line[:-1]
    return _decode_content(bytes(line))


def _decode_content(line: bytes | bytearray) -> Frame:
    try:
        obj = _loads(line)
    except _OrjsonDecodeError:
        return _decode_reference(line)
    if type(obj) is not dict:  # an error; the reference names the type (int, not float)
        return _decode_reference(line)
    for value in obj.values():  # cheap check that no integer beyond 64 bits became a float
        kind = type(value)
        if kind is float:
            if not -_BIG < value < _BIG:
                return _decode_reference(line)
        elif (kind is dict or kind is list) and _may_hold_big_int(value):
            return _decode_reference(line)
    return obj


def _decode_reference(line: bytes | bytearray) -> Frame:
    """The standard library's verdict (slow path: errors and the rare values orjson reads
    differently), plus the lone-surrogate check orjson makes on the fast path."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ProtocolError(ErrorCode.INVALID_UTF8, f"frame is not valid UTF-8 (byte {exc.start})")
    try:
        obj = _decode_str(text)
    except RecursionError:
        return ProtocolError(ErrorCode.INVALID_JSON, "frame is nested too deeply")
    except ValueError as exc:  # JSONDecodeError, int digit limit, NaN/Infinity
        detail = str(exc).splitlines()[0][:120]
        return ProtocolError(ErrorCode.INVALID_JSON, f"frame is not valid JSON: {detail}")
    if not isinstance(obj, dict):
        return ProtocolError(
            ErrorCode.BAD_FRAME, f"frame must be a JSON object, not {type(obj).__name__}"
        )
    if "\\u" in text and _has_lone_surrogate(obj):
        return ProtocolError(ErrorCode.INVALID_JSON, _LONE_SURROGATE_ERROR)
    return obj


def _may_hold_big_int(container: dict[str, Any] | list[Any]) -> bool:
    stack: list[Any] = [container]
    while stack:
        item = stack.pop()
        for value in item.values() if type(item) is dict else item:
            kind = type(value)
            if kind is float:
                if not -_BIG < value < _BIG:
                    return True
            elif kind is dict or kind is list:
                stack.append(value)
    return False


def _has_lone_surrogate(obj: dict[str, Any]) -> bool:
    stack: list[Any] = [obj]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            for key, value in item.items():
                if _LONE_SURROGATE.search(key):
                    return True
                stack.append(value)
        elif type(item) is list:
            stack.extend(item)
        elif type(item) is str and _LONE_SURROGATE.search(item):
            return True
    return False


class FrameDecoder:
    """Incremental newline-delimited JSON decoder with a per-frame byte limit."""

    __slots__ = ("_buf", "_skipping", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < 2:
            raise ValueError("max_frame must be at least 2 bytes")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._skipping = False  # inside an oversize line, dropping bytes up to its newline

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete line (never more than ``max_frame`` + 1)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add received bytes; return the frames (or per-line errors) completed by them."""
        if not isinstance(data, bytes | bytearray):
            data = bytes(data)
        out: list[Frame] = []
        buf = self._buf
        limit = self.max_frame
        start = 0
        end = len(data)
        while start < end:
            nl = data.find(b"\n", start)
            if self._skipping:
                if nl < 0:
                    return out
                self._skipping = False
                start = nl + 1
                continue
            if nl < 0:
                buf += data[start:]
                size = len(buf)
                if size > limit + 1 or (size == limit + 1 and buf[-1] != 0x0D):
                    out.append(self._too_large())
                return out
            line: bytes | bytearray
            if buf:
                buf += data[start:nl]
                line = bytes(buf)
                buf.clear()
            else:
                line = data[start:nl]
            start = nl + 1
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                continue
            if len(line) > limit:
                out.append(self._oversize_error(len(line)))
                continue
            out.append(_decode_content(line))
        return out

    def _too_large(self) -> ProtocolError:
        self._buf.clear()
        self._skipping = True
        return self._oversize_error(None)

    def _oversize_error(self, length: int | None) -> ProtocolError:
        size = f"{length} bytes" if length is not None else "more than the limit"
        return ProtocolError(
            ErrorCode.FRAME_TOO_LARGE,
            f"frame of {size} exceeds the maximum of {self.max_frame} bytes",
            max_frame=self.max_frame,
        )
