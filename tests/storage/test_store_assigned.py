"""Store-assigned sequence numbers (several nodes): gap-free, in commit order, and a resend
recognised by the store itself — on the memory store and on PostgreSQL, including two
`PostgresStore` objects (two nodes) appending to one room at the same time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster_services import fresh_database
from parlour.core.ports import StoreUnavailable, conv_id
from parlour.core.writes import (
    ASSIGN,
    AppendBroadcast,
    AppendDm,
    AppendRoomMessage,
    Assigned,
    CreateRoom,
    CreateUpload,
    CreateUser,
    RenameRoom,
    SetMembership,
    Write,
)
from parlour.protocol.records import AttachmentRow
from parlour.storage.memory import MemoryStore

AB = conv_id("alice", "bob")
BASE: list[Write] = [
    CreateUser("alice", "h", "member", 1.0),
    CreateUser("bob", "h", "member", 1.0),
    CreateRoom("general", "alice", 1.0),
]


def send(n: int, cid: str | None, room: str = "general", sender: str = "alice") -> Write:
    return AppendRoomMessage(room, ASSIGN, sender, f"m{n}", 100.0 + n, cid)


@pytest.fixture(params=["memory", "postgres"])
def make_store(request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    if request.param == "memory":
        yield MemoryStore
        return
    pytest.importorskip("asyncpg", reason="the cluster extra (asyncpg) is not installed")
    from parlour.storage.postgres import PostgresStore

    opened: list[PostgresStore] = []
    with fresh_database() as make_db:
        dsn = make_db()

        def make() -> PostgresStore:
            store = PostgresStore.open(dsn, min_size=1, max_size=4)
            opened.append(store)
            return store

        yield make
        for store in opened:
            store.close()


def test_sequences_are_assigned_in_order_and_resends_recognised(
    make_store: Callable[[], Any],
) -> None:
    store = make_store()
    assert store.apply_assigning(BASE) == []
    got = store.apply_assigning([send(1, "a"), send(2, "b"), send(3, None)])
    assert [(a.seq, a.duplicate) for a in got] == [(1, False), (2, False), (3, False)]
    # a resend (same sender and client id) in a later transaction and within one
    again = store.apply_assigning([send(9, "b"), send(4, "c"), send(5, "c")])
    assert again == [Assigned(2, 102.0, True), Assigned(4, 104.0), Assigned(4, 104.0, True)]
    # the same client id from another sender, or in another room, is another message
    other = store.apply_assigning([send(6, "a", sender="bob"), send(7, "a", room="general")])
    assert [(a.seq, a.duplicate) for a in other] == [(5, False), (1, True)]
    msgs = store.room_messages("general", before=None, after=None, limit=50)
    assert [m.seq for m in msgs] == [1, 2, 3, 4, 5]
    assert [m.text for m in msgs] == ["m1", "m2", "m3", "m4", "m6"]
    assert dict(store.load().room_last_seq) == {"general": 5}


def test_assigned_sequences_follow_a_rename_and_mix_with_chosen_ones(
    make_store: Callable[[], Any],
) -> None:
    store = make_store()
    store.apply([*BASE, send(1, "x")])
    got = store.apply_assigning(
        [RenameRoom("general", "lobby"), send(2, "y", room="lobby"), send(3, "x", room="lobby")]
    )
    assert [(a.seq, a.duplicate) for a in got] == [(2, False), (1, True)]
    store.apply([AppendRoomMessage("lobby", 3, "bob", "chosen", 200.0, None)])
    assert store.apply_assigning([send(4, None, room="lobby")])[0].seq == 4


def test_dm_and_broadcast_sequences(make_store: Callable[[], Any]) -> None:
    store = make_store()
    store.apply(BASE)

    def dm(n: int, cid: str, delivered: bool) -> Write:
        return AppendDm(AB, ASSIGN, "alice", "bob", f"d{n}", 10.0 + n, cid, delivered)

    got = store.apply_assigning([dm(1, "d1", False), dm(2, "d2", True), dm(3, "d1", True)])
    assert [(a.seq, a.duplicate) for a in got] == [(1, False), (2, False), (1, True)]
    snap = store.load()
    assert dict(snap.dm_last_seq) == {AB: 2}
    assert [(c.user, c.seq) for c in snap.dm_cursors] == [("bob", 2)]
    b = store.apply_assigning(
        [AppendBroadcast(ASSIGN, "alice", "one", 5.0), AppendBroadcast(ASSIGN, "alice", "two", 6.0)]
    )
    assert [a.seq for a in b] == [1, 2]
    assert store.load().broadcast_last_seq == 2


def test_a_failing_transaction_takes_its_sequence_numbers_back(
    make_store: Callable[[], Any],
) -> None:
    store = make_store()
    store.apply(BASE)
    with pytest.raises(Exception):  # noqa: B017 - any store-specific integrity error
        store.apply_assigning([send(1, "a"), CreateUser("alice", "h", "member", 2.0)])
    assert store.apply_assigning([send(2, "b")])[0].seq == 1  # no gap


def test_two_nodes_append_to_one_room_at_once(make_store: Callable[[], Any]) -> None:
    """Two store objects (two nodes' pools) append concurrently, some messages twice (a
    resend on the other node): every message is stored exactly once, the sequence numbers
    are 1..N without a gap, and each node saw its own answers in increasing order."""
    first = make_store()
    if isinstance(first, MemoryStore):
        pytest.skip("one memory store cannot be shared by two nodes")
    second = make_store()
    first.apply([*BASE, SetMembership("alice", "general", True)])
    per_node = 150
    answers: dict[str, list[tuple[str, Assigned]]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def node(name: str, store: Any) -> None:
        try:
            for i in range(per_node):
                batch = [send(i, f"{name}{i}")]
                if i % 10 == 0:  # a resend of the other node's message (maybe not there yet)
                    batch.append(send(i, f"{'b' if name == 'a' else 'a'}{i}"))
                for write, got in zip(batch, store.apply_assigning(batch), strict=True):
                    assert isinstance(write, AppendRoomMessage) and write.client_id
                    answers[name].append((write.client_id, got))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=node, args=(n, s)) for n, s in (("a", first), ("b", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    msgs = first.room_messages("general", before=None, after=None, limit=10_000)
    assert [m.seq for m in msgs] == list(range(1, len(msgs) + 1))
    assert sorted(m.client_id or "" for m in msgs) == sorted(
        [f"a{i}" for i in range(per_node)] + [f"b{i}" for i in range(per_node)]
    )
    by_cid = {m.client_id: m.seq for m in msgs}
    for name, got in answers.items():
        fresh = [a.seq for _, a in got if not a.duplicate]
        assert fresh == sorted(fresh), name
        for cid, a in got:
            assert by_cid[cid] == a.seq  # a duplicate names the original's sequence


def test_an_unreachable_database_is_reported_as_unavailable(tmp_path: Path) -> None:
    pytest.importorskip("asyncpg", reason="the cluster extra (asyncpg) is not installed")
    from cluster_services import free_port
    from parlour.storage.postgres import PostgresStore

    dsn = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(StoreUnavailable) as info:
        PostgresStore.open(dsn, timeout=2)
    assert "secret" not in str(info.value)  # the password never appears
    assert ":***@" in str(info.value)


def test_assigned_appends_carry_attachments(make_store: Callable[[], Any]) -> None:
    """A store-assigned message with a file (the general path on PostgreSQL, not the
    single-call function) keeps its attachment, and its file reads as attached there."""
    store = make_store()
    fid, did = "F" * 22, "G" * 22
    att: AttachmentRow = {
        "id": fid,
        "name": "a.txt",
        "size": 3,
        "type": "text/plain",
        "sha256": "ab" * 32,
        "inline": True,
        "thumbnail": False,
    }
    store.apply_assigning(
        [
            *BASE,
            CreateUpload(fid, "alice", 3, "a.txt", "", 1.0),
            CreateUpload(did, "alice", 3, "a.txt", "", 1.0),
        ]
    )
    got = store.apply_assigning(
        [
            send(1, "a"),
            AppendRoomMessage("general", ASSIGN, "alice", "", 102.0, "f", att),
            AppendDm(AB, ASSIGN, "alice", "bob", "", 103.0, "d", True, {**att, "id": did}),
        ]
    )
    assert [(a.seq, a.duplicate) for a in got] == [(1, False), (2, False), (1, False)]
    msgs = store.room_messages("general", before=None, after=None, limit=5)
    assert [m.attachment for m in msgs] == [None, att]
    (dm,) = store.dm_messages(AB, before=None, after=None, limit=5)
    assert dm.attachment is not None and dm.attachment["id"] == did
    rec = store.file(fid)
    assert rec is not None and rec.room_key == "general" and rec.seq == 2
    drec = store.file(did)
    assert drec is not None and drec.conv == AB and drec.seq == 1
