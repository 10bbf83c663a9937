"""Protocol constants: the version and size limits (names: :mod:`parlour.protocol.names`)."""

from __future__ import annotations

from parlour.protocol.names import MAX_NAME, is_valid_name

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_TEXT",
    "MAX_CLIENT_ID",
    "MAX_DURATION",
    "MAX_ENDPOINTS",
    "MAX_FILE_NAME",
    "MAX_FILE_SIZE",
    "MAX_LIMIT",
    "MAX_NAME",
    "MAX_OFFER_ID",
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
#: file transfers: longest file name in an offer (UTF-8 bytes, a file system's NAME_MAX),
#: largest file (the transfer protocol's 48-bit offsets), UDP endpoints one client may report,
#: longest offer id
MAX_FILE_NAME = 255
MAX_FILE_SIZE = 2**48 - 1
MAX_ENDPOINTS = 8
MAX_OFFER_ID = 32
