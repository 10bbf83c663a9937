"""Ports of the chat core: the Store and PasswordHasher protocols and the records they carry.

The core is pure and synchronous. Everything it keeps hot is loaded once with `Store.load()`;
deeper history is read on demand; every change is expressed as `parlour.core.writes.Write`
values that a writer hands to `Store.apply` in one transaction (see
docs/design/chat-architecture.md).

Naming conventions shared by every store:

* user names are stored as typed at sign-up (display form); they are unique by
  `user_key(name)` (case-insensitive). Every other record refers to users by their display
  name exactly as in `UserRecord.name`.
* a DM conversation is identified by `conv_id(a, b)`: the two user keys, sorted, joined by
  `:` (user names cannot contain `:`).
* room names are unique by `room_key(name)` (case-insensitive); records carry the display name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from parlour.core.writes import Write

__all__ = [
    "AuditEntry",
    "BanRecord",
    "BlockRecord",
    "DmCursorRecord",
    "MembershipRecord",
    "PasswordHasher",
    "Role",
    "RoomRecord",
    "Store",
    "StoreSnapshot",
    "StoredMessage",
    "UserRecord",
    "conv_id",
    "conv_members",
    "room_key",
    "user_key",
]

Role = Literal["admin", "member"]


def user_key(name: str) -> str:
    """The case-insensitive identity of a user name."""
    return name.casefold()


def room_key(name: str) -> str:
    """The case-insensitive identity of a room name."""
    return name.casefold()


def conv_id(a: str, b: str) -> str:
    """The conversation id of the DM conversation between users `a` and `b` (order-free)."""
    ka, kb = user_key(a), user_key(b)
    return f"{ka}:{kb}" if ka <= kb else f"{kb}:{ka}"


def conv_members(conv: str) -> tuple[str, str]:
    """The two user keys of a conversation id."""
    a, _, b = conv.partition(":")
    return a, b


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    password_hash: str
    role: Role
    created: float
    last_login: float | None = None


@dataclass(frozen=True, slots=True)
class RoomRecord:
    name: str
    created: float
    created_by: str


@dataclass(frozen=True, slots=True)
class MembershipRecord:
    user: str
    room: str


@dataclass(frozen=True, slots=True)
class BanRecord:
    user: str
    until: float | None  # None: permanent
    reason: str
    by: str
    ts: float


@dataclass(frozen=True, slots=True)
class BlockRecord:
    blocker: str
    blocked: str


@dataclass(frozen=True, slots=True)
class DmCursorRecord:
    """Highest DM sequence of `conv` delivered (or deliberately dropped) to `user`."""

    user: str
    conv: str
    seq: int


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A room message or a DM as stored.

    `scope` is the room name (room messages) or the conversation id (DMs); `recipient` is set
    for DMs only. A deleted message keeps its row as a tombstone: `text is None, deleted`.
    """

    scope: str
    seq: int
    ts: float
    sender: str
    text: str | None
    edited: bool = False
    deleted: bool = False
    client_id: str | None = None
    recipient: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    ts: float
    actor: str
    action: str
    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """Everything the core keeps hot, read once at start.

    `room_last_seq` / `dm_last_seq` hold the highest sequence number per room / conversation
    (rooms or conversations without messages may be absent). Message bodies are not part of the
    snapshot: the core reads its recent-message windows with `room_messages` / `dm_messages`.
    """

    users: Sequence[UserRecord] = ()
    rooms: Sequence[RoomRecord] = ()
    memberships: Sequence[MembershipRecord] = ()
    bans: Sequence[BanRecord] = ()
    blocks: Sequence[BlockRecord] = ()
    dm_cursors: Sequence[DmCursorRecord] = ()
    room_last_seq: Mapping[str, int] = field(default_factory=dict)
    dm_last_seq: Mapping[str, int] = field(default_factory=dict)


class Store(Protocol):
    """Durable storage of the chat domain (memory for tests, SQLite by default).

    Reads return committed data only. Message reads return messages ordered by ascending
    sequence number: `before`/`after` are exclusive bounds; when `before` is given (or neither
    bound is), the *newest* `limit` messages below the bound are returned (still ascending); when
    only `after` is given, the *oldest* `limit` messages above it are returned.
    """

    def load(self) -> StoreSnapshot: ...

    def room_messages(
        self, room: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]: ...

    def dm_messages(
        self, conv: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]: ...

    def messages_since(self, rooms: Sequence[str], ts: float, limit: int) -> list[StoredMessage]:
        """Room messages of `rooms` with `ts >= ts`, oldest first, at most `limit`."""
        ...

    def audit_log(self, limit: int) -> list[AuditEntry]:
        """The newest `limit` audit entries, newest first."""
        ...

    def apply(self, writes: Sequence[Write]) -> None:
        """Apply `writes` in order, in one transaction (all or nothing)."""
        ...


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, hash: str, password: str) -> bool:
        """True when `password` matches `hash`; False on mismatch or an invalid hash."""
        ...

    def needs_rehash(self, hash: str) -> bool: ...
