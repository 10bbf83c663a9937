"""Persistent proxy state in SQLite: backends, settings, per-backend counters, event log.

The data plane loads backends/settings at start, saves counters periodically
(`save_snapshot`) so statistics and "last crashed" survive a restart, and records
backend state changes (`record_event`). The API is synchronous and thread-safe: every
call takes one lock and runs in one short transaction, so the data plane may call it
from a worker thread (`asyncio.to_thread`). WAL mode keeps readers and the writer apart.

The schema is versioned with SQLite's `user_version`; `MIGRATIONS[i]` upgrades version
``i`` to ``i + 1``. A database written by a newer Parlour is refused with `StoreError`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, cast

from parlour.proxy.control import (
    BackendSnapshot,
    BackendSpec,
    BackendState,
    ProxySettings,
    TotalsSnapshot,
)
from parlour.proxy.stats_merge import add_backend_counters

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "StatsStore",
    "StoreError",
    "StoredEvent",
]

_STATES: Final[frozenset[str]] = frozenset({"up", "down", "disabled", "draining", "checking"})
_MAX_REASON: Final = 500
_MAX_KIND: Final = 40
# how long an open waits for other connections' locks (SQLite's busy timeout, and the
# bound on retrying the switch to WAL, which SQLite does not wait for: see _enable_wal)
_BUSY_TIMEOUT_S: Final = 5.0
_WAL_RETRY_MAX_DELAY_S: Final = 0.05

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 0 -> 1: backends, settings, per-backend counters.
    (
        """CREATE TABLE backends (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            weight INTEGER NOT NULL,
            max_conns INTEGER NOT NULL,
            state TEXT NOT NULL,
            position INTEGER NOT NULL
        )""",
        """CREATE TABLE settings (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            data TEXT NOT NULL,
            saved_at REAL NOT NULL
        )""",
        """CREATE TABLE backend_stats (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            weight INTEGER NOT NULL,
            max_conns INTEGER NOT NULL,
            state TEXT NOT NULL,
            state_since REAL NOT NULL,
            total_conns INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            bytes_in INTEGER NOT NULL,
            bytes_out INTEGER NOT NULL,
            connect_errors INTEGER NOT NULL,
            response_errors INTEGER NOT NULL,
            retries INTEGER NOT NULL,
            total_up_s REAL NOT NULL,
            last_connected REAL,
            last_crashed REAL,
            last_crash_reason TEXT,
            saved_at REAL NOT NULL
        )""",
    ),
    # 1 -> 2: bounded event log, latency quantiles kept with the counters.
    (
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            backend_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX events_backend ON events (backend_id, seq)",
        "ALTER TABLE backend_stats ADD COLUMN p50_ms REAL",
        "ALTER TABLE backend_stats ADD COLUMN p99_ms REAL",
    ),
    # 2 -> 3: the latest counters of workers 1..N-1 (per run), summed by worker 0.
    (
        """CREATE TABLE worker_totals (
            run TEXT NOT NULL,
            worker INTEGER NOT NULL,
            active_conns INTEGER NOT NULL,
            total_conns INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            started_at REAL NOT NULL,
            saved_at REAL NOT NULL,
            PRIMARY KEY (run, worker)
        )""",
        """CREATE TABLE worker_stats (
            run TEXT NOT NULL,
            worker INTEGER NOT NULL,
            backend_id TEXT NOT NULL,
            active_conns INTEGER NOT NULL,
            total_conns INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            bytes_in INTEGER NOT NULL,
            bytes_out INTEGER NOT NULL,
            connect_errors INTEGER NOT NULL,
            response_errors INTEGER NOT NULL,
            retries INTEGER NOT NULL,
            queued INTEGER NOT NULL,
            last_connected REAL,
            p50_ms REAL,
            p99_ms REAL,
            PRIMARY KEY (run, worker, backend_id)
        )""",
    ),
    # 3 -> 4: each worker's bytes of this run, removed backends included (the totals count
    # this run only and never go down; the per-backend rows do not have that).
    (
        "ALTER TABLE worker_totals ADD COLUMN bytes_in INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE worker_totals ADD COLUMN bytes_out INTEGER NOT NULL DEFAULT 0",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


class StoreError(Exception):
    """The database cannot be used (newer schema, corrupt file ...)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    backend_id: str
    kind: str
    reason: str
    at: float


