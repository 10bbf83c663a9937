"""Replies of the chat protocol: ``ok`` with typed data per request type, and ``error``.

Exactly one reply answers every request: ``{"id": .., "type": "ok", "data": {...}}`` or
``{"id": .., "type": "error", "code": .., "message": .., ...extra}`` (docs/protocol.md).

The ``data`` of an ``ok`` is one frozen dataclass per request type (:data:`REPLY_TYPES`):
the server builds them, so what it answers is checked by mypy, and a client that knows which
request it sent turns the ``data`` it received back into the same class with
:func:`parse_reply_data`. Every data class is also a read-only ``Mapping`` of its wire form,
so ``reply.data["seq"]`` works on both sides. A reply parsed without knowing its request
(:func:`parse_reply`) carries :class:`RawData`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from parlour.protocol.errors import ErrorCode, ProtocolError, RequestId
from parlour.protocol.fastinit import fast_init_module
from parlour.protocol.records import (
    AuditRow,
    BanRow,
    EndpointRow,
    Limits,
    MessageRecord,
    RelayRow,
    RoomRow,
    UnreadRow,
    WhoRow,
    records_from_wire,
)

__all__ = [
    "REPLY_FIELDS",
    "REPLY_TYPES",
    "AuditReply",
    "BanReply",
    "BansReply",
    "BroadcastReply",
    "DmReply",
    "EmptyReply",
    "Error",
    "FileOfferReply",
    "FileProbeReply",
    "FileReply",
    "FileTokenReply",
    "FileTransferReply",
    "HelloReply",
    "HistoryReply",
    "JoinReply",
    "KickReply",
    "MarkReadReply",
    "MessageReply",
    "Ok",
    "PasswdReply",
    "PingReply",
    "RawData",
    "Reply",
    "ReplyData",
    "RoomRenameReply",
    "RoomReply",
    "RoomsReply",
    "SendReply",
    "SessionReply",
    "SinceReply",
    "SyncReply",
    "UnreadReply",
    "UserReply",
    "UsersReply",
    "WhoReply",
    "parse_reply",
    "parse_reply_data",
]


def _wire_value(value: Any) -> Any:
    if isinstance(value, MessageRecord):
        return value.to_wire()
    if isinstance(value, list | tuple) and value and isinstance(value[0], MessageRecord):
        return [m.to_wire() for m in value]
    return value


class ReplyData(Mapping[str, Any]):
    """Base of the typed ``data`` of an ``ok`` reply.

    Subclasses are frozen slotted dataclasses whose attribute names are the wire keys.
    ``_OPTIONAL`` names fields left out of the wire form when they are None; ``_PARSE`` maps
    a field to the function that turns its wire value back into the typed value.
    """

    __slots__ = ()
    _OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    _PARSE: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}

    def to_wire(self) -> dict[str, Any]:
        optional = self._OPTIONAL
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.name in optional:
                continue
            out[f.name] = _wire_value(value)
        return out

    @classmethod
    def required_fields(cls) -> frozenset[str]:
        """Wire keys always present in this data."""
        return frozenset(
            f.name
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.name not in cls._OPTIONAL
        )

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Self:
        """The typed data from a received ``data`` object (missing keys: ``missing_field``;
        unknown keys are ignored, for forward compatibility)."""
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in obj:
                if f.name in cls._OPTIONAL:
                    continue
                raise ProtocolError(
                    ErrorCode.MISSING_FIELD, f"reply data missing {f.name!r}", field=f.name
                )
            value = obj[f.name]
            parse = cls._PARSE.get(f.name)
            kwargs[f.name] = parse(value) if parse is not None and value is not None else value
        return cls(**kwargs)

    # read-only Mapping of the wire form (for scripts and tests: ``data["seq"]``)
    def __getitem__(self, key: str) -> Any:
        return self.to_wire()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_wire())

    def __len__(self) -> int:
        return len(self.to_wire())


@dataclass(frozen=True, slots=True, eq=False)
class RawData(ReplyData):
    """Reply data whose request type is not known (as parsed by :func:`parse_reply`)."""

    data: Mapping[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return dict(self.data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self.data) == dict(other)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True, kw_only=True)
class HelloReply(ReplyData):
    """``hello``: the negotiated version, the server's name, limits and heartbeat."""

    version: int
    server: str
    limits: Limits
    heartbeat_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionReply(ReplyData):
    """``signup`` / ``login``: who you are and your rooms; ``truncated`` when the catch-up
    was cut short (ask again with ``sync``); a session ``token`` for logging in again without
    the password until ``token_expires`` (absent when the server issues none)."""

    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"truncated", "token", "token_expires"})
    username: str
    role: str
    rooms: Sequence[str]
    truncated: bool | None = None
    token: str | None = None
    token_expires: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswdReply(ReplyData):
    """``passwd``: the password changed and every earlier session token was revoked; a new
    ``token`` for this session (absent when the server issues none)."""

    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"token", "token_expires"})
    token: str | None = None
    token_expires: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EmptyReply(ReplyData):
    """``logout`` and others: nothing to say but ok."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncReply(ReplyData):
    """``sync``: ``truncated`` when there is more to catch up."""

    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"truncated"})
    truncated: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomsReply(ReplyData):
    rooms: Sequence[RoomRow]


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomReply(ReplyData):
    """``room_create``, ``room_delete``, ``leave``: the room concerned."""

    room: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomRenameReply(ReplyData):
    room: str
    new_name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinReply(ReplyData):
    """``join``: members (bounded, online first), the newest messages and the last seq."""

    _PARSE: ClassVar[Mapping[str, Callable[[Any], Any]]] = {"messages": records_from_wire}
    room: str
    members: Sequence[str]
    online: Sequence[str]
    members_total: int
    online_total: int
    members_truncated: bool
    messages: Sequence[MessageRecord]
    last_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SendReply(ReplyData):
    """``send``: the message's place in the room (``duplicate`` for a recognised resend)."""

    room: str
    seq: int
    ts: float
    client_id: str
    duplicate: bool

    def to_wire(self) -> dict[str, Any]:  # hot path: every message sent
        return {
            "room": self.room,
            "seq": self.seq,
            "ts": self.ts,
            "client_id": self.client_id,
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DmReply(ReplyData):
    """``dm``: the message's place in the conversation."""

    peer: str
    seq: int
    ts: float
    client_id: str
    duplicate: bool

    def to_wire(self) -> dict[str, Any]:  # hot path
        return {
            "peer": self.peer,
            "seq": self.seq,
            "ts": self.ts,
            "client_id": self.client_id,
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryReply(ReplyData):
    """``history``: a page of a room (``room``) or a conversation (``peer``)."""

    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"room", "peer"})
    _PARSE: ClassVar[Mapping[str, Callable[[Any], Any]]] = {"messages": records_from_wire}
    room: str | None = None
    peer: str | None = None
    messages: Sequence[MessageRecord]
    has_more: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SinceReply(ReplyData):
    _PARSE: ClassVar[Mapping[str, Callable[[Any], Any]]] = {"messages": records_from_wire}
    messages: Sequence[MessageRecord]
    has_more: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReply(ReplyData):
    """``edit`` / ``delete``: the message as it is now."""

    _PARSE: ClassVar[Mapping[str, Callable[[Any], Any]]] = {"message": MessageRecord.from_wire}
    message: MessageRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastReply(ReplyData):
    """``broadcast``: the live sessions that got it now (every other user gets it at their
    next login) and its sequence number."""

    delivered: int
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WhoReply(ReplyData):
    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"room"})
    users: Sequence[WhoRow]
    since: float | None
    room: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UserReply(ReplyData):
    """``block``, ``unblock``, ``unban``: the user concerned."""

    user: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UsersReply(ReplyData):
    """``blocks``: the users you block."""

    users: Sequence[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class KickReply(ReplyData):
    user: str
    room: str | None
    sessions: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BanReply(ReplyData):
    user: str
    until: float | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BansReply(ReplyData):
    bans: Sequence[BanRow]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditReply(ReplyData):
    entries: Sequence[AuditRow]


@dataclass(frozen=True, slots=True, kw_only=True)
class PingReply(ReplyData):
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkReadReply(ReplyData):
    """``mark_read``: your read position there now (never lower than before)."""

    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"room", "peer"})
    room: str | None = None
    peer: str | None = None
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UnreadReply(ReplyData):
    """``unread``: a row per room you are in and per DM conversation you have."""

    rooms: Sequence[UnreadRow]
    dms: Sequence[UnreadRow]


