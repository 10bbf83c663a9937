"""The pure catch-up rule (parlour.client.catchup) against a model of the server's bounded
catch-up with live traffic interleaved."""

from __future__ import annotations

from client_helpers import dm, msg
from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.client import Cursors
from parlour.client.catchup import CatchUp
from parlour.protocol import Event, EventName, event_from_fields


def test_catch_up_holds_back_a_gap_until_the_next_sync() -> None:
    cursors = Cursors()
    cursors.seen_room("general", 10)
    cu = CatchUp(cursors)
    cu.replied(truncated=True)
    assert cu.batch_empty
    assert cu.accept(msg("general", 13))  # first of the batch: 11, 12 were from blocked users
    assert not cu.batch_empty
    assert cu.accept(msg("general", 14))
    assert not cu.accept(msg("general", 90))  # live, or after a gap: pushed again later
    assert not cu.accept(msg("general", 14))  # duplicate
    assert cu.held_back == 1 and cursors.rooms["general"] == 14
    assert cu.accept(dm("bob", 7))  # no cursor for bob: offline delivery, nothing to resume
    assert not cu.accept(dm("bob", 9))
    assert cu.accept(
        event_from_fields(EventName.PRESENCE, {"user": "bob", "online": True, "ts": 1.0})
    )
    cu.replied(truncated=False)  # complete: from now on everything new is taken
    assert cu.accept(msg("general", 90)) and cu.accept(dm("bob", 9))


def test_catch_up_abandon_takes_everything_again() -> None:
    cursors = Cursors()
    cursors.seen_room("general", 1)
    cu = CatchUp(cursors)
    cu.replied(truncated=True)
    cu.abandon()
    assert not cu.incomplete and cu.accept(msg("general", 50))


def test_joining_an_empty_room_gives_it_a_cursor() -> None:
    cursors = Cursors()
    cursors.seen_room("help", 0)
    assert cursors.resume() is not None and cursors.resume().rooms == {"help": 0}  # type: ignore[union-attr]


class ModelServer:
    """Rooms with a log of (seq, visible); a catch-up pushes visible messages after each
    cursor, rooms in resume order, at most ``budget`` per reply, like the core."""

    def __init__(self, rooms: dict[str, list[bool]], budget: int) -> None:
        self.logs = {room: list(vis) for room, vis in rooms.items()}
        self.budget = budget

    def catch_up(self, resume: dict[str, int]) -> tuple[bool, list[Event]]:
        left = self.budget
        out: list[Event] = []
        for room, cursor in resume.items():
            limit = left + 1  # like ChatService._push: fetch budget + 1, skip invisible ones
            log = self.logs.get(room, [])
            fetched = list(enumerate(log[cursor:], start=cursor + 1))[:limit]
            for seq, visible in fetched:
                if not visible:
                    continue
                if left == 0:
                    return True, out
                left -= 1
                out.append(msg(room, seq))
            if len(fetched) >= limit:
                return True, out
        return False, out

    def post(self, room: str, visible: bool) -> Event | None:
        self.logs[room].append(visible)
        return msg(room, len(self.logs[room])) if visible else None


@settings(deadline=None, max_examples=150)
@given(
    backlog=st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.lists(st.booleans(), max_size=60),
        min_size=1,
    ),
    budget=st.integers(3, 12),
    live=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3)), max_size=40),
    seen=st.integers(0, 5),
)
def test_catch_up_model_delivers_every_visible_message_once_in_order(
    backlog: dict[str, list[bool]],
    budget: int,
    live: list[tuple[str, int]],
    seen: int,
) -> None:
    # invisible (blocked) runs shorter than the budget: the core always pushes something
    rooms = {r: [v or i % 2 == 0 for i, v in enumerate(vis)] for r, vis in backlog.items()}
    for r in ("a", "b", "c"):
        rooms.setdefault(r, [])
    server = ModelServer(rooms, budget)
    cursors = Cursors()
    for room, log in rooms.items():
        cursors.seen_room(room, min(seen, len(log)))
    start = dict(cursors.rooms)
    cu = CatchUp(cursors)
    delivered: dict[str, list[int]] = {r: [] for r in rooms}

    def feed(event: Event) -> None:
        if cu.accept(event):
            delivered[event.fields["room"]].append(event.fields["seq"])

    truncated, batch = server.catch_up(dict(cursors.rooms))  # the login
    rounds = 0
    while True:
        cu.replied(truncated)
        for event in batch:
            feed(event)
        # live traffic between this batch and the next sync
        if live:
            room, n = live.pop()
            for i in range(n):
                event = server.post(room, visible=i != 1)
                if event is not None:
                    feed(event)
        if not cu.incomplete:
            break
        assert not cu.batch_empty
        rounds += 1
        assert rounds < 1000
        truncated, batch = server.catch_up(dict(cursors.rooms))
    for room, n in live:  # after the catch-up: live traffic only
        for _ in range(n):
            event = server.post(room, visible=True)
            assert event is not None
            feed(event)
    for room, log in server.logs.items():
        expected = [seq for seq, vis in enumerate(log, start=1) if vis and seq > start[room]]
        assert delivered[room] == expected
