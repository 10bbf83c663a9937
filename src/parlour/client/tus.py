"""The rules of server-file transfers, without I/O: tus 1.0 headers for uploads, what a
download's response says, and where a downloaded file may go (docs/design/files.md).

Everything here is pure (no sockets, no clock, no files opened) so that it is tested on its
own, with hypothesis for the parsers; :mod:`parlour.client.attachments` does the I/O.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

__all__ = [
    "FILE_ID",
    "MAX_NAME_BYTES",
    "TUS_VERSION",
    "ContentRange",
    "attachment_key",
    "checksum_header",
    "content_range",
    "disposition_name",
    "etag_sha256",
    "file_id_of",
    "header",
    "local_name",
    "numbered",
    "parse_offset",
    "part_name",
    "patch_headers",
    "resolve",
    "upload_key",
    "upload_metadata",
]

TUS_VERSION = "1.0.0"
#: a file id (the tus upload id): URL-safe base64 characters, as the server makes them
FILE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: the longest file name kept, in bytes of UTF-8 (most file systems: 255)
MAX_NAME_BYTES = 255
#: room kept for " (9999)" and ".part" when the name is numbered or a partial file
_SUFFIX_ROOM = 16


def upload_metadata(filename: str, filetype: str | None = None) -> str:
    """The ``Upload-Metadata`` header: ``filename <base64>[,filetype <base64>]``."""

    def b64(value: str) -> str:
        return base64.b64encode(value.encode("utf-8")).decode("ascii")

    pairs = [f"filename {b64(filename)}"]
    if filetype:
        pairs.append(f"filetype {b64(filetype)}")
    return ",".join(pairs)


def checksum_header(chunk: bytes | bytearray | memoryview) -> str:
    """``Upload-Checksum`` of a PATCH body: ``sha256 <base64 of the digest>``."""
    digest = hashlib.sha256(chunk).digest()
    return "sha256 " + base64.b64encode(digest).decode("ascii")


def patch_headers(
    offset: int, chunk: bytes | bytearray | memoryview, checksum: str | None = None
) -> dict[str, str]:
    """The headers of a PATCH carrying ``chunk`` at ``offset`` (the bearer token apart);
    ``checksum``: its ``Upload-Checksum`` when already computed."""
    return {
        "Tus-Resumable": TUS_VERSION,
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(len(chunk)),
        "Upload-Offset": str(offset),
        "Upload-Checksum": checksum or checksum_header(chunk),
    }


def parse_offset(value: str | None, size: int | None = None) -> int | None:
    """An ``Upload-Offset`` header as a number (None: missing or not a non-negative integer,
    or beyond ``size``)."""
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        return None
    offset = int(value)
    if size is not None and offset > size:
        return None
    return offset


def resolve(base: str, reference: str) -> str:
    """``reference`` (absolute, or a path such as ``/files/uploads/<id>``) against ``base``;
    only http and https results are accepted (ValueError otherwise)."""
    url = urljoin(base, reference)
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url


def file_id_of(location: str) -> str:
    """The file id at the end of an upload's URL (``.../files/uploads/<id>``); ValueError when
    it does not end in one."""
    path = urlsplit(location).path.rstrip("/")
    last = path.rsplit("/", 1)[-1]
    if not FILE_ID.fullmatch(last):
        raise ValueError(f"no file id at the end of {location!r}")
    return last


def etag_sha256(value: str | None) -> str | None:
    """The SHA-256 (64 lower-case hex digits) an ``ETag`` carries, or None."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"').lower()
    return value if _SHA256.fullmatch(value) else None


@dataclass(frozen=True, slots=True)
class ContentRange:
    """``Content-Range: bytes start-end/total`` (``start``/``end`` None for ``*/total``)."""

    start: int | None
    end: int | None
    total: int | None


_RANGE = re.compile(r"bytes\s+(?:(\d{1,19})-(\d{1,19})|\*)/(\d{1,19}|\*)")


def content_range(value: str | None) -> ContentRange | None:
    """Parse a ``Content-Range`` header (None: missing or malformed)."""
    if not value:
        return None
    m = _RANGE.fullmatch(value.strip())
    if m is None:
        return None
    start = int(m.group(1)) if m.group(1) is not None else None
    end = int(m.group(2)) if m.group(2) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    if start is not None and end is not None and end < start:
        return None
    if total is not None and end is not None and end >= total:
        return None
    return ContentRange(start, end, total)


_EXT_VALUE = re.compile(r"(?i)filename\*\s*=\s*([^']*)'[^']*'([^;]+)")
_PLAIN_VALUE = re.compile(r'(?i)(?:^|;)\s*filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]+))')


def disposition_name(value: str | None) -> str | None:
    """The file name in a ``Content-Disposition`` header: ``filename*=UTF-8''…`` (RFC 6266,
    preferred) else ``filename="…"``; None when it has none. Not yet safe: see
    :func:`local_name`."""
    if not value:
        return None
    m = _EXT_VALUE.search(value)
    if m is not None:
        charset = m.group(1).strip().lower() or "utf-8"
        try:
            return unquote(m.group(2).strip(), encoding=charset, errors="replace")
        except LookupError:  # an unknown charset
            return unquote(m.group(2).strip(), errors="replace")
    m = _PLAIN_VALUE.search(value)
    if m is not None:
        quoted, bare = m.group(1), m.group(2)
        if quoted is not None:
            return re.sub(r"\\(.)", r"\1", quoted)
        return bare.strip()
    return None


def local_name(name: str | None, fallback: str = "file") -> str:
    """A file name safe to create in the download directory: the last path part only, no
    control or format characters, no characters Windows refuses, no leading dots (hidden
    files, ``..``), at most 255 bytes of UTF-8 less room for a number and ``.part``;
    Unicode is kept (NFC)."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(_safe_char(ch) for ch in name)
    name = name.strip().lstrip(".").strip()
    limit = MAX_NAME_BYTES - _SUFFIX_ROOM
    if len(name.encode("utf-8")) > limit:
        stem, dot, ext = name.rpartition(".")
        ext = f".{ext}" if dot and stem and 0 < len(ext.encode("utf-8")) <= 16 else ""
        keep = limit - len(ext.encode("utf-8"))
        stem = (stem if ext else name).encode("utf-8")[:keep].decode("utf-8", "ignore")
        name = stem.rstrip(" .") + ext
    if not name or name.lower().endswith(".part"):
        name = (name + "_") if name else fallback
    return name


def _safe_char(ch: str) -> str:
    kind = unicodedata.category(ch)
    if kind[0] == "C" or kind in ("Zl", "Zp") or ch in '<>:"|?*':
        return "_"
    return " " if kind == "Zs" else ch  # (no-break and other odd spaces: a plain one)


def numbered(name: str, n: int) -> str:
    """``name`` for the n-th free slot: ``report.pdf``, ``report (1).pdf``, ``report (2).pdf``."""
    if n == 0:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return f"{name} ({n})"
    return f"{stem} ({n}).{ext}"


def part_name(name: str) -> str:
    """The partial file a download is written to (renamed once verified)."""
    return f"{name}.part"


def attachment_key(server: str, file_id: str) -> str:
    """The state file's key of a download."""
    return f"{server} {file_id}"


def upload_key(server: str, path: Path, size: int, mtime_ns: int) -> str:
    """The state file's key of an upload: the same file (same absolute path, size and
    modification time) to the same server resumes the same upload."""
    return f"{server} {size} {mtime_ns} {path}"


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value (case-insensitive, whatever the mapping)."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, item in headers.items():
            if key.lower() == lowered:
                return item
    return value
