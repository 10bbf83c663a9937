"""Content types from the bytes (never the client's word), and what may be shown inline.

`sniff(head)` looks at the first bytes of a file (`SNIFF_BYTES`) with `puremagic` (a maintained
magic-number database) and falls back to "is it text?". Markup is recognised whatever the magic
says first: text that carries HTML, SVG or XML is never served as anything a browser renders.

`inline(type)` is the short allowlist served ``Content-Disposition: inline`` (raster images,
plain text, PDF, audio, video); everything else is an ``attachment``. `served_type(type)` is
the ``Content-Type`` of a download: markup and script types are served as
``application/octet-stream`` (with ``nosniff`` and a sandbox CSP, a browser never runs them).
"""

from __future__ import annotations

import contextlib

import puremagic

__all__ = ["INLINE_TYPES", "SNIFF_BYTES", "inline", "served_type", "sniff", "thumbnailable"]

#: bytes of the start of a file the type is told from
SNIFF_BYTES = 8192

OCTET = "application/octet-stream"
TEXT = "text/plain"

INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/avif",
        TEXT,
        "application/pdf",
        "audio/mpeg",
        "audio/ogg",
        "audio/wav",
        "audio/x-wav",
        "audio/flac",
        "audio/x-flac",
        "audio/aac",
        "audio/mp4",
        "audio/webm",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
    }
)
#: raster images Pillow makes thumbnails of
_THUMBNAILABLE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
_MARKUP = (
    b"<!doctype",
    b"<html",
    b"<head",
    b"<body",
    b"<script",
    b"<svg",
    b"<?xml",
    b"<iframe",
    b"<object",
    b"<embed",
    b"<meta",
    b"<a ",
    b"<img",
    b"<style",
    b"<link",
    b"<form",
    b"<div",
)
_RISKY = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "text/css",
    }
)
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\x1b")


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not merely a character cut at the end of the head
            return False
        text = head[: exc.start].decode("utf-8")
    return not any(ord(ch) < 32 and ord(ch) not in _TEXT_CONTROLS for ch in text)


def _markup(head: bytes) -> str | None:
    low = head[:SNIFF_BYTES].lower()
    if b"<svg" in low:
        return "image/svg+xml"
    if any(marker in low for marker in _MARKUP):
        return "text/html"
    return None


def _textual(content_type: str) -> bool:
    """Types that are text by definition (their magic is a character or two)."""
    return content_type.startswith("text/") or content_type in (
        "application/json",
        "application/ld+json",
        "application/x-ndjson",
    )


def sniff(head: bytes) -> str:
    """The content type of a file starting with `head` (at least its first `SNIFF_BYTES`)."""
    head = head[:SNIFF_BYTES]
    if not head:
        return OCTET
    found = ""
    with contextlib.suppress(puremagic.PureError, ValueError):
        matches = [m for m in puremagic.magic_string(head) if m.mime_type]
        if matches:
            found = max(matches, key=lambda m: m.confidence).mime_type.lower()
    if _textual(found) and found not in _RISKY and not _is_text(head):
        return OCTET  # a one-byte signature (`{` for JSON) on bytes that are not text
    if found in _RISKY or (not found and _is_text(head)) or found.startswith("text/"):
        marked = _markup(head)
        if marked is not None:
            return marked
        if found in _RISKY:
            return found
        return TEXT if _is_text(head) else OCTET
    return found or OCTET


def inline(content_type: str) -> bool:
    """Whether downloads of this (sniffed) type are served inline."""
    return content_type in INLINE_TYPES


def thumbnailable(content_type: str) -> bool:
    return content_type in _THUMBNAILABLE


def served_type(content_type: str) -> str:
    """The ``Content-Type`` header of a download of this (sniffed) type."""
    if content_type == TEXT:
        return "text/plain; charset=utf-8"
    if content_type in _RISKY or not content_type.isascii() or "/" not in content_type:
        return OCTET
    return content_type
