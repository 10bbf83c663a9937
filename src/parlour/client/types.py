"""Typed results of :class:`parlour.client.Client` calls, built from ``ok`` reply data.

Parsing is lenient about *extra* keys (newer servers may add fields) and strict about the
documented ones (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from parlour.protocol import MessageRecord

__all__ = [
    "Ack",
    "Attachment",
    "AuditRecord",
    "BanInfo",
    "FileToken",
    "HistoryPage",
    "JoinResult",
    "KickResult",
    "RoomInfo",
    "Session",
    "UserPresence",
    "Welcome",
    "attachment_of",
    "records",
]


def records(items: Any) -> tuple[MessageRecord, ...]:
    """Message records from a reply's ``messages`` list."""
    return tuple(MessageRecord.from_wire(item) for item in items or ())


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class Welcome:
    """The ``hello`` reply."""

    version: int
    server: str
    limits: Mapping[str, Any]
    heartbeat_s: float

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Welcome:
        return cls(
            int(data["version"]),
            str(data["server"]),
            dict(data.get("limits") or {}),
            float(data["heartbeat_s"]),
        )


@dataclass(frozen=True, slots=True)
class Session:
    """The ``login`` / ``signup`` reply."""

    username: str
    role: str
    rooms: tuple[str, ...]
    #: the server cut the login's catch-up short; the client goes on with ``sync`` by itself
    truncated: bool = False
    #: a session token for logging in again without the password, and when it expires (None
    #: when the server issues none); the client uses it itself when it reconnects
    token: str | None = field(default=None, repr=False)
    token_expires: float | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Session:
        return cls(
            str(data["username"]),
            str(data["role"]),
            tuple(data.get("rooms") or ()),
            bool(data.get("truncated", False)),
            data.get("token") if isinstance(data.get("token"), str) else None,
            _opt_float(data.get("token_expires")),
        )


@dataclass(frozen=True, slots=True)
class RoomInfo:
    name: str
    members: int
    online: int
    joined: bool

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RoomInfo:
        return cls(
            str(data["name"]),
            int(data.get("members", 0)),
            int(data.get("online", 0)),
            bool(data.get("joined", False)),
        )


@dataclass(frozen=True, slots=True)
class JoinResult:
    room: str
    members: tuple[str, ...]
    online: tuple[str, ...]
    messages: tuple[MessageRecord, ...]
    last_seq: int
    #: how many members the room has in all (``members`` lists at most the server's bound)
    members_total: int = 0

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> JoinResult:
        members = tuple(data.get("members") or ())
        return cls(
            str(data["room"]),
            members,
            tuple(data.get("online") or ()),
            records(data.get("messages")),
            int(data.get("last_seq") or 0),
            int(data.get("members_total") or len(members)),
        )


@dataclass(frozen=True, slots=True)
class Ack:
    """Acknowledgement of ``send`` (``room`` set) or ``dm`` (``peer`` set)."""

    seq: int
    ts: float
    client_id: str
    duplicate: bool
    room: str | None = None
    peer: str | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Ack:
        return cls(
            int(data["seq"]),
            float(data["ts"]),
            str(data["client_id"]),
            bool(data.get("duplicate", False)),
            data.get("room"),
            data.get("peer"),
        )


@dataclass(frozen=True, slots=True)
class HistoryPage:
    messages: tuple[MessageRecord, ...]
    has_more: bool

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> HistoryPage:
        return cls(records(data.get("messages")), bool(data.get("has_more", False)))


@dataclass(frozen=True, slots=True)
class UserPresence:
    username: str
    role: str
    online: bool
    login_ts: float | None
    last_active: float | None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> UserPresence:
        return cls(
            str(data["username"]),
            str(data.get("role", "member")),
            bool(data.get("online", False)),
            _opt_float(data.get("login_ts")),
            _opt_float(data.get("last_active")),
        )


