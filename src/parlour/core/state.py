"""Shared truth of the chat domain, as this node holds it in memory.

Users, rooms, memberships, DM conversations and their delivery cursors, sequence numbers (the
message logs), idempotency records (client ids), bans, blocks and the audit trail: what every
node must agree on (with several nodes, PostgreSQL is where they agree). Built once from a
`StoreSnapshot`; every change to it is also expressed as a `Write` by the handler that makes it.
Node-local state (connections, sessions, rate buckets) is in `parlour.core.sessions`.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Sequence

from parlour.core.blocking import Blocks
from parlour.core.config import CoreConfig
from parlour.core.messages import ClientIds, MessageLog, Reader
from parlour.core.moderation import AuditTrail, Bans
from parlour.core.records import (
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
from parlour.core.tokens import SessionTokens

__all__ = ["ChatState", "Conversation", "Room", "UserState", "room_scope"]


def room_scope(rk: str) -> str:
    """The read-marker scope of room key `rk` (conversation ids contain ':', room keys do not
    start with '#')."""
    return "#" + rk


class UserState:
    """A registered user: the account record and the keys of their rooms and conversations.
    `last_active` (presence) is updated by every request of a session."""

    __slots__ = (
        "convs",
        "created",
        "key",
        "last_active",
        "last_login",
        "name",
        "password_hash",
        "role",
        "rooms",
    )

    def __init__(self, rec: UserRecord, key: str) -> None:
        self.name = rec.name
        self.key = key
        self.role: Role = rec.role
        self.password_hash = rec.password_hash
        self.created = rec.created
        self.last_login = rec.last_login
        self.last_active: float | None = rec.last_login
        self.rooms: set[str] = set()
        self.convs: set[str] = set()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Room:
    """One room: its members (user keys, persistent) and its message log. `uid` scopes the
    room's client ids (it survives a rename)."""

    __slots__ = ("created", "created_by", "log", "members", "name", "uid")

    def __init__(
        self, uid: int, name: str, created: float, created_by: str, log: MessageLog
    ) -> None:
        self.uid = uid
        self.name = name
        self.created = created
        self.created_by = created_by
        self.log = log
        self.members: set[str] = set()


class Conversation:
    """The DM conversation `conv` between user keys `a` and `b` (a < b). Its client ids are
    scoped by `conv` (it may be dropped from memory and loaded again)."""

    __slots__ = ("a", "b", "conv", "log", "uid")

    def __init__(self, uid: int, conv: str, a: str, b: str, log: MessageLog) -> None:
        self.uid = uid
        self.conv = conv
        self.a = a
        self.b = b
        self.log = log

    def other(self, user: str) -> str:
        return self.b if user == self.a else self.a


#: makes the reader of a room's committed messages (store reads go through the core's needs)
RoomReader = Callable[[Room], Reader]
#: makes the reader of a conversation's committed messages
DmReader = Callable[[str], Reader]


