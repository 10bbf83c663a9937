"""Pure parts of the client: backoff and resume cursors."""

from __future__ import annotations

import pytest
from client_helpers import dm, msg
from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.client import Backoff, Cursors
from parlour.protocol import EventName, event_from_fields


def test_backoff_grows_exponentially_with_jitter_and_cap() -> None:
    b = Backoff(base=1.0, factor=2.0, maximum=10.0, jitter=0.5)
    assert [b.delay(n, rand=lambda: 0.0) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    assert b.delay(2, rand=lambda: 1.0) == 2.0  # full jitter halves at most
    assert not b.gives_up(1000)
    assert Backoff(max_attempts=3).gives_up(3)
    with pytest.raises(ValueError):
        Backoff(jitter=2)


@settings(deadline=None)
@given(st.integers(0, 10_000), st.floats(0, 1))
def test_backoff_delay_is_bounded(attempt: int, r: float) -> None:
    b = Backoff()
    assert 0 <= b.delay(attempt, rand=lambda: r) <= b.maximum


def test_cursors_track_and_deduplicate() -> None:
    c = Cursors()
    assert c.resume() is None
    assert c.accept(msg("general", 1))
    assert c.accept(msg("general", 2))
    assert not c.accept(msg("general", 2))  # replayed after resume
    assert c.accept(dm("bob", 5))
    assert not c.accept(dm("bob", 4))
    c.seen_room("random", 10)
    resume = c.resume()
    assert resume is not None
    assert dict(resume.rooms) == {"general": 2, "random": 10}
    assert dict(resume.dms) == {"bob": 5}
    assert c.accept(
        event_from_fields(
            EventName.ROOM_RENAMED, {"room": "random", "new_name": "misc", "by": "admin", "ts": 1.0}
        )
    )
    assert c.rooms == {"general": 2, "misc": 10}
    c.forget_room("general")
    assert c.rooms == {"misc": 10}
    # other events always pass
    assert c.accept(event_from_fields(EventName.PRESENCE, {"user": "a", "online": True, "ts": 1.0}))
