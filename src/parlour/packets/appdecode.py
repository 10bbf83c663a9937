"""Readable one-liners for application payloads: Parlour chat (NDJSON) and HTTP.

Chat lines are decoded generically from their ``type``/``event`` fields so new message types
still render. Secrets (passwords, tokens) are never shown.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "SECRET_KEYS",
    "StreamDecoder",
    "chat_line_count",
    "describe_chat_object",
    "describe_lines",
    "describe_payload",
    "http_first_line",
]

SECRET_KEYS = frozenset(
    {"password", "new_password", "old_password", "passwd", "token", "secret", "session_token",
     "resume_token", "api_key", "password_hash"}
)  # fmt: skip
_HTTP_METHODS = (
    b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ",
    b"TRACE ",
)  # fmt: skip
_MAX_TEXT = 80


def _short(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif value is True or value is False:
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ")
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _is_secret(key: str) -> bool:
    k = key.lower()
    return k in SECRET_KEYS or "password" in k or k.endswith("token") or k.endswith("secret")


def _extras(obj: dict[str, Any], skip: set[str]) -> str:
    parts = []
    for key, value in obj.items():
        if key in skip or _is_secret(key) or isinstance(value, dict | list) or value is None:
            continue
        parts.append(f"{key}={_short(value)}")
    return (" " + " ".join(parts)) if parts else ""


def _room(value: Any) -> str:
    text = str(value)
    return text if text.startswith("#") else "#" + text


def describe_chat_object(obj: dict[str, Any]) -> str:
    """One chat protocol object (request, reply or event) as a readable line."""
    kind = str(obj.get("type", "?"))
    if kind == "event":
        event = str(obj.get("event", "?"))
        if event == "message" and "room" in obj:
            return f"{_room(obj['room'])} ← {obj.get('from', '?')}: {_short(obj.get('text', ''))}"
        if event == "dm":
            return (
                f"dm {obj.get('from', '?')} → {obj.get('to', '?')}: {_short(obj.get('text', ''))}"
            )
        return f"event {event}" + _extras(obj, {"type", "event"})
    if kind == "ok":
        data = obj.get("data")
        summary = ""
        if isinstance(data, dict) and data:
            safe = [k for k in data if not _is_secret(k)]
            summary = " " + _extras(data, set()).strip() if _extras(data, set()) else ""
            if not summary and safe:
                summary = " {" + ", ".join(safe[:5]) + "}"
        return f"ok #{obj.get('id', '?')}{summary}"
    if kind == "error":
        code = obj.get("code", "?")
        message = obj.get("message", "")
        return f"error #{obj.get('id', '?')} {code}" + (f": {_short(message)}" if message else "")
    if kind in ("login", "signup", "register"):
        return f"{kind} {obj.get('username', obj.get('user', '?'))}"
    if kind == "send" and "room" in obj:
        return f"send {_room(obj['room'])}: {_short(obj.get('text', ''))}"
    if kind == "dm":
        return f"dm → {obj.get('to', '?')}: {_short(obj.get('text', ''))}"
    return kind + _extras(obj, {"type", "id", "client_id"})


def http_first_line(payload: bytes) -> str | None:
    """The request or status line when *payload* starts an HTTP/1.x message."""
    if payload.startswith(b"HTTP/1.") or payload.startswith(_HTTP_METHODS):
        line = payload.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
        return line.decode("latin-1")
    return None


#: chat lines spelled out per segment; the rest are counted ("… +N more lines")
MAX_LINES_SHOWN = 4
_MORE = re.compile(r" \| … \+(\d+) more lines?$")


def chat_line_count(text: str) -> int:
    """How many chat lines a ``describe_payload`` text stands for."""
    m = _MORE.search(text)
    shown = text[: m.start()] if m else text
    return shown.count(" | ") + 1 + (int(m.group(1)) if m else 0)


def describe_payload(payload: bytes, max_lines: int = MAX_LINES_SHOWN) -> tuple[str, str] | None:
    """``(protocol, text)`` for a recognised payload: ``("HTTP", "GET / HTTP/1.1")`` or
    ``("Parlour", "login alice")``; ``None`` when it is neither. Past *max_lines* chat lines
    the rest are only counted (a history reply can carry hundreds in one segment)."""
    found = describe_lines(payload, max_lines)
    if found is None:
        return None
    return found[0], " | ".join(found[1])


def describe_lines(payload: bytes, max_lines: int) -> tuple[str, list[str]] | None:
    """Like :func:`describe_payload`, one text per chat line."""
    first = http_first_line(payload)
    if first is not None:
        return "HTTP", [first]
    stripped = payload.lstrip()
    if not stripped.startswith(b"{"):
        return None
    lines: list[str] = []
    more = 0
    for raw in stripped.split(b"\n"):
        raw = raw.strip()
        if not raw:
            continue
        if len(lines) >= max_lines:
            more += 1
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            lines.append("…partial line" if raw.startswith(b"{") or lines else "…")
            continue
        if not isinstance(obj, dict) or ("type" not in obj and "event" not in obj):
            return None if not lines else ("Parlour", lines)
        lines.append(describe_chat_object(obj))
    if not lines or all(line.startswith("…") for line in lines):
        return None
    if more:
        lines.append(f"… +{more} more line{'s' if more > 1 else ''}")
    return "Parlour", lines


_M32 = 0xFFFFFFFF
#: longest chat line kept while waiting for its newline (the server's own limit is far lower)
MAX_LINE_BYTES = 1 << 20


class StreamDecoder:
    """Decode one direction of a TCP stream, reassembling NDJSON chat lines across segments.

    Feed each segment's sequence number and payload in capture order. Bytes already seen
    (retransmissions) are skipped, a gap (lost segment) drops the partial line, and a line is
    decoded on the segment that completes it — like Wireshark's reassembled PDUs. The partial
    line buffer is bounded by *max_line*.
    """

    __slots__ = ("_buf", "_kind", "_max", "_max_lines", "_next", "_resync", "last_new")

    def __init__(self, max_line: int = MAX_LINE_BYTES, max_lines: int = MAX_LINES_SHOWN) -> None:
        self._max_lines = max_lines
        self._next: int | None = None
        self._buf = bytearray()
        self._kind = ""  # "", "chat", "http", "other"
        self._max = max_line
        self._resync = False
        #: the bytes of the last fed segment that were new (not a retransmission)
        self.last_new = b""

    @property
    def is_chat(self) -> bool:
        """True once the direction is recognised as Parlour NDJSON."""
        return self._kind == "chat"

    def new_bytes(self, seq: int, payload: bytes) -> bytes:
        """The part of *payload* not seen before (updates the expected sequence number)."""
        if self._next is None:
            self._next = seq
        delta = (seq - self._next) & _M32
        if delta >= 0x80000000:  # starts before the expected byte: overlap
            overlap = 0x100000000 - delta
            if overlap >= len(payload):
                return b""
            payload = payload[overlap:]
        elif delta:  # gap: bytes were lost, the partial line cannot be completed
            self._buf.clear()
            self._resync = self._kind == "chat"
            self._next = seq
        self._next = (self._next + len(payload)) & _M32
        return payload

    def feed(self, seq: int, payload: bytes) -> tuple[str, str] | None:
        """``(protocol, text)`` for what this segment completes, or ``None``."""
        found = self.feed_lines(seq, payload)
        return None if found is None else (found[0], " | ".join(found[1]))

    def feed_lines(self, seq: int, payload: bytes) -> tuple[str, list[str]] | None:
        """Like :meth:`feed`, one text per line."""
        data = self.last_new = self.new_bytes(seq, payload)
        if self._resync and data.lstrip().startswith(b"{"):
            self._resync = False  # the segment after the gap starts a new line
        if self._resync:  # otherwise chat decoding restarts after the next newline
            cut = data.find(b"\n")
            if cut < 0:
                return None
            data = data[cut + 1 :]
            self._resync = False
        if not data:
            return None
        if not self._buf:
            first = http_first_line(data)
            if first is not None:
                self._kind = "http"
                return "HTTP", [first]
            if data.lstrip().startswith(b"{"):
                self._kind = "chat"
            elif self._kind != "chat":
                self._kind = "other"
                return None
        if self._kind != "chat":
            return None
        self._buf += data
        end = self._buf.rfind(b"\n")
        if end < 0:
            if len(self._buf) > self._max:
                self._buf.clear()
                return "Parlour", [f"…line longer than {self._max} bytes skipped"]
            return None
        complete = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        return describe_lines(complete, self._max_lines)
