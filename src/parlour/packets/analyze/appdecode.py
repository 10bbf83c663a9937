"""Readable one-liners for Parlour chat protocol objects (NDJSON), secrets left out.

Chat lines are described generically from their ``type``/``event`` fields, so new message
types still render. Passwords and tokens are never shown. :func:`describe_chat_object` gives a
short form for the packet list (long texts cut); ``full=True`` keeps every character (for
``--follow`` and ``--explain``).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "MAX_LINES_SHOWN",
    "SECRET_KEYS",
    "chat_object",
    "describe_chat_object",
    "http_first_line",
    "is_secret",
    "redact",
]

SECRET_KEYS = frozenset(
    {"password", "new_password", "old_password", "passwd", "token", "secret", "session_token",
     "resume_token", "api_key", "password_hash"}
)  # fmt: skip
_HTTP_STARTS = (
    b"HTTP/1.", b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ",
    b"CONNECT ", b"TRACE ",
)  # fmt: skip
_MAX_TEXT = 80
#: chat lines spelled out in one Info column; the rest are counted ("… +N more lines")
MAX_LINES_SHOWN = 4


def is_secret(key: str) -> bool:
    k = key.lower()
    return k in SECRET_KEYS or "password" in k or k.endswith("token") or k.endswith("secret")


def redact(obj: Any) -> Any:
    """*obj* with every secret value replaced by ``"…"`` (recursively)."""
    if isinstance(obj, dict):
        return {k: ("…" if is_secret(str(k)) else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def _short(value: Any, full: bool) -> str:
    if isinstance(value, str):
        text = value
    elif value is True or value is False:
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = json.dumps(value, ensure_ascii=False)
    if full:
        return text
    text = text.replace("\n", " ")
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _extras(obj: dict[str, Any], skip: set[str], full: bool) -> str:
    parts = []
    for key, value in obj.items():
        if key in skip or is_secret(key) or isinstance(value, dict | list) or value is None:
            continue
        parts.append(f"{key}={_short(value, full)}")
    return (" " + " ".join(parts)) if parts else ""


def _room(value: Any) -> str:
    text = str(value)
    return text if text.startswith("#") else "#" + text


def chat_object(line: bytes) -> dict[str, Any] | None:
    """The chat protocol object on one NDJSON line, or ``None`` when it is not one."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or ("type" not in obj and "event" not in obj):
        return None
    return obj


def describe_chat_object(obj: dict[str, Any], *, full: bool = False, me: str = "") -> str:
    """One chat protocol object (request, reply or event) as a readable line. *me* is the
    user logged in on the connection, when known (the recipient of the DMs it receives)."""
    kind = str(obj.get("type", "?"))
    if kind == "event":
        event = str(obj.get("event", "?"))
        if event == "message" and "room" in obj:
            return (
                f"{_room(obj['room'])} ← {obj.get('from', '?')}: "
                f"{_short(obj.get('text', ''), full)}"
            )
        if event == "dm":
            sender = str(obj.get("from", "?"))
            peer = obj.get("peer")
            to = obj.get("to") or (peer if peer and peer != sender else me) or "?"
            return f"dm {sender} → {to}: {_short(obj.get('text', ''), full)}"
        return f"event {event}" + _extras(obj, {"type", "event"}, full)
    if kind == "ok":
        data = obj.get("data")
        summary = ""
        if isinstance(data, dict) and data:
            extras = _extras(data, set(), full).strip()
            safe = [k for k in data if not is_secret(k)]
            summary = f" {extras}" if extras else (" {" + ", ".join(safe[:5]) + "}" if safe else "")
        return f"ok #{obj.get('id', '?')}{summary}"
    if kind == "error":
        code = obj.get("code", "?")
        message = obj.get("message", "")
        return f"error #{obj.get('id', '?')} {code}" + (
            f": {_short(message, full)}" if message else ""
        )
    if kind in ("login", "signup", "register"):
        return f"{kind} {obj.get('username', obj.get('user', '?'))}"
    if kind == "send" and "room" in obj:
        return f"send {_room(obj['room'])}: {_short(obj.get('text', ''), full)}"
    if kind == "dm":
        return f"dm → {obj.get('to', '?')}: {_short(obj.get('text', ''), full)}"
    return kind + _extras(obj, {"type", "id", "client_id"}, full)


def http_first_line(payload: bytes) -> str | None:
    """The request or status line when *payload* starts an HTTP/1.x message."""
    if payload.startswith(_HTTP_STARTS):
        line = payload.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
        return line.decode("latin-1")
    return None