@dataclass(frozen=True, slots=True, kw_only=True)
class FileTokenReply(ReplyData):
    """``file_token``: a bearer token for the files endpoints (valid until ``expires``), where
    they are (paths on the web listener), the size limit and the user's quota and use."""

    token: str
    expires: float
    upload_url: str
    download_url: str
    max_file_size: int
    user_quota: int
    quota_used: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileProbeReply(ReplyData):
    """``file_probe``: the token (base64url) to send to the relay over UDP, and where the
    relay listens (``null``: this server runs none; transfers then use the endpoints the
    clients report, without observed addresses or a relay fallback)."""

    token: str
    relay: RelayRow | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FileOfferReply(ReplyData):
    """``file_offer``: the offer's id, the user it went to and when it expires."""

    offer: str
    to: str
    expires: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FileTransferReply(ReplyData):
    """``file_accept``: this attempt's transfer id (hex), key (base64, 32 bytes), the
    sender's endpoints (observed by the server first, then reported) and the relay with
    this side's ticket (``null``: no relay)."""

    offer: str
    transfer: str
    key: str
    peers: Sequence[EndpointRow]
    relay: RelayRow | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FileReply(ReplyData):
    """``file_decline``, ``file_cancel``, ``file_done``: the offer concerned."""

    offer: str


