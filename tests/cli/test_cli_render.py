"""render_event and friends: pure output formatting of `parlour chat`, and that nothing a user
sends can reach the terminal as a control sequence."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.cli._render import (
    SILENT_EVENTS,
    clean,
    clean_text,
    render_event,
    render_join,
    render_record,
    render_rooms,
    render_who,
)
from parlour.client import JoinResult, RoomInfo, UserPresence
from parlour.protocol import EVENT_FIELDS, Event, EventName, MessageRecord, event_from_fields


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
    return event_from_fields(name, base)


def test_room_message_line() -> None:
    event = record_event(EventName.MESSAGE, room="general")
    assert render_event(event, "alice") == "#general <bob> hello [12]"


def test_dm_lines_from_both_sides() -> None:
    incoming = record_event(EventName.DM, peer="alice", **{"from": "alice", "text": "hi"})
    assert render_event(incoming, "bob") == "[DM] alice: hi [12]"
    outgoing = record_event(EventName.DM, peer="bob", **{"from": "alice", "text": "hi"})
    assert render_event(outgoing, "alice") == "[DM] you → bob: hi [12]"


def test_edits_and_deletions_say_what_happened() -> None:
    edited = record_event(EventName.MESSAGE_EDITED, room="general", text="hello!", edited=True)
    assert render_event(edited, "x") == "#general * bob edited [12]: hello!"
    gone = record_event(EventName.MESSAGE_DELETED, room="general", text=None, deleted=True)
    assert render_event(gone, "x") == "#general * message [12] by bob was deleted"
    dm_gone = record_event(EventName.DM_DELETED, peer="bob", text=None, deleted=True)
    assert render_event(dm_gone, "alice") == "[DM bob] * message [12] by bob was deleted"
    mine = record_event(EventName.DM_EDITED, peer="bob", text="fixed", edited=True)
    assert render_event(mine, "BOB") == "[DM bob] * you edited [12]: fixed"


def test_history_shows_edited_marks_and_tombstones() -> None:
    rec = MessageRecord(room="general", seq=3, ts=0.0, sender="bob", text="x", edited=True)
    assert render_record(rec, "me").endswith("#general <bob> x (edited) [3]")
    tomb = MessageRecord(room="general", seq=4, ts=0.0, sender="bob", text=None, deleted=True)
    assert render_record(tomb, "me") == "#general <bob> (deleted) [4]"


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
        "attachment": None,
        "user": "carol",
        "online": True,
        "by": "admin",
        "reason": "spam",
        "until": None,
        "new_name": "ops2",
        "code": "shutting_down",
        "offer": "hK2w9TqzX1bA",
        "filename": "a.txt",
        "size": 1234,
        "sha256": "ab" * 32,
        "expires": 0.0,
        "transfer": "00" * 8,
        "key": "k",
        "peers": [],
        "relay": None,
    }
    for name, fields in EVENT_FIELDS.items():
        wanted = {k: samples[k] for k in fields}
        line = render_event(event_from_fields(name, wanted), "alice")
        if name in SILENT_EVENTS:
            assert line is None, name
        else:
            assert line, name
    kicked = event_from_fields(
        EventName.KICKED, {"room": None, "by": "admin", "reason": "flood", "ts": 0}
    )
    assert render_event(kicked) == "! you were kicked from the server by admin: flood"
    from_room = event_from_fields(
        EventName.KICKED, {"room": "general", "by": "admin", "reason": "", "ts": 0}
    )
    assert render_event(from_room) == (
        "! you were kicked from #general by admin (/join it again to come back)"
    )
    bye = event_from_fields(EventName.DISCONNECT, {"code": "kicked", "reason": "kicked by admin"})
    assert render_event(bye) is None  # the `kicked` event before it says everything
    banned = event_from_fields(
        EventName.BANNED, {"by": "admin", "reason": "", "until": None, "ts": 0}
    )
    assert render_event(banned) == "! you were banned permanently by admin"
    joined = event_from_fields(EventName.JOINED, {"room": "general", "user": "carol", "ts": 0})
    assert render_event(joined) == "* carol joined #general"
    cast = event_from_fields(
        EventName.BROADCAST, {"from": "admin", "text": "restart at 10", "ts": 0, "seq": 1}
    )
    assert render_event(cast) == "*** broadcast from admin: restart at 10"


def test_history_lines_have_time_and_tables() -> None:
    rec = MessageRecord(room="general", seq=3, ts=0.0, sender="bob", text="x")
    line = render_record(rec, "bob", with_time=True)
    assert line.endswith(" #general <bob> x [3]") and line[2] == ":"
    lines = render_rooms(
        [RoomInfo("general", 3, 1, True), RoomInfo("help", 0, 0, False)], "general"
    )
    assert lines[0].startswith("* #general") and lines[1].startswith("  #help")
    who = render_who([UserPresence("bob", "admin", True, None, None)])
    assert who[0].startswith("bob (admin)") and "online" in who[0]
    join = render_join(JoinResult("general", ("alice", "bob"), ("alice",), (rec,), 3), "alice")
    assert join[-1] == "* you are in #general — members: alice, bob (away)"


def test_join_names_how_many_members_the_bounded_list_left_out() -> None:
    result = JoinResult.from_data(
        {"room": "big", "members": ["ann", "bo"], "online": ["ann"], "members_total": 250}
    )
    assert result.members_total == 250
    assert (
        render_join(result, "ann")[-1] == "* you are in #big — members: ann, bo (away) and 248 more"
    )
    small = JoinResult.from_data({"room": "s", "members": ["ann"], "online": []})
    assert render_join(small, "ann")[-1] == "* you are in #s — members: ann (away)"


def test_control_sequences_are_shown_not_obeyed() -> None:
    evil = "hi \x1b[2J\x1b]0;owned\x07 \u202eevil\x9b31m"
    line = render_event(record_event(EventName.MESSAGE, room="general", text=evil), "me")
    assert line == "#general <bob> hi \\x1b[2J\\x1b]0;owned\\x07 \\u202eevil\\x9b31m [12]"
    assert clean("a\rb\x00c\x7f") == "a\\x0db\\x00c\\x7f"


def test_multi_line_messages_are_indented() -> None:
    line = render_event(record_event(EventName.MESSAGE, room="g", text="one\r\ntwo\tx"), "me")
    assert line == "#g <bob> one\n    two    x [12]"


def _dangerous(ch: str) -> bool:
    return ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029\u202e\u2066"


@settings(deadline=None, max_examples=300)
@given(st.text(max_size=60), st.text(max_size=20))
def test_no_control_character_survives_rendering(text: str, name: str) -> None:
    fields: dict[str, object] = {"room": name, "user": name, "by": name, "reason": text}
    for event in (
        record_event(EventName.MESSAGE, room=name, text=text, **{"from": name}),
        record_event(EventName.DM_EDITED, peer=name, text=text, edited=True),
        event_from_fields(EventName.KICKED, {**fields, "ts": 0}),
        event_from_fields(EventName.BROADCAST, {"from": name, "text": text, "ts": 0, "seq": 1}),
        event_from_fields(EventName.DISCONNECT, {"code": "x", "reason": text}),
    ):
        line = render_event(event, "me")
        assert line is not None
        for part in line.split("\n"):
            assert not any(_dangerous(ch) for ch in part), repr(part)
    assert clean(clean(text)) == clean(text)  # the output sink may clean again: idempotent
    assert "\n" not in clean(text)
    assert all(not _dangerous(ch) for ch in clean_text(text) if ch != "\n")
