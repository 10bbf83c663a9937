"""PostgreSQL schema and its migrations, versioned in the table ``parlour_schema``.

``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``. Never edit a released
migration: append a new one. The pending ones run in one transaction together with the version
bump, under a transaction-level advisory lock, so several nodes starting at once migrate once.

Differences from the SQLite schema (``_sqlite_schema.py``), all for several writers:

* rooms have a surrogate ``id``: messages, memberships and read markers refer to it, so a
  rename changes one row (SQLite rewrites every message of the room);
* every room row carries ``last_seq``, and ``dm_convs`` one per conversation, ``counters`` the
  broadcasts': the row a store-assigned append locks (``SELECT ... FOR UPDATE``) and moves in
  the transaction that inserts the message, so one scope's sequence numbers are gap-free and
  committed in order whichever node writes (docs/design/scale-out.md);
* messages carry ``sender_key`` and a unique key ``(scope, sender_key, client_id)``: a resend
  with the same client id is recognised by the database itself, on whichever node it arrives.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

#: arbitrary constant of the advisory lock that serialises migrations
MIGRATION_LOCK = 0x7061726C6F7572  # "parlour"

_V1 = (
    """CREATE TABLE users (
        key text PRIMARY KEY,
        name text NOT NULL,
        password_hash text NOT NULL,
        role text NOT NULL CHECK (role IN ('admin', 'member')),
        created double precision NOT NULL,
        last_login double precision
    )""",
    """CREATE TABLE rooms (
        id bigserial PRIMARY KEY,
        key text NOT NULL UNIQUE,
        name text NOT NULL,
        created double precision NOT NULL,
        created_by text NOT NULL,
        last_seq bigint NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE memberships (
        user_key text NOT NULL,
        user_name text NOT NULL,
        room_id bigint NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
        PRIMARY KEY (user_key, room_id)
    )""",
    "CREATE INDEX memberships_by_room ON memberships (room_id)",
    """CREATE TABLE room_messages (
        room_id bigint NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
        seq bigint NOT NULL,
        ts double precision NOT NULL,
        sender text NOT NULL,
        sender_key text NOT NULL,
        text text,
        edited boolean NOT NULL DEFAULT false,
        deleted boolean NOT NULL DEFAULT false,
        client_id text,
        PRIMARY KEY (room_id, seq),
        UNIQUE (room_id, sender_key, client_id)
    )""",
    "CREATE INDEX room_messages_by_ts ON room_messages (room_id, ts)",
    "CREATE INDEX room_messages_with_client_id ON room_messages (ts) WHERE client_id IS NOT NULL",
    """CREATE TABLE dm_convs (
        conv text PRIMARY KEY,
        last_seq bigint NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE dm_messages (
        conv text NOT NULL,
        seq bigint NOT NULL,
        ts double precision NOT NULL,
        sender text NOT NULL,
        sender_key text NOT NULL,
        recipient text NOT NULL,
        text text,
        edited boolean NOT NULL DEFAULT false,
        deleted boolean NOT NULL DEFAULT false,
        client_id text,
        PRIMARY KEY (conv, seq),
        UNIQUE (conv, sender_key, client_id)
    )""",
    "CREATE INDEX dm_messages_with_client_id ON dm_messages (ts) WHERE client_id IS NOT NULL",
    """CREATE TABLE dm_cursors (
        user_key text NOT NULL,
        user_name text NOT NULL,
        conv text NOT NULL,
        seq bigint NOT NULL,
        PRIMARY KEY (user_key, conv)
    )""",
    """CREATE TABLE bans (
        user_key text PRIMARY KEY,
        user_name text NOT NULL,
        until double precision,
        reason text NOT NULL,
        by_name text NOT NULL,
        ts double precision NOT NULL
    )""",
    """CREATE TABLE blocks (
        blocker_key text NOT NULL,
        blocked_key text NOT NULL,
        blocker text NOT NULL,
        blocked text NOT NULL,
        PRIMARY KEY (blocker_key, blocked_key)
    )""",
    """CREATE TABLE audit (
        id bigserial PRIMARY KEY,
        ts double precision NOT NULL,
        actor text NOT NULL,
        action text NOT NULL,
        target text NOT NULL,
        reason text NOT NULL
    )""",
    """CREATE TABLE room_read_markers (
        user_key text NOT NULL,
        user_name text NOT NULL,
        room_id bigint NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
        seq bigint NOT NULL,
        PRIMARY KEY (user_key, room_id)
    )""",
    """CREATE TABLE dm_read_markers (
        user_key text NOT NULL,
        user_name text NOT NULL,
        conv text NOT NULL,
        seq bigint NOT NULL,
        PRIMARY KEY (user_key, conv)
    )""",
    """CREATE TABLE broadcasts (
        seq bigint PRIMARY KEY,
        ts double precision NOT NULL,
        sender text NOT NULL,
        text text NOT NULL
    )""",
    """CREATE TABLE broadcast_cursors (
        user_key text PRIMARY KEY,
        user_name text NOT NULL,
        seq bigint NOT NULL
    )""",
    """CREATE TABLE counters (
        name text PRIMARY KEY,
        value bigint NOT NULL
    )""",
    "INSERT INTO counters (name, value) VALUES ('broadcast', 0)",
    """CREATE TABLE session_tokens (
        token_hash text PRIMARY KEY,
        user_key text NOT NULL,
        user_name text NOT NULL,
        expires double precision NOT NULL
    )""",
    "CREATE INDEX session_tokens_by_user ON session_tokens (user_key)",
    # The common batch — nothing but store-assigned room messages — in one round trip: the
    # rooms' counter rows locked in key order, each message looked up by client id (a resend
    # is answered with the original), numbered and inserted; one row back per message.
    """CREATE FUNCTION parlour_append_room_messages(
        p_keys text[], p_senders text[], p_sender_keys text[], p_texts text[],
        p_ts float8[], p_cids text[]
    ) RETURNS TABLE (o_seq bigint, o_ts float8, o_duplicate boolean)
    LANGUAGE plpgsql AS $$
    DECLARE
        i integer;
        rid bigint;
        found_seq bigint;
        found_ts float8;
    BEGIN
        PERFORM 1 FROM rooms WHERE key = ANY(p_keys) ORDER BY key FOR UPDATE;
        FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
            SELECT id INTO rid FROM rooms WHERE key = p_keys[i];
            IF rid IS NULL THEN
                RAISE EXCEPTION 'unknown room %', p_keys[i] USING ERRCODE = 'foreign_key_violation';
            END IF;
            IF p_cids[i] IS NOT NULL THEN
                SELECT seq, ts INTO found_seq, found_ts FROM room_messages
                    WHERE room_id = rid AND sender_key = p_sender_keys[i]
                    AND client_id = p_cids[i];
                IF FOUND THEN
                    o_seq := found_seq; o_ts := found_ts; o_duplicate := true;
                    RETURN NEXT;
                    CONTINUE;
                END IF;
            END IF;
            UPDATE rooms SET last_seq = last_seq + 1 WHERE id = rid RETURNING last_seq INTO o_seq;
            INSERT INTO room_messages (room_id, seq, ts, sender, sender_key, text, client_id)
                VALUES (rid, o_seq, p_ts[i], p_senders[i], p_sender_keys[i], p_texts[i], p_cids[i]);
            o_ts := p_ts[i]; o_duplicate := false;
            RETURN NEXT;
        END LOOP;
    END
    $$""",
)

# v2: files in chat (docs/design/files.md): uploads, and the file attached to a message (its
# record as JSON, and its id, kept on a tombstone so that the file reads as deleted).
_V2 = (
    "ALTER TABLE room_messages ADD COLUMN attachment text, ADD COLUMN file_id text",
    "ALTER TABLE dm_messages ADD COLUMN attachment text, ADD COLUMN file_id text",
    "CREATE INDEX room_messages_by_file ON room_messages (file_id) WHERE file_id IS NOT NULL",
    "CREATE INDEX dm_messages_by_file ON dm_messages (file_id) WHERE file_id IS NOT NULL",
    """CREATE TABLE files (
        id text PRIMARY KEY,
        owner_key text NOT NULL,
        owner_name text NOT NULL,
        length bigint NOT NULL,
        name text NOT NULL,
        client_type text NOT NULL,
        created double precision NOT NULL,
        complete boolean NOT NULL DEFAULT false,
        sha256 text,
        type text,
        inline boolean NOT NULL DEFAULT false,
        thumbnail boolean NOT NULL DEFAULT false,
        completed double precision
    )""",
    "CREATE INDEX files_by_owner ON files (owner_key)",
    "CREATE INDEX files_by_sha256 ON files (sha256) WHERE sha256 IS NOT NULL",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(ValueError):
    """The database was migrated by a newer Parlour."""


async def migrate(conn: Any, target: int = SCHEMA_VERSION) -> tuple[int, int]:
    """Bring the database up to ``target``; returns (version before, version after).
    ``conn`` is an asyncpg connection."""
    await conn.execute("CREATE TABLE IF NOT EXISTS parlour_schema (version integer NOT NULL)")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        row = await conn.fetchrow("SELECT version FROM parlour_schema")
        if row is None:
            await conn.execute("INSERT INTO parlour_schema (version) VALUES (0)")
            before = 0
        else:
            before = int(row["version"])
        if before > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"database schema version {before} is newer than this Parlour understands "
                f"({SCHEMA_VERSION}); upgrade Parlour or restore a backup"
            )
        for version in range(before, target):
            for statement in MIGRATIONS[version]:
                await conn.execute(statement)
            await conn.execute("UPDATE parlour_schema SET version = $1", version + 1)
    return before, max(before, target)
