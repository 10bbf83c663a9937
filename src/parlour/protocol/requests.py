"""Requests of the chat protocol: one frozen dataclass per request type, and their parser.

Everything here is sans-I/O and cheap: a wire frame is a ``dict`` (from :mod:`.codec`);
:func:`parse_request` turns a client frame into one frozen dataclass per request type, and
``to_wire()`` turns a request back into a ``dict`` for :func:`parlour.protocol.codec.encode`.

Validation here is about shape and type (names, non-empty text, ranges); policy limits that
depend on configuration (max text length, password minimum length) belong to the core.
Unknown fields in a request are ignored (forward compatibility). The reference for every field
is docs/protocol.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from parlour.protocol.errors import ErrorCode, ProtocolError, RequestId
from parlour.protocol.limits import (
    MAX_CLIENT_ID,
    MAX_DURATION,
    MAX_ENDPOINTS,
    MAX_FILE_NAME,
    MAX_FILE_SIZE,
    MAX_LIMIT,
    MAX_OFFER_ID,
    MAX_PASSWORD,
    MAX_REASON,
    MAX_REQUEST_ID,
    MAX_RESUME_ENTRIES,
    MAX_ROOM_LIST,
    MAX_SAFE_INT,
)
from parlour.protocol.names import MAX_NAME, InvalidName, normalize_name
from parlour.protocol.records import Endpoint, endpoints_from_wire, endpoints_to_wire

__all__ = [
    "REQUEST_TYPES",
    "AuditRequest",
    "BanRequest",
    "BansRequest",
    "BlockRequest",
    "BlocksRequest",
    "BroadcastRequest",
    "DeleteRequest",
    "DmRequest",
    "EditRequest",
    "FileAcceptRequest",
    "FileCancelRequest",
    "FileDeclineRequest",
    "FileDoneRequest",
    "FileOfferRequest",
    "FileProbeRequest",
    "FileTokenRequest",
    "HelloRequest",
    "HistoryRequest",
    "JoinRequest",
    "KickRequest",
    "LeaveRequest",
    "LoginRequest",
    "LogoutRequest",
    "MarkReadRequest",
    "PasswdRequest",
    "PingRequest",
    "Request",
    "Resume",
    "RoomCreateRequest",
    "RoomDeleteRequest",
    "RoomRenameRequest",
    "RoomsRequest",
    "SendRequest",
    "SignupRequest",
    "SinceRequest",
    "SyncRequest",
    "UnbanRequest",
    "UnblockRequest",
    "UnreadRequest",
    "WhoRequest",
    "parse_request",
]

_MAX_INT = MAX_SAFE_INT  # JSON-safe integers (JavaScript clients)

# --------------------------------------------------------------------------- validators
# Each validator takes (field name, value) and returns the (possibly converted) value or
# raises ProtocolError(invalid_field). They run in __post_init__, so building a request in
# Python is checked exactly like parsing one from the wire.

_Validator = Callable[[str, Any], Any]


def _invalid(name: str, why: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_FIELD, f"field {name!r} {why}", field=name)


def _is_int(value: object) -> bool:
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def _v_name(name: str, value: Any) -> str:
    if type(value) is str and len(value) <= MAX_NAME and value.isascii() and value.isalnum():
        return value  # the common case (hot path)
    try:
        return normalize_name(value)
    except InvalidName as exc:
        raise _invalid(name, str(exc)) from None


MAX_TOKEN = 128
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-]+")


def _v_password(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(name, "must be a non-empty string")
    if len(value) > MAX_PASSWORD:
        raise _invalid(name, f"must be at most {MAX_PASSWORD} characters")
    return value


def _v_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _invalid(name, "must be a string")
    if not value or value.isspace():
        raise _invalid(name, "must not be empty")
    return value


def _v_caption(name: str, value: Any) -> str:
    """A message text that may be empty (checked with the attachment in ``_check``)."""
    if not isinstance(value, str):
        raise _invalid(name, "must be a string")
    return value


#: a file id: what `POST /files/uploads` answers (22 URL-safe base64 characters)
FILE_ID = re.compile(r"[A-Za-z0-9_\-]{22}")


def _v_file_id(name: str, value: Any) -> str:
    if not isinstance(value, str) or FILE_ID.fullmatch(value) is None:
        raise _invalid(name, "must be a file id (22 URL-safe characters)")
    return value


def _check_text_or_attachment(rq: Any) -> None:
    """``text`` may be empty only when the message carries an attachment."""
    text = rq.text
    if rq.attachment is None and (not text or text.isspace()):
        raise _invalid("text", "must not be empty")


def _v_client_id(name: str, value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_CLIENT_ID:
        raise _invalid(name, f"must be a string of 1-{MAX_CLIENT_ID} characters")
    return value


def _v_reason(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_REASON:
        raise _invalid(name, f"must be a string of at most {MAX_REASON} characters")
    return value


def _v_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _invalid(name, "must be true or false")
    return value


def _v_positive_int(name: str, value: Any) -> int:
    if not _is_int(value) or not 1 <= value <= _MAX_INT:
        raise _invalid(name, "must be a positive integer")
    return int(value)


def _v_seq(name: str, value: Any) -> int:
    if not _is_int(value) or not 0 <= value <= _MAX_INT:
        raise _invalid(name, "must be a non-negative integer")
    return int(value)


def _v_limit(name: str, value: Any) -> int:
    if not _is_int(value) or not 1 <= value <= MAX_LIMIT:
        raise _invalid(name, f"must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def _v_number(name: str, value: Any, *, positive: bool, most: float = _MAX_INT) -> float:
    # an integer is compared before any conversion: one beyond a float's range would raise
    # OverflowError in math.isfinite (a 400-digit "ts" must be a clear error, not a crash)
    if _is_int(value):
        if not -_MAX_INT <= value <= _MAX_INT:
            raise _invalid(name, "must be a finite number")
    elif not isinstance(value, float) or not math.isfinite(value):
        raise _invalid(name, "must be a finite number")
    if value > most:
        raise _invalid(name, f"must be at most {most:g}")
    if value < 0 or (positive and value == 0):
        raise _invalid(name, "must be positive" if positive else "must not be negative")
    return float(value)


def _v_timestamp(name: str, value: Any) -> float:
    return _v_number(name, value, positive=False)


def _v_duration(name: str, value: Any) -> float:
    return _v_number(name, value, positive=True, most=MAX_DURATION)


def _v_name_tuple(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > MAX_ROOM_LIST:
        raise _invalid(name, f"must be a list of at most {MAX_ROOM_LIST} names")
    return tuple(_v_name(name, item) for item in value)


def _v_cursors(name: str, value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping) or len(value) > MAX_RESUME_ENTRIES:
        raise _invalid(name, "must be an object of name -> last seen sequence")
    out: dict[str, int] = {}
    for key, seq in value.items():
        try:
            key = normalize_name(key)
        except InvalidName:
            raise _invalid(name, "must map names to non-negative integers") from None
        if not _is_int(seq) or not 0 <= seq <= _MAX_INT:
            raise _invalid(name, "must map names to non-negative integers")
        out[key] = seq
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume:
    """Last seen sequence per room and per DM peer, and of broadcasts, sent in
    ``login``/``sync``."""

    rooms: Mapping[str, int] = field(default_factory=dict)
    dms: Mapping[str, int] = field(default_factory=dict)
    broadcasts: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rooms", _v_cursors("resume.rooms", self.rooms))
        object.__setattr__(self, "dms", _v_cursors("resume.dms", self.dms))
        if self.broadcasts is not None:
            object.__setattr__(self, "broadcasts", _v_seq("resume.broadcasts", self.broadcasts))

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rooms": dict(self.rooms), "dms": dict(self.dms)}
        if self.broadcasts is not None:
            out["broadcasts"] = self.broadcasts
        return out

    @classmethod
    def from_wire(cls, value: Any) -> Resume:
        if isinstance(value, Resume):
            return value
        if not isinstance(value, Mapping):
            raise _invalid("resume", 'must be an object {"rooms": {...}, "dms": {...}}')
        return cls(
            rooms=value.get("rooms") or {},
            dms=value.get("dms") or {},
            broadcasts=value.get("broadcasts"),
        )


_OFFER_ID = re.compile(r"[A-Za-z0-9_-]+")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
#: characters a file name may not contain: path separators, C0/C1 controls, DEL, line and
#: paragraph separators and the bidirectional formatting characters (a name that reads
#: "txt.exe" backwards)
_BAD_FILE_CHARS = re.compile(
    "[/\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _v_offer_id(name: str, value: Any) -> str:
    if isinstance(value, str) and len(value) <= MAX_OFFER_ID and _OFFER_ID.fullmatch(value):
        return value
    raise _invalid(name, f"must be an offer id (1-{MAX_OFFER_ID} letters, digits, - or _)")


def _v_file_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(name, "must be a non-empty file name")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _invalid(name, "must be valid Unicode") from None
    if size > MAX_FILE_NAME:
        raise _invalid(name, f"must be at most {MAX_FILE_NAME} bytes in UTF-8")
    if value in (".", "..") or _BAD_FILE_CHARS.search(value):
        raise _invalid(name, "must be a plain file name (no path, no control characters)")
    return value


def _v_file_size(name: str, value: Any) -> int:
    if not _is_int(value) or not 0 <= value <= MAX_FILE_SIZE:
        raise _invalid(name, f"must be an integer from 0 to {MAX_FILE_SIZE}")
    return int(value)


def _v_sha256(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise _invalid(name, "must be a SHA-256 digest in hex (64 characters)")
    return value.lower()


def _v_endpoints(name: str, value: Any) -> tuple[Endpoint, ...]:
    try:
        return endpoints_from_wire(value, MAX_ENDPOINTS)
    except ProtocolError as exc:
        raise _invalid(name, exc.message) from None


def _v_resume(name: str, value: Any) -> Resume:
    return Resume.from_wire(value)


_new_object = object.__new__
_set_attr = object.__setattr__


def _v_request_id(value: Any) -> RequestId:
    if _is_int(value) and -_MAX_INT <= value <= _MAX_INT:
        return int(value)
    if isinstance(value, str) and 1 <= len(value) <= MAX_REQUEST_ID:
        return value
    raise _invalid("id", f"must be an integer or a string of 1-{MAX_REQUEST_ID} characters")


# --------------------------------------------------------------------------- requests


class _Request:
    """Shared behaviour of request dataclasses (each subclass is a frozen slotted dataclass).

    ``_FIELDS`` lists ``(wire name, validator, required)``; wire names equal attribute names.
    """

    __slots__ = ()
    TYPE: ClassVar[str]
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", _v_request_id(getattr(self, "id")))  # noqa: B009
        for name, validator, required in self._FIELDS:
            value = getattr(self, name)
            if value is None:
                if required:
                    raise ProtocolError(
                        ErrorCode.MISSING_FIELD, f"missing field {name!r}", field=name
                    )
                continue
            checked = validator(name, value)
            if checked is not value:
                object.__setattr__(self, name, checked)
        self._check()

    def _check(self) -> None:
        """Cross-field checks (overridden where needed)."""

    def to_wire(self) -> dict[str, Any]:
        """The request as a JSON-ready dict; optional fields that are unset are omitted."""
        out: dict[str, Any] = {"id": getattr(self, "id"), "type": self.TYPE}  # noqa: B009
        for name, _, _ in self._FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, Resume):
                value = value.to_wire()
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Self:
        """The request from a decoded frame; the same checks, in the same order of precedence
        (a missing required field, then ``id``, then each field in order), as building it."""
        try:
            request_id = _v_request_id(obj.get("id"))
        except ProtocolError:
            cls._raise_first_missing(obj)
            raise
        return cls._from_checked_id(obj, request_id)

    @classmethod
    def _from_checked_id(cls, obj: Mapping[str, Any], request_id: RequestId) -> Self:
        # Hot path (every request): fills the slots directly instead of going through the
        # generated __init__ and __post_init__, which would read every field back and check
        # the id a second time. Equivalent to cls(**fields) (tests/protocol checks it).
        self = _new_object(cls)
        _set_attr(self, "id", request_id)
        get = obj.get
        try:
            for name, validator, required in cls._FIELDS:
                value = get(name)
                if value is None:
                    if required:
                        raise ProtocolError(
                            ErrorCode.MISSING_FIELD, f"missing field {name!r}", field=name
                        )
                    _set_attr(self, name, None)
                else:
                    _set_attr(self, name, validator(name, value))
        except ProtocolError:
            cls._raise_first_missing(obj)  # a missing field takes precedence, as in __init__
            raise
        self._check()
        return self

    @classmethod
    def _raise_first_missing(cls, obj: Mapping[str, Any]) -> None:
        for name, _, required in cls._FIELDS:
            if required and obj.get(name) is None:
                raise ProtocolError(ErrorCode.MISSING_FIELD, f"missing field {name!r}", field=name)


def _exactly_one_target(request: Any) -> None:
    if (request.room is None) == (request.peer is None):
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, "exactly one of 'room' or 'peer' is required", field="room"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HelloRequest(_Request):
    """First request of a connection: protocol version negotiation."""

    TYPE: ClassVar[str] = "hello"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("version", lambda n, v: _v_positive_int(n, v), True),
        ("client", lambda n, v: _v_reason(n, v), False),
    )
    id: RequestId
    version: int
    client: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignupRequest(_Request):
    """Create an account and log this connection in."""

    TYPE: ClassVar[str] = "signup"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("username", _v_name, True),
        ("password", _v_password, True),
    )
    id: RequestId
    username: str
    password: str = field(repr=False)


def _v_token(name: str, value: Any) -> str:
    if (
        not isinstance(value, str)
        or not 16 <= len(value) <= MAX_TOKEN
        or _TOKEN_CHARS.fullmatch(value) is None
    ):
        raise _invalid(name, "must be a session token as the server issued it")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginRequest(_Request):
    """Log in with a password or with a session token from an earlier login (cheap: no
    password work, so reconnecting clients use it); ``resume`` asks for everything after the
    given sequences."""

    TYPE: ClassVar[str] = "login"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("username", _v_name, True),
        ("password", _v_password, False),
        ("token", _v_token, False),
        ("resume", _v_resume, False),
    )
    id: RequestId
    username: str
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    resume: Resume | None = None

    def _check(self) -> None:
        if (self.password is None) == (self.token is None):
            raise ProtocolError(
                ErrorCode.MISSING_FIELD if self.password is None else ErrorCode.INVALID_FIELD,
                "exactly one of 'password' or 'token' is required",
                field="password",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogoutRequest(_Request):
    TYPE: ClassVar[str] = "logout"
    id: RequestId


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswdRequest(_Request):
    """Change the password; needs the old one."""

    TYPE: ClassVar[str] = "passwd"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("old_password", _v_password, True),
        ("new_password", _v_password, True),
    )
    id: RequestId
    old_password: str = field(repr=False)
    new_password: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomsRequest(_Request):
    TYPE: ClassVar[str] = "rooms"
    id: RequestId


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomCreateRequest(_Request):
    TYPE: ClassVar[str] = "room_create"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (("room", _v_name, True),)
    id: RequestId
    room: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomRenameRequest(_Request):
    TYPE: ClassVar[str] = "room_rename"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("room", _v_name, True),
        ("new_name", _v_name, True),
    )
    id: RequestId
    room: str
    new_name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomDeleteRequest(_Request):
    TYPE: ClassVar[str] = "room_delete"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (("room", _v_name, True),)
    id: RequestId
    room: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinRequest(_Request):
    """Join a room; the reply carries the newest ``limit`` messages and the member list."""

    TYPE: ClassVar[str] = "join"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("room", _v_name, True),
        ("limit", _v_limit, False),
    )
    id: RequestId
    room: str
    limit: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaveRequest(_Request):
    TYPE: ClassVar[str] = "leave"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (("room", _v_name, True),)
    id: RequestId
    room: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRequest(_Request):
    """Post a message to a room; ``client_id`` makes a resend idempotent."""

    TYPE: ClassVar[str] = "send"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("room", _v_name, True),
        ("text", _v_caption, True),
        ("client_id", _v_client_id, True),
        ("attachment", _v_file_id, False),
    )
    id: RequestId
    room: str
    text: str
    client_id: str
    attachment: str | None = None

    def _check(self) -> None:
        _check_text_or_attachment(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryRequest(_Request):
    """Page backwards through a room (``room``) or a DM conversation (``peer``)."""

    TYPE: ClassVar[str] = "history"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("room", _v_name, False),
        ("peer", _v_name, False),
        ("before", _v_positive_int, False),
        ("limit", _v_limit, False),
    )
    id: RequestId
    room: str | None = None
    peer: str | None = None
    before: int | None = None
    limit: int | None = None

    def _check(self) -> None:
        _exactly_one_target(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class SinceRequest(_Request):
    """All room messages with a timestamp >= ``ts`` (unix seconds), oldest first."""

    TYPE: ClassVar[str] = "since"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("ts", _v_timestamp, True),
        ("rooms", _v_name_tuple, False),
        ("limit", _v_limit, False),
    )
    id: RequestId
    ts: float
    rooms: tuple[str, ...] | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EditRequest(_Request):
    """Replace the text of one of your messages (room or DM)."""

    TYPE: ClassVar[str] = "edit"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("room", _v_name, False),
        ("peer", _v_name, False),
        ("seq", _v_positive_int, True),
        ("text", _v_text, True),
    )
    id: RequestId
    room: str | None = None
    peer: str | None = None
    seq: int
    text: str

    def _check(self) -> None:
        _exactly_one_target(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteRequest(_Request):
    """Delete one of your messages (admins: any room message), leaving a tombstone."""

    TYPE: ClassVar[str] = "delete"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("room", _v_name, False),
        ("peer", _v_name, False),
        ("seq", _v_positive_int, True),
    )
    id: RequestId
    room: str | None = None
    peer: str | None = None
    seq: int

    def _check(self) -> None:
        _exactly_one_target(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class DmRequest(_Request):
    """Direct message to ``to``; ``client_id`` makes a resend idempotent."""

    TYPE: ClassVar[str] = "dm"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("to", _v_name, True),
        ("text", _v_caption, True),
        ("client_id", _v_client_id, True),
        ("attachment", _v_file_id, False),
    )
    id: RequestId
    to: str
    text: str
    client_id: str
    attachment: str | None = None

    def _check(self) -> None:
        _check_text_or_attachment(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastRequest(_Request):
    """Admin announcement to every online user."""

    TYPE: ClassVar[str] = "broadcast"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (("text", _v_text, True),)
    id: RequestId
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WhoRequest(_Request):
    """Who is online (server-wide or in ``room``); ``since`` (seconds) widens the window to
    users seen in the last ``since`` seconds; ``recent`` uses the server's presence window."""

    TYPE: ClassVar[str] = "who"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("room", _v_name, False),
        ("since", _v_duration, False),
        ("recent", _v_bool, False),
    )
    id: RequestId
    room: str | None = None
    since: float | None = None
    recent: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockRequest(_Request):
    TYPE: ClassVar[str] = "block"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (("user", _v_name, True),)
    id: RequestId
    user: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UnblockRequest(_Request):
    TYPE: ClassVar[str] = "unblock"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (("user", _v_name, True),)
    id: RequestId
    user: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BlocksRequest(_Request):
    TYPE: ClassVar[str] = "blocks"
    id: RequestId


