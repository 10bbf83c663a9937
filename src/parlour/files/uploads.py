"""The tus 1.0 rules, sans-I/O (https://tus.io/protocols/resumable-upload): the headers of
uploads and downloads parsed and checked, file ids, expiry dates.

Every parser takes the header's text (None when absent) and returns a value or raises
`TusError` with the HTTP status and a plain-text reason; nothing here touches a socket or a
file, so all of it is tested directly and with hypothesis (tests/files).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from email.utils import formatdate

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "EXTENSIONS",
    "FILE_ID_BYTES",
    "MAX_METADATA",
    "OFFSET_TYPE",
    "TUS_VERSION",
    "ByteRange",
    "Checksum",
    "TusError",
    "expires_header",
    "file_id",
    "is_file_id",
    "parse_checksum",
    "parse_length",
    "parse_metadata",
    "parse_offset",
    "parse_range",
]

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUM_ALGORITHMS = ("sha1", "sha256")
OFFSET_TYPE = "application/offset+octet-stream"
#: random bytes of a file id (22 URL-safe base64 characters)
FILE_ID_BYTES = 16
#: longest Upload-Metadata header, and most pairs in it
MAX_METADATA = 4096
MAX_METADATA_PAIRS = 16
#: the largest offset or length (JSON-safe integers, as the chat protocol's)
MAX_INT = 2**53
_DIGITS = re.compile(r"[0-9]{1,16}")
_FILE_ID = re.compile(r"[A-Za-z0-9_\-]{22}")
_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")  # an HTTP token, as tus says
_DIGEST_SIZES = {"sha1": 20, "sha256": 32}


class TusError(Exception):
    """A request the tus rules refuse: the HTTP `status` and a plain-text reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def file_id(raw: bytes) -> str:
    """A file id from `FILE_ID_BYTES` random bytes."""
    if len(raw) != FILE_ID_BYTES:
        raise ValueError(f"a file id takes {FILE_ID_BYTES} random bytes")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def is_file_id(text: str) -> bool:
    return _FILE_ID.fullmatch(text) is not None


def _integer(name: str, value: str | None, *, required: bool = True) -> int | None:
    if value is None:
        if required:
            raise TusError(400, f"{name} header is missing")
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value) is None or int(value) > MAX_INT:
        raise TusError(400, f"{name} must be a non-negative integer")
    return int(value)


def parse_offset(value: str | None) -> int:
    """``Upload-Offset``: a non-negative integer."""
    got = _integer("Upload-Offset", value)
    assert got is not None
    return got


def parse_length(value: str | None) -> int:
    """``Upload-Length``: a non-negative integer (deferred lengths are not supported)."""
    got = _integer("Upload-Length", value)
    assert got is not None
    return got


def parse_metadata(value: str | None) -> dict[str, str | None]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (the value may be left
    out); keys unique, values UTF-8. Binary values are refused (names and types are text)."""
    if value is None or not value.strip():
        return {}
    if len(value) > MAX_METADATA:
        raise TusError(400, f"Upload-Metadata is longer than {MAX_METADATA} characters")
    out: dict[str, str | None] = {}
    pairs = value.split(",")
    if len(pairs) > MAX_METADATA_PAIRS:
        raise TusError(400, f"Upload-Metadata has more than {MAX_METADATA_PAIRS} pairs")
    for pair in pairs:
        parts = pair.strip().split(" ")
        if len(parts) > 2 or _KEY.fullmatch(parts[0]) is None:
            raise TusError(400, "Upload-Metadata must be 'key base64value' pairs")
        key = parts[0]
        if key in out:
            raise TusError(400, f"Upload-Metadata has key {key!r} twice")
        if len(parts) == 1 or parts[1] == "":
            out[key] = None
            continue
        try:
            raw = base64.b64decode(parts[1], validate=True)
            out[key] = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            raise TusError(
                400, f"Upload-Metadata value of {key!r} is not base64 of UTF-8 text"
            ) from None
    return out


@dataclass(frozen=True, slots=True)
class Checksum:
    """``Upload-Checksum``: the algorithm and the digest the chunk must have."""

    algorithm: str
    digest: bytes


def parse_checksum(value: str | None) -> Checksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``; an unsupported algorithm is 400."""
    if value is None:
        return None
    parts = value.strip().split(" ")
    if len(parts) != 2:
        raise TusError(400, "Upload-Checksum must be '<algorithm> <base64 digest>'")
    algorithm = parts[0].lower()
    if algorithm not in _DIGEST_SIZES:
        raise TusError(400, f"checksum algorithm {parts[0]!r} is not supported (sha1, sha256 are)")
    try:
        digest = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise TusError(400, "Upload-Checksum digest is not base64") from None
    if len(digest) != _DIGEST_SIZES[algorithm]:
        raise TusError(400, f"Upload-Checksum digest is not a {algorithm} digest")
    return Checksum(algorithm, digest)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A satisfiable single byte range: `start` to `end` inclusive."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(value: str | None, size: int) -> ByteRange | None:
    """``Range: bytes=a-b`` of a `size`-byte file: None to send it whole (no header, another
    unit, several ranges, or a malformed header, which RFC 9110 says to ignore), a
    `ByteRange`, or `TusError(416)` when the range cannot be satisfied."""
    if value is None:
        return None
    value = value.strip()
    unit, eq, spec = value.partition("=")
    if not eq or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if first == "":  # a suffix: the last n bytes
        if _DIGITS.fullmatch(last) is None:
            return None
        n = int(last)
        if n == 0 or size == 0:
            raise TusError(416, "range not satisfiable")
        return ByteRange(max(0, size - n), size - 1)
    if _DIGITS.fullmatch(first) is None or (last and _DIGITS.fullmatch(last) is None):
        return None
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored, the whole file
    if start >= size:
        raise TusError(416, "range not satisfiable")
    end = int(last) if last else size - 1
    return ByteRange(start, min(end, size - 1))


def expires_header(ts: float) -> str:
    """An ``Upload-Expires`` value (RFC 9110 date) for unix time `ts`."""
    return formatdate(ts, usegmt=True)
