from __future__ import annotations

import random
from collections import Counter

import pytest

from parlour.proxy.control import BackendSpec, ControlError, ProxySettings
from parlour.proxy.pool import FULL, Backend, BackendPool, StateChange


def make_pool(**kw: object) -> BackendPool:
    pool = BackendPool(ProxySettings(**kw), rng=random.Random(5))  # type: ignore[arg-type]
    for port in (8001, 8002, 8003):
        pool.add(BackendSpec("127.0.0.1", port), now=0.0)
    return pool


def pick_id(pool: BackendPool, now: float = 0.0, key: bytes | None = None) -> str:
    b = pool.choose(now, key)
    assert isinstance(b, Backend)
    return b.id


def test_down_backend_gets_no_traffic_and_returns() -> None:
    pool = make_pool(health_fall=2, health_rise=2)
    changes: list[StateChange] = []
    pool.listeners.append(changes.append)
    pool.check_result("127.0.0.1:8002", False, 10.0, "connect refused")
    assert pool.get("127.0.0.1:8002").state == "up"
    pool.check_result("127.0.0.1:8002", False, 11.0, "connect refused")
    assert pool.get("127.0.0.1:8002").state == "down"
    assert changes[-1].new == "down" and changes[-1].reason == "connect refused"
    assert "127.0.0.1:8002" not in {pick_id(pool) for _ in range(30)}
    pool.check_result("127.0.0.1:8002", True, 12.0)
    pool.check_result("127.0.0.1:8002", True, 13.0)
    snap = pool.get("127.0.0.1:8002").snapshot(20.0)
    assert snap.state == "up" and snap.state_since == 13.0 and snap.last_crashed == 11.0
    assert snap.last_crash_reason == "connect refused"
    assert snap.total_up_s == pytest.approx(11.0 + 7.0)
    assert "127.0.0.1:8002" in {pick_id(pool) for _ in range(30)}


def test_all_down_gives_none_and_full_gives_sentinel() -> None:
    pool = BackendPool(ProxySettings(health_fall=1))
    pool.add(BackendSpec("h", 1, max_conns=1), 0.0)
    b = pool.choose(0.0)
    assert isinstance(b, Backend)
    b.active = 1
    assert pool.choose(0.0) is FULL
    pool.passive_failure("h:1", 1.0, "refused")
    assert pool.choose(0.0) is None


def test_disable_drain_enable() -> None:
    pool = make_pool()
    pool.set_admin("127.0.0.1:8001", "draining", 1.0)
    pool.set_admin("127.0.0.1:8003", "disabled", 1.0)
    assert {pick_id(pool) for _ in range(10)} == {"127.0.0.1:8002"}
    assert pool.get("127.0.0.1:8001").state == "draining"
    pool.set_admin("127.0.0.1:8001", "enabled", 2.0)
    assert len({pick_id(pool) for _ in range(10)}) == 2


def test_add_remove_validation() -> None:
    pool = make_pool()
    with pytest.raises(ControlError):
        pool.add(BackendSpec("127.0.0.1", 8001), 0.0)
    with pytest.raises(ControlError):
        pool.add(BackendSpec("127.0.0.1", 0), 0.0)
    with pytest.raises(ControlError):
        pool.remove("nope:1")
    with pytest.raises(ControlError):
        pool.set_weight("127.0.0.1:8001", 0)


def test_live_algorithm_change_and_weight() -> None:
    pool = make_pool()
    pool.set_weight("127.0.0.1:8001", 3)
    pool.apply_settings(ProxySettings(algorithm="weighted_round_robin"))
    counts = Counter(pick_id(pool) for _ in range(500))
    assert counts["127.0.0.1:8001"] == 300


def test_interval_mode_through_pool_with_fake_clock() -> None:
    pool = make_pool(selection_mode="interval", interval_s=5.0)
    first = {pick_id(pool, t) for t in (0.0, 1.0, 4.9)}
    assert len(first) == 1
    assert pick_id(pool, 5.0) not in first


def test_ip_hash_through_pool_is_sticky_across_remove_of_other() -> None:
    pool = make_pool(algorithm="ip_hash")
    keys = [f"192.0.2.{i}".encode() for i in range(100)]
    before = {k: pick_id(pool, key=k) for k in keys}
    pool.remove("127.0.0.1:8003")
    for k in keys:
        if before[k] != "127.0.0.1:8003":
            assert pick_id(pool, key=k) == before[k]


def test_round_robin_removal_mid_rotation() -> None:
    pool = make_pool()
    pick_id(pool)
    pick_id(pool)
    pool.remove("127.0.0.1:8003")
    pool.remove("127.0.0.1:8002")
    assert pick_id(pool) == "127.0.0.1:8001"