@dataclass(frozen=True, slots=True, kw_only=True)
class KickRequest(_Request):
    """Admin: remove ``user`` from ``room``, or end all their sessions when ``room`` is unset."""

    TYPE: ClassVar[str] = "kick"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("user", _v_name, True),
        ("room", _v_name, False),
        ("reason", _v_reason, False),
    )
    id: RequestId
    user: str
    room: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BanRequest(_Request):
    """Admin: ban ``user`` server-wide for ``duration`` seconds (unset: until unbanned)."""

    TYPE: ClassVar[str] = "ban"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("user", _v_name, True),
        ("duration", _v_duration, False),
        ("reason", _v_reason, False),
    )
    id: RequestId
    user: str
    duration: float | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnbanRequest(_Request):
    TYPE: ClassVar[str] = "unban"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (("user", _v_name, True),)
    id: RequestId
    user: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BansRequest(_Request):
    TYPE: ClassVar[str] = "bans"
    id: RequestId


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRequest(_Request):
    """Admin: newest ``limit`` audit-log entries."""

    TYPE: ClassVar[str] = "audit"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (("limit", _v_limit, False),)
    id: RequestId
    limit: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncRequest(_Request):
    """Ask (again) for everything after the given sequences, without logging in again."""

    TYPE: ClassVar[str] = "sync"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (("resume", _v_resume, True),)
    id: RequestId
    resume: Resume


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkReadRequest(_Request):
    """Your read position in a room (``room``) or a DM conversation (``peer``): you have read
    everything up to ``seq``. Stored on the server (a marker never moves back), so every
    client of yours agrees on what is unread."""

    TYPE: ClassVar[str] = "mark_read"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("room", _v_name, False),
        ("peer", _v_name, False),
        ("seq", _v_seq, True),
    )
    id: RequestId
    room: str | None = None
    peer: str | None = None
    seq: int

    def _check(self) -> None:
        _exactly_one_target(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnreadRequest(_Request):
    """Your unread and mention counts and read positions, per room and DM conversation."""

    TYPE: ClassVar[str] = "unread"
    id: RequestId


# --------------------------------------------------------------------------- file transfers


def _with_endpoints(request: Any, out: dict[str, Any]) -> dict[str, Any]:
    if request.endpoints is not None:
        out["endpoints"] = endpoints_to_wire(request.endpoints)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class FileTokenRequest(_Request):
    """A short-lived bearer token for the files endpoints (tus uploads, downloads); with
    ``size``, the size limit, quota and concurrent uploads are checked before any byte is sent
    (docs/design/files.md)."""

    TYPE: ClassVar[str] = "file_token"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (("size", _v_file_size, False),)
    id: RequestId
    size: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FileProbeRequest(_Request):
    """Ask for a token to send in a UDP datagram to the server's relay, from the socket the
    client transfers files with: the server then knows that socket's public address."""

    TYPE: ClassVar[str] = "file_probe"
    id: RequestId


@dataclass(frozen=True, slots=True, kw_only=True)
class FileOfferRequest(_Request):
    """Offer a file (name, size, SHA-256 in hex) to online user ``to``; ``endpoints`` are the
    UDP addresses the client believes it can be reached at."""

    TYPE: ClassVar[str] = "file_offer"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("to", _v_name, True),
        ("filename", _v_file_name, True),
        ("size", _v_file_size, True),
        ("sha256", _v_sha256, True),
        ("endpoints", _v_endpoints, False),
    )
    id: RequestId
    to: str
    filename: str
    size: int
    sha256: str
    endpoints: tuple[Endpoint, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        return _with_endpoints(self, _Request.to_wire(self))


@dataclass(frozen=True, slots=True, kw_only=True)
class FileAcceptRequest(_Request):
    """Accept offer ``offer`` (made to you); ``endpoints`` as in ``file_offer``. Accepting
    the same offer again starts a new attempt (a resume)."""

    TYPE: ClassVar[str] = "file_accept"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (
        ("offer", _v_offer_id, True),
        ("endpoints", _v_endpoints, False),
    )
    id: RequestId
    offer: str
    endpoints: tuple[Endpoint, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        return _with_endpoints(self, _Request.to_wire(self))


@dataclass(frozen=True, slots=True, kw_only=True)
class FileDeclineRequest(_Request):
    """Refuse (or give up on) offer ``offer`` made to you."""

    TYPE: ClassVar[str] = "file_decline"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (("offer", _v_offer_id, True),)
    id: RequestId
    offer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FileCancelRequest(_Request):
    """Withdraw your offer ``offer``."""

    TYPE: ClassVar[str] = "file_cancel"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (("offer", _v_offer_id, True),)
    id: RequestId
    offer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FileDoneRequest(_Request):
    """Either side of offer ``offer``: the file arrived and was verified; the offer ends."""

    TYPE: ClassVar[str] = "file_done"
    _FIELDS: ClassVar[tuple[tuple[str, _Validator, bool], ...]] = (("offer", _v_offer_id, True),)
    id: RequestId
    offer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PingRequest(_Request):
    """Heartbeat; also resets the server's idle timer."""

    TYPE: ClassVar[str] = "ping"
    id: RequestId


Request = (
    HelloRequest
    | SignupRequest
    | LoginRequest
    | LogoutRequest
    | PasswdRequest
    | RoomsRequest
    | RoomCreateRequest
    | RoomRenameRequest
    | RoomDeleteRequest
    | JoinRequest
    | LeaveRequest
    | SendRequest
    | HistoryRequest
    | SinceRequest
    | EditRequest
    | DeleteRequest
    | DmRequest
    | BroadcastRequest
    | WhoRequest
    | BlockRequest
    | UnblockRequest
    | BlocksRequest
    | KickRequest
    | BanRequest
    | UnbanRequest
    | BansRequest
    | AuditRequest
    | SyncRequest
    | MarkReadRequest
    | UnreadRequest
    | FileProbeRequest
    | FileOfferRequest
    | FileAcceptRequest
    | FileDeclineRequest
    | FileCancelRequest
    | FileDoneRequest
    | FileTokenRequest
    | PingRequest
)

_REQUEST_CLASSES: tuple[type[_Request], ...] = (
    HelloRequest,
    SignupRequest,
    LoginRequest,
    LogoutRequest,
    PasswdRequest,
    RoomsRequest,
    RoomCreateRequest,
    RoomRenameRequest,
    RoomDeleteRequest,
    JoinRequest,
    LeaveRequest,
    SendRequest,
    HistoryRequest,
    SinceRequest,
    EditRequest,
    DeleteRequest,
    DmRequest,
    BroadcastRequest,
    WhoRequest,
    BlockRequest,
    UnblockRequest,
    BlocksRequest,
    KickRequest,
    BanRequest,
    UnbanRequest,
    BansRequest,
    AuditRequest,
    SyncRequest,
    MarkReadRequest,
    UnreadRequest,
    FileProbeRequest,
    FileOfferRequest,
    FileAcceptRequest,
    FileDeclineRequest,
    FileCancelRequest,
    FileDoneRequest,
    FileTokenRequest,
    PingRequest,
)

#: request ``type`` -> dataclass
REQUEST_TYPES: Mapping[str, type[_Request]] = {cls.TYPE: cls for cls in _REQUEST_CLASSES}


def parse_request(obj: Mapping[str, Any]) -> Request:
    """Turn a decoded client frame into its request dataclass.

    Raises ProtocolError ``missing_field`` / ``invalid_field`` / ``unknown_type``; the error's
    ``request_id`` is set whenever the frame carried a usable ``id``.
    """
    raw_id = obj.get("id")
    try:
        if raw_id is None:
            raise ProtocolError(ErrorCode.MISSING_FIELD, "missing field 'id'", field="id")
        request_id = _v_request_id(raw_id)
    except ProtocolError:
        raise
    kind = obj.get("type")
    try:
        if kind is None:
            raise ProtocolError(ErrorCode.MISSING_FIELD, "missing field 'type'", field="type")
        cls = REQUEST_TYPES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            shown = kind if isinstance(kind, str) and len(kind) <= 40 else "?"
            raise ProtocolError(
                ErrorCode.UNKNOWN_TYPE, f"unknown request type {shown!r}", request_type=str(shown)
            )
        return cls._from_checked_id(obj, request_id)  # type: ignore[return-value]
    except ProtocolError as exc:
        exc.request_id = request_id
        raise
