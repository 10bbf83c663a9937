"""Records of the chat domain as stores keep them, and the naming rules they share.

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
from typing import Literal

from parlour.protocol.fastinit import fast_init_module
from parlour.protocol.names import name_key
from parlour.protocol.records import AttachmentRow

__all__ = [
    "AuditEntry",
    "BanRecord",
    "BlockRecord",
    "BroadcastRecord",
    "DmCursorRecord",
    "FileRecord",
    "FileUsage",
    "Heads",
    "MembershipRecord",
    "ReadMarkerRecord",
    "Role",
    "RoomRecord",
    "SessionTokenRecord",
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
    """The identity of a user name (case-insensitive the PRECIS way)."""
    return name_key(name)


def room_key(name: str) -> str:
    """The identity of a room name (case-insensitive the PRECIS way)."""
    return name_key(name)


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
    #: the file attached to the message (None on tombstones)
    attachment: AttachmentRow | None = None


@dataclass(frozen=True, slots=True)
class ReadMarkerRecord:
    """`user`'s read position: in room `room` (its display name) or conversation `conv`."""

    user: str
    seq: int
    room: str | None = None
    conv: str | None = None


@dataclass(frozen=True, slots=True)
class BroadcastRecord:
    """An announcement to every user (`seq` numbers them, from 1)."""

    seq: int
    ts: float
    sender: str
    text: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    ts: float
    actor: str
    action: str
    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class SessionTokenRecord:
    """A session token (by its SHA-256, never the token itself) of user `user`, valid until
    `expires`: it logs the user in without the password."""

    token_hash: str
    user: str
    expires: float


@dataclass(frozen=True, slots=True)
class FileRecord:
    """An upload (docs/design/files.md) as the store keeps it: its id (the file id), the
    uploader (display name), the declared length, the sanitised name and the type the client
    claimed, when it was created; once complete its SHA-256, the type sniffed from its bytes,
    whether it is served inline, whether it has a thumbnail and when it completed.

    Where it is attached is read from the messages: `room_key` (room messages) or `conv` (DMs)
    with the message's `seq` and `client_id`, and `deleted` when that message is a tombstone
    now."""

    id: str
    owner: str
    length: int
    name: str
    client_type: str
    created: float
    complete: bool = False
    sha256: str | None = None
    type: str | None = None
    inline: bool = False
    thumbnail: bool = False
    completed: float | None = None
    room_key: str | None = None
    conv: str | None = None
    seq: int | None = None
    deleted: bool = False
    #: the client id of the message it is attached to (a resend of that message is a
    #: duplicate, not a second use of the file)
    client_id: str | None = None

    @property
    def attached(self) -> bool:
        return self.seq is not None


@dataclass(frozen=True, slots=True)
class FileUsage:
    """What user `user` holds: bytes of their uploads (declared length while unfinished) and
    how many uploads are unfinished."""

    bytes: int = 0
    unfinished: int = 0


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """Everything the core keeps hot, read once at start.

    `room_last_seq` / `dm_last_seq` hold the highest sequence number per room / conversation
    (rooms or conversations without messages may be absent). `recent`, `audit` and
    `client_ids` are bounded by what `Store.load` was asked for; anything older is read on demand.
    """

    users: Sequence[UserRecord] = ()
    rooms: Sequence[RoomRecord] = ()
    memberships: Sequence[MembershipRecord] = ()
    bans: Sequence[BanRecord] = ()
    blocks: Sequence[BlockRecord] = ()
    dm_cursors: Sequence[DmCursorRecord] = ()
    room_last_seq: Mapping[str, int] = field(default_factory=dict)
    dm_last_seq: Mapping[str, int] = field(default_factory=dict)
    #: room name -> its newest messages (at most the `recent` asked for), ascending
    recent: Mapping[str, Sequence[StoredMessage]] = field(default_factory=dict)
    #: the newest audit entries (at most the `audit` asked for), newest first
    audit: Sequence[AuditEntry] = ()
    #: room messages and DMs sent with a client id at or after `client_ids_since`, at most
    #: `client_ids` of them, newest first: what a resend after a restart is recognised by
    client_ids: Sequence[StoredMessage] = ()
    #: every user's read position per room and conversation
    read_markers: Sequence[ReadMarkerRecord] = ()
    #: the highest broadcast sequence, and per user name the highest delivered to them
    broadcast_last_seq: int = 0
    broadcast_cursors: Mapping[str, int] = field(default_factory=dict)
    #: session tokens still valid at `tokens_valid_at`
    session_tokens: Sequence[SessionTokenRecord] = ()


@dataclass(frozen=True, slots=True)
class Heads:
    """The store's last committed sequence numbers (several nodes: what a node compares with
    what it has delivered): every room's (by display name), some conversations', and the
    broadcasts'."""

    rooms: Mapping[str, int]
    dms: Mapping[str, int]
    broadcast: int


fast_init_module(globals())
