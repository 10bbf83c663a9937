"""Readable one-liners for application payloads: Parlour chat (NDJSON) and HTTP.

Chat lines are decoded generically from their ``type``/``event`` fields so new message types
still render. Secrets (passwords, tokens) are never shown.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SECRET_KEYS", "describe_chat_object", "describe_payload", "http_first_line"]

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
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
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


def describe_payload(payload: bytes) -> tuple[str, str] | None:
    """``(protocol, text)`` for a recognised payload: ``("HTTP", "GET / HTTP/1.1")`` or
    ``("Parlour", "login alice")``; ``None`` when it is neither."""
    first = http_first_line(payload)
    if first is not None:
        return "HTTP", first
    stripped = payload.lstrip()
    if not stripped.startswith(b"{"):
        return None
    lines: list[str] = []
    for raw in stripped.split(b"\n"):
        raw = raw.strip()
        if not raw:
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            lines.append("…partial line" if raw.startswith(b"{") or lines else "…")
            continue
        if not isinstance(obj, dict) or ("type" not in obj and "event" not in obj):
            return None if not lines else ("Parlour", " | ".join(lines))
        lines.append(describe_chat_object(obj))
    if not lines or all(line.startswith("…") for line in lines):
        return None
    return "Parlour", " | ".join(lines)
