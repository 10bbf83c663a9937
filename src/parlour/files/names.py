"""File names as the server keeps and shows them: sanitised, Unicode kept.

An upload's name comes from the client (tus ``Upload-Metadata: filename``). What is kept is
the last path component only (no ``/`` or ``\\``: no traversal), in NFC, without control,
format (bidirectional overrides), line/paragraph separator or private-use characters, without
characters Windows refuses in names, without leading/trailing dots and spaces, at most
`MAX_NAME_BYTES` bytes of UTF-8 (cut at a character boundary, the extension kept when it is
short), never empty (`FALLBACK_NAME`).
"""

from __future__ import annotations

import unicodedata

__all__ = ["FALLBACK_NAME", "MAX_NAME_BYTES", "sanitise_name"]

MAX_NAME_BYTES = 255
FALLBACK_NAME = "file"
_WINDOWS_RESERVED = frozenset('<>:"|?*')
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_RESERVED_STEMS = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
)


def _cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, at a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def sanitise_name(raw: str, limit: int = MAX_NAME_BYTES) -> str:
    """The name to keep and show for a client-given file name (never raises)."""
    name = unicodedata.normalize("NFC", raw.replace("\\", "/")).rsplit("/", 1)[-1]
    out: list[str] = []
    for ch in name:
        if unicodedata.category(ch) in _DROP_CATEGORIES:
            continue
        if ch in _WINDOWS_RESERVED:
            out.append("_")
        elif ch.isspace():
            out.append(" ")  # tabs, no-break spaces...: one plain space
        else:
            out.append(ch)
    name = " ".join("".join(out).split())  # no runs of spaces
    name = name.strip(" .")
    if not name:
        return FALLBACK_NAME
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if stem.lower() in _RESERVED_STEMS:
        name = "_" + name
        stem = "_" + stem
    if len(name.encode("utf-8")) > limit:
        if dot and 0 < len(ext.encode("utf-8")) <= 16:
            kept = _cut(stem, limit - len(ext.encode("utf-8")) - 1).rstrip(" .")
            name = f"{kept}.{ext}" if kept else _cut(ext, limit)
        else:
            name = _cut(name, limit).rstrip(" .")
    return name or FALLBACK_NAME
