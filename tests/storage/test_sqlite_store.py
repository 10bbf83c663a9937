"""SQLite store: migrations, persistence across reopen, group-commit writer."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from parlour.core import writes as w
from parlour.core.ports import conv_id
from parlour.storage._sqlite_schema import MIGRATIONS, SCHEMA_VERSION, SchemaError, migrate
from parlour.storage.sqlite import DB_FILENAME, GroupCommitWriter, SqliteStore, WriterClosed

T0 = 1_700_000_000.0


def seed(store: SqliteStore) -> None:
    store.apply(
        [
            w.CreateUser("Admin", "h-admin", "admin", T0),
            w.CreateUser("bob", "h-bob", "member", T0),
            w.CreateRoom("General", "Admin", T0),
            w.SetMembership("bob", "General", True),
            w.AppendRoomMessage("General", 1, "bob", "hello", T0 + 1, "c1"),
            w.AppendRoomMessage("General", 2, "bob", "again", T0 + 2, "c2"),
            w.AppendDm(conv_id("bob", "Admin"), 1, "bob", "Admin", "psst", T0 + 3, "d1", False),
        ]
    )


def test_fresh_database_is_at_latest_version(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert store.migrated_from == 0
        mode = sqlite3.connect(tmp_path / DB_FILENAME).execute("PRAGMA journal_mode").fetchone()
        assert mode[0] == "wal"
    finally:
        store.close()


def test_migrates_from_v1_keeping_data(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=1)
    conn.execute(
        "INSERT INTO rooms (key, name, created, created_by) VALUES ('general', 'General', 1, 'a')"
    )
    conn.execute(
        "INSERT INTO room_messages (room_key, seq, ts, sender, text) "
        "VALUES ('general', 1, 5.0, 'bob', 'old')"
    )
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()

    store = SqliteStore(path)
    try:
        assert store.migrated_from == 1
        assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
        msgs = store.room_messages("general", before=None, after=None, limit=10)
        assert [(m.scope, m.seq, m.text) for m in msgs] == [("General", 1, "old")]
        indexes = {
            row[0]
            for row in sqlite3.connect(path).execute(
                "SELECT name FROM sqlite_master WHERE type = 'index'"
            )
        }
        assert "room_messages_by_ts" in indexes
    finally:
        store.close()


def test_refuses_a_newer_database(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError, match="newer"):
        SqliteStore(path)


def test_everything_survives_reopen(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    seed(store)
    store.apply(
        [
            w.RecordLogin("bob", T0 + 10),
            w.AddBan("bob", None, "spam", "Admin", T0 + 11),
            w.AddBlock("Admin", "bob"),
            w.SetDmCursor("Admin", conv_id("bob", "Admin"), 1),
            w.EditRoomMessage("General", 1, "hello!"),
            w.DeleteRoomMessage("General", 2),
            w.Audit("Admin", "ban", "bob", "spam", T0 + 11),
        ]
    )
    store.close()

    store = SqliteStore.open(tmp_path)
    try:
        snap = store.load()
        assert {u.name: (u.role, u.last_login) for u in snap.users} == {
            "Admin": ("admin", None),
            "bob": ("member", T0 + 10),
        }
        assert [r.name for r in snap.rooms] == ["General"]
        assert [(m.user, m.room) for m in snap.memberships] == [("bob", "General")]
        assert [(b.user, b.until, b.reason) for b in snap.bans] == [("bob", None, "spam")]
        assert [(b.blocker, b.blocked) for b in snap.blocks] == [("Admin", "bob")]
        assert [(c.user, c.seq) for c in snap.dm_cursors] == [("Admin", 1)]
        assert dict(snap.room_last_seq) == {"General": 2}
        assert dict(snap.dm_last_seq) == {conv_id("bob", "Admin"): 1}
        msgs = store.room_messages("general", before=None, after=None, limit=10)
        assert [(m.seq, m.text, m.edited, m.deleted) for m in msgs] == [
            (1, "hello!", True, False),
            (2, None, False, True),
        ]
        assert [a.action for a in store.audit_log(10)] == ["ban"]
    finally:
        store.close()


def test_paging_bounds(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        store.apply([w.CreateUser("bob", "h", "member", T0), w.CreateRoom("r", "bob", T0)])
        store.apply(
            [w.AppendRoomMessage("r", i, "bob", f"m{i}", T0 + i, None) for i in range(1, 11)]
        )

        def seqs(before: int | None, after: int | None, limit: int) -> list[int]:
            got = store.room_messages("r", before=before, after=after, limit=limit)
            return [m.seq for m in got]

        assert seqs(None, None, 3) == [8, 9, 10]
        assert seqs(5, None, 3) == [2, 3, 4]
        assert seqs(None, 7, 100) == [8, 9, 10]
        assert seqs(None, 2, 2) == [3, 4]
        assert seqs(9, 2, 100) == [3, 4, 5, 6, 7, 8]
        since = store.messages_since(["R"], T0 + 9, 100)
        assert [(m.scope, m.seq) for m in since] == [("r", 9), ("r", 10)]
    finally:
        store.close()


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        store.apply([w.CreateUser("bob", "h", "member", T0)])
        with pytest.raises(sqlite3.IntegrityError):
            store.apply([w.CreateRoom("r", "bob", T0), w.CreateUser("BOB", "h", "member", T0)])
        assert store.load().rooms == []
    finally:
        store.close()


def test_rename_and_delete_room_carry_messages_and_memberships(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        seed(store)
        store.apply([w.RenameRoom("general", "Lobby")])
        snap = store.load()
        assert [r.name for r in snap.rooms] == ["Lobby"]
        assert [m.room for m in snap.memberships] == ["Lobby"]
        assert len(store.room_messages("lobby", before=None, after=None, limit=10)) == 2
        store.apply([w.DeleteRoom("Lobby")])
        snap = store.load()
        assert snap.rooms == [] and snap.memberships == [] and dict(snap.room_last_seq) == {}
    finally:
        store.close()


# ------------------------------------------------------------------ group-commit writer


async def test_writer_batches_and_resolves_in_order(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    writer = store.writer()
    writer.start()
    try:
        store.apply([w.CreateUser("bob", "h", "member", T0), w.CreateRoom("r", "bob", T0)])
        futs = [
            writer.submit([w.AppendRoomMessage("r", i, "bob", f"m{i}", T0, f"c{i}")])
            for i in range(1, 501)
        ]
        order: list[int] = []
        for i, fut in enumerate(futs, 1):
            fut.add_done_callback(lambda _f, i=i: order.append(i))
        await asyncio.wait_for(asyncio.gather(*futs), 30)
        assert order == list(range(1, 501))
        assert writer.stats.outcomes == 500
        assert writer.stats.batches < 500  # queued outcomes shared transactions
        assert writer.pending == 0
        got = store.room_messages("r", before=None, after=None, limit=1000)
        assert [m.seq for m in got] == list(range(1, 501))
    finally:
        await writer.close()
        store.close()


async def test_one_bad_outcome_fails_alone() -> None:
    applied: list[list[str]] = []

    def apply_batch(batches: Sequence[Sequence[Any]]) -> None:
        if any("bad" in b for b in batches):
            raise ValueError("bad write")
        applied.append([x for b in batches for x in b])

    writer = GroupCommitWriter(apply_batch, name="t")
    writer.start()
    try:
        futs = [writer.submit(["a"]), writer.submit(["bad"]), writer.submit(["c"])]
        results = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 10)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], ValueError)
        assert sorted(x for batch in applied for x in batch) == ["a", "c"]
    finally:
        await writer.close()


async def test_close_commits_pending_then_refuses(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    writer = store.writer()
    writer.start()
    fut = writer.submit([w.CreateUser("bob", "h", "member", T0)])
    await writer.close()
    assert fut.done() and fut.exception() is None
    with pytest.raises(WriterClosed):
        writer.submit([w.CreateUser("eve", "h", "member", T0)])
    store.close()
    reopened = SqliteStore.open(tmp_path)
    assert [u.name for u in reopened.load().users] == ["bob"]
    reopened.close()


@pytest.mark.parametrize("runs", [[1], [5, 1, 300], [256], [257, 64, 3], [341, 2, 700]])
def test_runs_of_room_messages_are_stored_whole_and_in_order(
    tmp_path: Path, runs: list[int]
) -> None:
    """Consecutive appends become multi-row INSERTs of a few fixed sizes; a write of another
    kind in between (here an edit of the message just appended) ends the run, in order."""
    store = SqliteStore.open(tmp_path)
    try:
        store.apply([w.CreateUser("bob", "h", "member", T0), w.CreateRoom("r", "bob", T0)])
        batches: list[list[w.Write]] = []
        seq = 0
        for run in runs:
            batch: list[w.Write] = []
            for _ in range(run):
                seq += 1
                batch.append(w.AppendRoomMessage("r", seq, "bob", f"m{seq}", T0 + seq, f"c{seq}"))
            batch.append(w.EditRoomMessage("r", seq, f"edited {seq}"))
            batches.append(batch)
        store.apply_batch(batches)
        got = store.room_messages("r", before=None, after=None, limit=10_000)
        assert [m.seq for m in got] == list(range(1, seq + 1))
        edited = {m.seq for m in got if m.edited}
        ends = {sum(runs[: i + 1]) for i in range(len(runs))}
        assert edited == ends
        assert all(m.text == (f"edited {m.seq}" if m.seq in ends else f"m{m.seq}") for m in got)
        assert all(m.client_id == f"c{m.seq}" and m.ts == T0 + m.seq for m in got)
    finally:
        store.close()


async def test_writer_wakes_for_every_submit_after_going_idle() -> None:
    """Submits that arrive while the thread is busy take no lock; ones that arrive while it
    waits must wake it. Alternate both many times: a lost wake-up would hang here."""
    applied: list[int] = []
    writer = GroupCommitWriter(
        lambda batches: applied.extend(x for b in batches for x in b), name="t"
    )
    writer.start()
    try:
        for i in range(300):
            futs = [writer.submit([i * 10 + k]) for k in range(i % 3 + 1)]
            await asyncio.wait_for(asyncio.gather(*futs), 10)
        assert applied == sorted(applied) and len(applied) == sum(i % 3 + 1 for i in range(300))
        assert writer.pending == 0
    finally:
        await writer.close()


def test_a_file_that_is_not_a_database_is_a_clear_schema_error(tmp_path: Path) -> None:
    (tmp_path / DB_FILENAME).write_bytes(b"this is not a database, just some text\n" * 100)
    with pytest.raises(SchemaError, match=r"cannot open the database .*not a database"):
        SqliteStore.open(tmp_path)
    assert issubclass(SchemaError, ValueError)  # `parlour serve` reports it without a traceback
