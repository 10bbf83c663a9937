"""The library's read pacing: it never sends reads faster than the server's read bucket
would take them (so a client opening many rooms at once is not refused)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from parlour.client.pacing import READ_TYPES, ReadPacer
from parlour.core.limits import TokenBucket
from parlour.protocol import REQUEST_TYPES


def test_a_burst_then_one_read_per_token() -> None:
    p = ReadPacer()
    assert p.wait(0.0) == 0.0  # not configured: nothing held back
    p.configure(rate=20.0, burst=40.0)
    waits = [p.wait(100.0) for _ in range(45)]
    assert waits[:39] == [0.0] * 39
    assert all(b > a for a, b in itertools.pairwise(waits[39:]))  # queued, in turn
    assert abs(waits[-1] - 6 / (20 * 0.95)) < 1e-9


def test_the_read_types_are_request_types() -> None:
    assert set(REQUEST_TYPES) >= READ_TYPES


@given(st.lists(st.floats(0, 0.2), min_size=1, max_size=200))
def test_paced_reads_are_never_refused_by_the_server_bucket(gaps: list[float]) -> None:
    """Reads asked for at any times and sent when the pacer says are all within the server's
    bucket (rate 20/s, burst 40)."""
    pacer, server = ReadPacer(), TokenBucket(20.0, 40.0, now=1000.0)
    pacer.configure(20.0, 40.0)
    now, sends = 1000.0, []
    for gap in gaps:
        now += gap
        sends.append(now + pacer.wait(now))
    for at in sorted(sends):
        assert server.take(at) == 0.0, f"refused at {at}"
