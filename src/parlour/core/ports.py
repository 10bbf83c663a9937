"""Ports of the chat core: what the outside world must provide, as Protocols.

The core itself never calls any of these while it handles a request: it is built from a
`StoreSnapshot` (`Store.load`, once, before serving), asks for password work and deeper
history as *needs* in its `Outcome` (`parlour.core.needs`), and expresses every change as
`parlour.core.writes.Write` values. The adapter (`parlour.transports`) satisfies the needs with
a `PasswordHasher` and `Reads`, applies the writes through a writer calling `Store.apply`, and
publishes what was committed on the `Bus` (docs/design/chat-architecture.md).

The records these ports carry are in `parlour.core.records` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from parlour.core.records import (
    AuditEntry,
    BanRecord,
    BlockRecord,
    BroadcastRecord,
    DmCursorRecord,
    FileRecord,
    FileUsage,
    MembershipRecord,
    Role,
    RoomRecord,
    StoredMessage,
    StoreSnapshot,
    UserRecord,
    conv_id,
    conv_members,
    room_key,
    user_key,
)

if TYPE_CHECKING:
    from parlour.core.outcome import Delivery, RemoteEffect
    from parlour.core.writes import Write

__all__ = [
    "AuditEntry",
    "BanRecord",
    "BlockRecord",
    "BroadcastRecord",
    "Bus",
    "BusMessage",
    "DmCursorRecord",
    "FileRecord",
    "FileUsage",
    "MembershipRecord",
    "PasswordHasher",
    "Reads",
    "Role",
    "RoomRecord",
    "Store",
    "StoreSnapshot",
    "StoreUnavailable",
    "StoredMessage",
    "UserRecord",
    "conv_id",
    "conv_members",
    "room_key",
    "user_key",
]


class StoreUnavailable(Exception):
    """The store cannot be reached now (the database is down or restarting): nothing was
    written; the request may be tried again later. Raised by a store's writes and reads; the
    server answers ``unavailable`` with ``retry_after``."""


class Store(Protocol):
    """Durable storage of the chat domain (memory for tests, SQLite by default).

    Reads return committed data only. Message reads return messages ordered by ascending
    sequence number: `before`/`after` are exclusive bounds; when `before` is given (or neither
    bound is), the *newest* `limit` messages below the bound are returned (still ascending); when
    only `after` is given, the *oldest* `limit` messages above it are returned.
    """

    def load(
        self,
        *,
        recent: int = 256,
        audit: int = 1000,
        client_ids: int = 0,
        client_ids_since: float = 0.0,
        tokens_valid_at: float = 0.0,
    ) -> StoreSnapshot:
        """Everything the core keeps hot: all users, rooms, memberships, bans, blocks, DM
        cursors and last sequences, the newest `recent` messages of every room, the newest
        `audit` audit entries, the newest `client_ids` messages (rooms and DMs) sent with
        a client id at or after `client_ids_since`, and the session tokens that expire after
        `tokens_valid_at`."""
        ...

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

    def broadcasts(self, *, after: int, limit: int) -> list[BroadcastRecord]:
        """The oldest `limit` broadcasts with a sequence above `after`, ascending."""
        ...

    def apply(self, writes: Sequence[Write]) -> None:
        """Apply `writes` in order, in one transaction (all or nothing)."""
        ...

    # files (docs/design/files.md)

    def file(self, file_id: str) -> FileRecord | None:
        """The upload `file_id` with where it is attached (None: no such upload)."""
        ...

    def file_usage(self, user: str) -> FileUsage:
        """The bytes and unfinished uploads of user `user` (any spelling of the name)."""
        ...

    def files_to_sweep(self, before: float, limit: int) -> list[FileRecord]:
        """At most `limit` uploads to look at for expiry: those attached to a deleted message,
        and those attached to no message that were created (unfinished) or completed before
        `before`; oldest first."""
        ...

    def blob_refs(self, sha256: str) -> int:
        """How many complete uploads have this content."""
        ...


class Reads(Protocol):
    """The store's message reads, awaited by the adapter to satisfy the core's read needs
    (off the event loop's thread for a blocking store; natively for an asynchronous one).
    Same semantics as the `Store` methods of the same names."""

    async def room_messages(
        self, room: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]: ...

    async def dm_messages(
        self, conv: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]: ...

    async def messages_since(
        self, rooms: Sequence[str], ts: float, limit: int
    ) -> list[StoredMessage]: ...

    async def broadcasts(self, *, after: int, limit: int) -> list[BroadcastRecord]: ...

    async def file(self, file_id: str) -> FileRecord | None: ...

    async def file_usage(self, user: str) -> FileUsage: ...

    async def files_to_sweep(self, before: float, limit: int) -> list[FileRecord]: ...

    async def blob_refs(self, sha256: str) -> int: ...


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, hash: str, password: str) -> bool:
        """True when `password` matches `hash`; False on mismatch or an invalid hash."""
        ...

    def needs_rehash(self, hash: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class BusMessage:
    """What one node announces after a commit: the deliveries of one outcome, each with its
    logical address (`Delivery.address`), for every node to resolve against its own
    connections. `origin` names the node that produced it; `deliveries[i].to` are the origin
    node's own connections and mean nothing elsewhere.

    With several nodes (docs/design/scale-out.md) it also carries the outcome's writes as
    committed (`facts`: each store-assigned append with its sequence number), what the other
    nodes must do (`effects`, `parlour.core.outcome.RemoteEffect`), and `n`, the origin's
    count of its messages (1, 2, ...): a node that sees a number skipped knows it missed
    something and reads the truth from the store again."""

    origin: str
    deliveries: tuple[Delivery, ...]
    facts: tuple[Write, ...] = ()
    effects: tuple[RemoteEffect, ...] = ()
    n: int = 0


class Bus(Protocol):
    """Fan-out between the nodes of one deployment (in-process now; Redis for scale-out).

    The bus never carries the truth: a node that misses a message recovers what it missed
    from the store by sequence number. Messages from one publisher arrive in the order they
    were published."""

    def subscribe(self, node: str, handler: Callable[[BusMessage], None]) -> None:
        """Deliver every message published from now on to `handler` (on `node`)."""
        ...

    def unsubscribe(self, node: str) -> None: ...

    def publish(self, message: BusMessage) -> None:
        """Hand `message` to every subscribed node (the publisher's own included)."""
        ...

    async def login_history(self) -> tuple[RemoteEffect, ...]:
        """The login checks (`LoginFailed`/`LoginSucceeded` effects) published recently, in
        order, so that a node that starts throttles as the running ones do: the bus keeps
        them (bounded, expiring) beside the messages it forgets."""
        ...
