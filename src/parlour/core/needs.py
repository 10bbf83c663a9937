"""What the core asks the outside world for while it handles a request (h11's NEED_DATA).

The core never hashes a password or reads the store itself. When a handler needs one of
these, the core returns an `Outcome` whose `needs` lists them and which has no other effect
(nothing was changed). The adapter computes the answers (Argon2 in a bounded pool, store reads
off the loop) and calls `ChatService.handle` again with the same request and the answers so
far; the handler runs again from the start and finds them. A handler may need several rounds
(a catch-up reads page after page); answers are keyed by the need itself, so each is computed
once per request.

Handlers must ask for everything they need *before* changing any state, so that a round that
ends in needs changes nothing (docs/design/chat-architecture.md, "Needs").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from parlour.core.records import BroadcastRecord, FileRecord, FileUsage, StoredMessage
from parlour.protocol.fastinit import fast_init_module

__all__ = [
    "NO_ANSWERS",
    "Answers",
    "HashPassword",
    "Need",
    "NeedMore",
    "ReadBroadcasts",
    "ReadDm",
    "ReadFile",
    "ReadFileUsage",
    "ReadRoom",
    "ReadSince",
    "RelayTickets",
    "Verified",
    "VerifyPassword",
]


@dataclass(frozen=True, slots=True)
class HashPassword:
    """Argon2id hash of `password` (answer: the encoded hash, str)."""

    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class VerifyPassword:
    """Does `password` match `hash` (answer: `Verified`)?"""

    hash: str = field(repr=False)
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Verified:
    """The answer to `VerifyPassword`: `ok` (False also for an invalid hash) and, when the
    password matched a hash made with older parameters, a fresh hash of it to store."""

    ok: bool
    new_hash: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ReadRoom:
    """Committed messages of room `room` (answer: list[StoredMessage]; `Store.room_messages`)."""

    room: str
    before: int | None
    after: int | None
    limit: int


@dataclass(frozen=True, slots=True)
class ReadDm:
    """Committed messages of conversation `conv` (answer: list[StoredMessage])."""

    conv: str
    before: int | None
    after: int | None
    limit: int


@dataclass(frozen=True, slots=True)
class ReadSince:
    """Committed messages of `rooms` with a timestamp >= `ts` (answer: list[StoredMessage];
    `Store.messages_since`)."""

    rooms: tuple[str, ...]
    ts: float
    limit: int


@dataclass(frozen=True, slots=True)
class ReadBroadcasts:
    """Committed broadcasts with a sequence above `after`, at most `limit` (answer:
    list[BroadcastRecord]; `Store.broadcasts`)."""

    after: int
    limit: int


@dataclass(frozen=True, slots=True)
class RelayTickets:
    """A fresh transfer id for attempt `attempt` of file offer `offer`, with the relay tickets
    of its two sides (answer: `(transfer id (8 bytes), sender's ticket, receiver's ticket)`):
    minted by whoever holds the relay's secret, never by the core."""

    offer: str
    attempt: int


@dataclass(frozen=True, slots=True)
class ReadFile:
    """The upload `file_id` with where it is attached (answer: FileRecord | None;
    `Store.file`)."""

    file_id: str


@dataclass(frozen=True, slots=True)
class ReadFileUsage:
    """What user `user` holds (answer: FileUsage; `Store.file_usage`)."""

    user: str


Need = (
    HashPassword
    | VerifyPassword
    | ReadRoom
    | ReadDm
    | ReadSince
    | ReadBroadcasts
    | RelayTickets
    | ReadFile
    | ReadFileUsage
)

#: answers computed so far for one request: need -> its answer
Answers = Mapping[
    Need,
    "str | Verified | list[StoredMessage] | list[BroadcastRecord] | tuple[bytes, bytes, bytes]"
    " | FileRecord | FileUsage | None",
]

NO_ANSWERS: Answers = {}


class NeedMore(Exception):
    """Raised inside the core when a handler finds a need without an answer."""

    __slots__ = ("needs",)

    def __init__(self, needs: tuple[Need, ...]) -> None:
        super().__init__(f"{len(needs)} need(s)")
        self.needs = needs


fast_init_module(globals())
