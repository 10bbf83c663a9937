"""Sans-I/O backend selection: balancing algorithms and the interval selector.

Nothing here touches sockets or clocks: callers pass the eligible candidates (already
filtered for health, admin state and free capacity), a hash key where the algorithm needs
one, and the current time where the selection mode needs it.

Balancers keep their state keyed by backend id, never by a list index, so adding or
removing a backend while a rotation is under way cannot leave an index past the end of the
list (the bug of the source design): round robin uses a free-running counter taken modulo
the *current* number of candidates.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from parlour.proxy.control import Algorithm

__all__ = [
    "ALGORITHMS",
    "HASH_ALGORITHMS",
    "Balancer",
    "Candidate",
    "ConsistentHashRing",
    "HashBalancer",
    "IntervalSelector",
    "LeastConnBalancer",
    "P2CBalancer",
    "RandomBalancer",
    "RoundRobinBalancer",
    "SmoothWeightedBalancer",
    "hash64",
    "make_balancer",
]

ALGORITHMS: tuple[Algorithm, ...] = (
    "round_robin",
    "weighted_round_robin",
    "least_conn",
    "random",
    "p2c",
    "ip_hash",
    "uri_hash",
    "header_hash",
)
HASH_ALGORITHMS: frozenset[str] = frozenset({"ip_hash", "uri_hash", "header_hash"})


class Candidate(NamedTuple):
    """One backend that may take the next client: its id, weight and current load.

    A NamedTuple rather than a frozen dataclass: one is built per backend per request.
    """

    id: str
    weight: int = 1
    active: int = 0


class Balancer(Protocol):
    def pick(self, candidates: Sequence[Candidate], key: bytes | None = None) -> str | None:
        """Return the id of the chosen candidate, or None when there is none."""
        ...


def hash64(data: bytes) -> int:
    """A stable 64-bit hash (not Python's randomised `hash`)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class RoundRobinBalancer:
    """Plain rotation; weights are ignored."""

    def __init__(self) -> None:
        self._counter = 0

    def pick(self, candidates: Sequence[Candidate], key: bytes | None = None) -> str | None:
        if not candidates:
            return None
        chosen = candidates[self._counter % len(candidates)]
        self._counter += 1
        return chosen.id


class SmoothWeightedBalancer:
    """nginx's smooth weighted round robin: weights 5,1,1 give a,a,b,a,c,a,a (interleaved)."""

    def __init__(self) -> None:
        self._current: dict[str, int] = {}

    def pick(self, candidates: Sequence[Candidate], key: bytes | None = None) -> str | None:
        if not candidates:
            return None
        live = {c.id for c in candidates}
        for gone in [k for k in self._current if k not in live]:
            del self._current[gone]
        total = 0
        best: Candidate | None = None
        best_value = 0
        for c in candidates:
            weight = max(c.weight, 1)
            value = self._current.get(c.id, 0) + weight
            self._current[c.id] = value
            total += weight
            if best is None or value > best_value:
                best, best_value = c, value
        assert best is not None
        self._current[best.id] = best_value - total
        return best.id


class LeastConnBalancer:
    """Weighted least connections: lowest active/weight wins; ties rotate."""

    def __init__(self) -> None:
        self._counter = 0

    def pick(self, candidates: Sequence[Candidate], key: bytes | None = None) -> str | None:
        if not candidates:
            return None
        n = len(candidates)
        start = self._counter % n
        self._counter += 1
        best = candidates[start]
        for i in range(1, n):
            c = candidates[(start + i) % n]
            # c.active / c.weight < best.active / best.weight, without floats
            if c.active * max(best.weight, 1) < best.active * max(c.weight, 1):
                best = c
        return best.id


class RandomBalancer:
    """Weighted random choice."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, candidates: Sequence[Candidate], key: bytes | None = None) -> str | None:
        if not candidates:
            return None
        weights = [max(c.weight, 1) for c in candidates]
        return self._rng.choices(candidates, weights=weights, k=1)[0].id


class P2CBalancer:
    """Power of two choices: two weighted-random candidates, the less loaded one wins."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, candidates: Sequence[Candidate], key: bytes | None = None) -> str | None:
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0].id
        weights = [max(c.weight, 1) for c in candidates]
        a, b = self._rng.choices(candidates, weights=weights, k=2)
        if a.id == b.id:
            others = [c for c in candidates if c.id != a.id]
            b = self._rng.choice(others)
        if b.active * max(a.weight, 1) < a.active * max(b.weight, 1):
            return b.id
        return a.id


