"""Conformance tests every `parlour.core.ports.Store` implementation must pass.

Use it from a test module that defines a `store_factory` fixture returning a callable
`(tmp_path) -> Store`, and subclasses `StoreConformance`:

    @pytest.fixture
    def store_factory() -> Callable[[Path], Store]:
        return lambda tmp_path: SqliteStore(tmp_path / "db")

    class TestSqliteStore(StoreConformance):
        pass

`reopen` tests call the factory twice with the same directory: a durable store must return
the same data; a volatile store (memory) sets `durable = False` on its subclass to skip them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from parlour.core.ports import (
    AuditEntry,
    BanRecord,
    BlockRecord,
    DmCursorRecord,
    FileUsage,
    MembershipRecord,
    Store,
    StoredMessage,
    conv_id,
)
from parlour.core.writes import (
    AddBan,
    AddBlock,
    AddSessionToken,
    AppendBroadcast,
    AppendDm,
    AppendRoomMessage,
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
from parlour.protocol.records import AttachmentRow

__all__ = ["StoreConformance", "StoreFactory"]

StoreFactory = Callable[[Path], Store]

AB = conv_id("alice", "Bob")


def _base() -> list[Write]:
    return [
        CreateUser("admin", "h-admin", "admin", 1.0),
        CreateUser("alice", "h-alice", "member", 2.0),
        CreateUser("Bob", "h-bob", "member", 3.0),
        CreateRoom("general", "admin", 4.0),
        CreateRoom("random", "admin", 5.0),
    ]


def _room_msgs(room: str, n: int, start: int = 1, t0: float = 100.0) -> list[Write]:
    return [
        AppendRoomMessage(room, s, "alice", f"m{s}", t0 + s, f"c{s}")
        for s in range(start, start + n)
    ]


class StoreConformance:
    durable = True

    @pytest.fixture
    def store(self, store_factory: StoreFactory, tmp_path: Path) -> Store:
        s = store_factory(tmp_path)
        s.apply(_base())
        return s

    # -- users, rooms, memberships ----------------------------------------------------------

    def test_empty_store_loads_empty(self, store_factory: StoreFactory, tmp_path: Path) -> None:
        snap = store_factory(tmp_path).load()
        assert list(snap.users) == []
        assert list(snap.rooms) == []
        assert dict(snap.room_last_seq) == {}
        assert dict(snap.dm_last_seq) == {}

    def test_users_and_rooms_load(self, store: Store) -> None:
        snap = store.load()
        users = {u.name: u for u in snap.users}
        assert set(users) == {"admin", "alice", "Bob"}
        assert users["admin"].role == "admin"
        assert users["Bob"].password_hash == "h-bob"
        assert users["Bob"].created == 3.0
        assert users["Bob"].last_login is None
        assert {r.name: (r.created, r.created_by) for r in snap.rooms} == {
            "general": (4.0, "admin"),
            "random": (5.0, "admin"),
        }

    def test_set_password_and_record_login(self, store: Store) -> None:
        store.apply([SetPassword("alice", "h2"), RecordLogin("alice", 50.0)])
        alice = next(u for u in store.load().users if u.name == "alice")
        assert alice.password_hash == "h2"
        assert alice.last_login == 50.0

    def test_membership_idempotent_and_removable(self, store: Store) -> None:
        store.apply(
            [
                SetMembership("alice", "general", True),
                SetMembership("alice", "general", True),
                SetMembership("Bob", "general", True),
                SetMembership("Bob", "random", True),
                SetMembership("Bob", "general", False),
                SetMembership("alice", "random", False),  # not a member: no-op
            ]
        )
        assert set(store.load().memberships) == {
            MembershipRecord("alice", "general"),
            MembershipRecord("Bob", "random"),
        }

    def test_rename_room_moves_messages_and_members(self, store: Store) -> None:
        store.apply([SetMembership("alice", "general", True), *_room_msgs("general", 3)])
        store.apply([RenameRoom("general", "lobby")])
        snap = store.load()
        assert {r.name for r in snap.rooms} == {"lobby", "random"}
        assert set(snap.memberships) == {MembershipRecord("alice", "lobby")}
        assert dict(snap.room_last_seq) == {"lobby": 3}
        msgs = store.room_messages("lobby", before=None, after=None, limit=10)
        assert [(m.scope, m.seq) for m in msgs] == [("lobby", 1), ("lobby", 2), ("lobby", 3)]
        assert store.room_messages("general", before=None, after=None, limit=10) == []

    def test_delete_room_removes_messages_and_members(self, store: Store) -> None:
        store.apply([SetMembership("alice", "general", True), *_room_msgs("general", 3)])
        store.apply([DeleteRoom("general")])
        snap = store.load()
        assert {r.name for r in snap.rooms} == {"random"}
        assert list(snap.memberships) == []
        assert "general" not in snap.room_last_seq
        store.apply([CreateRoom("general", "admin", 9.0), *_room_msgs("general", 1)])
        assert [
            m.text for m in store.room_messages("general", before=None, after=None, limit=9)
        ] == ["m1"]

    # -- room messages ------------------------------------------------------------------------

    def test_room_message_fields_roundtrip(self, store: Store) -> None:
        store.apply([AppendRoomMessage("general", 1, "alice", "héllo ✓", 123.5, "cid-1")])
        (m,) = store.room_messages("general", before=None, after=None, limit=10)
        assert m == StoredMessage("general", 1, 123.5, "alice", "héllo ✓", False, False, "cid-1")
        store.apply([AppendRoomMessage("general", 2, "Bob", "x", 124.0, None)])
        assert store.room_messages("general", before=None, after=1, limit=10)[0].client_id is None

    def test_room_paging(self, store: Store) -> None:
        store.apply(_room_msgs("general", 10))
        page = store.room_messages

        def seqs(before: int | None, after: int | None, limit: int) -> list[int]:
            return [m.seq for m in page("general", before=before, after=after, limit=limit)]

        assert seqs(None, None, 3) == [8, 9, 10]
        assert seqs(8, None, 3) == [5, 6, 7]
        assert seqs(3, None, 5) == [1, 2]
        assert seqs(1, None, 5) == []
        assert seqs(None, 7, 2) == [8, 9]
        assert seqs(None, 8, 5) == [9, 10]
        assert seqs(None, 10, 5) == []
        assert seqs(None, 0, 3) == [1, 2, 3]
        assert seqs(9, 2, 3) == [6, 7, 8]
        assert seqs(None, None, 0) == []
        assert store.room_messages("nowhere", before=None, after=None, limit=5) == []
        assert store.room_messages("random", before=None, after=None, limit=5) == []
        assert dict(store.load().room_last_seq) == {"general": 10}

    def test_room_edit_and_delete(self, store: Store) -> None:
        store.apply(_room_msgs("general", 3))
        store.apply([EditRoomMessage("general", 2, "edited"), DeleteRoomMessage("general", 3)])
        msgs = store.room_messages("general", before=None, after=None, limit=10)
        assert [(m.text, m.edited, m.deleted) for m in msgs] == [
            ("m1", False, False),
            ("edited", True, False),
            (None, False, True),
        ]
        assert msgs[2].sender == "alice" and msgs[2].seq == 3

    def test_messages_since(self, store: Store) -> None:
        store.apply(
            [
                AppendRoomMessage("general", 1, "alice", "g1", 10.0, None),
                AppendRoomMessage("random", 1, "Bob", "r1", 11.0, None),
                AppendRoomMessage("general", 2, "alice", "g2", 12.0, None),
                AppendRoomMessage("random", 2, "Bob", "r2", 13.0, None),
            ]
        )
        got = store.messages_since(["general", "random"], 11.0, 10)
        assert [(m.scope, m.seq) for m in got] == [("random", 1), ("general", 2), ("random", 2)]
        assert [m.text for m in store.messages_since(["general"], 0.0, 10)] == ["g1", "g2"]
        assert [m.text for m in store.messages_since(["general", "random"], 0.0, 2)] == [
            "g1",
            "r1",
        ]
        assert store.messages_since([], 0.0, 10) == []
        assert store.messages_since(["general"], 99.0, 10) == []

    # -- direct messages -----------------------------------------------------------------------

    def test_dms_and_cursor(self, store: Store) -> None:
        store.apply(
            [
                AppendDm(AB, 1, "alice", "Bob", "hi", 20.0, "d1", False),
                AppendDm(AB, 2, "alice", "Bob", "there", 21.0, "d2", False),
            ]
        )
        snap = store.load()
        assert dict(snap.dm_last_seq) == {AB: 2}
        assert list(snap.dm_cursors) == []
        msgs = store.dm_messages(AB, before=None, after=0, limit=10)
        assert msgs[0] == StoredMessage(AB, 1, 20.0, "alice", "hi", False, False, "d1", "Bob")
        assert [m.seq for m in store.dm_messages(AB, before=2, after=None, limit=10)] == [1]
        store.apply([AppendDm(AB, 3, "Bob", "alice", "yo", 22.0, None, True)])
        assert set(store.load().dm_cursors) == {DmCursorRecord("alice", AB, 3)}
        store.apply([SetDmCursor("Bob", AB, 2), SetDmCursor("Bob", AB, 1)])  # never lowered
        assert set(store.load().dm_cursors) == {
            DmCursorRecord("alice", AB, 3),
            DmCursorRecord("Bob", AB, 2),
        }

    def test_dm_edit_delete(self, store: Store) -> None:
        store.apply(
            [
                AppendDm(AB, 1, "alice", "Bob", "hi", 20.0, None, True),
                AppendDm(AB, 2, "alice", "Bob", "x", 21.0, None, True),
            ]
        )
        store.apply([EditDm(AB, 1, "hello"), DeleteDm(AB, 2)])
        msgs = store.dm_messages(AB, before=None, after=None, limit=10)
        assert [(m.text, m.edited, m.deleted) for m in msgs] == [
            ("hello", True, False),
            (None, False, True),
        ]
        assert store.dm_messages("nobody:none", before=None, after=None, limit=10) == []

    # -- bans, blocks, audit -----------------------------------------------------------------

    def test_bans(self, store: Store) -> None:
        store.apply(
            [AddBan("Bob", 100.0, "spam", "admin", 10.0), AddBan("alice", None, "", "admin", 11.0)]
        )
        assert set(store.load().bans) == {
            BanRecord("Bob", 100.0, "spam", "admin", 10.0),
            BanRecord("alice", None, "", "admin", 11.0),
        }
        store.apply([AddBan("Bob", 200.0, "again", "admin", 12.0), RemoveBan("alice")])
        assert list(store.load().bans) == [BanRecord("Bob", 200.0, "again", "admin", 12.0)]
        store.apply([RemoveBan("alice")])  # absent: no-op
        assert len(list(store.load().bans)) == 1

    def test_blocks(self, store: Store) -> None:
        store.apply([AddBlock("alice", "Bob"), AddBlock("alice", "Bob"), AddBlock("Bob", "admin")])
        assert set(store.load().blocks) == {
            BlockRecord("alice", "Bob"),
            BlockRecord("Bob", "admin"),
        }
        store.apply([RemoveBlock("alice", "Bob"), RemoveBlock("alice", "admin")])
        assert list(store.load().blocks) == [BlockRecord("Bob", "admin")]

    def test_audit_newest_first(self, store: Store) -> None:
        store.apply([Audit("admin", "kick", f"u{i}", f"r{i}", float(i)) for i in range(5)])
        assert store.audit_log(2) == [
            AuditEntry(4.0, "admin", "kick", "u4", "r4"),
            AuditEntry(3.0, "admin", "kick", "u3", "r3"),
        ]
        assert len(store.audit_log(100)) == 5

    def test_load_brings_the_room_windows_and_the_audit_tail(self, store: Store) -> None:
        store.apply(_room_msgs("general", 10))
        store.apply([EditRoomMessage("general", 9, "m9 edited"), DeleteRoomMessage("general", 10)])
        store.apply([Audit("admin", "kick", f"u{i}", "", float(i)) for i in range(5)])
        snap = store.load(recent=3, audit=2)
        assert [(m.seq, m.text, m.deleted) for m in snap.recent["general"]] == [
            (8, "m8", False),
            (9, "m9 edited", False),
            (10, None, True),
        ]
        assert "random" not in snap.recent  # no messages: no window
        assert [e.target for e in snap.audit] == ["u4", "u3"]
        assert snap.room_last_seq == {"general": 10}
        empty = store.load(recent=0, audit=0)
        assert not any(empty.recent.values()) and list(empty.audit) == []

    def test_read_markers_never_go_back_and_follow_renames(self, store: Store) -> None:
        store.apply(_room_msgs("general", 5))
        store.apply(
            [
                SetReadMarker("alice", 3, room="general"),
                SetReadMarker("alice", 2, room="general"),  # never lower
                SetReadMarker("Bob", 4, conv=AB),
                SetReadMarker("alice", 1, room="random"),
            ]
        )
        markers = {(m.user, m.room, m.conv): m.seq for m in store.load().read_markers}
        assert markers == {
            ("alice", "general", None): 3,
            ("Bob", None, AB): 4,
            ("alice", "random", None): 1,
        }
        store.apply([RenameRoom("general", "lobby"), DeleteRoom("random")])
        markers = {(m.user, m.room, m.conv): m.seq for m in store.load().read_markers}
        assert markers == {("alice", "lobby", None): 3, ("Bob", None, AB): 4}

    def test_broadcasts_and_their_cursors(self, store: Store) -> None:
        assert store.load().broadcast_last_seq == 0 and store.broadcasts(after=0, limit=10) == []
        store.apply(
            [AppendBroadcast(n, "admin", f"b{n}", 10.0 + n) for n in range(1, 6)]
            + [SetBroadcastCursor("alice", 3), SetBroadcastCursor("alice", 2)]
        )
        snap = store.load()
        assert snap.broadcast_last_seq == 5 and dict(snap.broadcast_cursors) == {"alice": 3}
        assert [(b.seq, b.text, b.sender, b.ts) for b in store.broadcasts(after=3, limit=10)] == [
            (4, "b4", "admin", 14.0),
            (5, "b5", "admin", 15.0),
        ]
        assert [b.seq for b in store.broadcasts(after=0, limit=2)] == [1, 2]
        with pytest.raises(Exception):  # noqa: B017 - any store-specific integrity error
            store.apply([AppendBroadcast(5, "admin", "again", 99.0)])

    def test_session_tokens_load_while_valid_and_are_revoked(self, store: Store) -> None:
        store.apply(
            [
                AddSessionToken("h1", "Alice", 100.0),
                AddSessionToken("h2", "alice", 200.0),
                AddSessionToken("h3", "bob", 300.0),
            ]
        )

        def valid(at: float) -> set[tuple[str, str, float]]:
            snap = store.load(tokens_valid_at=at)
            return {(t.token_hash, t.user.lower(), t.expires) for t in snap.session_tokens}

        assert valid(0.0) == {("h1", "alice", 100.0), ("h2", "alice", 200.0), ("h3", "bob", 300.0)}
        assert valid(150.0) == {("h2", "alice", 200.0), ("h3", "bob", 300.0)}
        store.apply([RevokeSessionTokens("ALICE", "h2"), RevokeSessionTokens("bob", "h2")])
        assert valid(0.0) == {("h1", "alice", 100.0), ("h3", "bob", 300.0)}
        store.apply([RevokeSessionTokens("alice"), AddSessionToken("h3", "bob", 400.0)])
        assert valid(0.0) == {("h3", "bob", 400.0)}

    # -- files (docs/design/files.md) -----------------------------------------------------------

    def _att(self, fid: str, sha: str = "ab" * 32) -> AttachmentRow:
        return {
            "id": fid,
            "name": "a.txt",
            "size": 5,
            "type": "text/plain",
            "sha256": sha,
            "inline": True,
            "thumbnail": False,
        }

    def test_uploads_usage_and_completion(self, store: Store) -> None:
        f1, f2 = "F" * 21 + "1", "F" * 21 + "2"
        assert store.file(f1) is None
        assert store.file_usage("alice") == FileUsage(0, 0)
        store.apply(
            [
                CreateUpload(f1, "alice", 5, "a.txt", "text/x", 10.0),
                CreateUpload(f2, "Alice", 7, "b", "", 11.0),
            ]
        )
        rec = store.file(f1)
        assert rec is not None and rec.owner == "alice" and rec.length == 5 and not rec.complete
        assert rec.name == "a.txt" and rec.client_type == "text/x" and rec.created == 10.0
        assert not rec.attached and rec.sha256 is None
        assert store.file_usage("ALICE") == FileUsage(12, 2)
        store.apply([CompleteUpload(f1, "ab" * 32, "text/plain", True, False, 20.0)])
        rec = store.file(f1)
        assert rec is not None and rec.complete and rec.sha256 == "ab" * 32
        assert (
            rec.type == "text/plain" and rec.inline and not rec.thumbnail and rec.completed == 20.0
        )
        assert store.file_usage("alice") == FileUsage(12, 1)
        assert store.blob_refs("ab" * 32) == 1 and store.blob_refs("cd" * 32) == 0
        store.apply([RemoveFile(f2), RemoveFile("nope" * 5 + "xx")])
        assert store.file(f2) is None and store.file_usage("alice") == FileUsage(5, 0)

    def test_attachments_on_messages(self, store: Store) -> None:
        f1, f2 = "R" * 22, "D" * 22
        store.apply(
            [
                CreateUpload(f1, "alice", 5, "a.txt", "", 10.0),
                CreateUpload(f2, "alice", 5, "a.txt", "", 10.0),
                CompleteUpload(f1, "ab" * 32, "text/plain", True, False, 11.0),
                CompleteUpload(f2, "ab" * 32, "text/plain", True, False, 11.0),
                AppendRoomMessage("general", 1, "alice", "", 12.0, "c1", self._att(f1)),
                AppendDm(AB, 1, "alice", "Bob", "x", 13.0, "d1", True, self._att(f2)),
            ]
        )
        (msg,) = store.room_messages("general", before=None, after=None, limit=5)
        assert msg.attachment == self._att(f1) and msg.text == ""
        (dm,) = store.dm_messages(AB, before=None, after=None, limit=5)
        assert dm.attachment == self._att(f2)
        assert store.messages_since(["general"], 0.0, 5)[0].attachment == self._att(f1)
        assert store.load().recent["general"][0].attachment == self._att(f1)
        room_file, dm_file = store.file(f1), store.file(f2)
        assert room_file is not None and room_file.attached and room_file.seq == 1
        assert room_file.room_key == "general" and room_file.conv is None and not room_file.deleted
        assert dm_file is not None and dm_file.conv == AB and dm_file.seq == 1
        # the client id of the message each is attached to (a resend is recognised)
        assert (room_file.client_id, dm_file.client_id) == ("c1", "d1")
        assert store.blob_refs("ab" * 32) == 2
        # a rename keeps the attachment where it is
        store.apply([RenameRoom("general", "Main")])
        moved = store.file(f1)
        assert moved is not None and moved.room_key == "main" and moved.seq == 1
        # deleting the message: the record loses its attachment, the file reads as deleted
        store.apply([DeleteRoomMessage("Main", 1), DeleteDm(AB, 1)])
        (msg,) = store.room_messages("main", before=None, after=None, limit=5)
        assert msg.deleted and msg.attachment is None
        gone = store.file(f1)
        assert gone is not None and gone.attached and gone.deleted
        dm_gone = store.file(f2)
        assert dm_gone is not None and dm_gone.deleted
        swept = {r.id for r in store.files_to_sweep(0.0, 10)}
        assert swept == {f1, f2}  # deleted messages' files go whatever their age

    def test_files_to_sweep(self, store: Store) -> None:
        old, new, done, used = "O" * 22, "N" * 22, "C" * 22, "U" * 22
        store.apply(
            [
                CreateUpload(old, "alice", 5, "a", "", 10.0),
                CreateUpload(new, "alice", 5, "a", "", 500.0),
                CreateUpload(done, "alice", 5, "a", "", 10.0),
                CompleteUpload(done, "cd" * 32, "text/plain", True, False, 400.0),
                CreateUpload(used, "alice", 5, "a", "", 10.0),
                CompleteUpload(used, "cd" * 32, "text/plain", True, False, 20.0),
                AppendRoomMessage("general", 1, "alice", "", 30.0, None, self._att(used)),
            ]
        )
        assert [r.id for r in store.files_to_sweep(300.0, 10)] == [old]
        assert [r.id for r in store.files_to_sweep(1000.0, 10)] == [old, done, new]
        assert [r.id for r in store.files_to_sweep(1000.0, 1)] == [old]

    # -- transactions ----------------------------------------------------------------------------

    def test_apply_empty_batch(self, store: Store) -> None:
        store.apply([])
        assert len(list(store.load().users)) == 3

    def test_failing_batch_changes_nothing(self, store: Store) -> None:
        store.apply(_room_msgs("general", 1))
        with pytest.raises(Exception):  # noqa: B017 - any store-specific integrity error
            store.apply(
                [
                    CreateUser("carol", "h", "member", 9.0),
                    AppendRoomMessage("general", 1, "alice", "dup", 9.0, None),
                ]
            )
        assert {u.name for u in store.load().users} == {"admin", "alice", "Bob"}
        assert [
            m.text for m in store.room_messages("general", before=None, after=None, limit=9)
        ] == ["m1"]

    # -- durability -------------------------------------------------------------------------------

    def test_reopen_keeps_everything(self, store_factory: StoreFactory, tmp_path: Path) -> None:
        if not self.durable:
            pytest.skip("volatile store")
        s = store_factory(tmp_path)
        s.apply(
            [
                *_base(),
                SetMembership("alice", "general", True),
                *_room_msgs("general", 3),
                AppendDm(AB, 1, "alice", "Bob", "hi", 20.0, "d1", True),
                AddBan("Bob", None, "r", "admin", 1.0),
                AddBlock("alice", "Bob"),
                Audit("admin", "ban", "Bob", "r", 1.0),
            ]
        )
        close = getattr(s, "close", None)
        if callable(close):
            close()
        s2 = store_factory(tmp_path)
        snap = s2.load()
        assert {u.name for u in snap.users} == {"admin", "alice", "Bob"}
        assert dict(snap.room_last_seq) == {"general": 3}
        assert dict(snap.dm_last_seq) == {AB: 1}
        assert set(snap.dm_cursors) == {DmCursorRecord("Bob", AB, 1)}
        assert len(list(snap.bans)) == 1 and len(list(snap.blocks)) == 1
        assert len(s2.audit_log(10)) == 1
        assert [m.text for m in s2.room_messages("general", before=None, after=None, limit=9)] == [
            "m1",
            "m2",
            "m3",
        ]
