from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.proxy.balancing import (
    Candidate,
    ConsistentHashRing,
    HashBalancer,
    IntervalSelector,
    LeastConnBalancer,
    P2CBalancer,
    RandomBalancer,
    RoundRobinBalancer,
    SmoothWeightedBalancer,
    make_balancer,
)


def cands(*weights: int, active: tuple[int, ...] | None = None) -> list[Candidate]:
    act = active or (0,) * len(weights)
    return [Candidate(f"b{i}", w, a) for i, (w, a) in enumerate(zip(weights, act, strict=True))]


def test_round_robin_cycles_evenly() -> None:
    rr = RoundRobinBalancer()
    picks = [rr.pick(cands(1, 1, 1)) for _ in range(9)]
    assert picks == ["b0", "b1", "b2"] * 3


def test_round_robin_add_remove_during_rotation_never_out_of_range() -> None:
    rr = RoundRobinBalancer()
    pool = cands(1, 1, 1, 1)
    rng = random.Random(7)
    for i in range(2000):
        if i % 3 == 0 and len(pool) > 1:
            pool.pop(rng.randrange(len(pool)))
        elif i % 5 == 0:
            pool.append(Candidate(f"n{i}"))
        chosen = rr.pick(pool)
        assert chosen in {c.id for c in pool}
    assert rr.pick([]) is None


@given(st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=60))
@settings(deadline=None, max_examples=100)
def test_every_balancer_picks_a_member_under_churn(sizes: list[int]) -> None:
    for algo in ("round_robin", "weighted_round_robin", "least_conn", "random", "p2c", "ip_hash"):
        bal = make_balancer(algo, random.Random(1))  # type: ignore[arg-type]
        for n in sizes:
            pool = [Candidate(f"x{j}", 1 + j % 3, j % 4) for j in range(n)]
            chosen = bal.pick(pool, b"key")
            if n == 0:
                assert chosen is None
            else:
                assert chosen in {c.id for c in pool}


def test_smooth_weighted_sequence_matches_nginx() -> None:
    swrr = SmoothWeightedBalancer()
    seq = [swrr.pick([Candidate("a", 5), Candidate("b", 1), Candidate("c", 1)]) for _ in range(7)]
    assert seq == ["a", "a", "b", "a", "c", "a", "a"]


def test_smooth_weighted_distribution_follows_weights() -> None:
    swrr = SmoothWeightedBalancer()
    counts = Counter(swrr.pick(cands(3, 2, 1)) for _ in range(600))
    assert counts == {"b0": 300, "b1": 200, "b2": 100}


def test_least_conn_picks_lowest_weighted_load() -> None:
    lc = LeastConnBalancer()
    assert lc.pick(cands(1, 1, 1, active=(5, 2, 9))) == "b1"
    # weight 4 with 6 active (1.5/unit) beats weight 1 with 2 active
    assert lc.pick(cands(4, 1, active=(6, 2))) == "b0"


def test_least_conn_ties_rotate() -> None:
    lc = LeastConnBalancer()
    counts = Counter(lc.pick(cands(1, 1, 1)) for _ in range(300))
    assert counts == {"b0": 100, "b1": 100, "b2": 100}


def _chi_square_ok(counts: Counter[str | None], expected: dict[str, float]) -> bool:
    # 3 categories -> 2 dof; 13.8 is the 0.001 critical value: fails only for a real skew
    stat = sum((counts[k] - e) ** 2 / e for k, e in expected.items())
    return stat < 13.8


def test_random_distribution_is_weighted() -> None:
    r = RandomBalancer(random.Random(42))
    n = 6000
    counts = Counter(r.pick(cands(1, 2, 3)) for _ in range(n))
    assert _chi_square_ok(counts, {"b0": n / 6, "b1": n / 3, "b2": n / 2})


