"""Stable machine error codes of the chat protocol and the exception that carries them.

Codes are part of the wire contract (docs/protocol.md): never rename one; add new ones at the
end of their group. Every code is lower_snake_case text on the wire.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = ["FATAL_CODES", "ErrorCode", "ProtocolError", "RequestId"]

#: A request id as sent by the client: an int or a short string (``None`` when unknown).
RequestId = int | str


class ErrorCode(StrEnum):
    """Every error code the server (or the codec) may send."""

    # framing / codec (connection-level)
    FRAME_TOO_LARGE = "frame_too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    BAD_FRAME = "bad_frame"
    # request shape
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    # session state
    UNSUPPORTED_VERSION = "unsupported_version"
    HELLO_REQUIRED = "hello_required"
    NOT_AUTHENTICATED = "not_authenticated"
    ALREADY_AUTHENTICATED = "already_authenticated"
    # accounts
    BAD_CREDENTIALS = "bad_credentials"
    LOCKED_OUT = "locked_out"
    BANNED = "banned"
    USERNAME_TAKEN = "username_taken"
    WEAK_PASSWORD = "weak_password"
    ALREADY_LOGGED_IN = "already_logged_in"
    # permissions and lookups
    FORBIDDEN = "forbidden"
    UNKNOWN_USER = "unknown_user"
    UNKNOWN_ROOM = "unknown_room"
    ROOM_EXISTS = "room_exists"
    NOT_MEMBER = "not_member"
    MESSAGE_NOT_FOUND = "message_not_found"
    SELF_MESSAGE = "self_message"
    NOT_BANNED = "not_banned"
    UNKNOWN_OFFER = "unknown_offer"
    USER_OFFLINE = "user_offline"
    UNKNOWN_FILE = "unknown_file"
    FILE_IN_USE = "file_in_use"
    # limits
    TEXT_TOO_LONG = "text_too_long"
    RATE_LIMITED = "rate_limited"
    SERVER_FULL = "server_full"
    SERVER_BUSY = "server_busy"
    UNAVAILABLE = "unavailable"
    TOO_MANY_ERRORS = "too_many_errors"
    TOO_MANY_OFFERS = "too_many_offers"
    FILE_TOO_LARGE = "file_too_large"
    QUOTA_EXCEEDED = "quota_exceeded"
    TOO_MANY_UPLOADS = "too_many_uploads"
    # server / connection end reasons
    INTERNAL_ERROR = "internal_error"
    SHUTTING_DOWN = "shutting_down"
    IDLE_TIMEOUT = "idle_timeout"
    SLOW_CONSUMER = "slow_consumer"
    KICKED = "kicked"
    LOGGED_OUT = "logged_out"


#: Codes after which the server closes the connection.
FATAL_CODES: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.SERVER_FULL,
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.IDLE_TIMEOUT,
        ErrorCode.SLOW_CONSUMER,
        ErrorCode.TOO_MANY_ERRORS,
    }
)


class ProtocolError(Exception):
    """A protocol-level failure with a stable ``code``, a human ``message`` and extra fields.

    ``extra`` goes onto the wire next to ``code`` and ``message`` (e.g. ``field`` for
    ``missing_field``, ``retry_after`` for ``rate_limited``). ``request_id`` is the id of the
    offending request when it could be read (set by :func:`parlour.protocol.parse_request`).
    """

    __slots__ = ("code", "extra", "message", "request_id")

    def __init__(self, code: ErrorCode, message: str, /, **extra: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = ErrorCode(code)
        self.message = message
        self.extra: dict[str, Any] = extra
        self.request_id: RequestId | None = None

    @property
    def fatal(self) -> bool:
        """True when the connection must be closed after reporting this error."""
        return self.code in FATAL_CODES

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.value!r}, {self.message!r}, extra={self.extra!r})"
