"""SQLite schema and its migrations, versioned with ``PRAGMA user_version``.

``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``. Never edit a released
migration: append a new one. Each runs in its own transaction together with the version bump.
"""

from __future__ import annotations

import sqlite3

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SchemaError", "migrate"]


class SchemaError(ValueError):
    """The database cannot be used by this version of Parlour (e.g. it is newer, or the file
    is not a database). A ValueError, so `parlour serve` reports it as a start-up error."""


_V1 = (
    """CREATE TABLE users (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
        created REAL NOT NULL,
        last_login REAL
    ) WITHOUT ROWID""",
    """CREATE TABLE rooms (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created REAL NOT NULL,
        created_by TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE memberships (
        user_key TEXT NOT NULL,
        user TEXT NOT NULL,
        room_key TEXT NOT NULL,
        PRIMARY KEY (user_key, room_key)
    ) WITHOUT ROWID""",
    """CREATE TABLE room_messages (
        room_key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        sender TEXT NOT NULL,
        text TEXT,
        edited INTEGER NOT NULL DEFAULT 0,
        deleted INTEGER NOT NULL DEFAULT 0,
        client_id TEXT,
        PRIMARY KEY (room_key, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE dm_messages (
        conv TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        text TEXT,
        edited INTEGER NOT NULL DEFAULT 0,
        deleted INTEGER NOT NULL DEFAULT 0,
        client_id TEXT,
        PRIMARY KEY (conv, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE dm_cursors (
        user_key TEXT NOT NULL,
        user TEXT NOT NULL,
        conv TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (user_key, conv)
    ) WITHOUT ROWID""",
    """CREATE TABLE bans (
        user_key TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        until REAL,
        reason TEXT NOT NULL,
        by TEXT NOT NULL,
        ts REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE blocks (
        blocker_key TEXT NOT NULL,
        blocked_key TEXT NOT NULL,
        blocker TEXT NOT NULL,
        blocked TEXT NOT NULL,
        PRIMARY KEY (blocker_key, blocked_key)
    ) WITHOUT ROWID""",
    """CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        reason TEXT NOT NULL
    )""",
)

# v2: `since` reads scan by timestamp within rooms; index them.
_V2 = ("CREATE INDEX room_messages_by_ts ON room_messages (room_key, ts)",)

# v3: read positions kept on the server; broadcasts to every user, delivered at next login.
_V3 = (
    """CREATE TABLE read_markers (
        user_key TEXT NOT NULL,
        user TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('room', 'dm')),
        scope TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (user_key, kind, scope)
    ) WITHOUT ROWID""",
    """CREATE TABLE broadcasts (
        seq INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        sender TEXT NOT NULL,
        text TEXT NOT NULL
    )""",
    """CREATE TABLE broadcast_cursors (
        user_key TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        seq INTEGER NOT NULL
    ) WITHOUT ROWID""",
)

# v4: session tokens (their SHA-256 only), for logging in again without the password.
_V4 = (
    """CREATE TABLE session_tokens (
        token_hash TEXT PRIMARY KEY,
        user_key TEXT NOT NULL,
        user TEXT NOT NULL,
        expires REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX session_tokens_by_user ON session_tokens (user_key)",
)

# v5: files in chat (docs/design/files.md): uploads, and the file attached to a message (its
# record as JSON, and its id, kept on a tombstone so that the file reads as deleted).
_V5 = (
    "ALTER TABLE room_messages ADD COLUMN attachment TEXT",
    "ALTER TABLE room_messages ADD COLUMN file_id TEXT",
    "ALTER TABLE dm_messages ADD COLUMN attachment TEXT",
    "ALTER TABLE dm_messages ADD COLUMN file_id TEXT",
    "CREATE INDEX room_messages_by_file ON room_messages (file_id) WHERE file_id IS NOT NULL",
    "CREATE INDEX dm_messages_by_file ON dm_messages (file_id) WHERE file_id IS NOT NULL",
    """CREATE TABLE files (
        id TEXT PRIMARY KEY,
        owner_key TEXT NOT NULL,
        owner TEXT NOT NULL,
        length INTEGER NOT NULL,
        name TEXT NOT NULL,
        client_type TEXT NOT NULL,
        created REAL NOT NULL,
        complete INTEGER NOT NULL DEFAULT 0,
        sha256 TEXT,
        type TEXT,
        inline INTEGER NOT NULL DEFAULT 0,
        thumbnail INTEGER NOT NULL DEFAULT 0,
        completed REAL
    ) WITHOUT ROWID""",
    "CREATE INDEX files_by_owner ON files (owner_key)",
    "CREATE INDEX files_by_sha256 ON files (sha256) WHERE sha256 IS NOT NULL",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5)
SCHEMA_VERSION = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> tuple[int, int]:
    """Bring the database up to ``target``; returns (version before, version after).

    ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    before = user_version(conn)
    if before > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {before} is newer than this Parlour understands "
            f"({SCHEMA_VERSION}); upgrade Parlour or restore a backup"
        )
    for version in range(before, target):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return before, max(before, target)
