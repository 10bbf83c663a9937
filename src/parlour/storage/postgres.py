"""PostgreSQL implementation of the core's Store port (scale-out; asyncpg).

One database shared by every node; it is the only source of truth (docs/design/scale-out.md).
The store owns a connection pool on an event loop of its own thread ("parlour-pg"), so the
same object serves

* the synchronous `Store` port (`load`, `apply`, the reads): what the conformance suite, the
  bootstrap and tools call, from any thread but that one;
* the server, from its own loop: `aload`, `aapply_batch`, `reads()` (the `Reads` port),
  `writer()` (group commit) and `heads()` (every scope's last sequence, for gap detection).

Statements are prepared once per connection (asyncpg's statement cache). Sequence numbers
of store-assigned appends (`seq == ASSIGN`) are taken from the scope's counter row, locked
with ``SELECT ... FOR UPDATE`` at the start of the transaction (rooms, then conversations,
then the broadcast counter, each in key order, so that two nodes never deadlock on them) and
moved in the same transaction: gap-free, committed in order, rolled back together.
A resend (same scope, sender and client id as a stored message) is recognised under those
locks and answered `Assigned(duplicate=True)` with the original's sequence number; the
unique key ``(scope, sender_key, client_id)`` makes the database refuse a duplicate whatever
the code does.

Losing the database (refused connection, server shut down, connection dropped mid-query)
raises `StoreUnavailable`: the server answers ``unavailable`` with ``retry_after``; nothing
was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeAlias, TypeVar

import asyncpg
import orjson

from parlour.core import writes as w
from parlour.core.ports import StoreUnavailable
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
from parlour.storage._pg_schema import SCHEMA_VERSION, SchemaTooNew, migrate

__all__ = [
    "Heads",
    "PostgresReads",
    "PostgresStore",
    "PostgresWriter",
    "SchemaTooNew",
    "redact_dsn",
]

log = logging.getLogger("parlour.storage.postgres")

T = TypeVar("T")

_ROLES: dict[str, Role] = {"admin": "admin", "member": "member"}

#: errors that mean "the database cannot be reached now", not "this write is wrong"
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 admin shutdown, 57P02, 57P03
    asyncpg.exceptions.InsufficientResourcesError,  # 53xxx: too many connections, disk full
    asyncpg.exceptions.PostgresConnectionError,
    # a connection broken in the middle of a query can leave asyncpg's protocol in a state
    # it reports this way when the pool resets the connection
    asyncpg.exceptions.InternalClientError,
)


def redact_dsn(dsn: str) -> str:
    """`dsn` without its password (for logs and messages)."""
    try:
        parts = urllib.parse.urlsplit(dsn)
    except ValueError:
        return "postgresql://…"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, _UNAVAILABLE)


class _LoopThread:
    """An event loop running in a daemon thread, for the pool."""

    def __init__(self, name: str) -> None:
        try:
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
            self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for it (from another thread)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("PostgresStore: synchronous call from its own loop thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wrap(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """Run `coro` on the loop; an awaitable for the caller's loop."""
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class PostgresStore:
    """The durable shared store. ``PostgresStore.open(dsn)`` connects and migrates."""

    def __init__(
        self, dsn: str, *, min_size: int = 2, max_size: int = 8, timeout: float = 10.0
    ) -> None:
        self.dsn = dsn
        self.timeout = timeout
        self._max_size = max_size
        self._thread = _LoopThread("parlour-pg")
        self._closed = False
        #: the server's loop and the pool on it (`serve_here`): the async methods called on
        #: that loop use it directly, without a hop to the store's thread
        self._here: tuple[asyncio.AbstractEventLoop, Any] | None = None
        try:
            self._pool: Any = self._thread.call(
                self._connect(min_size, max_size), timeout=timeout + 5
            )
            self.migrated_from, _ = self._thread.call(self._migrate(), timeout=60)
        except BaseException as exc:
            self._thread.stop()
            if isinstance(exc, SchemaTooNew):
                raise
            if _unavailable(exc) or isinstance(exc, asyncpg.PostgresError):
                raise StoreUnavailable(
                    f"cannot open the PostgreSQL store {redact_dsn(dsn)}: {exc}"
                ) from exc
            raise

    @classmethod
    def open(cls, dsn: str, **kwargs: Any) -> PostgresStore:
        return cls(dsn, **kwargs)

    async def _connect(self, min_size: int, max_size: int) -> Any:
        pool = await asyncpg.create_pool(
            self.dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=self.timeout,
            command_timeout=60,
            max_inactive_connection_lifetime=300,
            server_settings={"application_name": "parlour"},
        )
        assert pool is not None
        return pool

    async def _migrate(self) -> tuple[int, int]:
        async with self._pool.acquire() as conn:
            return await migrate(conn)

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    async def serve_here(self) -> None:
        """Open the pool the server uses on the running loop (the store's own thread keeps a
        connection for the synchronous calls). One loop thread does everything a request
        needs: no thread hop per statement, nor the wait for the other thread to get the
        interpreter lock."""
        if self._here is not None:
            return
        try:
            pool = await self._connect(min(2, self._max_size), self._max_size)
        except BaseException as exc:
            if _unavailable(exc):
                raise StoreUnavailable(
                    f"cannot open the PostgreSQL store {redact_dsn(self.dsn)}: {exc}"
                ) from exc
            raise
        self._here = (asyncio.get_running_loop(), pool)

    async def aclose(self) -> None:
        """Close the pool of `serve_here` (then `close` the rest)."""
        here, self._here = self._here, None
        if here is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(here[1].close(), 10)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        here, self._here = self._here, None
        if here is not None:
            here[1].terminate()
        with contextlib.suppress(Exception):
            self._thread.call(self._pool.close(), timeout=10)
        self._thread.stop()

    # ---------------------------------------------------------------- running

    async def _with_conn(self, fn: Callable[[Conn], Awaitable[T]], pool: Any = None) -> T:
        try:
            async with (pool or self._pool).acquire(timeout=self.timeout) as conn:
                return await fn(conn)
        except StoreUnavailable:
            raise
        except BaseException as exc:
            if _unavailable(exc):
                raise StoreUnavailable(f"PostgreSQL unavailable: {exc}") from exc
            raise

    def _sync(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        return self._thread.call(self._with_conn(fn))

    def _async(self, fn: Callable[[Conn], Awaitable[T]]) -> Awaitable[T]:
        here = self._here
        if here is not None:
            loop, pool = here
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                return self._with_conn(fn, pool)
        return self._thread.wrap(self._with_conn(fn))

    # ---------------------------------------------------------------- the Store port (sync)

    def load(
        self,
        *,
        recent: int = 256,
        audit: int = 1000,
        client_ids: int = 0,
        client_ids_since: float = 0.0,
        tokens_valid_at: float = 0.0,
    ) -> StoreSnapshot:
        return self._sync(
            lambda c: _load(c, recent, audit, client_ids, client_ids_since, tokens_valid_at)
        )

    def room_messages(
        self, room: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        return self._sync(lambda c: _room_messages(c, room, before, after, limit))

    def dm_messages(
        self, conv: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        return self._sync(lambda c: _dm_messages(c, conv, before, after, limit))

    def messages_since(self, rooms: Sequence[str], ts: float, limit: int) -> list[StoredMessage]:
        return self._sync(lambda c: _messages_since(c, rooms, ts, limit))

    def audit_log(self, limit: int) -> list[AuditEntry]:
        return self._sync(lambda c: _audit_log(c, limit))

    def broadcasts(self, *, after: int, limit: int) -> list[BroadcastRecord]:
        return self._sync(lambda c: _broadcasts(c, after, limit))

    def file(self, file_id: str) -> FileRecord | None:
        return self._sync(lambda c: _file(c, file_id))

    def file_usage(self, user: str) -> FileUsage:
        return self._sync(lambda c: _file_usage(c, user))

    def files_to_sweep(self, before: float, limit: int) -> list[FileRecord]:
        return self._sync(lambda c: _files_to_sweep(c, before, limit))

    def blob_refs(self, sha256: str) -> int:
        return self._sync(lambda c: _blob_refs(c, sha256))

    def apply(self, writes: Sequence[w.Write]) -> None:
        """Apply ``writes`` in one transaction (all or nothing)."""
        self.apply_assigning(writes)

    def apply_assigning(self, writes: Sequence[w.Write]) -> list[w.Assigned]:
        """Apply ``writes`` in one transaction; what each store-assigned append was given."""
        return self._sync(lambda c: _apply_batch(c, [writes]))[0]

    # ---------------------------------------------------------------- for the server (async)

    def aload(self, **kwargs: Any) -> Awaitable[StoreSnapshot]:
        return self._async(
            lambda c: _load(
                c,
                kwargs.get("recent", 256),
                kwargs.get("audit", 1000),
                kwargs.get("client_ids", 0),
                kwargs.get("client_ids_since", 0.0),
                kwargs.get("tokens_valid_at", 0.0),
            )
        )

    def aapply_batch(
        self, batches: Sequence[Sequence[w.Write]]
    ) -> Awaitable[list[list[w.Assigned]]]:
        """Apply several outcomes' writes in one transaction (group commit)."""
        return self._async(lambda c: _apply_batch(c, batches))

    def heads(self, convs: Sequence[str] = ()) -> Awaitable[Heads]:
        """Every room's last sequence, the given conversations', the broadcasts'."""
        return self._async(lambda c: _heads(c, convs))

    def reads(self) -> PostgresReads:
        return PostgresReads(self)

    def writer(self, *, max_batch: int = 1024) -> PostgresWriter:
        return PostgresWriter(self, max_batch=max_batch)


class PostgresReads:
    """The `Reads` port over a `PostgresStore` (awaited on the server's loop)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def room_messages(
        self, room: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        return await self._store._async(lambda c: _room_messages(c, room, before, after, limit))

    async def dm_messages(
        self, conv: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        return await self._store._async(lambda c: _dm_messages(c, conv, before, after, limit))

    async def messages_since(
        self, rooms: Sequence[str], ts: float, limit: int
    ) -> list[StoredMessage]:
        return await self._store._async(lambda c: _messages_since(c, rooms, ts, limit))

    async def broadcasts(self, *, after: int, limit: int) -> list[BroadcastRecord]:
        return await self._store._async(lambda c: _broadcasts(c, after, limit))

    async def file(self, file_id: str) -> FileRecord | None:
        return await self._store._async(lambda c: _file(c, file_id))

    async def file_usage(self, user: str) -> FileUsage:
        return await self._store._async(lambda c: _file_usage(c, user))

    async def files_to_sweep(self, before: float, limit: int) -> list[FileRecord]:
        return await self._store._async(lambda c: _files_to_sweep(c, before, limit))

    async def blob_refs(self, sha256: str) -> int:
        return await self._store._async(lambda c: _blob_refs(c, sha256))

    def close(self) -> None:
        return None


class PostgresWriter:
    """Group commit on the server's loop: everything submitted while a transaction is being
    committed goes into the next one (up to ``max_batch`` outcomes). One transaction at a
    time, so one node's outcomes are committed in the order they were submitted. ``submit``'s
    future resolves with what the store assigned (one `Assigned` per store-assigned append of
    that outcome), or fails: with `StoreUnavailable` when the database cannot be reached, or
    with the outcome's own error (a failing batch is retried outcome by outcome, so one bad
    write fails only its own future)."""

    def __init__(self, store: PostgresStore, *, max_batch: int = 1024) -> None:
        self._store = store
        self._max_batch = max(1, max_batch)
        self._queue: deque[tuple[Sequence[w.Write], asyncio.Future[list[w.Assigned]]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._listeners: list[Callable[[], None]] = []
        self._pending = 0
        self.batches = 0
        self.outcomes = 0
        self.failures = 0
        self.busy_seconds = 0.0

    @property
    def pending(self) -> int:
        return self._pending

    def add_resolved_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="parlour-pg-writer")

    def submit(self, writes: Sequence[w.Write]) -> asyncio.Future[list[w.Assigned]]:
        if self._loop is None or self._wake is None:
            raise RuntimeError("writer not started")
        if self._closing:
            raise RuntimeError("the store writer is closed")
        fut: asyncio.Future[list[w.Assigned]] = self._loop.create_future()
        self._queue.append((writes, fut))
        self._pending += 1
        self._wake.set()
        return fut

    async def close(self) -> None:
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            n = min(len(self._queue), self._max_batch)
            batch = [self._queue.popleft() for _ in range(n)]
            started = time.perf_counter()
            results = await self._commit(batch)
            self.busy_seconds += time.perf_counter() - started
            self.batches += 1
            self.outcomes += n
            self._pending -= n
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    self.failures += 1
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
            for listener in self._listeners:
                try:
                    listener()
                except Exception:
                    log.exception("writer listener failed")

    async def _commit(
        self, batch: list[tuple[Sequence[w.Write], asyncio.Future[list[w.Assigned]]]]
    ) -> list[list[w.Assigned] | BaseException]:
        store = self._store
        try:
            return list(await store.aapply_batch([writes for writes, _ in batch]))
        except StoreUnavailable as exc:
            return [exc] * len(batch)
        except Exception as exc:
            if len(batch) == 1:
                log.error("store write failed: %s", exc)
                return [exc]
        out: list[list[w.Assigned] | BaseException] = []
        for writes, _ in batch:
            try:
                out.append((await store.aapply_batch([writes]))[0])
            except Exception as exc:
                if not isinstance(exc, StoreUnavailable):
                    log.error("store write failed: %s", exc)
                out.append(exc)
        return out


# ==================================================================== reads (on the pg loop)

#: an asyncpg connection (asyncpg ships no type hints)
Conn: TypeAlias = Any


def _att(text: str | None) -> AttachmentRow | None:
    if text is None:
        return None
    return attachment_from_wire(orjson.loads(text))


def _att_cols(att: AttachmentRow | None) -> tuple[str | None, str | None]:
    if att is None:
        return None, None
    return orjson.dumps(att).decode(), att["id"]


def _msg(scope: str, row: Any) -> StoredMessage:
    return StoredMessage(
        scope,
        row["seq"],
        row["ts"],
        row["sender"],
        row["text"],
        row["edited"],
        row["deleted"],
        row["client_id"],
        attachment=_att(row["attachment"]),
    )


def _dm(row: Any) -> StoredMessage:
    return StoredMessage(
        row["conv"],
        row["seq"],
        row["ts"],
        row["sender"],
        row["text"],
        row["edited"],
        row["deleted"],
        row["client_id"],
        row["recipient"],
        _att(row["attachment"]),
    )


_MSG_COLS = "seq, ts, sender, text, edited, deleted, client_id, attachment"


def _page(
    table: str, scope_col: str, scope: object, before: int | None, after: int | None, limit: int
) -> tuple[str, list[Any], bool]:
    """The page query for the bounds given (one statement per combination, each prepared once
    per connection), its arguments, and whether it reads the newest messages (then reversed)."""
    args: list[Any] = [scope, limit]
    where = f"{scope_col} = $1"
    if before is not None:
        args.append(before)
        where += f" AND seq < ${len(args)}"
    if after is not None:
        args.append(after)
        where += f" AND seq > ${len(args)}"
    newest = before is not None or after is None
    order = "DESC" if newest else "ASC"
    extra = ", conv, recipient" if table == "dm_messages" else ""
    sql = f"SELECT {_MSG_COLS}{extra} FROM {table} WHERE {where} ORDER BY seq {order} LIMIT $2"
    return sql, args, newest


async def _room_messages(
    c: Conn, room: str, before: int | None, after: int | None, limit: int
) -> list[StoredMessage]:
    found = await c.fetchrow("SELECT id, name FROM rooms WHERE key = $1", room_key(room))
    if found is None or limit <= 0:
        return []
    sql, args, newest = _page("room_messages", "room_id", found["id"], before, after, limit)
    rows = await c.fetch(sql, *args)
    if newest:
        rows.reverse()
    name = found["name"]
    return [_msg(name, r) for r in rows]


async def _dm_messages(
    c: Conn, conv: str, before: int | None, after: int | None, limit: int
) -> list[StoredMessage]:
    if limit <= 0:
        return []
    sql, args, newest = _page("dm_messages", "conv", conv, before, after, limit)
    rows = await c.fetch(sql, *args)
    if newest:
        rows.reverse()
    return [_dm(r) for r in rows]


async def _messages_since(
    c: Conn, rooms: Sequence[str], ts: float, limit: int
) -> list[StoredMessage]:
    keys = sorted({room_key(r) for r in rooms})
    if not keys or limit <= 0:
        return []
    rows = await c.fetch(
        "SELECT r.name, m.seq, m.ts, m.sender, m.text, m.edited, m.deleted, m.client_id,"
        " m.attachment FROM room_messages m JOIN rooms r ON r.id = m.room_id"
        " WHERE r.key = ANY($1::text[]) AND m.ts >= $2"
        " ORDER BY m.ts, r.key, m.seq LIMIT $3",
        keys,
        ts,
        limit,
    )
    return [_msg(r["name"], r) for r in rows]


async def _audit_log(c: Conn, limit: int) -> list[AuditEntry]:
    rows = await c.fetch(
        "SELECT ts, actor, action, target, reason FROM audit ORDER BY id DESC LIMIT $1",
        max(0, limit),
    )
    return [AuditEntry(r["ts"], r["actor"], r["action"], r["target"], r["reason"]) for r in rows]


async def _broadcasts(c: Conn, after: int, limit: int) -> list[BroadcastRecord]:
    rows = await c.fetch(
        "SELECT seq, ts, sender, text FROM broadcasts WHERE seq > $1 ORDER BY seq LIMIT $2",
        after,
        max(0, limit),
    )
    return [BroadcastRecord(r["seq"], r["ts"], r["sender"], r["text"]) for r in rows]


async def _heads(c: Conn, convs: Sequence[str]) -> Heads:
    rooms = {r["name"]: r["last_seq"] for r in await c.fetch("SELECT name, last_seq FROM rooms")}
    dms: dict[str, int] = {}
    if convs:
        dms = {
            r["conv"]: r["last_seq"]
            for r in await c.fetch(
                "SELECT conv, last_seq FROM dm_convs WHERE conv = ANY($1::text[])", list(convs)
            )
        }
    value = await c.fetchval("SELECT value FROM counters WHERE name = 'broadcast'")
    return Heads(rooms, dms, int(value or 0))


async def _load(
    c: Conn,
    recent: int,
    audit: int,
    client_ids: int,
    client_ids_since: float,
    tokens_valid_at: float = 0.0,
) -> StoreSnapshot:
    async with c.transaction(isolation="repeatable_read", readonly=True):
        users = [
            UserRecord(
                r["name"], r["password_hash"], _ROLES[r["role"]], r["created"], r["last_login"]
            )
            for r in await c.fetch(
                "SELECT name, password_hash, role, created, last_login FROM users"
            )
        ]
        room_rows = await c.fetch(
            "SELECT id, name, created, created_by, last_seq FROM rooms ORDER BY created, key"
        )
        rooms = [RoomRecord(r["name"], r["created"], r["created_by"]) for r in room_rows]
        memberships = [
            MembershipRecord(r["user_name"], r["name"])
            for r in await c.fetch(
                "SELECT m.user_name, r.name FROM memberships m JOIN rooms r ON r.id = m.room_id"
            )
        ]
        bans = [
            BanRecord(r["user_name"], r["until"], r["reason"], r["by_name"], r["ts"])
            for r in await c.fetch("SELECT user_name, until, reason, by_name, ts FROM bans")
        ]
        blocks = [
            BlockRecord(r["blocker"], r["blocked"])
            for r in await c.fetch("SELECT blocker, blocked FROM blocks")
        ]
        cursors = [
            DmCursorRecord(r["user_name"], r["conv"], r["seq"])
            for r in await c.fetch("SELECT user_name, conv, seq FROM dm_cursors")
        ]
        room_last = {r["name"]: int(r["last_seq"]) for r in room_rows if r["last_seq"] > 0}
        dm_last = {
            r["conv"]: int(r["last_seq"])
            for r in await c.fetch("SELECT conv, last_seq FROM dm_convs WHERE last_seq > 0")
        }
        windows: dict[str, list[StoredMessage]] = {}
        if recent > 0:
            for r in await c.fetch(
                "SELECT r.name, m.seq, m.ts, m.sender, m.text, m.edited, m.deleted, m.client_id,"
                " m.attachment FROM rooms r CROSS JOIN LATERAL ("
                "   SELECT * FROM room_messages x WHERE x.room_id = r.id"
                "   ORDER BY x.seq DESC LIMIT $1) m"
                " ORDER BY r.id, m.seq",
                recent,
            ):
                windows.setdefault(r["name"], []).append(_msg(r["name"], r))
        entries = await _audit_log(c, audit)
        sent: list[StoredMessage] = []
        if client_ids > 0:
            sent = [
                _msg(r["name"], r)
                for r in await c.fetch(
                    "SELECT r.name, m.seq, m.ts, m.sender, m.text, m.edited, m.deleted,"
                    " m.client_id, m.attachment FROM room_messages m"
                    " JOIN rooms r ON r.id = m.room_id"
                    " WHERE m.ts >= $1 AND m.client_id IS NOT NULL ORDER BY m.ts DESC LIMIT $2",
                    client_ids_since,
                    client_ids,
                )
            ]
            sent += [
                _dm(r)
                for r in await c.fetch(
                    f"SELECT conv, recipient, {_MSG_COLS} FROM dm_messages"
                    " WHERE ts >= $1 AND client_id IS NOT NULL ORDER BY ts DESC LIMIT $2",
                    client_ids_since,
                    client_ids,
                )
            ]
            sent.sort(key=lambda m: m.ts, reverse=True)
            sent = sent[:client_ids]
        markers = [
            ReadMarkerRecord(r["user_name"], r["seq"], room=r["name"])
            for r in await c.fetch(
                "SELECT m.user_name, r.name, m.seq FROM room_read_markers m"
                " JOIN rooms r ON r.id = m.room_id"
            )
        ] + [
            ReadMarkerRecord(r["user_name"], r["seq"], conv=r["conv"])
            for r in await c.fetch("SELECT user_name, conv, seq FROM dm_read_markers")
        ]
        last_broadcast = await c.fetchval("SELECT value FROM counters WHERE name = 'broadcast'")
        broadcast_cursors = {
            r["user_name"]: int(r["seq"])
            for r in await c.fetch("SELECT user_name, seq FROM broadcast_cursors")
        }
        tokens = [
            SessionTokenRecord(r["token_hash"], r["user_name"], r["expires"])
            for r in await c.fetch(
                "SELECT token_hash, user_name, expires FROM session_tokens WHERE expires > $1",
                tokens_valid_at,
            )
        ]
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
        broadcast_last_seq=int(last_broadcast or 0),
        broadcast_cursors=broadcast_cursors,
        session_tokens=tokens,
    )


# ==================================================================== writes (on the pg loop)


class _Tx:
    """One transaction's view of the counter rows it has locked, and the messages waiting to
    be inserted (consecutive appends are inserted with one statement)."""

    __slots__ = (
        "broadcast",
        "c",
        "convs",
        "cursor_rows",
        "dm_rows",
        "late",
        "room_rows",
        "rooms",
        "seen",
    )

    def __init__(self, c: Conn) -> None:
        self.c = c
        #: room key -> [room id, last seq, last seq when locked]
        self.rooms: dict[str, list[int]] = {}
        #: conversation -> [last seq, last seq when locked]
        self.convs: dict[str, list[int]] = {}
        #: [last seq, when locked] of the broadcasts (None until locked)
        self.broadcast: list[int] | None = None
        #: (kind, scope, sender key, client id) -> the stored message's (seq, ts)
        self.seen: dict[tuple[str, object, str, str], tuple[int, float]] = {}
        self.room_rows: list[tuple[Any, ...]] = []
        self.dm_rows: list[tuple[Any, ...]] = []
        self.cursor_rows: list[tuple[str, str, str, int]] = []
        #: scopes locked after `lock` (created or renamed in this transaction): their client
        #: ids are looked up one by one
        self.late: set[object] = set()

    async def lock(self, batches: Sequence[Sequence[w.Write]]) -> None:
        """Lock the counter rows of every append of the batch (rooms, conversations, then the
        broadcasts; each in key order) and look up which of its client ids are stored."""
        room_keys: set[str] = set()
        convs: set[str] = set()
        broadcast = False
        for writes in batches:
            for x in writes:
                if isinstance(x, w.AppendRoomMessage):
                    room_keys.add(room_key(x.room))
                elif isinstance(x, w.AppendDm):
                    convs.add(x.conv)
                elif isinstance(x, w.AppendBroadcast):
                    broadcast = True
        c = self.c
        if room_keys:
            for r in await c.fetch(
                "SELECT id, key, last_seq FROM rooms WHERE key = ANY($1::text[])"
                " ORDER BY key FOR UPDATE",
                sorted(room_keys),
            ):
                self.rooms[r["key"]] = [r["id"], r["last_seq"], r["last_seq"]]
        if convs:
            ordered = sorted(convs)
            await c.execute(
                "INSERT INTO dm_convs (conv) SELECT x FROM unnest($1::text[]) AS x ORDER BY x"
                " ON CONFLICT DO NOTHING",
                ordered,
            )
            for r in await c.fetch(
                "SELECT conv, last_seq FROM dm_convs WHERE conv = ANY($1::text[])"
                " ORDER BY conv FOR UPDATE",
                ordered,
            ):
                self.convs[r["conv"]] = [r["last_seq"], r["last_seq"]]
        if broadcast:
            value = await c.fetchval(
                "SELECT value FROM counters WHERE name = 'broadcast' FOR UPDATE"
            )
            self.broadcast = [int(value), int(value)]
        await self._stored_client_ids(batches)

    async def _stored_client_ids(self, batches: Sequence[Sequence[w.Write]]) -> None:
        ids: list[int] = []
        senders: list[str] = []
        cids: list[str] = []
        dconvs: list[str] = []
        dsenders: list[str] = []
        dcids: list[str] = []
        for writes in batches:
            for x in writes:
                if type(x) is w.AppendRoomMessage and x.seq == w.ASSIGN and x.client_id:
                    room = self.rooms.get(room_key(x.room))
                    if room is not None:
                        ids.append(room[0])
                        senders.append(user_key(x.sender))
                        cids.append(x.client_id)
                elif type(x) is w.AppendDm and x.seq == w.ASSIGN and x.client_id:
                    dconvs.append(x.conv)
                    dsenders.append(user_key(x.sender))
                    dcids.append(x.client_id)
        if ids:
            for r in await self.c.fetch(
                "SELECT m.room_id, m.sender_key, m.client_id, m.seq, m.ts FROM room_messages m"
                " JOIN unnest($1::bigint[], $2::text[], $3::text[]) AS k(room_id, s, cid)"
                " ON m.room_id = k.room_id AND m.sender_key = k.s AND m.client_id = k.cid",
                ids,
                senders,
                cids,
            ):
                key = ("room", r["room_id"], r["sender_key"], r["client_id"])
                self.seen[key] = (r["seq"], r["ts"])
        if dconvs:
            for r in await self.c.fetch(
                "SELECT m.conv, m.sender_key, m.client_id, m.seq, m.ts FROM dm_messages m"
                " JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(conv, s, cid)"
                " ON m.conv = k.conv AND m.sender_key = k.s AND m.client_id = k.cid",
                dconvs,
                dsenders,
                dcids,
            ):
                self.seen[("dm", r["conv"], r["sender_key"], r["client_id"])] = (
                    r["seq"],
                    r["ts"],
                )

    async def room(self, key: str) -> list[int]:
        """The locked counter of room key `key` (locked now if it was not: a room created or
        renamed within this transaction)."""
        room = self.rooms.get(key)
        if room is None:
            await self.flush()
            r = await self.c.fetchrow(
                "SELECT id, last_seq FROM rooms WHERE key = $1 FOR UPDATE", key
            )
            if r is None:
                raise ValueError(f"unknown room {key!r}")
            room = self.rooms[key] = [r["id"], r["last_seq"], r["last_seq"]]
            self.late.add(r["id"])
        return room

    async def stored(
        self, kind: str, scope: object, sender: str, cid: str
    ) -> tuple[int, float] | None:
        """The (seq, ts) of the message of `sender` with client id `cid` in the scope, if any."""
        ident = (kind, scope, sender, cid)
        found = self.seen.get(ident)
        if found is None and scope in self.late:
            await self.flush()
            table, col = ("room_messages", "room_id") if kind == "room" else ("dm_messages", "conv")
            r = await self.c.fetchrow(
                f"SELECT seq, ts FROM {table} WHERE {col} = $1 AND sender_key = $2"
                " AND client_id = $3",
                scope,
                sender,
                cid,
            )
            if r is not None:
                found = self.seen[ident] = (r["seq"], r["ts"])
        return found

    async def conv(self, conv: str) -> list[int]:
        found = self.convs.get(conv)
        if found is None:
            await self.flush()
            await self.c.execute(
                "INSERT INTO dm_convs (conv) VALUES ($1) ON CONFLICT DO NOTHING", conv
            )
            value = await self.c.fetchval(
                "SELECT last_seq FROM dm_convs WHERE conv = $1 FOR UPDATE", conv
            )
            found = self.convs[conv] = [int(value), int(value)]
            self.late.add(conv)
        return found

    async def flush(self) -> None:
        """Insert the messages waiting (before any other write, and at the end)."""
        c = self.c
        if self.room_rows:
            rows, self.room_rows = self.room_rows, []
            await c.execute(
                "INSERT INTO room_messages (room_id, seq, ts, sender, sender_key, text, client_id,"
                " attachment, file_id) SELECT * FROM unnest($1::bigint[], $2::bigint[],"
                " $3::float8[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],"
                " $9::text[])",
                *_columns(rows, 9),
            )
        if self.dm_rows:
            rows2, self.dm_rows = self.dm_rows, []
            await c.execute(
                "INSERT INTO dm_messages (conv, seq, ts, sender, sender_key, recipient, text,"
                " client_id, attachment, file_id) SELECT * FROM unnest($1::text[], $2::bigint[],"
                " $3::float8[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],"
                " $9::text[], $10::text[])",
                *_columns(rows2, 10),
            )
        if self.cursor_rows:
            highest: dict[tuple[str, str], tuple[str, str, str, int]] = {}
            for row in self.cursor_rows:  # one row per cursor in one statement
                have = highest.get((row[0], row[2]))
                if have is None or row[3] > have[3]:
                    highest[(row[0], row[2])] = row
            rows3, self.cursor_rows = list(highest.values()), []
            await c.execute(
                "INSERT INTO dm_cursors (user_key, user_name, conv, seq)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])"
                " ON CONFLICT (user_key, conv)"
                " DO UPDATE SET seq = GREATEST(dm_cursors.seq, excluded.seq)",
                *_columns(rows3, 4),
            )

    async def finish(self) -> None:
        """Insert what waits and move the counters that moved."""
        await self.flush()
        c = self.c
        moved = [(v[0], v[1]) for v in self.rooms.values() if v[1] != v[2]]
        if moved:
            await c.execute(
                "UPDATE rooms SET last_seq = u.seq FROM unnest($1::bigint[], $2::bigint[])"
                " AS u(id, seq) WHERE rooms.id = u.id",
                *_columns(moved, 2),
            )
        cmoved = [(k, v[0]) for k, v in self.convs.items() if v[0] != v[1]]
        if cmoved:
            await c.execute(
                "UPDATE dm_convs SET last_seq = u.seq FROM unnest($1::text[], $2::bigint[])"
                " AS u(conv, seq) WHERE dm_convs.conv = u.conv",
                *_columns(cmoved, 2),
            )
        b = self.broadcast
        if b is not None and b[0] != b[1]:
            await c.execute("UPDATE counters SET value = $1 WHERE name = 'broadcast'", b[0])


def _columns(rows: Sequence[tuple[Any, ...]], n: int) -> list[list[Any]]:
    cols: list[list[Any]] = [[] for _ in range(n)]
    for row in rows:
        for i in range(n):
            cols[i].append(row[i])
    return cols


def _only_room_messages(batches: Sequence[Sequence[w.Write]]) -> bool:
    return all(
        type(x) is w.AppendRoomMessage and x.seq == w.ASSIGN and x.attachment is None
        for writes in batches
        for x in writes
    )


async def _append_room_messages(
    c: Conn, batches: Sequence[Sequence[w.Write]]
) -> list[list[w.Assigned]]:
    """A batch of store-assigned room messages only: one call of the schema's function (one
    round trip, its own transaction)."""
    flat = [x for writes in batches for x in writes if isinstance(x, w.AppendRoomMessage)]
    if not flat:
        return [[] for _ in batches]
    rows = await c.fetch(
        "SELECT o_seq, o_ts, o_duplicate FROM parlour_append_room_messages("
        "$1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[])",
        [room_key(x.room) for x in flat],
        [x.sender for x in flat],
        [user_key(x.sender) for x in flat],
        [x.text for x in flat],
        [x.ts for x in flat],
        [x.client_id for x in flat],
    )
    answers = iter(w.Assigned(r["o_seq"], r["o_ts"], r["o_duplicate"]) for r in rows)
    return [[next(answers) for _ in writes] for writes in batches]


async def _apply_batch(c: Conn, batches: Sequence[Sequence[w.Write]]) -> list[list[w.Assigned]]:
    if batches and _only_room_messages(batches):
        return await _append_room_messages(c, batches)
    out: list[list[w.Assigned]] = []
    async with c.transaction():
        tx = _Tx(c)
        await tx.lock(batches)
        for writes in batches:
            assigned: list[w.Assigned] = []
            for x in writes:
                t = type(x)
                if t is w.AppendRoomMessage:
                    result = await _append_room(tx, x)  # type: ignore[arg-type]
                    if result is not None:
                        assigned.append(result)
                elif t is w.AppendDm:
                    result = await _append_dm(tx, x)  # type: ignore[arg-type]
                    if result is not None:
                        assigned.append(result)
                elif t is w.AppendBroadcast:
                    result = await _append_broadcast(tx, x)  # type: ignore[arg-type]
                    if result is not None:
                        assigned.append(result)
                else:
                    await tx.flush()
                    await _APPLY[t](tx, x)
            out.append(assigned)
        await tx.finish()
    return out


async def _append_room(tx: _Tx, x: w.AppendRoomMessage) -> w.Assigned | None:
    key = room_key(x.room)
    room = await tx.room(key)
    sender = user_key(x.sender)
    if x.seq != w.ASSIGN:  # a sequence chosen by a single node's core
        if x.seq <= room[1]:
            # may be a hole below the last (tools, imports): the primary key decides
            await tx.flush()
        room[1] = max(room[1], x.seq)
        tx.room_rows.append(
            (room[0], x.seq, x.ts, x.sender, sender, x.text, x.client_id, *_att_cols(x.attachment))
        )
        return None
    if x.client_id:
        stored = await tx.stored("room", room[0], sender, x.client_id)
        if stored is not None:
            return w.Assigned(stored[0], stored[1], duplicate=True)
    seq = room[1] = room[1] + 1
    if x.client_id:
        tx.seen[("room", room[0], sender, x.client_id)] = (seq, x.ts)
    tx.room_rows.append(
        (room[0], seq, x.ts, x.sender, sender, x.text, x.client_id, *_att_cols(x.attachment))
    )
    return w.Assigned(seq, x.ts)


async def _append_dm(tx: _Tx, x: w.AppendDm) -> w.Assigned | None:
    counter = await tx.conv(x.conv)
    sender = user_key(x.sender)
    if x.seq != w.ASSIGN:
        if x.seq <= counter[0]:
            await tx.flush()
        counter[0] = max(counter[0], x.seq)
        seq = x.seq
        result = None
    else:
        if x.client_id:
            stored = await tx.stored("dm", x.conv, sender, x.client_id)
            if stored is not None:
                return w.Assigned(stored[0], stored[1], duplicate=True)
        seq = counter[0] = counter[0] + 1
        if x.client_id:
            tx.seen[("dm", x.conv, sender, x.client_id)] = (seq, x.ts)
        result = w.Assigned(seq, x.ts)
    tx.dm_rows.append(
        (
            x.conv,
            seq,
            x.ts,
            x.sender,
            sender,
            x.recipient,
            x.text,
            x.client_id,
            *_att_cols(x.attachment),
        )
    )
    if x.delivered:
        tx.cursor_rows.append((user_key(x.recipient), x.recipient, x.conv, seq))
    return result


async def _append_broadcast(tx: _Tx, x: w.AppendBroadcast) -> w.Assigned | None:
    await tx.flush()
    if tx.broadcast is None:
        value = await tx.c.fetchval(
            "SELECT value FROM counters WHERE name = 'broadcast' FOR UPDATE"
        )
        tx.broadcast = [int(value), int(value)]
    counter = tx.broadcast
    if x.seq != w.ASSIGN:
        seq = x.seq
        counter[0] = max(counter[0], seq)
        result = None
    else:
        seq = counter[0] = counter[0] + 1
        result = w.Assigned(seq, x.ts)
    await tx.c.execute(
        "INSERT INTO broadcasts (seq, ts, sender, text) VALUES ($1, $2, $3, $4)",
        seq,
        x.ts,
        x.sender,
        x.text,
    )
    return result


# -------------------------------------------------------------------- one function per write


async def _create_user(tx: _Tx, x: w.CreateUser) -> None:
    await tx.c.execute(
        "INSERT INTO users (key, name, password_hash, role, created) VALUES ($1, $2, $3, $4, $5)",
        user_key(x.name),
        x.name,
        x.password_hash,
        x.role,
        x.ts,
    )


async def _set_password(tx: _Tx, x: w.SetPassword) -> None:
    await tx.c.execute(
        "UPDATE users SET password_hash = $1 WHERE key = $2", x.password_hash, user_key(x.user)
    )


async def _record_login(tx: _Tx, x: w.RecordLogin) -> None:
    await tx.c.execute("UPDATE users SET last_login = $1 WHERE key = $2", x.ts, user_key(x.user))


async def _create_room(tx: _Tx, x: w.CreateRoom) -> None:
    await tx.c.execute(
        "INSERT INTO rooms (key, name, created, created_by) VALUES ($1, $2, $3, $4)",
        room_key(x.name),
        x.name,
        x.ts,
        x.by,
    )


async def _rename_room(tx: _Tx, x: w.RenameRoom) -> None:
    old, new = room_key(x.old), room_key(x.new)
    await tx.c.execute("UPDATE rooms SET key = $1, name = $2 WHERE key = $3", new, x.new, old)
    locked = tx.rooms.pop(old, None)
    if locked is not None:
        tx.rooms[new] = locked


async def _delete_room(tx: _Tx, x: w.DeleteRoom) -> None:
    key = room_key(x.name)
    await tx.c.execute("DELETE FROM rooms WHERE key = $1", key)  # cascades
    tx.rooms.pop(key, None)


async def _set_membership(tx: _Tx, x: w.SetMembership) -> None:
    if x.member:
        await tx.c.execute(
            "INSERT INTO memberships (user_key, user_name, room_id)"
            " SELECT $1, $2, id FROM rooms WHERE key = $3 ON CONFLICT DO NOTHING",
            user_key(x.user),
            x.user,
            room_key(x.room),
        )
    else:
        await tx.c.execute(
            "DELETE FROM memberships WHERE user_key = $1"
            " AND room_id = (SELECT id FROM rooms WHERE key = $2)",
            user_key(x.user),
            room_key(x.room),
        )


async def _edit_room_message(tx: _Tx, x: w.EditRoomMessage) -> None:
    await tx.c.execute(
        "UPDATE room_messages SET text = $1, edited = true"
        " WHERE room_id = (SELECT id FROM rooms WHERE key = $2) AND seq = $3 AND NOT deleted",
        x.text,
        room_key(x.room),
        x.seq,
    )


async def _delete_room_message(tx: _Tx, x: w.DeleteRoomMessage) -> None:
    await tx.c.execute(
        "UPDATE room_messages SET text = NULL, deleted = true, attachment = NULL"
        " WHERE room_id = (SELECT id FROM rooms WHERE key = $1) AND seq = $2",
        room_key(x.room),
        x.seq,
    )


async def _edit_dm(tx: _Tx, x: w.EditDm) -> None:
    await tx.c.execute(
        "UPDATE dm_messages SET text = $1, edited = true WHERE conv = $2 AND seq = $3"
        " AND NOT deleted",
        x.text,
        x.conv,
        x.seq,
    )


async def _delete_dm(tx: _Tx, x: w.DeleteDm) -> None:
    await tx.c.execute(
        "UPDATE dm_messages SET text = NULL, deleted = true, attachment = NULL"
        " WHERE conv = $1 AND seq = $2",
        x.conv,
        x.seq,
    )


async def _set_dm_cursor(tx: _Tx, x: w.SetDmCursor) -> None:
    await tx.c.execute(
        "INSERT INTO dm_cursors (user_key, user_name, conv, seq) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (user_key, conv)"
        " DO UPDATE SET seq = GREATEST(dm_cursors.seq, excluded.seq)",
        user_key(x.user),
        x.user,
        x.conv,
        x.seq,
    )


async def _add_ban(tx: _Tx, x: w.AddBan) -> None:
    await tx.c.execute(
        "INSERT INTO bans (user_key, user_name, until, reason, by_name, ts)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_key) DO UPDATE SET"
        " user_name = excluded.user_name, until = excluded.until, reason = excluded.reason,"
        " by_name = excluded.by_name, ts = excluded.ts",
        user_key(x.user),
        x.user,
        x.until,
        x.reason,
        x.by,
        x.ts,
    )


async def _remove_ban(tx: _Tx, x: w.RemoveBan) -> None:
    await tx.c.execute("DELETE FROM bans WHERE user_key = $1", user_key(x.user))


async def _add_block(tx: _Tx, x: w.AddBlock) -> None:
    await tx.c.execute(
        "INSERT INTO blocks (blocker_key, blocked_key, blocker, blocked)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        user_key(x.blocker),
        user_key(x.blocked),
        x.blocker,
        x.blocked,
    )


async def _remove_block(tx: _Tx, x: w.RemoveBlock) -> None:
    await tx.c.execute(
        "DELETE FROM blocks WHERE blocker_key = $1 AND blocked_key = $2",
        user_key(x.blocker),
        user_key(x.blocked),
    )


async def _audit(tx: _Tx, x: w.Audit) -> None:
    await tx.c.execute(
        "INSERT INTO audit (ts, actor, action, target, reason) VALUES ($1, $2, $3, $4, $5)",
        x.ts,
        x.actor,
        x.action,
        x.target,
        x.reason,
    )


async def _set_read_marker(tx: _Tx, x: w.SetReadMarker) -> None:
    if x.room is not None:
        await tx.c.execute(
            "INSERT INTO room_read_markers (user_key, user_name, room_id, seq)"
            " SELECT $1, $2, id, $3 FROM rooms WHERE key = $4"
            " ON CONFLICT (user_key, room_id)"
            " DO UPDATE SET seq = GREATEST(room_read_markers.seq, excluded.seq)",
            user_key(x.user),
            x.user,
            x.seq,
            room_key(x.room),
        )
    elif x.conv is not None:
        await tx.c.execute(
            "INSERT INTO dm_read_markers (user_key, user_name, conv, seq)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (user_key, conv)"
            " DO UPDATE SET seq = GREATEST(dm_read_markers.seq, excluded.seq)",
            user_key(x.user),
            x.user,
            x.conv,
            x.seq,
        )


async def _set_broadcast_cursor(tx: _Tx, x: w.SetBroadcastCursor) -> None:
    await tx.c.execute(
        "INSERT INTO broadcast_cursors (user_key, user_name, seq) VALUES ($1, $2, $3)"
        " ON CONFLICT (user_key)"
        " DO UPDATE SET seq = GREATEST(broadcast_cursors.seq, excluded.seq)",
        user_key(x.user),
        x.user,
        x.seq,
    )


async def _add_session_token(tx: _Tx, x: w.AddSessionToken) -> None:
    await tx.c.execute(
        "INSERT INTO session_tokens (token_hash, user_key, user_name, expires)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO UPDATE SET"
        " user_key = excluded.user_key, user_name = excluded.user_name,"
        " expires = excluded.expires",
        x.token_hash,
        user_key(x.user),
        x.user,
        x.expires,
    )


async def _revoke_session_tokens(tx: _Tx, x: w.RevokeSessionTokens) -> None:
    if x.token_hash is None:
        await tx.c.execute("DELETE FROM session_tokens WHERE user_key = $1", user_key(x.user))
    else:
        await tx.c.execute(
            "DELETE FROM session_tokens WHERE token_hash = $1 AND user_key = $2",
            x.token_hash,
            user_key(x.user),
        )


async def _create_upload(tx: _Tx, x: w.CreateUpload) -> None:
    await tx.c.execute(
        "INSERT INTO files (id, owner_key, owner_name, length, name, client_type, created)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        x.id,
        user_key(x.owner),
        x.owner,
        x.length,
        x.name,
        x.client_type,
        x.ts,
    )


async def _complete_upload(tx: _Tx, x: w.CompleteUpload) -> None:
    await tx.c.execute(
        "UPDATE files SET complete = true, sha256 = $1, type = $2, inline = $3, thumbnail = $4,"
        " completed = $5 WHERE id = $6",
        x.sha256,
        x.type,
        x.inline,
        x.thumbnail,
        x.ts,
        x.id,
    )


async def _remove_file(tx: _Tx, x: w.RemoveFile) -> None:
    await tx.c.execute("DELETE FROM files WHERE id = $1", x.id)


#: an upload with where it is attached (a room message or a DM with its id, if any)
_FILE_SELECT = (
    "SELECT f.id, f.owner_name, f.length, f.name, f.client_type, f.created, f.complete,"
    " f.sha256, f.type, f.inline, f.thumbnail, f.completed,"
    " r.key AS room_key, dm.conv AS conv, COALESCE(rm.seq, dm.seq) AS seq,"
    " COALESCE(rm.deleted, dm.deleted, false) AS deleted,"
    " COALESCE(rm.client_id, dm.client_id) AS client_id"
    " FROM files f"
    " LEFT JOIN room_messages rm ON rm.file_id = f.id"
    " LEFT JOIN rooms r ON r.id = rm.room_id"
    " LEFT JOIN dm_messages dm ON dm.file_id = f.id"
)


def _file_record(r: Any) -> FileRecord:
    return FileRecord(
        r["id"],
        r["owner_name"],
        r["length"],
        r["name"],
        r["client_type"],
        r["created"],
        r["complete"],
        r["sha256"],
        r["type"],
        r["inline"],
        r["thumbnail"],
        r["completed"],
        r["room_key"],
        r["conv"],
        r["seq"],
        r["deleted"],
        r["client_id"],
    )


async def _file(c: Conn, file_id: str) -> FileRecord | None:
    row = await c.fetchrow(_FILE_SELECT + " WHERE f.id = $1", file_id)
    return None if row is None else _file_record(row)


async def _file_usage(c: Conn, user: str) -> FileUsage:
    row = await c.fetchrow(
        "SELECT COALESCE(SUM(length), 0) AS b, COUNT(*) FILTER (WHERE NOT complete) AS u"
        " FROM files WHERE owner_key = $1",
        user_key(user),
    )
    return FileUsage(int(row["b"]), int(row["u"]))


async def _files_to_sweep(c: Conn, before: float, limit: int) -> list[FileRecord]:
    rows = await c.fetch(
        "SELECT * FROM (" + _FILE_SELECT + ") x WHERE (seq IS NOT NULL AND deleted)"
        " OR (seq IS NULL AND COALESCE(completed, created) < $1)"
        " ORDER BY COALESCE(completed, created) LIMIT $2",
        before,
        max(0, limit),
    )
    return [_file_record(r) for r in rows]


async def _blob_refs(c: Conn, sha256: str) -> int:
    value = await c.fetchval("SELECT COUNT(*) FROM files WHERE sha256 = $1 AND complete", sha256)
    return int(value or 0)


_APPLY: dict[type, Callable[[_Tx, Any], Awaitable[None]]] = {
    w.CreateUpload: _create_upload,
    w.CompleteUpload: _complete_upload,
    w.RemoveFile: _remove_file,
    w.AddSessionToken: _add_session_token,
    w.RevokeSessionTokens: _revoke_session_tokens,
    w.CreateUser: _create_user,
    w.SetPassword: _set_password,
    w.RecordLogin: _record_login,
    w.CreateRoom: _create_room,
    w.RenameRoom: _rename_room,
    w.DeleteRoom: _delete_room,
    w.SetMembership: _set_membership,
    w.EditRoomMessage: _edit_room_message,
    w.DeleteRoomMessage: _delete_room_message,
    w.EditDm: _edit_dm,
    w.DeleteDm: _delete_dm,
    w.SetDmCursor: _set_dm_cursor,
    w.AddBan: _add_ban,
    w.RemoveBan: _remove_ban,
    w.AddBlock: _add_block,
    w.RemoveBlock: _remove_block,
    w.Audit: _audit,
    w.SetReadMarker: _set_read_marker,
    w.SetBroadcastCursor: _set_broadcast_cursor,
}

_APPENDS = {w.AppendRoomMessage, w.AppendDm, w.AppendBroadcast}
_missing = set(w.Write.__args__) - set(_APPLY) - _APPENDS
if _missing:  # pragma: no cover - guards against a new write type without a handler
    raise TypeError(f"PostgresStore cannot apply {sorted(k.__name__ for k in _missing)}")