@dataclass(frozen=True, slots=True)
class Unread:
    """Your read position in a room (``room``) or DM conversation (``peer``) and what is after
    it: messages not yours nor from users you block, how many mention you, ``capped`` when the
    server stopped counting."""

    room: str | None
    peer: str | None
    last_seq: int
    read_seq: int
    unread: int
    mentions: int
    capped: bool

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Unread:
        return cls(
            data.get("room"),
            data.get("peer"),
            int(data["last_seq"]),
            int(data["read_seq"]),
            int(data["unread"]),
            int(data["mentions"]),
            bool(data.get("capped", False)),
        )


@dataclass(frozen=True, slots=True)
class KickResult:
    user: str
    room: str | None
    sessions: int

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> KickResult:
        return cls(str(data["user"]), data.get("room"), int(data.get("sessions", 0)))


@dataclass(frozen=True, slots=True)
class BanInfo:
    user: str
    until: float | None
    reason: str | None
    by: str | None = None
    ts: float | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> BanInfo:
        return cls(
            str(data["user"]),
            _opt_float(data.get("until")),
            data.get("reason"),
            data.get("by"),
            _opt_float(data.get("ts")),
        )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    ts: float
    actor: str
    action: str
    target: str
    reason: str

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> AuditRecord:
        return cls(
            float(data["ts"]),
            str(data["actor"]),
            str(data["action"]),
            str(data.get("target", "")),
            str(data.get("reason") or ""),
        )


@dataclass(frozen=True, slots=True)
class Attachment:
    """The file of a message (``attachment`` of a message record; docs/design/files.md).

    ``type`` was sniffed from the bytes by the server; ``inline`` says whether downloads are
    served inline; ``thumbnail`` whether ``/files/<id>/thumbnail`` exists. ``name`` is the
    server's sanitised name: a client saving the file sanitises it again."""

    id: str
    name: str
    size: int
    type: str
    sha256: str
    inline: bool = False
    thumbnail: bool = False

    @classmethod
    def from_wire(cls, data: Any) -> Attachment | None:
        """The attachment of a record's ``attachment`` value (a mapping, or an object with the
        same attributes); None when there is none or it is malformed."""
        if data is None:
            return None
        if isinstance(data, Attachment):
            return data

        def get(key: str) -> Any:
            if isinstance(data, Mapping):
                return data.get(key)
            return getattr(data, key, None)

        file_id, name, size = get("id"), get("name"), get("size")
        if not isinstance(file_id, str) or not file_id or not isinstance(name, str):
            return None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return None
        kind, digest = get("type"), get("sha256")
        return cls(
            file_id,
            name,
            size,
            kind if isinstance(kind, str) else "application/octet-stream",
            digest.lower() if isinstance(digest, str) else "",
            bool(get("inline")),
            bool(get("thumbnail")),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "type": self.type,
            "sha256": self.sha256,
            "inline": self.inline,
            "thumbnail": self.thumbnail,
        }


def attachment_of(record: object) -> Attachment | None:
    """The :class:`Attachment` of a message record (a :class:`MessageRecord` or its wire
    mapping), or None: no file, or a deleted message."""
    if isinstance(record, Mapping):
        if record.get("deleted"):
            return None
        return Attachment.from_wire(record.get("attachment"))
    if getattr(record, "deleted", False):
        return None
    return Attachment.from_wire(getattr(record, "attachment", None))


@dataclass(frozen=True, slots=True)
class FileToken:
    """The ``file_token`` reply: a bearer token for the files endpoints of the web listener
    (valid until ``expires``), where they are, and the limits."""

    token: str = field(repr=False)
    expires: float
    upload_url: str
    download_url: str
    max_file_size: int | None = None
    user_quota: int | None = None
    quota_used: int | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> FileToken:
        def opt_int(key: str) -> int | None:
            value = data.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return cls(
            str(data["token"]),
            float(data["expires"]),
            str(data.get("upload_url") or "/files/uploads"),
            str(data.get("download_url") or "/files/"),
            opt_int("max_file_size"),
            opt_int("user_quota"),
            opt_int("quota_used"),
        )