#: request ``type`` -> the class of the ``data`` of its ``ok`` reply
REPLY_TYPES: Mapping[str, type[ReplyData]] = {
    "hello": HelloReply,
    "signup": SessionReply,
    "login": SessionReply,
    "logout": EmptyReply,
    "passwd": PasswdReply,
    "rooms": RoomsReply,
    "room_create": RoomReply,
    "room_rename": RoomRenameReply,
    "room_delete": RoomReply,
    "join": JoinReply,
    "leave": RoomReply,
    "send": SendReply,
    "history": HistoryReply,
    "since": SinceReply,
    "edit": MessageReply,
    "delete": MessageReply,
    "dm": DmReply,
    "broadcast": BroadcastReply,
    "who": WhoReply,
    "block": UserReply,
    "unblock": UserReply,
    "blocks": UsersReply,
    "kick": KickReply,
    "ban": BanReply,
    "unban": UserReply,
    "bans": BansReply,
    "audit": AuditReply,
    "sync": SyncReply,
    "mark_read": MarkReadReply,
    "unread": UnreadReply,
    "file_probe": FileProbeReply,
    "file_offer": FileOfferReply,
    "file_accept": FileTransferReply,
    "file_decline": FileReply,
    "file_cancel": FileReply,
    "file_done": FileReply,
    "file_token": FileTokenReply,
    "ping": PingReply,
}

#: request ``type`` -> keys always present in the ``data`` of its ``ok`` reply (the contract
#: between the core and the clients; docs/protocol.md shows every one with an example)
REPLY_FIELDS: Mapping[str, frozenset[str]] = {
    kind: cls.required_fields() for kind, cls in REPLY_TYPES.items()
}

_EMPTY = EmptyReply()


@dataclass(frozen=True, slots=True)
class Ok:
    """Successful reply: ``{"id": .., "type": "ok", "data": {...}}``.

    ``data`` is the typed data of the request type (a plain mapping is accepted too, for
    tests and fakes)."""

    id: RequestId | None
    data: ReplyData | Mapping[str, Any] = field(default=_EMPTY)

    def to_wire(self) -> dict[str, Any]:
        data = self.data
        wire = data.to_wire() if isinstance(data, ReplyData) else data
        return {"id": self.id, "type": "ok", "data": wire}


@dataclass(frozen=True, slots=True)
class Error:
    """Error reply: ``{"id": .., "type": "error", "code": .., "message": .., ...extra}``."""

    id: RequestId | None
    code: str
    message: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": "error",
            "code": str(self.code),
            "message": self.message,
        }
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_exception(cls, exc: ProtocolError, id: RequestId | None = None) -> Error:
        """The reply for a ProtocolError (``id`` defaults to the error's request id)."""
        rid = id if id is not None else exc.request_id
        return cls(rid, exc.code.value, exc.message, dict(exc.extra))


Reply = Ok | Error


def parse_reply(obj: Mapping[str, Any]) -> Reply:
    """Parse an ``ok`` / ``error`` frame (client side); ``ok`` data is :class:`RawData`
    (:func:`parse_reply_data` types it once the request type is known)."""
    kind = obj.get("type")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, int | str):
        raise ProtocolError(ErrorCode.INVALID_FIELD, "reply id must be int, str or null")
    if kind == "ok":
        data = obj.get("data", {})
        if not isinstance(data, dict):
            raise ProtocolError(ErrorCode.INVALID_FIELD, "'data' must be an object", field="data")
        return Ok(rid, RawData(data))
    if kind == "error":
        code, message = obj.get("code"), obj.get("message")
        if not isinstance(code, str) or not isinstance(message, str):
            raise ProtocolError(ErrorCode.MISSING_FIELD, "error needs 'code' and 'message'")
        extra = {k: v for k, v in obj.items() if k not in ("id", "type", "code", "message")}
        return Error(rid, code, message, extra)
    raise ProtocolError(ErrorCode.BAD_FRAME, f"not a reply frame: type {kind!r}")


def parse_reply_data(request_type: str, data: Mapping[str, Any]) -> ReplyData:
    """The typed data of an ``ok`` reply to a ``request_type`` request."""
    cls = REPLY_TYPES.get(request_type)
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown request type {request_type!r}")
    if isinstance(data, cls):
        return data
    if isinstance(data, RawData):
        data = data.data
    return cls.from_wire(data)


fast_init_module(globals())
