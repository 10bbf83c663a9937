"""Protocol constants: the version, size limits and the rule for user and room names."""

from __future__ import annotations

import re

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_TEXT",
    "MAX_CLIENT_ID",
    "MAX_DURATION",
    "MAX_LIMIT",
    "MAX_NAME",
    "MAX_PASSWORD",
    "MAX_REASON",
    "MAX_REQUEST_ID",
    "MAX_RESUME_ENTRIES",
    "MAX_ROOM_LIST",
    "MAX_SAFE_INT",
    "PROTOCOL_VERSION",
    "is_valid_name",
]

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 64 * 1024
DEFAULT_MAX_TEXT = 4000
MAX_NAME = 32
MAX_CLIENT_ID = 64
MAX_PASSWORD = 1024
MAX_REASON = 500
MAX_LIMIT = 1000
#: longest duration a request may carry (a ban, a `who` window): 100 years, in seconds
MAX_DURATION = 100 * 365 * 86400
MAX_REQUEST_ID = 64
MAX_RESUME_ENTRIES = 10_000
MAX_ROOM_LIST = 1000
MAX_SAFE_INT = 2**53  # JSON-safe integers (JavaScript clients)

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")


def is_valid_name(value: object) -> bool:
    """True for a valid user or room name: 1-32 ASCII letters, digits, ``_``, ``-`` or ``.``."""
    if not isinstance(value, str):
        return False
    if len(value) <= MAX_NAME and value.isascii() and value.isalnum():
        return True  # the common case, without the regular expression (hot path)
    return _NAME_RE.fullmatch(value) is not None