class ChatState:
    """The shared truth in memory (see the module docstring)."""

    def __init__(
        self,
        snap: StoreSnapshot,
        config: CoreConfig,
        room_reader: RoomReader,
        dm_reader: DmReader,
    ) -> None:
        self._cfg = config
        self._room_reader = room_reader
        self._dm_reader = dm_reader
        self._uids = itertools.count(1)
        self.users: dict[str, UserState] = {}
        self.rooms: dict[str, Room] = {}
        #: conversations in memory, least recently used first (bounded: conversation_cache)
        self.convs: OrderedDict[str, Conversation] = OrderedDict()
        #: (user key, conversation) -> highest DM seq delivered (or skipped) to that user
        self.cursors: dict[tuple[str, str], int] = {}
        self.client_ids = ClientIds(config.client_id_memory)
        self.blocks = Blocks()
        for u in snap.users:
            self.users[user_key(u.name)] = UserState(u, user_key(u.name))
        for r in snap.rooms:
            self.add_room(r, snap.room_last_seq.get(r.name, 0), snap.recent.get(r.name, ()))
        for m in snap.memberships:
            user, room = self.users.get(user_key(m.user)), self.rooms.get(room_key(m.room))
            if user is not None and room is not None:
                user.rooms.add(room_key(room.name))
                room.members.add(user.key)
        self.bans = Bans(snap.bans)
        for b in snap.blocks:
            self.blocks.add(user_key(b.blocker), user_key(b.blocked))
        for cur in snap.dm_cursors:
            self.cursors[(user_key(cur.user), cur.conv)] = cur.seq
        self.dm_last: dict[str, int] = dict(snap.dm_last_seq)
        for conv in self.dm_last:
            for k in conv_members(conv):
                if k in self.users:
                    self.users[k].convs.add(conv)
        self.audit = AuditTrail(config.audit_memory, snap.audit)
        #: (user key, scope) -> read position; scope: `room_scope(room key)` or a conversation
        self.read_markers: dict[tuple[str, str], int] = {}
        for marker in snap.read_markers:
            if marker.room is not None:
                where = room_scope(room_key(marker.room))
            elif marker.conv is not None:
                where = marker.conv
            else:
                continue
            self.read_markers[(user_key(marker.user), where)] = marker.seq
        self.tokens = SessionTokens(
            config.session_token_ttl, config.session_tokens_per_user, snap.session_tokens
        )
        self.broadcast_last = snap.broadcast_last_seq
        #: user key -> the highest broadcast delivered to them
        self.broadcast_cursors: dict[str, int] = {
            user_key(name): seq for name, seq in snap.broadcast_cursors.items()
        }
        # oldest first, so that the newest stay when there are more than the memory holds
        for sent in reversed(snap.client_ids):
            if sent.client_id is None:
                continue
            scope: int | str
            if sent.recipient is not None:
                scope = sent.scope  # a DM: its conversation id
            else:
                known = self.rooms.get(room_key(sent.scope))
                if known is None:
                    continue
                scope = known.uid
            self.client_ids.put(scope, user_key(sent.sender), sent.client_id, sent.seq, sent.ts)

    # ------------------------------------------------------------------ rooms

    def add_room(
        self, rec: RoomRecord, last_seq: int, recent: Sequence[StoredMessage] = ()
    ) -> Room:
        holder: list[Room] = []

        def read(before: int | None, after: int | None, limit: int) -> list[StoredMessage]:
            return self._room_reader(holder[0])(before, after, limit)

        room = Room(
            next(self._uids),
            rec.name,
            rec.created,
            rec.created_by,
            MessageLog(last_seq, self._cfg.recent_window, read, recent),
        )
        holder.append(room)
        self._remember_client_ids(room.uid, room.log)
        self.rooms[room_key(rec.name)] = room
        return room

    def _remember_client_ids(self, scope: int | str, log: MessageLog) -> None:
        """Client ids of the messages in `log`'s window (resends recognised after a restart)."""
        for m in log.recent():
            if m.client_id is not None:
                self.client_ids.put(scope, user_key(m.sender), m.client_id, m.seq, m.ts)

    # ------------------------------------------------------------------ conversations

    def conv(self, a: str, b: str) -> Conversation:
        """The conversation of user keys `a` and `b`. On first use its newest messages are
        read (a need: call it before changing anything) into its window, and their client ids
        remembered. At most `conversation_cache` stay in memory: the least recently used one
        goes (its last sequence is kept; its messages are read again when needed)."""
        cid = conv_id(a, b)
        convs = self.convs
        c = convs.get(cid)
        if c is not None:
            convs.move_to_end(cid)
            return c
        last, window = self.dm_last.get(cid, 0), self._cfg.recent_window
        read = self._dm_reader(cid)
        recent = read(None, None, window) if last else []
        lo, hi = conv_members(cid)
        c = Conversation(next(self._uids), cid, lo, hi, MessageLog(last, window, read, recent))
        self._remember_client_ids(cid, c.log)
        convs[cid] = c
        while len(convs) > self._cfg.conversation_cache:
            _, gone = convs.popitem(last=False)
            if gone.log.last_seq:
                self.dm_last[gone.conv] = gone.log.last_seq
        return c

    def conv_exists(self, a: str, b: str) -> bool:
        """Whether user keys `a` and `b` have exchanged any DM (without loading anything)."""
        cid = conv_id(a, b)
        return cid in self.convs or self.dm_last.get(cid, 0) > 0

    def dm_last_seq(self, cid: str) -> int:
        c = self.convs.get(cid)
        return c.log.last_seq if c is not None else self.dm_last.get(cid, 0)
