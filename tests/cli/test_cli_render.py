"""render_event and friends: pure output formatting of `parlour chat`."""

from __future__ import annotations

from parlour.cli._render import render_event, render_record, render_rooms
from parlour.client import RoomInfo
from parlour.protocol import EVENT_FIELDS, Event, EventName, MessageRecord


def record_event(name: EventName, **kw: object) -> Event:
    base: dict[str, object] = {
        "seq": 12,
        "ts": 0.0,
        "from": "bob",
        "text": "hello",
        "edited": False,
        "deleted": False,
        "client_id": "c",
    }
    base.update(kw)
    return Event(name, base)


def test_room_message_line() -> None:
    event = record_event(EventName.MESSAGE, room="general")
    assert render_event(event, "alice") == "[#general 12] bob: hello"


def test_dm_lines_from_both_sides() -> None:
    incoming = record_event(EventName.DM, peer="alice", **{"from": "alice", "text": "hi"})
    assert render_event(incoming, "bob") == "[dm] alice → you: hi"
    outgoing = record_event(EventName.DM, peer="bob", **{"from": "alice", "text": "hi"})
    assert render_event(outgoing, "alice") == "[dm] you → bob: hi"


def test_edits_and_tombstones() -> None:
    edited = record_event(EventName.MESSAGE_EDITED, room="general", text="hello!", edited=True)
    assert render_event(edited, "x") == "[#general 12] bob: hello! (edited)"
    gone = record_event(EventName.MESSAGE_DELETED, room="general", text=None, deleted=True)
    assert render_event(gone, "x") == "[#general 12] (message by bob deleted)"


def test_every_event_renders() -> None:
    samples: dict[str, object] = {
        "room": "general",
        "peer": "bob",
        "seq": 1,
        "ts": 0.0,
        "from": "bob",
        "text": "t",
        "edited": False,
        "deleted": False,
        "client_id": None,
        "user": "carol",
        "online": True,
        "by": "admin",
        "reason": "spam",
        "until": None,
        "new_name": "ops2",
        "code": "kicked",
    }
    for name, fields in EVENT_FIELDS.items():
        wanted = {k: samples[k] for k in fields}
        line = render_event(Event(name, wanted), "alice")
        assert line, name
    kicked = Event(EventName.KICKED, {"room": None, "by": "admin", "reason": "flood", "ts": 0})
    assert render_event(kicked) == "! you were kicked from the server by admin: flood"
    banned = Event(EventName.BANNED, {"by": "admin", "reason": "", "until": None, "ts": 0})
    assert render_event(banned) == "! you were banned permanently by admin"


def test_history_lines_have_time_and_rooms_table() -> None:
    rec = MessageRecord(room="general", seq=3, ts=0.0, sender="bob", text="x")
    assert render_record(rec, "bob", with_time=True).startswith("[#general 3 ")
    lines = render_rooms(
        [RoomInfo("general", 3, 1, True), RoomInfo("help", 0, 0, False)], "general"
    )
    assert lines[0].startswith("* #general") and lines[1].startswith("  #help")
