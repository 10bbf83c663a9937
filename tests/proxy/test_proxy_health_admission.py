from __future__ import annotations

import pytest

from parlour.proxy.admission import WaitQueue, may_retry
from parlour.proxy.health import HealthState


def test_fall_needs_consecutive_failures() -> None:
    h = HealthState(rise=2, fall=3)
    assert h.check_failed(1.0, "refused") is None
    assert h.check_failed(2.0, "refused") is None
    assert h.check_passed(3.0) is None  # resets the failure streak: no flapping
    assert h.check_failed(4.0, "refused") is None
    assert h.check_failed(5.0, "refused") is None
    t = h.check_failed(6.0, "timeout")
    assert t is not None and t.new == "down" and t.at == 6.0 and t.reason == "timeout"
    assert not h.up


def test_rise_needs_consecutive_active_successes() -> None:
    h = HealthState(rise=2, fall=1, initial="down")
    assert h.check_passed(1.0) is None
    assert h.check_failed(2.0, "x") is None  # already down: no transition, streak reset
    assert h.check_passed(3.0) is None
    h.passive_success()  # passive success never revives
    assert not h.up
    t = h.check_passed(5.0)
    assert t is not None and t.new == "up"


def test_bad_thresholds_rejected() -> None:
    with pytest.raises(ValueError):
        HealthState(rise=0, fall=1)


def test_wait_queue_bounded_and_expires() -> None:
    q: WaitQueue[str] = WaitQueue(limit=2)
    assert q.push("a", now=0.0, timeout_s=5.0)
    assert q.push("b", now=1.0, timeout_s=5.0)
    assert not q.push("c", now=1.0, timeout_s=5.0)
    assert q.expire(5.5) == ["a"]
    assert len(q) == 1
    assert q.pop() == "b"
    assert q.pop() is None
    assert q.push("d", 0, 1) and q.remove("d") and not q.remove("d")


def test_retry_policy_never_replays_post() -> None:
    assert may_retry(attempt=1, retry_limit=2, request_sent=False, method="POST").retry
    assert not may_retry(attempt=3, retry_limit=2, request_sent=False, method="GET").retry
    assert not may_retry(
        attempt=1, retry_limit=2, request_sent=True, method="POST", reused_connection=True
    ).retry
    assert not may_retry(attempt=1, retry_limit=2, request_sent=True, method="GET").retry
    assert may_retry(
        attempt=1, retry_limit=2, request_sent=True, method="GET", reused_connection=True
    ).retry
    assert not may_retry(
        attempt=1,
        retry_limit=2,
        request_sent=True,
        method="GET",
        reused_connection=True,
        response_started=True,
    ).retry
