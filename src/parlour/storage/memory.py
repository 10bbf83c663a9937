"""`MemoryStore`: the Store port in plain Python containers (tests and `--store memory`).

Nothing survives the process. `apply` applies a batch atomically: the batch is checked first
(unknown rooms, duplicate sequence numbers, duplicate users or rooms raise `ValueError` before
anything changes), so a failing batch leaves the store untouched.

It also assigns sequence numbers itself (`apply_assigning`, appends with `seq == ASSIGN`) the
way `PostgresStore` does, so that several in-process nodes can be tested without a database.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import replace

from parlour.core.records import (
    AuditEntry,
    BanRecord,
    BlockRecord,
    BroadcastRecord,
    DmCursorRecord,
    FileRecord,
    FileUsage,
    Heads,
    MembershipRecord,
    ReadMarkerRecord,
    RoomRecord,
    SessionTokenRecord,
    StoredMessage,
    StoreSnapshot,
    UserRecord,
    room_key,
    user_key,
)
from parlour.core.writes import (
    ASSIGN,
    AddBan,
    AddBlock,
    AddSessionToken,
    AppendBroadcast,
    AppendDm,
    AppendRoomMessage,
    Assigned,
    Audit,
    CompleteUpload,
    CreateRoom,
    CreateUpload,
    CreateUser,
    DeleteDm,
    DeleteRoom,
    DeleteRoomMessage,
    EditDm,
    EditRoomMessage,
    RecordLogin,
    RemoveBan,
    RemoveBlock,
    RemoveFile,
    RenameRoom,
    RevokeSessionTokens,
    SetBroadcastCursor,
    SetDmCursor,
    SetMembership,
    SetPassword,
    SetReadMarker,
    Write,
)

__all__ = ["MemoryStore"]


class _Log:
    """Messages of one room or conversation, ascending by sequence number, and the client ids
    of its messages: (sender key, client id) -> (seq, ts)."""

    __slots__ = ("ids", "msgs", "seqs")

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.msgs: list[StoredMessage] = []
        self.ids: dict[tuple[str, str], tuple[int, float]] = {}

    @property
    def last(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def append(self, msg: StoredMessage) -> None:
        if self.seqs and msg.seq <= self.seqs[-1]:
            i = bisect.bisect_left(self.seqs, msg.seq)
            if i < len(self.seqs) and self.seqs[i] == msg.seq:
                raise ValueError(f"duplicate sequence number {msg.seq} in {msg.scope!r}")
            self.seqs.insert(i, msg.seq)
            self.msgs.insert(i, msg)
        else:
            self.seqs.append(msg.seq)
            self.msgs.append(msg)
        if msg.client_id is not None:
            self.ids.setdefault((user_key(msg.sender), msg.client_id), (msg.seq, msg.ts))

    def index(self, seq: int) -> int | None:
        i = bisect.bisect_left(self.seqs, seq)
        return i if i < len(self.seqs) and self.seqs[i] == seq else None

    def page(self, before: int | None, after: int | None, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        lo = 0 if after is None else bisect.bisect_right(self.seqs, after)
        hi = len(self.seqs) if before is None else bisect.bisect_left(self.seqs, before)
        if hi <= lo:
            return []
        if before is None and after is not None:
            return self.msgs[lo : min(hi, lo + limit)]
        return self.msgs[max(lo, hi - limit) : hi]


class MemoryStore:
    """An in-memory implementation of `parlour.core.ports.Store`."""

    def __init__(self) -> None:
        self._users: dict[str, UserRecord] = {}
        self._rooms: dict[str, RoomRecord] = {}
        self._members: dict[tuple[str, str], MembershipRecord] = {}
        self._room_logs: dict[str, _Log] = {}
        self._dm_logs: dict[str, _Log] = {}
        self._cursors: dict[tuple[str, str], int] = {}
        self._bans: dict[str, BanRecord] = {}
        self._blocks: dict[tuple[str, str], BlockRecord] = {}
        self._audit: list[AuditEntry] = []
        #: (user key, "room" | "dm", room key | conversation) -> (record, seq)
        self._markers: dict[tuple[str, str, str], ReadMarkerRecord] = {}
        self._broadcasts: list[BroadcastRecord] = []
        self._broadcast_cursors: dict[str, tuple[str, int]] = {}
        self._tokens: dict[str, SessionTokenRecord] = {}
        #: uploads by id, and where each attached one is: ("room" | "dm", room key | conv, seq)
        self._files: dict[str, FileRecord] = {}
        self._attached: dict[str, tuple[str, str, int]] = {}

    # -- reads -----------------------------------------------------------------------------

    def load(
        self,
        *,
        recent: int = 256,
        audit: int = 1000,
        client_ids: int = 0,
        client_ids_since: float = 0.0,
        tokens_valid_at: float = 0.0,
    ) -> StoreSnapshot:
        sent = [
            m
            for logs in (self._room_logs.values(), self._dm_logs.values())
            for log in logs
            for m in log.msgs
            if m.client_id is not None and m.ts >= client_ids_since
        ]
        sent.sort(key=lambda m: m.ts, reverse=True)
        return StoreSnapshot(
            users=tuple(self._users.values()),
            rooms=tuple(self._rooms.values()),
            memberships=tuple(self._members.values()),
            bans=tuple(self._bans.values()),
            blocks=tuple(self._blocks.values()),
            dm_cursors=tuple(
                DmCursorRecord(user=u, conv=c, seq=s) for (u, c), s in self._cursors.items()
            ),
            room_last_seq={
                self._rooms[k].name: log.seqs[-1] for k, log in self._room_logs.items() if log.seqs
            },
            dm_last_seq={c: log.seqs[-1] for c, log in self._dm_logs.items() if log.seqs},
            recent={
                self._rooms[k].name: log.page(None, None, recent)
                for k, log in self._room_logs.items()
                if log.seqs and recent > 0
            },
            audit=self.audit_log(audit),
            client_ids=sent[: max(0, client_ids)],
            read_markers=[
                replace(m, room=self._rooms[k].name) if kind == "room" else m
                for (_, kind, k), m in self._markers.items()
                if kind == "dm" or k in self._rooms
            ],
            broadcast_last_seq=self._broadcasts[-1].seq if self._broadcasts else 0,
            broadcast_cursors=dict(self._broadcast_cursors.values()),
            session_tokens=[t for t in self._tokens.values() if t.expires > tokens_valid_at],
        )

    def heads(self, convs: Sequence[str] = ()) -> Heads:
        """Every room's last sequence, the given conversations', the broadcasts'."""
        return Heads(
            {
                r.name: self._room_logs[k].last
                for k, r in self._rooms.items()
                if k in self._room_logs
            },
            {c: self._dm_logs[c].last for c in convs if c in self._dm_logs},
            self._broadcasts[-1].seq if self._broadcasts else 0,
        )

    def broadcasts(self, *, after: int, limit: int) -> list[BroadcastRecord]:
        return [b for b in self._broadcasts if b.seq > after][: max(0, limit)]

    def room_messages(
        self, room: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        log = self._room_logs.get(room_key(room))
        return [] if log is None else log.page(before, after, limit)

    def dm_messages(
        self, conv: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        log = self._dm_logs.get(conv)
        return [] if log is None else log.page(before, after, limit)

    def messages_since(self, rooms: Sequence[str], ts: float, limit: int) -> list[StoredMessage]:
        found: list[StoredMessage] = []
        for room in rooms:
            log = self._room_logs.get(room_key(room))
            if log is not None:
                found.extend(m for m in log.msgs if m.ts >= ts)
        found.sort(key=lambda m: (m.ts, m.scope, m.seq))
        return found[: max(limit, 0)]

    def audit_log(self, limit: int) -> list[AuditEntry]:
        return self._audit[::-1][: max(limit, 0)]

    # -- files -----------------------------------------------------------------------------

    def file(self, file_id: str) -> FileRecord | None:
        rec = self._files.get(file_id)
        if rec is None:
            return None
        where = self._attached.get(file_id)
        if where is None:
            return rec
        kind, scope, seq = where
        log = (self._room_logs if kind == "room" else self._dm_logs).get(scope)
        i = None if log is None else log.index(seq)
        deleted = log is None or i is None or log.msgs[i].deleted
        cid = None if log is None or i is None else log.msgs[i].client_id
        if kind == "room":
            return replace(rec, room_key=scope, seq=seq, deleted=deleted, client_id=cid)
        return replace(rec, conv=scope, seq=seq, deleted=deleted, client_id=cid)

    def file_usage(self, user: str) -> FileUsage:
        key = user_key(user)
        total = unfinished = 0
        for rec in self._files.values():
            if user_key(rec.owner) == key:
                total += rec.length
                unfinished += not rec.complete
        return FileUsage(total, unfinished)

    def files_to_sweep(self, before: float, limit: int) -> list[FileRecord]:
        found: list[FileRecord] = []
        for file_id in self._files:
            rec = self.file(file_id)
            assert rec is not None
            if rec.attached:
                if rec.deleted:
                    found.append(rec)
            elif ((rec.completed if rec.complete else rec.created) or 0.0) < before:
                found.append(rec)
        found.sort(key=lambda r: r.completed or r.created)
        return found[: max(0, limit)]

    def blob_refs(self, sha256: str) -> int:
        return sum(1 for r in self._files.values() if r.complete and r.sha256 == sha256)

    # -- writes ----------------------------------------------------------------------------

    def apply(self, writes: Sequence[Write]) -> None:
        self.apply_assigning(writes)

    def apply_assigning(self, writes: Sequence[Write]) -> list[Assigned]:
        """Apply `writes` atomically; what each store-assigned append was given."""
        self._check(writes)
        assigned: list[Assigned] = []
        for w in writes:
            if isinstance(w, AppendRoomMessage | AppendDm | AppendBroadcast) and w.seq == ASSIGN:
                assigned.append(self._assign(w))
            else:
                self._apply_one(w)
        return assigned

    def _assign(self, w: AppendRoomMessage | AppendDm | AppendBroadcast) -> Assigned:
        if isinstance(w, AppendBroadcast):
            seq = (self._broadcasts[-1].seq if self._broadcasts else 0) + 1
            self._apply_one(replace(w, seq=seq))
            return Assigned(seq, w.ts)
        if isinstance(w, AppendRoomMessage):
            log = self._room_logs.setdefault(room_key(w.room), _Log())
        else:
            log = self._dm_logs.setdefault(w.conv, _Log())
        if w.client_id is not None:
            stored = log.ids.get((user_key(w.sender), w.client_id))
            if stored is not None:
                return Assigned(stored[0], stored[1], duplicate=True)
        seq = log.last + 1
        self._apply_one(replace(w, seq=seq))
        return Assigned(seq, w.ts)

    def _check(self, writes: Sequence[Write]) -> None:
        """Reject a batch that could fail half-way, before changing anything."""
        users = set(self._users)
        rooms = set(self._rooms)
        seqs: dict[tuple[str, str], set[int]] = {}

        def taken(kind: str, scope: str, seq: int) -> bool:
            key = (kind, scope)
            if key not in seqs:
                log = (self._room_logs if kind == "room" else self._dm_logs).get(scope)
                seqs[key] = set() if log is None else set(log.seqs)
            if seq in seqs[key]:
                return True
            seqs[key].add(seq)
            return False

        for w in writes:
            if isinstance(w, CreateUser):
                if user_key(w.name) in users:
                    raise ValueError(f"user {w.name!r} exists")
                users.add(user_key(w.name))
            elif isinstance(w, CreateRoom):
                if room_key(w.name) in rooms:
                    raise ValueError(f"room {w.name!r} exists")
                rooms.add(room_key(w.name))
            elif isinstance(w, RenameRoom):
                old, new = room_key(w.old), room_key(w.new)
                if old not in rooms:
                    raise ValueError(f"unknown room {w.old!r}")
                if new != old and new in rooms:
                    raise ValueError(f"room {w.new!r} exists")
                rooms.discard(old)
                rooms.add(new)
                seqs = {}
            elif isinstance(w, DeleteRoom):
                rooms.discard(room_key(w.name))
                seqs.pop(("room", room_key(w.name)), None)
            elif isinstance(w, AppendRoomMessage):
                if room_key(w.room) not in rooms:
                    raise ValueError(f"unknown room {w.room!r}")
                if w.seq != ASSIGN and taken("room", room_key(w.room), w.seq):
                    raise ValueError(f"duplicate sequence number {w.seq} in {w.room!r}")
            elif isinstance(w, AppendDm) and w.seq != ASSIGN and taken("dm", w.conv, w.seq):
                raise ValueError(f"duplicate sequence number {w.seq} in {w.conv!r}")

    def _apply_one(self, w: Write) -> None:
        if isinstance(w, CreateUser):
            self._users[user_key(w.name)] = UserRecord(w.name, w.password_hash, w.role, w.ts)
        elif isinstance(w, SetPassword):
            u = self._users.get(user_key(w.user))
            if u is not None:
                self._users[user_key(w.user)] = replace(u, password_hash=w.password_hash)
        elif isinstance(w, RecordLogin):
            u = self._users.get(user_key(w.user))
            if u is not None:
                self._users[user_key(w.user)] = replace(u, last_login=w.ts)
        elif isinstance(w, CreateRoom):
            self._rooms[room_key(w.name)] = RoomRecord(w.name, w.ts, w.by)
        elif isinstance(w, RenameRoom):
            self._rename_room(w.old, w.new)
        elif isinstance(w, DeleteRoom):
            k = room_key(w.name)
            room = self._rooms.pop(k, None)
            self._room_logs.pop(k, None)
            for fid in [f for f, at in self._attached.items() if at[:2] == ("room", k)]:
                del self._attached[fid]
            if room is not None:
                for key in [key for key in self._members if room_key(key[1]) == k]:
                    del self._members[key]
                for mkey in [mk for mk in self._markers if mk[1] == "room" and mk[2] == k]:
                    del self._markers[mkey]
        elif isinstance(w, SetMembership):
            key = (user_key(w.user), room_key(w.room))
            if w.member:
                self._members.setdefault(key, MembershipRecord(w.user, w.room))
            else:
                self._members.pop(key, None)
        elif isinstance(w, AppendRoomMessage):
            room = self._rooms[room_key(w.room)]
            self._room_logs.setdefault(room_key(w.room), _Log()).append(
                StoredMessage(
                    room.name,
                    w.seq,
                    w.ts,
                    w.sender,
                    w.text,
                    client_id=w.client_id,
                    attachment=w.attachment,
                )
            )
            if w.attachment is not None:
                self._attached[w.attachment["id"]] = ("room", room_key(w.room), w.seq)
        elif isinstance(w, EditRoomMessage):
            self._edit(self._room_logs.get(room_key(w.room)), w.seq, w.text)
        elif isinstance(w, DeleteRoomMessage):
            self._edit(self._room_logs.get(room_key(w.room)), w.seq, None)
        elif isinstance(w, AppendDm):
            self._dm_logs.setdefault(w.conv, _Log()).append(
                StoredMessage(
                    w.conv,
                    w.seq,
                    w.ts,
                    w.sender,
                    w.text,
                    client_id=w.client_id,
                    recipient=w.recipient,
                    attachment=w.attachment,
                )
            )
            if w.attachment is not None:
                self._attached[w.attachment["id"]] = ("dm", w.conv, w.seq)
            if w.delivered:
                self._set_cursor(w.recipient, w.conv, w.seq)
        elif isinstance(w, EditDm):
            self._edit(self._dm_logs.get(w.conv), w.seq, w.text)
        elif isinstance(w, DeleteDm):
            self._edit(self._dm_logs.get(w.conv), w.seq, None)
        elif isinstance(w, SetDmCursor):
            self._set_cursor(w.user, w.conv, w.seq)
        elif isinstance(w, AddBan):
            self._bans[user_key(w.user)] = BanRecord(w.user, w.until, w.reason, w.by, w.ts)
        elif isinstance(w, RemoveBan):
            self._bans.pop(user_key(w.user), None)
        elif isinstance(w, AddBlock):
            key = (user_key(w.blocker), user_key(w.blocked))
            self._blocks.setdefault(key, BlockRecord(w.blocker, w.blocked))
        elif isinstance(w, RemoveBlock):
            self._blocks.pop((user_key(w.blocker), user_key(w.blocked)), None)
        elif isinstance(w, Audit):
            self._audit.append(AuditEntry(w.ts, w.actor, w.action, w.target, w.reason))
        elif isinstance(w, SetReadMarker):
            kind, scope = ("room", room_key(w.room)) if w.room is not None else ("dm", w.conv)
            assert scope is not None
            mkey = (user_key(w.user), kind, scope)
            old = self._markers.get(mkey)
            if old is None or w.seq > old.seq:
                self._markers[mkey] = ReadMarkerRecord(w.user, w.seq, w.room, w.conv)
        elif isinstance(w, AppendBroadcast):
            if self._broadcasts and w.seq <= self._broadcasts[-1].seq:
                raise ValueError(f"duplicate broadcast sequence number {w.seq}")
            self._broadcasts.append(BroadcastRecord(w.seq, w.ts, w.sender, w.text))
        elif isinstance(w, SetBroadcastCursor):
            ukey = user_key(w.user)
            if w.seq > self._broadcast_cursors.get(ukey, ("", 0))[1]:
                self._broadcast_cursors[ukey] = (w.user, w.seq)
        elif isinstance(w, AddSessionToken):
            self._tokens[w.token_hash] = SessionTokenRecord(w.token_hash, w.user, w.expires)
        elif isinstance(w, RevokeSessionTokens):
            ukey = user_key(w.user)
            for h in [h for h, t in self._tokens.items() if user_key(t.user) == ukey]:
                if w.token_hash is None or h == w.token_hash:
                    del self._tokens[h]
        elif isinstance(w, CreateUpload):
            self._files[w.id] = FileRecord(w.id, w.owner, w.length, w.name, w.client_type, w.ts)
        elif isinstance(w, CompleteUpload):
            rec = self._files.get(w.id)
            if rec is not None:
                self._files[w.id] = replace(
                    rec,
                    complete=True,
                    sha256=w.sha256,
                    type=w.type,
                    inline=w.inline,
                    thumbnail=w.thumbnail,
                    completed=w.ts,
                )
        elif isinstance(w, RemoveFile):
            self._files.pop(w.id, None)
            self._attached.pop(w.id, None)
        else:  # pragma: no cover - exhaustive over Write
            raise TypeError(f"unknown write {w!r}")

    def _set_cursor(self, user: str, conv: str, seq: int) -> None:
        key = (user, conv)
        if seq > self._cursors.get(key, 0):
            self._cursors[key] = seq

    @staticmethod
    def _edit(log: _Log | None, seq: int, text: str | None) -> None:
        if log is None:
            return
        i = log.index(seq)
        if i is None:
            return
        msg = log.msgs[i]
        if text is None:
            log.msgs[i] = replace(msg, text=None, deleted=True, attachment=None)
        elif not msg.deleted:
            log.msgs[i] = replace(msg, text=text, edited=True)

    def _rename_room(self, old: str, new: str) -> None:
        ok, nk = room_key(old), room_key(new)
        room = self._rooms.pop(ok)
        self._rooms[nk] = replace(room, name=new)
        log = self._room_logs.pop(ok, None)
        if log is not None:
            log.msgs = [replace(m, scope=new) for m in log.msgs]
            self._room_logs[nk] = log
        for fid, (kind, scope, seq) in list(self._attached.items()):
            if kind == "room" and scope == ok:
                self._attached[fid] = ("room", nk, seq)
        for key in [key for key in self._members if key[1] == ok]:
            rec = self._members.pop(key)
            self._members[(key[0], nk)] = replace(rec, room=new)
        for mkey in [mk for mk in self._markers if mk[1] == "room" and mk[2] == ok]:
            marker = self._markers.pop(mkey)
            self._markers[(mkey[0], "room", nk)] = replace(marker, room=new)
