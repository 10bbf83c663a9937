"""Storage effects produced by the core, applied in order by `Store.apply`.

Each write is a frozen value; a store applies a sequence of them in one transaction. Names
(users, rooms) are display names as recorded in `UserRecord.name` / `RoomRecord.name`; a DM
conversation is named by `parlour.core.ports.conv_id`.

Semantics every store must implement (checked by tests/storage/store_conformance.py):

* `CreateUser` / `CreateRoom` insert; `SetPassword` replaces the hash; `RecordLogin` sets
  `UserRecord.last_login`.
* `RenameRoom` renames the room everywhere (memberships, messages); `DeleteRoom` removes the
  room with its memberships and messages.
* `SetMembership(member=True)` is idempotent; `member=False` removes the membership if present.
* `AppendRoomMessage` / `AppendDm` insert a message with the given sequence number.
  `AppendDm(delivered=True)` also advances the recipient's cursor of that conversation to `seq`.
* `Edit*` replace the text and set `edited`; `Delete*` set `text=None, deleted=True` (tombstone).
* `SetDmCursor` sets the cursor of (user, conv) (never lowers it).
* `AddBan` replaces any ban of that user; `RemoveBan` / `RemoveBlock` remove if present;
  `AddBlock` is idempotent.
* `Audit` appends an audit-log entry.
* `SetReadMarker` sets a user's read position in a room (`room`) or conversation (`conv`),
  never lowering it; `RenameRoom` carries the room's markers over, `DeleteRoom` drops them.
* `AppendBroadcast` stores an announcement to every user with its sequence number;
  `SetBroadcastCursor` sets the highest one delivered to a user (never lowers it).
* Files (docs/design/files.md): `CreateUpload` inserts an unfinished upload; `CompleteUpload`
  marks it complete with its hash and sniffed type; `RemoveFile` removes its record (its
  blob is the blob store's). An append with an `attachment` records the file id with the
  message: that is where the file is attached (`FileRecord.room_key`/`conv`/`seq`); deleting
  the message drops the attachment from the record but keeps the file id, so the file reads
  as attached to a deleted message (`FileRecord.deleted`) until it is removed.
* `AddSessionToken` stores a session token's hash (replacing one with the same hash);
  `RevokeSessionTokens` removes one of the user's tokens (`token_hash`) or all of them (None).

Store-assigned sequence numbers (several nodes, docs/design/scale-out.md): an
`AppendRoomMessage`, `AppendDm` or `AppendBroadcast` whose `seq` is `ASSIGN` (0) asks the
store to assign the next sequence number of its room, conversation or the broadcasts, in the
same transaction that inserts it (so they are gap-free and committed in order whichever node
writes), and to recognise a resend: a message with the same (scope, sender, client id) as one
already stored is not inserted again. A store that supports this (PostgreSQL, memory) answers
each such write with an `Assigned`. The single-node default (SQLite) never uses it: its core
assigns sequence numbers itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from parlour.core.records import Role
from parlour.protocol.fastinit import fast_init_module
from parlour.protocol.records import AttachmentRow

#: the `seq` of an append whose sequence number the store assigns
ASSIGN = 0

__all__ = [
    "ASSIGN",
    "AddBan",
    "AddBlock",
    "AddSessionToken",
    "AppendBroadcast",
    "AppendDm",
    "AppendRoomMessage",
    "Assigned",
    "Audit",
    "CompleteUpload",
    "CreateRoom",
    "CreateUpload",
    "CreateUser",
    "DeleteDm",
    "DeleteRoom",
    "DeleteRoomMessage",
    "EditDm",
    "EditRoomMessage",
    "RecordLogin",
    "RemoveBan",
    "RemoveBlock",
    "RemoveFile",
    "RenameRoom",
    "RevokeSessionTokens",
    "SetBroadcastCursor",
    "SetDmCursor",
    "SetMembership",
    "SetPassword",
    "SetReadMarker",
    "Write",
]


@dataclass(frozen=True, slots=True)
class CreateUser:
    name: str
    password_hash: str
    role: Role
    ts: float


@dataclass(frozen=True, slots=True)
class SetPassword:
    user: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class RecordLogin:
    user: str
    ts: float


@dataclass(frozen=True, slots=True)
class CreateRoom:
    name: str
    by: str
    ts: float


@dataclass(frozen=True, slots=True)
class RenameRoom:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class DeleteRoom:
    name: str


@dataclass(frozen=True, slots=True)
class SetMembership:
    user: str
    room: str
    member: bool


@dataclass(frozen=True, slots=True)
class AppendRoomMessage:
    room: str
    seq: int
    sender: str
    text: str
    ts: float
    client_id: str | None
    attachment: AttachmentRow | None = None


@dataclass(frozen=True, slots=True)
class EditRoomMessage:
    room: str
    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class DeleteRoomMessage:
    room: str
    seq: int


@dataclass(frozen=True, slots=True)
class AppendDm:
    conv: str
    seq: int
    sender: str
    recipient: str
    text: str
    ts: float
    client_id: str | None
    delivered: bool
    attachment: AttachmentRow | None = None


@dataclass(frozen=True, slots=True)
class EditDm:
    conv: str
    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class DeleteDm:
    conv: str
    seq: int


@dataclass(frozen=True, slots=True)
class SetDmCursor:
    user: str
    conv: str
    seq: int


@dataclass(frozen=True, slots=True)
class AddBan:
    user: str
    until: float | None
    reason: str
    by: str
    ts: float


@dataclass(frozen=True, slots=True)
class RemoveBan:
    user: str


@dataclass(frozen=True, slots=True)
class AddBlock:
    blocker: str
    blocked: str


@dataclass(frozen=True, slots=True)
class RemoveBlock:
    blocker: str
    blocked: str


@dataclass(frozen=True, slots=True)
class Audit:
    actor: str
    action: str
    target: str
    reason: str
    ts: float


@dataclass(frozen=True, slots=True)
class SetReadMarker:
    user: str
    seq: int
    room: str | None = None
    conv: str | None = None


@dataclass(frozen=True, slots=True)
class AppendBroadcast:
    seq: int
    sender: str
    text: str
    ts: float


@dataclass(frozen=True, slots=True)
class SetBroadcastCursor:
    user: str
    seq: int


@dataclass(frozen=True, slots=True)
class AddSessionToken:
    token_hash: str
    user: str
    expires: float


@dataclass(frozen=True, slots=True)
class RevokeSessionTokens:
    user: str
    token_hash: str | None = None


@dataclass(frozen=True, slots=True)
class CreateUpload:
    id: str
    owner: str
    length: int
    name: str
    client_type: str
    ts: float


@dataclass(frozen=True, slots=True)
class CompleteUpload:
    id: str
    sha256: str
    type: str
    inline: bool
    thumbnail: bool
    ts: float


@dataclass(frozen=True, slots=True)
class RemoveFile:
    id: str


Write = (
    CreateUser
    | SetPassword
    | RecordLogin
    | CreateRoom
    | RenameRoom
    | DeleteRoom
    | SetMembership
    | AppendRoomMessage
    | EditRoomMessage
    | DeleteRoomMessage
    | AppendDm
    | EditDm
    | DeleteDm
    | SetDmCursor
    | AddBan
    | RemoveBan
    | AddBlock
    | RemoveBlock
    | Audit
    | SetReadMarker
    | AppendBroadcast
    | SetBroadcastCursor
    | AddSessionToken
    | RevokeSessionTokens
    | CreateUpload
    | CompleteUpload
    | RemoveFile
)


@dataclass(frozen=True, slots=True)
class Assigned:
    """The store's answer to a store-assigned append (`seq == ASSIGN`): the sequence number it
    was given, and its time; a resend of a message already stored (same scope, sender and
    client id) is not inserted again: `duplicate`, with the original's sequence and time."""

    seq: int
    ts: float
    duplicate: bool = False


fast_init_module(globals())