def _state(value: object) -> BackendState:
    return cast(BackendState, value) if value in _STATES else "up"


class StatsStore:
    """SQLite-backed persistence for the proxy. Call `close()` when done."""

    def __init__(self, path: str | os.PathLike[str], *, max_events: int = 10_000) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._max_events = max_events
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                os.fspath(path),
                check_same_thread=False,
                isolation_level=None,
                timeout=_BUSY_TIMEOUT_S,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {os.fspath(path)!r}: {exc}") from exc
        try:
            self._enable_wal()
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"cannot use {os.fspath(path)!r}: {exc}") from exc
        except StoreError:
            self._db.close()
            raise

    # -- schema ---------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _enable_wal(self) -> None:
        """Switch the database to WAL, waiting (bounded) for sibling processes.

        On a database still in rollback mode (a fresh file) the switch reads the header
        and then upgrades that read transaction to a write one. When another connection
        holds the write lock meanwhile (a sibling worker switching or migrating the same
        fresh file), SQLite answers SQLITE_BUSY at once without calling the busy
        handler, since a reader waiting for the writer could deadlock it. So retry here,
        without holding any lock, until the busy timeout; once one connection has
        switched, the others find the file already in WAL mode and need no write.
        """
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        delay = 0.001
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, _WAL_RETRY_MAX_DELAY_S)

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database schema version {version} is newer than this Parlour "
                f"understands ({SCHEMA_VERSION}); upgrade Parlour"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self._db.execute("BEGIN IMMEDIATE")
            # another process (a sibling worker) may have migrated while we waited for
            # the write lock: read the version again inside the transaction
            current = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if current >= target:
                self._db.execute("COMMIT")
                continue
            try:
                for statement in MIGRATIONS[target - 1]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target}")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _write(self, statements: Sequence[tuple[str, Sequence[object]]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- backends -------------------------------------------------------------------------
    def load_backends(self) -> list[tuple[BackendSpec, str]]:
        """The saved backend set in insertion order, with each operator state."""
        with self._lock:
            rows = self._db.execute(
                "SELECT host, port, weight, max_conns, state FROM backends ORDER BY position"
            ).fetchall()
        return [
            (BackendSpec(str(h), int(p), int(w), int(m)), str(_state(s))) for h, p, w, m, s in rows
        ]

    def save_backends(self, items: Iterable[tuple[BackendSpec, str]]) -> None:
        """Replace the saved backend set."""
        statements: list[tuple[str, Sequence[object]]] = [("DELETE FROM backends", ())]
        for position, (spec, state) in enumerate(items):
            statements.append(
                (
                    "INSERT OR REPLACE INTO backends "
                    "(id, host, port, weight, max_conns, state, position) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        spec.id,
                        spec.host,
                        spec.port,
                        spec.weight,
                        spec.max_conns,
                        _state(state),
                        position,
                    ),
                )
            )
        self._write(statements)

    # -- settings -------------------------------------------------------------------------
    def load_settings(self) -> dict[str, object] | None:
        """The saved settings as a plain dict (unknown keys kept), or None if never saved."""
        with self._lock:
            row = self._db.execute("SELECT data FROM settings WHERE id = 1").fetchone()
        if row is None:
            return None
        try:
            data = json.loads(row[0])
        except ValueError as exc:
            raise StoreError(f"saved settings are not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise StoreError("saved settings are not a JSON object")
        return cast(dict[str, object], data)

    def save_settings(self, settings: ProxySettings) -> None:
        data = json.dumps(dataclasses.asdict(settings), sort_keys=True)
        self._write(
            [
                (
                    "INSERT INTO settings (id, data, saved_at) VALUES (1, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET data = excluded.data, "
                    "saved_at = excluded.saved_at",
                    (data, time.time()),
                )
            ]
        )

    # -- counters -------------------------------------------------------------------------
    def save_snapshot(self, snaps: Iterable[BackendSnapshot]) -> None:
        """Upsert the counters of each backend given; others keep their saved counters."""
        now = time.time()
        statements: list[tuple[str, Sequence[object]]] = []
        for s in snaps:
            statements.append(
                (
                    "INSERT OR REPLACE INTO backend_stats (id, host, port, weight, max_conns, "
                    "state, state_since, total_conns, requests, bytes_in, bytes_out, "
                    "connect_errors, response_errors, retries, total_up_s, last_connected, "
                    "last_crashed, last_crash_reason, saved_at, p50_ms, p99_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        s.id,
                        s.host,
                        s.port,
                        s.weight,
                        s.max_conns,
                        _state(s.state),
                        s.state_since,
                        s.total_conns,
                        s.requests,
                        s.bytes_in,
                        s.bytes_out,
                        s.connect_errors,
                        s.response_errors,
                        s.retries,
                        s.total_up_s,
                        s.last_connected,
                        s.last_crashed,
                        None if s.last_crash_reason is None else s.last_crash_reason[:_MAX_REASON],
                        now,
                        s.p50_ms,
                        s.p99_ms,
                    ),
                )
            )
        if statements:
            self._write(statements)

    def load_snapshots(self) -> dict[str, BackendSnapshot]:
        """Saved counters by backend id; active connections and queue restart at zero."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, host, port, weight, max_conns, state, state_since, total_conns, "
                "requests, bytes_in, bytes_out, connect_errors, response_errors, retries, "
                "total_up_s, last_connected, last_crashed, last_crash_reason, p50_ms, p99_ms "
                "FROM backend_stats ORDER BY id"
            ).fetchall()
        result: dict[str, BackendSnapshot] = {}
        for r in rows:
            result[str(r[0])] = BackendSnapshot(
                id=str(r[0]),
                host=str(r[1]),
                port=int(r[2]),
                weight=int(r[3]),
                max_conns=int(r[4]),
                state=_state(r[5]),
                state_since=float(r[6]),
                total_conns=int(r[7]),
                requests=int(r[8]),
                bytes_in=int(r[9]),
                bytes_out=int(r[10]),
                connect_errors=int(r[11]),
                response_errors=int(r[12]),
                retries=int(r[13]),
                total_up_s=float(r[14]),
                last_connected=None if r[15] is None else float(r[15]),
                last_crashed=None if r[16] is None else float(r[16]),
                last_crash_reason=None if r[17] is None else str(r[17]),
                p50_ms=None if r[18] is None else float(r[18]),
                p99_ms=None if r[19] is None else float(r[19]),
            )
        return result

    def forget_snapshot(self, backend_id: str) -> None:
        """Drop the saved counters of one backend (e.g. removed for good)."""
        self._write([("DELETE FROM backend_stats WHERE id = ?", (backend_id,))])

    # -- other workers' counters ----------------------------------------------------------
    _WORKER_COLS: Final = (
        "backend_id, active_conns, total_conns, requests, bytes_in, bytes_out, "
        "connect_errors, response_errors, retries, queued, last_connected, p50_ms, p99_ms"
    )

    def save_worker_totals(self, run: str, worker: int, totals: TotalsSnapshot) -> None:
        """Replace worker `worker`'s latest counters for this run (workers 1..N-1 call it
        every second; they count from zero, worker 0 carries the previous runs)."""
        statements: list[tuple[str, Sequence[object]]] = [
            ("DELETE FROM worker_stats WHERE run = ? AND worker = ?", (run, worker)),
            (
                "INSERT OR REPLACE INTO worker_totals (run, worker, active_conns, total_conns, "
                "requests, errors, started_at, saved_at, bytes_in, bytes_out) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run,
                    worker,
                    totals.active_conns,
                    totals.total_conns,
                    totals.requests,
                    totals.errors,
                    totals.started_at,
                    time.time(),
                    totals.bytes_in,
                    totals.bytes_out,
                ),
            ),
        ]
        for b in totals.backends:
            statements.append(
                (
                    f"INSERT OR REPLACE INTO worker_stats (run, worker, {self._WORKER_COLS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run,
                        worker,
                        b.id,
                        b.active_conns,
                        b.total_conns,
                        b.requests,
                        b.bytes_in,
                        b.bytes_out,
                        b.connect_errors,
                        b.response_errors,
                        b.retries,
                        b.queued,
                        b.last_connected,
                        b.p50_ms,
                        b.p99_ms,
                    ),
                )
            )
        self._write(statements)

    @staticmethod
    def _worker_backend(r: Sequence[object]) -> BackendSnapshot:
        bid = str(r[0])
        host, _, port = bid.rpartition(":")
        return BackendSnapshot(
            id=bid,
            host=host,
            port=int(port) if port.isdigit() else 0,
            weight=1,
            max_conns=0,
            state="up",
            active_conns=int(cast(int, r[1])),
            total_conns=int(cast(int, r[2])),
            requests=int(cast(int, r[3])),
            bytes_in=int(cast(int, r[4])),
            bytes_out=int(cast(int, r[5])),
            connect_errors=int(cast(int, r[6])),
            response_errors=int(cast(int, r[7])),
            retries=int(cast(int, r[8])),
            queued=int(cast(int, r[9])),
            last_connected=None if r[10] is None else float(cast(float, r[10])),
            p50_ms=None if r[11] is None else float(cast(float, r[11])),
            p99_ms=None if r[12] is None else float(cast(float, r[12])),
        )

    def load_worker_totals(self, run: str) -> list[TotalsSnapshot]:
        """The latest counters each other worker of `run` saved (worker order)."""
        with self._lock:
            heads = self._db.execute(
                "SELECT worker, active_conns, total_conns, requests, errors, started_at, "
                "bytes_in, bytes_out FROM worker_totals WHERE run = ? ORDER BY worker",
                (run,),
            ).fetchall()
            rows = self._db.execute(
                f"SELECT worker, {self._WORKER_COLS} FROM worker_stats WHERE run = ? "
                "ORDER BY worker, backend_id",
                (run,),
            ).fetchall()
        by_worker: dict[int, list[BackendSnapshot]] = {}
        for r in rows:
            by_worker.setdefault(int(r[0]), []).append(self._worker_backend(r[1:]))
        result = []
        for w, active, conns, requests, errors, started, bytes_in, bytes_out in heads:
            backends = tuple(by_worker.get(int(w), ()))
            result.append(
                TotalsSnapshot(
                    started_at=float(started),
                    active_conns=int(active),
                    total_conns=int(conns),
                    requests=int(requests),
                    bytes_in=int(bytes_in),
                    bytes_out=int(bytes_out),
                    errors=int(errors),
                    backends=backends,
                )
            )
        return result

    def take_previous_runs(self, run: str) -> dict[str, BackendSnapshot]:
        """Remove the worker rows of every run but `run` and return their per-backend
        counters summed (worker 0 adds them to its restored totals, so the other
        workers' share of a previous run is carried over exactly once)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    f"SELECT {self._WORKER_COLS} FROM worker_stats WHERE run != ?", (run,)
                ).fetchall()
                self._db.execute("DELETE FROM worker_stats WHERE run != ?", (run,))
                self._db.execute("DELETE FROM worker_totals WHERE run != ?", (run,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        summed: dict[str, BackendSnapshot] = {}
        for r in rows:
            b = dataclasses.replace(self._worker_backend(r), active_conns=0, queued=0)
            prev = summed.get(b.id)
            summed[b.id] = b if prev is None else add_backend_counters(prev, b)
        return summed

    # -- event log ------------------------------------------------------------------------
    def record_event(self, backend_id: str, kind: str, reason: str, at: float) -> None:
        """Append one event; the log keeps only the newest `max_events` entries."""
        self._write(
            [
                (
                    "INSERT INTO events (backend_id, kind, reason, at) VALUES (?, ?, ?, ?)",
                    (backend_id, kind[:_MAX_KIND], reason[:_MAX_REASON], float(at)),
                ),
                (
                    "DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?",
                    (self._max_events,),
                ),
            ]
        )

    def events(self, limit: int = 100, backend_id: str | None = None) -> list[StoredEvent]:
        """The newest `limit` events, newest first (optionally for one backend)."""
        limit = max(0, min(int(limit), self._max_events))
        with self._lock:
            if backend_id is None:
                rows = self._db.execute(
                    "SELECT seq, backend_id, kind, reason, at FROM events "
                    "ORDER BY seq DESC LIMIT ?",
                    (limit,),
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT seq, backend_id, kind, reason, at FROM events "
                    "WHERE backend_id = ? ORDER BY seq DESC LIMIT ?",
                    (backend_id, limit),
                ).fetchall()
        return [StoredEvent(int(a), str(b), str(c), str(d), float(e)) for a, b, c, d, e in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StatsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