class ConsistentHashRing:
    """A hash ring with `vnodes * weight` virtual nodes per backend.

    Built over *all* configured backends, not just the eligible ones, so that a backend
    going down moves only its own keys (to the next eligible point clockwise) and keys of
    healthy backends stay where they are.
    """

    def __init__(self, members: Sequence[tuple[str, int]], vnodes: int = 160) -> None:
        points: list[tuple[int, str]] = []
        for member_id, weight in members:
            for i in range(vnodes * max(weight, 1)):
                points.append((hash64(f"{member_id}#{i}".encode()), member_id))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._owners = [o for _, o in points]

    def lookup(self, key: bytes, eligible: set[str] | frozenset[str]) -> str | None:
        if not self._hashes or not eligible:
            return None
        n = len(self._hashes)
        start = bisect.bisect_left(self._hashes, hash64(key)) % n
        for i in range(n):
            owner = self._owners[(start + i) % n]
            if owner in eligible:
                return owner
        return None


class HashBalancer:
    """Consistent hashing on a key (source IP, URI or a header), over a ring of members.

    `set_members` gives the full membership (id, weight) so that unhealthy members keep
    their ring points; without a key the balancer falls back to round robin.
    """

    def __init__(self, vnodes: int = 160) -> None:
        self._vnodes = vnodes
        self._members: tuple[tuple[str, int], ...] = ()
        self._ring = ConsistentHashRing((), vnodes)
        self._fallback = RoundRobinBalancer()

    def set_members(self, members: Sequence[tuple[str, int]]) -> None:
        key = tuple(sorted(members))
        if key != self._members:
            self._members = key
            self._ring = ConsistentHashRing(key, self._vnodes)

    def pick(self, candidates: Sequence[Candidate], key: bytes | None = None) -> str | None:
        if not candidates:
            return None
        if key is None:
            return self._fallback.pick(candidates)
        eligible = {c.id for c in candidates}
        if not eligible.issubset(m for m, _ in self._members):
            # members not declared (or stale): hash over the candidates themselves
            self.set_members([*self._members, *((c.id, c.weight) for c in candidates)])
        return self._ring.lookup(key, eligible)


def make_balancer(algorithm: Algorithm, rng: random.Random | None = None) -> Balancer:
    if algorithm == "round_robin":
        return RoundRobinBalancer()
    if algorithm == "weighted_round_robin":
        return SmoothWeightedBalancer()
    if algorithm == "least_conn":
        return LeastConnBalancer()
    if algorithm == "random":
        return RandomBalancer(rng)
    if algorithm == "p2c":
        return P2CBalancer(rng)
    if algorithm in HASH_ALGORITHMS:
        return HashBalancer()
    raise ValueError(f"unknown balancing algorithm {algorithm!r}")


class IntervalSelector:
    """Selection mode "interval": one backend is chosen every `interval_s` for all clients.

    The choice is renewed when the interval has passed or the chosen backend is no longer a
    candidate (down, disabled, draining or full).
    """

    def __init__(self, balancer: Balancer, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.balancer = balancer
        self.interval_s = interval_s
        self._chosen: str | None = None
        self._chosen_at = 0.0

    def pick(
        self, candidates: Sequence[Candidate], now: float, key: bytes | None = None
    ) -> str | None:
        ids = {c.id for c in candidates}
        if (
            self._chosen is not None
            and self._chosen in ids
            and now - self._chosen_at < self.interval_s
        ):
            return self._chosen
        self._chosen = self.balancer.pick(candidates, key)
        self._chosen_at = now
        return self._chosen
