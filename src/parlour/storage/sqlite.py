"""SQLite (WAL) implementation of the core's Store port.

One database file in the data directory. Reads see the last committed state (WAL readers
never block the writer): `load` and the synchronous reads use one read-only connection on the
caller's thread; the server's reads go through `SqliteReads`, a small thread pool whose
threads have a read-only connection each. Writes go through :meth:`SqliteStore.apply_batch`,
which applies many outcomes' writes in one transaction (group commit);
:class:`parlour.storage._sqlite_writer.GroupCommitWriter` calls it from a dedicated thread.

Durability: ``synchronous=FULL`` (the default) fsyncs the WAL on every commit, so an
acknowledged message survives power loss, not only a process crash; see
docs/design/server-durability.md for the measurements behind the choice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

from parlour.core import writes as w
from parlour.core.records import (
    AuditEntry,
    BanRecord,
    BlockRecord,
    BroadcastRecord,
    DmCursorRecord,
    FileRecord,
    FileUsage,
    MembershipRecord,
    ReadMarkerRecord,
    Role,
    RoomRecord,
    SessionTokenRecord,
    StoredMessage,
    StoreSnapshot,
    UserRecord,
    room_key,
    user_key,
)
from parlour.protocol.records import AttachmentRow, attachment_from_wire
from parlour.storage._sqlite_schema import SCHEMA_VERSION, SchemaError, migrate, user_version
from parlour.storage._sqlite_writer import GroupCommitWriter, WriterClosed

__all__ = [
    "DB_FILENAME",
    "GroupCommitWriter",
    "SchemaError",
    "SqliteReads",
    "SqliteStore",
    "WriterClosed",
]

DB_FILENAME = "parlour.sqlite3"

Synchronous = Literal["full", "normal"]

T = TypeVar("T")

_ROLES: dict[str, Role] = {"admin": "admin", "member": "member"}


def _connect(path: Path, synchronous: Synchronous, *, readonly: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        isolation_level=None,  # explicit BEGIN/COMMIT
        check_same_thread=False,  # the writer connection moves to the writer thread
        cached_statements=256,
    )
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        if not readonly:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SchemaError(f"{path}: cannot switch to WAL journal mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("PRAGMA temp_store = MEMORY")
        if readonly:
            conn.execute("PRAGMA query_only = 1")
    except BaseException:
        conn.close()
        raise
    return conn


class SqliteStore:
    """The durable store. ``SqliteStore.open(data_dir)`` creates/migrates the database."""

    def __init__(self, path: Path, *, synchronous: Synchronous = "full") -> None:
        self.path = path
        self.synchronous = synchronous
        try:
            self._write = _connect(path, synchronous, readonly=False)
        except sqlite3.Error as exc:
            raise SchemaError(f"cannot open the database {path}: {exc}") from exc
        try:
            self.migrated_from, _ = migrate(self._write)
        except sqlite3.Error as exc:
            self._write.close()
            raise SchemaError(f"cannot migrate the database {path}: {exc}") from exc
        except BaseException:
            self._write.close()
            raise
        self._read = _connect(path, synchronous, readonly=True)
        self._reader = _Reader(self._read)
        self._write_lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, data_dir: Path, *, synchronous: Synchronous = "full") -> SqliteStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir / DB_FILENAME, synchronous=synchronous)

    @property
    def schema_version(self) -> int:
        return user_version(self._read)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._write_lock:
            with contextlib.suppress(sqlite3.Error):  # best effort
                self._write.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._write.close()
        self._read.close()

    def writer(self, *, max_batch: int = 4096) -> GroupCommitWriter:
        """A group-commit writer thread applying batches to this store."""
        return GroupCommitWriter(self.apply_batch, max_batch=max_batch, name="parlour-sqlite")

    # ---------------------------------------------------------------- reads

    def load(
        self,
        *,
        recent: int = 256,
        audit: int = 1000,
        client_ids: int = 0,
        client_ids_since: float = 0.0,
        tokens_valid_at: float = 0.0,
    ) -> StoreSnapshot:
        return self._reader.load(
            recent=recent,
            audit=audit,
            client_ids=client_ids,
            client_ids_since=client_ids_since,
            tokens_valid_at=tokens_valid_at,
        )

    def room_messages(
        self, room: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        return self._reader.room_messages(room, before=before, after=after, limit=limit)

    def dm_messages(
        self, conv: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        return self._reader.dm_messages(conv, before=before, after=after, limit=limit)

    def messages_since(self, rooms: Sequence[str], ts: float, limit: int) -> list[StoredMessage]:
        return self._reader.messages_since(rooms, ts, limit)

    def audit_log(self, limit: int) -> list[AuditEntry]:
        return self._reader.audit_log(limit)

    def broadcasts(self, *, after: int, limit: int) -> list[BroadcastRecord]:
        return self._reader.broadcasts(after=after, limit=limit)

    def file(self, file_id: str) -> FileRecord | None:
        return self._reader.file(file_id)

    def file_usage(self, user: str) -> FileUsage:
        return self._reader.file_usage(user)

    def files_to_sweep(self, before: float, limit: int) -> list[FileRecord]:
        return self._reader.files_to_sweep(before, limit)

    def blob_refs(self, sha256: str) -> int:
        return self._reader.blob_refs(sha256)

    def reads(self, *, threads: int = 2) -> SqliteReads:
        """The message reads for the adapter: run in `threads` threads, each with its own
        read-only connection (WAL readers never block the writer nor each other)."""
        return SqliteReads(self.path, self.synchronous, threads)

    # ---------------------------------------------------------------- writes (writer thread)

    def apply(self, writes: Sequence[w.Write]) -> None:
        """Apply ``writes`` in one transaction (all or nothing)."""
        self.apply_batch([writes])

    def apply_batch(self, batches: Sequence[Sequence[w.Write]]) -> None:
        """Apply several outcomes' writes in one transaction: group commit."""
        with self._write_lock:
            c = self._write
            c.execute("BEGIN IMMEDIATE")
            try:
                run: list[w.AppendRoomMessage] = []
                for writes in batches:
                    for item in writes:
                        if type(item) is w.AppendRoomMessage:
                            run.append(item)
                            continue
                        if run:
                            _append_room_messages(c, run)
                            run = []
                        _APPLY[type(item)](c, item)
                if run:
                    _append_room_messages(c, run)
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")