def test_p2c_prefers_less_loaded_and_spreads() -> None:
    p2c = P2CBalancer(random.Random(3))
    # equal load -> roughly even
    n = 6000
    counts = Counter(p2c.pick(cands(1, 1, 1)) for _ in range(n))
    assert _chi_square_ok(counts, {"b0": n / 3, "b1": n / 3, "b2": n / 3})
    # one heavily loaded backend is chosen only if both picks land on it (never: distinct)
    loaded = Counter(p2c.pick(cands(1, 1, 1, active=(50, 0, 0))) for _ in range(1000))
    assert loaded["b0"] == 0


def test_consistent_hash_is_sticky() -> None:
    hb = HashBalancer()
    pool = cands(1, 1, 1, 1)
    hb.set_members([(c.id, c.weight) for c in pool])
    for i in range(200):
        key = f"10.0.{i // 256}.{i % 256}".encode()
        first = hb.pick(pool, key)
        assert all(hb.pick(pool, key) == first for _ in range(3))


@pytest.mark.parametrize("n", [4, 8])
def test_consistent_hash_remaps_about_one_nth_on_add_and_remove(n: int) -> None:
    members = [(f"10.1.1.{i}:80", 1) for i in range(n)]
    keys = [f"client-{i}".encode() for i in range(20000)]
    ring = ConsistentHashRing(members)
    before = {k: ring.lookup(k, {m for m, _ in members}) for k in keys}

    grown = [*members, ("10.1.1.99:80", 1)]
    ring2 = ConsistentHashRing(grown)
    after_add = {k: ring2.lookup(k, {m for m, _ in grown}) for k in keys}
    moved = sum(before[k] != after_add[k] for k in keys) / len(keys)
    assert 0.5 / (n + 1) < moved < 1.6 / (n + 1)
    # every moved key moved to the new member only
    assert all(after_add[k] == "10.1.1.99:80" for k in keys if before[k] != after_add[k])

    shrunk = members[1:]
    ring3 = ConsistentHashRing(shrunk)
    after_rm = {k: ring3.lookup(k, {m for m, _ in shrunk}) for k in keys}
    moved_rm = sum(before[k] != after_rm[k] for k in keys) / len(keys)
    assert 0.5 / n < moved_rm < 1.6 / n
    assert all(before[k] == members[0][0] for k in keys if before[k] != after_rm[k])


def test_hash_balancer_down_member_moves_only_its_keys() -> None:
    hb = HashBalancer()
    pool = cands(1, 1, 1, 1)
    hb.set_members([(c.id, 1) for c in pool])
    keys = [f"k{i}".encode() for i in range(3000)]
    before = {k: hb.pick(pool, k) for k in keys}
    without_b2 = [c for c in pool if c.id != "b2"]
    after = {k: hb.pick(without_b2, k) for k in keys}
    for k in keys:
        if before[k] != "b2":
            assert after[k] == before[k]
        else:
            assert after[k] != "b2"


def test_hash_balancer_spreads_keys() -> None:
    hb = HashBalancer()
    pool = cands(1, 1, 1)
    hb.set_members([(c.id, 1) for c in pool])
    n = 6000
    counts = Counter(hb.pick(pool, f"ip{i}".encode()) for i in range(n))
    # virtual nodes keep the ring within ~15% of even
    assert all(abs(counts[c.id] - n / 3) < 0.15 * n / 3 for c in pool)


def test_interval_selection_with_fake_clock() -> None:
    sel = IntervalSelector(RoundRobinBalancer(), interval_s=10.0)
    pool = cands(1, 1, 1)
    assert [sel.pick(pool, t) for t in (0.0, 1.0, 9.9)] == ["b0", "b0", "b0"]
    assert sel.pick(pool, 10.0) == "b1"
    assert sel.pick(pool, 19.0) == "b1"
    assert sel.pick(pool, 20.5) == "b2"
    # the chosen backend disappears: a new one is chosen at once
    assert sel.pick([c for c in pool if c.id != "b2"], 21.0) in {"b0", "b1"}
    with pytest.raises(ValueError):
        IntervalSelector(RoundRobinBalancer(), 0)
