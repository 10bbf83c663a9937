"""The full-screen client's model without a terminal: buffers (ordering, counts, read marker,
paging, bounds), the viewport (what is on screen, scrolling), events applied to buffers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.cli.tui.buffers import Buffer, BufferKind, BufferList, EntryKind, Target
from parlour.cli.tui.events import apply_event
from parlour.cli.tui.viewport import Viewport
from parlour.client.types import Unread
from parlour.protocol import (
    DmEvent,
    JoinedEvent,
    LeftEvent,
    MessageDeletedEvent,
    MessageEditedEvent,
    MessageEvent,
    PresenceEvent,
    ReadMarkerEvent,
    RoomRenamedEvent,
)
from parlour.protocol import MessageRecord as Rec

ROOM = Target(BufferKind.ROOM, "general")


def rec(seq: int, sender: str = "bob", text: str = "hi", room: str = "general") -> Rec:
    return Rec(room=room, seq=seq, ts=1_700_000_000.0 + seq, sender=sender, text=text)


def room_buffer(capacity: int = 100_000) -> Buffer:
    return Buffer(ROOM, "alice", capacity=capacity)


def seqs(buf: Buffer) -> list[int | None]:
    return [e.seq for e in buf.entries]


# ---------------------------------------------------------------------- buffers


def test_messages_are_placed_by_sequence_and_deduplicated() -> None:
    buf = room_buffer()
    buf.add(rec(3))
    assert not buf.add(rec(2))  # older than what is loaded: it comes with its history page
    buf.has_older = False  # (the newest page said there is nothing older)
    for seq in (5, 4, 5, 1):
        buf.add(rec(seq))
    assert seqs(buf) == [1, 3, 4, 5]
    buf.note("a notice", 0.0)
    buf.add(rec(6))
    assert seqs(buf) == [1, 3, 4, 5, None, 6]
    buf.add(rec(2))  # a gap filled late goes in its place, before the notice
    assert seqs(buf) == [1, 2, 3, 4, 5, None, 6]


def test_unread_and_mentions_follow_the_servers_rule() -> None:
    buf = room_buffer()
    buf.add(rec(1, "alice", "mine, not unread"))
    buf.add(rec(2, "bob", "hello"))
    buf.add(rec(3, "bob", "hey @Alice look"))
    buf.add(rec(4, "bob", "mail bob@alice.example is not a mention"))
    buf.add(rec(5, "carol", "@alicexyz is someone else"))
    assert (buf.unread, buf.mentions) == (4, 1)
    buf.update(Rec(room="general", seq=3, ts=0, sender="bob", text=None, deleted=True))
    assert (buf.unread, buf.mentions) == (3, 0)  # deleted messages do not count
    assert buf.mark_read(4)
    assert (buf.unread, buf.mentions) == (1, 0)
    assert not buf.mark_read(2)  # never moves back
    assert buf.read_seq == 4


def test_every_unread_dm_is_a_mention() -> None:
    buf = Buffer(Target(BufferKind.DM, "bob"), "alice")
    buf.add(Rec(peer="bob", seq=1, ts=1.0, sender="bob", text="psst"))
    buf.add(Rec(peer="bob", seq=2, ts=2.0, sender="alice", text="yes?"))
    assert (buf.unread, buf.mentions) == (1, 1)


def test_server_counts_for_messages_not_loaded_are_reconciled_by_paging() -> None:
    buf = room_buffer()
    for seq in range(91, 101):
        buf.add(rec(seq, text="@alice" if seq == 95 else "x"))
    buf.has_older = True
    # the server counts 30 unread after read_seq 70 (2 mentions): 20 of them are not loaded
    buf.set_counts(Unread("general", None, 100, 70, 30, 2, False))
    assert (buf.unread, buf.mentions, buf.outside_unread) == (30, 2, 20)
    assert buf.marker_index() is None  # the marker is above what is loaded
    added = buf.add_older([rec(s, text="@alice" if s == 80 else "y") for s in range(61, 91)], True)
    assert added == 30
    assert (buf.unread, buf.mentions, buf.outside_unread) == (30, 2, 0)
    index = buf.marker_index()
    assert index is not None and buf.entries[index].seq == 71


def test_marker_line_skips_own_messages_and_moves_only_when_read_elsewhere() -> None:
    buf = room_buffer()
    buf.has_older = False
    for seq, who in ((1, "bob"), (2, "alice"), (3, "bob")):
        buf.add(rec(seq, who))
    buf.set_counts(Unread("general", None, 3, 1, 1, 0, False))
    index = buf.marker_index()
    assert index is not None and buf.entries[index].seq == 3  # not above alice's own [2]
    buf.mark_read(3)  # read here: the line stays where the news started
    assert buf.marker_index() == index and buf.unread == 0
    buf.left_buffer()  # leaving the buffer: next time nothing is new
    assert buf.marker_index() is None
    buf.add(rec(4))
    buf.mark_read(4, elsewhere=True)  # another session read it: the line moves too
    assert buf.marker_index() is None and buf.marker_seq == 4


def test_edits_and_deletions_change_the_entry_in_place() -> None:
    buf = room_buffer()
    buf.add(rec(1, text="frist"))
    entry = buf.entries[0]
    version = entry.version
    buf.update(Rec(room="general", seq=1, ts=1.0, sender="bob", text="first", edited=True))
    assert (entry.text, entry.edited, entry.version > version) == ("first", True, True)
    buf.update(Rec(room="general", seq=1, ts=1.0, sender="bob", text=None, deleted=True))
    assert entry.deleted and entry.text is None
    assert not buf.update(rec(99))  # not loaded: nothing to change


def test_memory_is_bounded_and_trimmed_messages_page_back() -> None:
    buf = room_buffer(capacity=100)
    buf.has_older = False
    for seq in range(1, 251):
        buf.add(rec(seq))
    assert len(buf) <= 100
    assert buf.has_older and buf.first_seq is not None and buf.first_seq > 1
    assert buf.unread == 250  # trimmed unread messages still count (outside)
    first = buf.first_seq
    buf.add_older([rec(s) for s in range(first - 10, first)], True)
    assert buf.first_seq == first - 10


def test_trim_keeps_what_is_on_screen_until_twice_the_capacity() -> None:
    buf = room_buffer(capacity=100)
    for seq in range(1, 101):
        buf.add(rec(seq))
    buf.view.follow, buf.view.anchor, buf.view.top_index = False, 5, 0  # reading the top
    for seq in range(101, 150):
        buf.add(rec(seq))
    assert buf.first_seq == 1  # kept while the user reads it
    for seq in range(150, 260):
        buf.add(rec(seq))
    assert len(buf) < 200 and buf.first_seq is not None and buf.first_seq > 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 60), max_size=120), st.integers(0, 60))
def test_unread_count_equals_a_recount(order: list[int], read: int) -> None:
    buf = room_buffer()
    buf.has_older = False
    for seq in order:
        buf.add(rec(seq, "alice" if seq % 7 == 0 else "bob", "@alice" if seq % 5 == 0 else "x"))
    buf.mark_read(read)
    loaded = {e.seq for e in buf.entries}
    expect = [s for s in loaded if s is not None and s > read and s % 7 != 0]
    assert buf.unread == len(expect)
    assert buf.mentions == len([s for s in expect if s % 5 == 0])
    assert seqs(buf) == sorted(loaded)


def test_buffer_list_order_numbers_and_next_active() -> None:
    bufs = BufferList("alice")
    general = bufs.open(ROOM)
    bob = bufs.open(Target(BufferKind.DM, "bob"))
    rnd = bufs.open(Target(BufferKind.ROOM, "random"))
    assert [b.target.label for b in bufs] == ["server", "#general", "#random", "@bob"]
    assert len(rnd) == 0 and (rnd or None) is rnd  # empty, yet a buffer
    assert bufs.by_number(4) is bob and bufs.number_of(rnd) == 3
    rnd.add(rec(1, room="random"))
    bob.add(Rec(peer="bob", seq=1, ts=1.0, sender="bob", text="hi"))
    assert bufs.next_active() is bob  # mentions first
    bufs.switch(general)
    assert bufs.step(1) is rnd and bufs.step(-1) is bufs.server
    assert bufs.rename_room("GENERAL", "lobby") is general
    assert bufs.room("lobby") is general and [b.target.label for b in bufs][1] == "#lobby"


# ---------------------------------------------------------------------- events


def test_events_update_buffers() -> None:
    bufs = BufferList("alice")
    general = bufs.open(ROOM)
    general.set_members(["alice", "bob"], ["alice"], 2)
    apply_event(bufs, MessageEvent.of(rec(1)), 0.0)
    apply_event(bufs, MessageEditedEvent.of(rec(1, text="edited")), 0.0)
    assert general.entries[0].text == "edited"
    apply_event(
        bufs,
        MessageDeletedEvent.of(
            Rec(room="general", seq=1, ts=1.0, sender="bob", text=None, deleted=True)
        ),
        0.0,
    )
    assert general.entries[0].deleted
    apply_event(bufs, PresenceEvent(user="bob", online=True, ts=1.0), 0.0)
    assert "bob" in general.online
    apply_event(bufs, JoinedEvent(room="general", user="carol", ts=2.0), 0.0)
    apply_event(bufs, LeftEvent(room="general", user="bob", ts=3.0), 0.0)
    assert set(general.members) == {"alice", "carol"}
    assert [e.text for e in general.entries if e.kind is EntryKind.NOTICE] == [
        "carol joined #general",
        "bob left #general",
    ]
    dm = apply_event(bufs, DmEvent(peer="Zoë", seq=3, ts=1.0, sender="Zoë", text="hi"), 0.0)
    assert dm is bufs.dm("zoë") and dm is not None and dm.has_older  # seq 3: older exist
    apply_event(bufs, ReadMarkerEvent(room="general", peer=None, seq=1), 0.0)
    assert general.read_seq == 1 and general.marker_seq == 1
    apply_event(bufs, RoomRenamedEvent(room="general", new_name="lobby", by="admin", ts=4.0), 0.0)
    assert bufs.room("lobby") is general


# ---------------------------------------------------------------------- viewport


def heights(*hs: int):  # type: ignore[no-untyped-def]
    return lambda i: hs[i]


def test_viewport_follows_and_draws_from_the_bottom() -> None:
    v = Viewport()
    h = heights(1, 2, 3, 1)
    assert v.rows(4, 4, h) == [(2, 0), (2, 1), (2, 2), (3, 0)]
    assert v.rows(4, 10, h) == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (3, 0)]


def test_viewport_scrolls_clamps_and_returns_to_following() -> None:
    v = Viewport()
    h = heights(1, 2, 3, 1)
    v.scroll(2, 4, 3, h)  # two lines up
    assert not v.follow
    assert v.rows(4, 3, h) == [(1, 1), (2, 0), (2, 1)]
    v.scroll(100, 4, 3, h)  # far past the top: the first line is at the top
    assert v.rows(4, 3, h) == [(0, 0), (1, 0), (1, 1)]
    v.scroll(-100, 4, 3, h)
    assert v.follow
    v.scroll(1, 4, 3, h)
    before = v.rows(4, 3, h)
    assert before == [(2, 0), (2, 1), (2, 2)]
    v.inserted(0, 5)  # a page of older entries arrived: the same lines stay on screen
    h2 = heights(1, 1, 1, 1, 1, 1, 2, 3, 1)
    assert v.rows(9, 3, h2) == [(i + 5, line) for i, line in before]


def test_viewport_show_at_top() -> None:
    v = Viewport()
    h = heights(*([1] * 20))
    v.show_at_top(5, 20, 4, h)
    assert v.rows(20, 4, h) == [(5, 0), (6, 0), (7, 0), (8, 0)]
    v.show_at_top(18, 20, 4, h)  # everything from there fits: follow
    assert v.follow


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=40),
    st.integers(1, 12),
    st.lists(st.integers(-15, 15), max_size=10),
)
def test_viewport_screen_is_always_contiguous(hs: list[int], height: int, moves: list[int]) -> None:
    v = Viewport()
    h = heights(*hs)
    total = sum(hs)
    for move in moves:
        v.scroll(move, len(hs), height, h)
        rows = v.rows(len(hs), height, h)
        assert len(rows) == min(height, total)
        flat = [(i, line) for i, n in enumerate(hs) for line in range(n)]
        start = flat.index(rows[0])
        assert rows == flat[start : start + len(rows)]