class _Reader:
    """The store's reads on one read-only connection (used from one thread at a time)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def load(
        self,
        *,
        recent: int,
        audit: int,
        client_ids: int,
        client_ids_since: float,
        tokens_valid_at: float = 0.0,
    ) -> StoreSnapshot:
        r = self._conn
        r.execute("BEGIN")  # one consistent snapshot across all tables
        try:
            users = [
                UserRecord(name, h, _ROLES[role], created, last)
                for name, h, role, created, last in r.execute(
                    "SELECT name, password_hash, role, created, last_login FROM users"
                )
            ]
            rooms = [
                RoomRecord(name, created, by)
                for name, created, by in r.execute(
                    "SELECT name, created, created_by FROM rooms ORDER BY created, key"
                )
            ]
            memberships = [
                MembershipRecord(user, name)
                for user, name in r.execute(
                    "SELECT m.user, r.name FROM memberships m JOIN rooms r ON r.key = m.room_key"
                )
            ]
            bans = [
                BanRecord(user, until, reason, by, ts)
                for user, until, reason, by, ts in r.execute(
                    "SELECT user, until, reason, by, ts FROM bans"
                )
            ]
            blocks = [
                BlockRecord(a, b) for a, b in r.execute("SELECT blocker, blocked FROM blocks")
            ]
            cursors = [
                DmCursorRecord(user, conv, seq)
                for user, conv, seq in r.execute("SELECT user, conv, seq FROM dm_cursors")
            ]
            room_last = {
                name: int(seq)
                for name, seq in r.execute(
                    "SELECT r.name, (SELECT MAX(seq) FROM room_messages m WHERE m.room_key = r.key)"
                    " FROM rooms r"
                )
                if seq is not None
            }
            dm_last = {
                conv: int(seq)
                for conv, seq in r.execute("SELECT conv, MAX(seq) FROM dm_messages GROUP BY conv")
            }
            windows = {
                room.name: self.room_messages(room.name, before=None, after=None, limit=recent)
                for room in rooms
                if room.name in room_last and recent > 0
            }
            entries = self.audit_log(audit)
            sent = self._client_ids(client_ids, client_ids_since)
            markers = [
                ReadMarkerRecord(user, seq, room=name)
                for user, name, seq in r.execute(
                    "SELECT m.user, r.name, m.seq FROM read_markers m"
                    " JOIN rooms r ON m.kind = 'room' AND r.key = m.scope"
                )
            ] + [
                ReadMarkerRecord(user, seq, conv=scope)
                for user, scope, seq in r.execute(
                    "SELECT user, scope, seq FROM read_markers WHERE kind = 'dm'"
                )
            ]
            (last_broadcast,) = r.execute("SELECT COALESCE(MAX(seq), 0) FROM broadcasts").fetchone()
            broadcast_cursors = {
                user: int(seq) for user, seq in r.execute("SELECT user, seq FROM broadcast_cursors")
            }
            tokens = [
                SessionTokenRecord(h, user, expires)
                for h, user, expires in r.execute(
                    "SELECT token_hash, user, expires FROM session_tokens WHERE expires > ?",
                    (tokens_valid_at,),
                )
            ]
        finally:
            r.execute("COMMIT")
        return StoreSnapshot(
            users=users,
            rooms=rooms,
            memberships=memberships,
            bans=bans,
            blocks=blocks,
            dm_cursors=cursors,
            room_last_seq=room_last,
            dm_last_seq=dm_last,
            recent=windows,
            audit=entries,
            client_ids=sent,
            read_markers=markers,
            broadcast_last_seq=int(last_broadcast),
            broadcast_cursors=broadcast_cursors,
            session_tokens=tokens,
        )

    def broadcasts(self, *, after: int, limit: int) -> list[BroadcastRecord]:
        return [
            BroadcastRecord(seq, ts, sender, text)
            for seq, ts, sender, text in self._rows(
                "SELECT seq, ts, sender, text FROM broadcasts WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, max(0, limit)),
            )
        ]

    def _client_ids(self, limit: int, since: float) -> list[StoredMessage]:
        """The newest `limit` messages with a client id since `since` (rooms and DMs, newest
        first). A scan of the messages of that period, once at start."""
        if limit <= 0:
            return []
        rooms = [
            StoredMessage(name, seq, ts, sender, text, bool(ed), bool(de), cid)
            for name, seq, ts, sender, text, ed, de, cid in self._rows(
                "SELECT r.name, m.seq, m.ts, m.sender, m.text, m.edited, m.deleted, m.client_id"
                " FROM room_messages m JOIN rooms r ON r.key = m.room_key"
                " WHERE m.ts >= ? AND m.client_id IS NOT NULL ORDER BY m.ts DESC LIMIT ?",
                (since, limit),
            )
        ]
        dms = [
            StoredMessage(conv, seq, ts, sender, text, bool(ed), bool(de), cid, recipient)
            for conv, seq, ts, sender, recipient, text, ed, de, cid in self._rows(
                "SELECT conv, seq, ts, sender, recipient, text, edited, deleted, client_id"
                " FROM dm_messages WHERE ts >= ? AND client_id IS NOT NULL"
                " ORDER BY ts DESC LIMIT ?",
                (since, limit),
            )
        ]
        merged = sorted(rooms + dms, key=lambda m: m.ts, reverse=True)
        return merged[:limit]

    @staticmethod
    def _bounds(
        before: int | None, after: int | None, limit: int
    ) -> tuple[str, list[Any], bool, int]:
        where = ""
        params: list[Any] = []
        if before is not None:
            where += " AND seq < ?"
            params.append(before)
        if after is not None:
            where += " AND seq > ?"
            params.append(after)
        newest = before is not None or after is None
        return where, params, newest, max(0, limit)

    def room_messages(
        self, room: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        key = room_key(room)
        name_row = self._conn.execute("SELECT name FROM rooms WHERE key = ?", (key,)).fetchone()
        scope = name_row[0] if name_row else room
        where, params, newest, limit = self._bounds(before, after, limit)
        order = "DESC" if newest else "ASC"
        rows = self._rows(
            "SELECT seq, ts, sender, text, edited, deleted, client_id, attachment"
            f" FROM room_messages WHERE room_key = ?{where} ORDER BY seq {order} LIMIT ?",
            [key, *params, limit],
        )
        if newest:
            rows.reverse()
        return [
            StoredMessage(
                scope, seq, ts, sender, text, bool(ed), bool(de), cid, attachment=_att(at)
            )
            for seq, ts, sender, text, ed, de, cid, at in rows
        ]

    def dm_messages(
        self, conv: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        where, params, newest, limit = self._bounds(before, after, limit)
        order = "DESC" if newest else "ASC"
        rows = self._rows(
            "SELECT seq, ts, sender, recipient, text, edited, deleted, client_id, attachment"
            f" FROM dm_messages WHERE conv = ?{where} ORDER BY seq {order} LIMIT ?",
            [conv, *params, limit],
        )
        if newest:
            rows.reverse()
        return [
            StoredMessage(conv, seq, ts, sender, text, bool(ed), bool(de), cid, recipient, _att(at))
            for seq, ts, sender, recipient, text, ed, de, cid, at in rows
        ]

    def messages_since(self, rooms: Sequence[str], ts: float, limit: int) -> list[StoredMessage]:
        keys = sorted({room_key(r) for r in rooms})
        if not keys or limit <= 0:
            return []
        marks = ",".join("?" * len(keys))
        rows = self._rows(
            "SELECT r.name, m.seq, m.ts, m.sender, m.text, m.edited, m.deleted, m.client_id,"
            " m.attachment FROM room_messages m JOIN rooms r ON r.key = m.room_key"
            f" WHERE m.room_key IN ({marks}) AND m.ts >= ?"
            " ORDER BY m.ts, m.room_key, m.seq LIMIT ?",
            [*keys, ts, limit],
        )
        return [
            StoredMessage(name, seq, t, sender, text, bool(ed), bool(de), cid, attachment=_att(at))
            for name, seq, t, sender, text, ed, de, cid, at in rows
        ]

    # files

    def file(self, file_id: str) -> FileRecord | None:
        row = self._conn.execute(_FILE_SELECT + " WHERE f.id = ?", (file_id,)).fetchone()
        return None if row is None else _file_record(row)

    def file_usage(self, user: str) -> FileUsage:
        row = self._conn.execute(
            "SELECT COALESCE(SUM(length), 0), COALESCE(SUM(1 - complete), 0) FROM files"
            " WHERE owner_key = ?",
            (user_key(user),),
        ).fetchone()
        return FileUsage(int(row[0]), int(row[1]))

    def files_to_sweep(self, before: float, limit: int) -> list[FileRecord]:
        rows = self._rows(
            "SELECT * FROM (" + _FILE_SELECT + ") WHERE (seq IS NOT NULL AND deleted)"
            " OR (seq IS NULL AND COALESCE(completed, created) < ?)"
            " ORDER BY COALESCE(completed, created) LIMIT ?",
            (before, max(0, limit)),
        )
        return [_file_record(row) for row in rows]

    def blob_refs(self, sha256: str) -> int:
        row = self._conn.execute(
            "SELECT COUNT(*) FROM files WHERE sha256 = ? AND complete = 1", (sha256,)
        ).fetchone()
        return int(row[0])

    def audit_log(self, limit: int) -> list[AuditEntry]:
        rows = self._rows(
            "SELECT ts, actor, action, target, reason FROM audit ORDER BY id DESC LIMIT ?",
            (max(0, limit),),
        )
        return [AuditEntry(*row) for row in rows]


class SqliteReads:
    """`parlour.core.ports.Reads` for SQLite: each read runs in a small thread pool, each
    thread with its own read-only connection, so a slow read never blocks the event loop."""

    def __init__(self, path: Path, synchronous: Synchronous, threads: int = 2) -> None:
        self._path = path
        self._synchronous: Synchronous = synchronous
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, threads), thread_name_prefix="parlour-read"
        )

    def _reader(self) -> _Reader:
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            conn = _connect(self._path, self._synchronous, readonly=True)
            with self._lock:
                self._conns.append(conn)
            reader = self._local.reader = _Reader(conn)
        return reader

    async def _run(self, fn: Callable[[_Reader], list[StoredMessage]]) -> list[StoredMessage]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._reader()))

    async def room_messages(
        self, room: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        return await self._run(
            lambda r: r.room_messages(room, before=before, after=after, limit=limit)
        )

    async def dm_messages(
        self, conv: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        return await self._run(
            lambda r: r.dm_messages(conv, before=before, after=after, limit=limit)
        )

    async def messages_since(
        self, rooms: Sequence[str], ts: float, limit: int
    ) -> list[StoredMessage]:
        return await self._run(lambda r: r.messages_since(rooms, ts, limit))

    async def broadcasts(self, *, after: int, limit: int) -> list[BroadcastRecord]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, lambda: self._reader().broadcasts(after=after, limit=limit)
        )

    async def _call(self, fn: Callable[[_Reader], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._reader()))

    async def file(self, file_id: str) -> FileRecord | None:
        return await self._call(lambda r: r.file(file_id))

    async def file_usage(self, user: str) -> FileUsage:
        return await self._call(lambda r: r.file_usage(user))

    async def files_to_sweep(self, before: float, limit: int) -> list[FileRecord]:
        return await self._call(lambda r: r.files_to_sweep(before, limit))

    async def blob_refs(self, sha256: str) -> int:
        return await self._call(lambda r: r.blob_refs(sha256))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()


# -------------------------------------------------------------------- one function per write

Cursor = sqlite3.Connection


def _create_user(c: Cursor, x: w.CreateUser) -> None:
    c.execute(
        "INSERT INTO users (key, name, password_hash, role, created) VALUES (?, ?, ?, ?, ?)",
        (user_key(x.name), x.name, x.password_hash, x.role, x.ts),
    )


def _set_password(c: Cursor, x: w.SetPassword) -> None:
    c.execute(
        "UPDATE users SET password_hash = ? WHERE key = ?", (x.password_hash, user_key(x.user))
    )


def _record_login(c: Cursor, x: w.RecordLogin) -> None:
    c.execute("UPDATE users SET last_login = ? WHERE key = ?", (x.ts, user_key(x.user)))


def _create_room(c: Cursor, x: w.CreateRoom) -> None:
    c.execute(
        "INSERT INTO rooms (key, name, created, created_by) VALUES (?, ?, ?, ?)",
        (room_key(x.name), x.name, x.ts, x.by),
    )


def _rename_room(c: Cursor, x: w.RenameRoom) -> None:
    old, new = room_key(x.old), room_key(x.new)
    c.execute("UPDATE rooms SET key = ?, name = ? WHERE key = ?", (new, x.new, old))
    if old != new:
        c.execute("UPDATE memberships SET room_key = ? WHERE room_key = ?", (new, old))
        c.execute("UPDATE room_messages SET room_key = ? WHERE room_key = ?", (new, old))
        c.execute("UPDATE read_markers SET scope = ? WHERE kind = 'room' AND scope = ?", (new, old))


def _delete_room(c: Cursor, x: w.DeleteRoom) -> None:
    key = room_key(x.name)
    c.execute("DELETE FROM rooms WHERE key = ?", (key,))
    c.execute("DELETE FROM memberships WHERE room_key = ?", (key,))
    c.execute("DELETE FROM room_messages WHERE room_key = ?", (key,))
    c.execute("DELETE FROM read_markers WHERE kind = 'room' AND scope = ?", (key,))


def _set_read_marker(c: Cursor, x: w.SetReadMarker) -> None:
    kind, scope = ("room", room_key(x.room)) if x.room is not None else ("dm", x.conv)
    c.execute(
        "INSERT INTO read_markers (user_key, user, kind, scope, seq) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (user_key, kind, scope) DO UPDATE SET seq = MAX(seq, excluded.seq)",
        (user_key(x.user), x.user, kind, scope, x.seq),
    )


def _append_broadcast(c: Cursor, x: w.AppendBroadcast) -> None:
    c.execute(
        "INSERT INTO broadcasts (seq, ts, sender, text) VALUES (?, ?, ?, ?)",
        (x.seq, x.ts, x.sender, x.text),
    )


def _set_broadcast_cursor(c: Cursor, x: w.SetBroadcastCursor) -> None:
    c.execute(
        "INSERT INTO broadcast_cursors (user_key, user, seq) VALUES (?, ?, ?)"
        " ON CONFLICT (user_key) DO UPDATE SET seq = MAX(seq, excluded.seq)",
        (user_key(x.user), x.user, x.seq),
    )


def _add_session_token(c: Cursor, x: w.AddSessionToken) -> None:
    c.execute(
        "INSERT OR REPLACE INTO session_tokens (token_hash, user_key, user, expires)"
        " VALUES (?, ?, ?, ?)",
        (x.token_hash, user_key(x.user), x.user, x.expires),
    )


def _revoke_session_tokens(c: Cursor, x: w.RevokeSessionTokens) -> None:
    if x.token_hash is None:
        c.execute("DELETE FROM session_tokens WHERE user_key = ?", (user_key(x.user),))
    else:
        c.execute(
            "DELETE FROM session_tokens WHERE token_hash = ? AND user_key = ?",
            (x.token_hash, user_key(x.user)),
        )


def _set_membership(c: Cursor, x: w.SetMembership) -> None:
    if x.member:
        c.execute(
            "INSERT OR IGNORE INTO memberships (user_key, user, room_key) VALUES (?, ?, ?)",
            (user_key(x.user), x.user, room_key(x.room)),
        )
    else:
        c.execute(
            "DELETE FROM memberships WHERE user_key = ? AND room_key = ?",
            (user_key(x.user), room_key(x.room)),
        )


def _append_room_message(c: Cursor, x: w.AppendRoomMessage) -> None:
    c.execute(
        "INSERT INTO room_messages (room_key, seq, ts, sender, text, client_id, attachment,"
        " file_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (room_key(x.room), x.seq, x.ts, x.sender, x.text, x.client_id, *_att_cols(x.attachment)),
    )


#: multi-row INSERT sizes; a run of n messages is split greedily into these, so only a few
#: distinct statements exist and all stay in the statement cache (6 parameters a row)
_CHUNKS = (256, 64, 16, 4, 1)
_INSERT_ROOM_MESSAGES = {
    n: "INSERT INTO room_messages (room_key, seq, ts, sender, text, client_id, attachment,"
    " file_id) VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * n)
    for n in _CHUNKS
}


def _append_room_messages(c: Cursor, items: list[w.AppendRoomMessage]) -> None:
    """Consecutive room messages as multi-row INSERTs: one statement step (and one release of
    the GIL) per chunk instead of one per message, which keeps the writer thread from
    queueing behind the event loop for the GIL on every row."""
    keys: dict[str, str] = {}  # a run is nearly always one room: casefold it once
    start, total = 0, len(items)
    while start < total:
        left = total - start
        n = next(size for size in _CHUNKS if size <= left)
        params: list[object] = []
        for x in items[start : start + n]:
            key = keys.get(x.room)
            if key is None:
                key = keys[x.room] = room_key(x.room)
            att = x.attachment
            if att is None:
                params += (key, x.seq, x.ts, x.sender, x.text, x.client_id, None, None)
            else:
                params += (key, x.seq, x.ts, x.sender, x.text, x.client_id, *_att_cols(att))
        c.execute(_INSERT_ROOM_MESSAGES[n], params)
        start += n


def _edit_room_message(c: Cursor, x: w.EditRoomMessage) -> None:
    c.execute(
        "UPDATE room_messages SET text = ?, edited = 1 WHERE room_key = ? AND seq = ?",
        (x.text, room_key(x.room), x.seq),
    )


def _delete_room_message(c: Cursor, x: w.DeleteRoomMessage) -> None:
    c.execute(
        "UPDATE room_messages SET text = NULL, deleted = 1, attachment = NULL"
        " WHERE room_key = ? AND seq = ?",
        (room_key(x.room), x.seq),
    )


def _upsert_cursor(c: Cursor, user: str, conv: str, seq: int) -> None:
    c.execute(
        "INSERT INTO dm_cursors (user_key, user, conv, seq) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (user_key, conv) DO UPDATE SET seq = MAX(seq, excluded.seq)",
        (user_key(user), user, conv, seq),
    )


def _append_dm(c: Cursor, x: w.AppendDm) -> None:
    c.execute(
        "INSERT INTO dm_messages (conv, seq, ts, sender, recipient, text, client_id,"
        " attachment, file_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            x.conv,
            x.seq,
            x.ts,
            x.sender,
            x.recipient,
            x.text,
            x.client_id,
            *_att_cols(x.attachment),
        ),
    )
    if x.delivered:
        _upsert_cursor(c, x.recipient, x.conv, x.seq)


def _edit_dm(c: Cursor, x: w.EditDm) -> None:
    c.execute(
        "UPDATE dm_messages SET text = ?, edited = 1 WHERE conv = ? AND seq = ?",
        (x.text, x.conv, x.seq),
    )


def _delete_dm(c: Cursor, x: w.DeleteDm) -> None:
    c.execute(
        "UPDATE dm_messages SET text = NULL, deleted = 1, attachment = NULL"
        " WHERE conv = ? AND seq = ?",
        (x.conv, x.seq),
    )


def _set_dm_cursor(c: Cursor, x: w.SetDmCursor) -> None:
    _upsert_cursor(c, x.user, x.conv, x.seq)


def _add_ban(c: Cursor, x: w.AddBan) -> None:
    c.execute(
        "INSERT OR REPLACE INTO bans (user_key, user, until, reason, by, ts)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (user_key(x.user), x.user, x.until, x.reason, x.by, x.ts),
    )


def _remove_ban(c: Cursor, x: w.RemoveBan) -> None:
    c.execute("DELETE FROM bans WHERE user_key = ?", (user_key(x.user),))


def _add_block(c: Cursor, x: w.AddBlock) -> None:
    c.execute(
        "INSERT OR IGNORE INTO blocks (blocker_key, blocked_key, blocker, blocked)"
        " VALUES (?, ?, ?, ?)",
        (user_key(x.blocker), user_key(x.blocked), x.blocker, x.blocked),
    )


def _remove_block(c: Cursor, x: w.RemoveBlock) -> None:
    c.execute(
        "DELETE FROM blocks WHERE blocker_key = ? AND blocked_key = ?",
        (user_key(x.blocker), user_key(x.blocked)),
    )


def _audit(c: Cursor, x: w.Audit) -> None:
    c.execute(
        "INSERT INTO audit (ts, actor, action, target, reason) VALUES (?, ?, ?, ?, ?)",
        (x.ts, x.actor, x.action, x.target, x.reason),
    )


def _create_upload(c: Cursor, x: w.CreateUpload) -> None:
    c.execute(
        "INSERT INTO files (id, owner_key, owner, length, name, client_type, created)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (x.id, user_key(x.owner), x.owner, x.length, x.name, x.client_type, x.ts),
    )


def _complete_upload(c: Cursor, x: w.CompleteUpload) -> None:
    c.execute(
        "UPDATE files SET complete = 1, sha256 = ?, type = ?, inline = ?, thumbnail = ?,"
        " completed = ? WHERE id = ?",
        (x.sha256, x.type, int(x.inline), int(x.thumbnail), x.ts, x.id),
    )


def _remove_file(c: Cursor, x: w.RemoveFile) -> None:
    c.execute("DELETE FROM files WHERE id = ?", (x.id,))


def _att_cols(att: AttachmentRow | None) -> tuple[str | None, str | None]:
    if att is None:
        return None, None
    return orjson.dumps(att).decode(), att["id"]


def _att(text: str | None) -> AttachmentRow | None:
    if text is None:
        return None
    return attachment_from_wire(orjson.loads(text))


#: an upload with where it is attached (a room message or a DM with its id, if any)
_FILE_SELECT = (
    "SELECT f.id, f.owner, f.length, f.name, f.client_type, f.created, f.complete, f.sha256,"
    " f.type, f.inline, f.thumbnail, f.completed,"
    " rm.room_key AS room_key, dm.conv AS conv, COALESCE(rm.seq, dm.seq) AS seq,"
    " COALESCE(rm.deleted, dm.deleted, 0) AS deleted,"
    " COALESCE(rm.client_id, dm.client_id) AS client_id"
    " FROM files f"
    " LEFT JOIN room_messages rm ON rm.file_id = f.id"
    " LEFT JOIN dm_messages dm ON dm.file_id = f.id"
)


def _file_record(row: Sequence[Any]) -> FileRecord:
    (fid, owner, length, name, ctype, created, complete, sha, typ, inline, thumb, completed) = row[
        :12
    ]
    room, conv, seq, deleted, client_id = row[12:17]
    return FileRecord(
        fid,
        owner,
        length,
        name,
        ctype,
        created,
        bool(complete),
        sha,
        typ,
        bool(inline),
        bool(thumb),
        completed,
        room,
        conv,
        seq,
        bool(deleted),
        client_id,
    )


_APPLY: dict[type, Callable[[Cursor, Any], None]] = {
    w.CreateUpload: _create_upload,
    w.CompleteUpload: _complete_upload,
    w.RemoveFile: _remove_file,
    w.SetReadMarker: _set_read_marker,
    w.AppendBroadcast: _append_broadcast,
    w.SetBroadcastCursor: _set_broadcast_cursor,
    w.AddSessionToken: _add_session_token,
    w.RevokeSessionTokens: _revoke_session_tokens,
    w.CreateUser: _create_user,
    w.SetPassword: _set_password,
    w.RecordLogin: _record_login,
    w.CreateRoom: _create_room,
    w.RenameRoom: _rename_room,
    w.DeleteRoom: _delete_room,
    w.SetMembership: _set_membership,
    w.AppendRoomMessage: _append_room_message,
    w.EditRoomMessage: _edit_room_message,
    w.DeleteRoomMessage: _delete_room_message,
    w.AppendDm: _append_dm,
    w.EditDm: _edit_dm,
    w.DeleteDm: _delete_dm,
    w.SetDmCursor: _set_dm_cursor,
    w.AddBan: _add_ban,
    w.RemoveBan: _remove_ban,
    w.AddBlock: _add_block,
    w.RemoveBlock: _remove_block,
    w.Audit: _audit,
}


def _check_complete(kinds: Iterable[type]) -> None:
    missing = set(kinds) - set(_APPLY)
    if missing:  # pragma: no cover - guards against a new write type without a handler
        raise TypeError(f"SqliteStore cannot apply {sorted(k.__name__ for k in missing)}")


_check_complete(w.Write.__args__)
assert SCHEMA_VERSION >= 1
