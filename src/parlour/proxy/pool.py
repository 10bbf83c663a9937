"""Sans-I/O backend pool: membership, admin state, health, load and statistics.

The runtime asks the pool which backend gets the next client (`choose`), tells it about
connection outcomes, and reads snapshots for the control plane. Time (unix seconds) is
always passed in, so the logic is tested with a fake clock.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from parlour.proxy.balancing import (
    HASH_ALGORITHMS,
    Balancer,
    Candidate,
    HashBalancer,
    IntervalSelector,
    make_balancer,
)
from parlour.proxy.control import (
    BackendSnapshot,
    BackendSpec,
    BackendState,
    ControlError,
    ProxySettings,
)
from parlour.proxy.health import Health, HealthState, HealthTransition

__all__ = ["Admin", "Backend", "BackendPool", "Choice", "StateChange"]

log = logging.getLogger("parlour.proxy")

Admin = Literal["enabled", "disabled", "draining"]
LATENCY_SAMPLES = 1024
_LOAD_AWARE = frozenset({"least_conn", "p2c"})  # they need each request's active counts


@dataclass(frozen=True, slots=True)
class StateChange:
    backend_id: str
    old: BackendState
    new: BackendState
    at: float
    reason: str


class Backend:
    """One backend and its live counters (mutable; only the event loop touches it)."""

    def __init__(
        self, spec: BackendSpec, now: float, *, rise: int, fall: int, health: Health = "up"
    ) -> None:
        self.spec = spec
        self.id = spec.id  # host:port never changes for a backend (weight may)
        self.host_header = spec.id.encode("idna")
        self.admin: Admin = "enabled"
        self.health = HealthState(rise, fall, health)
        self.active = 0
        # the most requests in flight at once, this reaper period and the one before: the
        # Python relay's idle pool keeps that many connections (see HttpClient._park)
        self.active_peak = 0
        self.active_peak_prev = 0
        self.total_conns = 0
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        # what bytes_in/out started from (earlier runs, see restore): this run's share is
        # the difference (the proxy's totals count this run only)
        self.base_bytes_in = 0
        self.base_bytes_out = 0
        self.connect_errors = 0
        self.response_errors = 0
        self.retries = 0
        self.queued = 0
        self.state_since = now
        self.up_before = 0.0  # up time accumulated before the current state period
        self.last_connected: float | None = None
        self.last_crashed: float | None = None
        self.last_crash_reason: str | None = None
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        # percentiles of the previous run, shown until this run has samples of its own
        self.restored_p50: float | None = None
        self.restored_p99: float | None = None

    @property
    def state(self) -> BackendState:
        if self.admin == "disabled":
            return "disabled"
        if self.admin == "draining":
            return "draining"
        return self.health.state

    @property
    def full(self) -> bool:
        return self.spec.max_conns > 0 and self.active >= self.spec.max_conns

    def restore(self, snap: BackendSnapshot) -> None:
        """Take the persisted counters of a previous run (not the live ones)."""
        self.total_conns = snap.total_conns
        self.requests = snap.requests
        self.bytes_in = self.base_bytes_in = snap.bytes_in
        self.bytes_out = self.base_bytes_out = snap.bytes_out
        self.connect_errors = snap.connect_errors
        self.response_errors = snap.response_errors
        self.retries = snap.retries
        self.up_before = snap.total_up_s
        self.last_connected = snap.last_connected
        self.last_crashed = snap.last_crashed
        self.last_crash_reason = snap.last_crash_reason
        self.restored_p50 = snap.p50_ms
        self.restored_p99 = snap.p99_ms

    def snapshot(self, now: float) -> BackendSnapshot:
        p50, p99 = self.restored_p50, self.restored_p99
        if self.latencies_ms:
            ordered = sorted(self.latencies_ms)
            p50 = ordered[int(0.5 * (len(ordered) - 1))]
            p99 = ordered[int(0.99 * (len(ordered) - 1))]
        total_up = self.up_before + (now - self.state_since if self.state == "up" else 0.0)
        return BackendSnapshot(
            id=self.id,
            host=self.spec.host,
            port=self.spec.port,
            weight=self.spec.weight,
            max_conns=self.spec.max_conns,
            state=self.state,
            active_conns=self.active,
            total_conns=self.total_conns,
            requests=self.requests,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            connect_errors=self.connect_errors,
            response_errors=self.response_errors,
            retries=self.retries,
            queued=self.queued,
            state_since=self.state_since,
            total_up_s=total_up,
            last_connected=self.last_connected,
            last_crashed=self.last_crashed,
            last_crash_reason=self.last_crash_reason,
            p50_ms=p50,
            p99_ms=p99,
        )


class _Full:
    """Sentinel: backends are up but all at max_conns (the client should wait)."""


FULL = _Full()
Choice = Backend | _Full | None


class BackendPool:
    def __init__(self, settings: ProxySettings, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._backends: dict[str, Backend] = {}
        self.listeners: list[Callable[[StateChange], None]] = []
        self.settings = settings
        self._balancer: Balancer = make_balancer(settings.algorithm, self._rng)
        self._interval: IntervalSelector | None = None
        # the candidate list for load-blind algorithms when no backend has a max_conns:
        # rebuilt only when membership, state or weights change, not per request
        self._static: tuple[Candidate, ...] | None = None
        self._configure_selection()

    # ----------------------------------------------------------------- settings
    def apply_settings(self, settings: ProxySettings) -> None:
        old = self.settings
        self.settings = settings
        if settings.algorithm != old.algorithm:
            self._balancer = make_balancer(settings.algorithm, self._rng)
        if (
            settings.algorithm != old.algorithm
            or settings.selection_mode != old.selection_mode
            or settings.interval_s != old.interval_s
        ):
            self._configure_selection()
        for b in self._backends.values():
            b.health.configure(settings.health_rise, settings.health_fall)

    def _configure_selection(self) -> None:
        if self.settings.selection_mode == "interval":
            self._interval = IntervalSelector(self._balancer, self.settings.interval_s)
        else:
            self._interval = None
        self._sync_ring()

    def _sync_ring(self) -> None:
        self._static = None
        if isinstance(self._balancer, HashBalancer):
            self._balancer.set_members([(b.id, b.spec.weight) for b in self._backends.values()])

    # --------------------------------------------------------------- membership
    def all(self) -> list[Backend]:
        return list(self._backends.values())

    def __len__(self) -> int:
        return len(self._backends)

    def get(self, backend_id: str) -> Backend:
        try:
            return self._backends[backend_id]
        except KeyError:
            raise ControlError("not_found", f"no backend {backend_id!r}") from None

    def find(self, backend_id: str) -> Backend | None:
        return self._backends.get(backend_id)

    def add(
        self, spec: BackendSpec, now: float, admin: Admin = "enabled", health: Health = "up"
    ) -> Backend:
        """Add a backend: `health="checking"` for one added while the proxy runs (no
        traffic until its first health check passes)."""
        if not spec.host or not (0 < spec.port < 65536):
            raise ControlError("invalid", f"bad backend address {spec.host!r}:{spec.port}")
        if spec.weight < 1 or spec.weight > 1000:
            raise ControlError("invalid", "weight must be between 1 and 1000")
        if spec.max_conns < 0:
            raise ControlError("invalid", "max_conns must be >= 0")
        if spec.id in self._backends:
            raise ControlError("exists", f"backend {spec.id} already exists")
        b = Backend(
            spec, now, rise=self.settings.health_rise, fall=self.settings.health_fall, health=health
        )
        b.admin = admin
        self._backends[spec.id] = b
        self._sync_ring()
        log.info("backend %s added (%s)", spec.id, b.state)
        return b

    def remove(self, backend_id: str) -> Backend:
        b = self.get(backend_id)
        del self._backends[backend_id]
        self._sync_ring()
        log.info("backend %s removed", backend_id)
        return b

    def set_admin(self, backend_id: str, admin: Admin, now: float) -> Backend:
        b = self.get(backend_id)
        if b.admin != admin:
            old = b.state
            b.admin = admin
            self._changed(b, old, now, f"operator: {admin}")
        return b

    def set_weight(self, backend_id: str, weight: int) -> Backend:
        if weight < 1 or weight > 1000:
            raise ControlError("invalid", "weight must be between 1 and 1000")
        b = self.get(backend_id)
        b.spec = BackendSpec(b.spec.host, b.spec.port, weight, b.spec.max_conns)
        self._sync_ring()
        return b

    # ------------------------------------------------------------------ health
    def _changed(self, b: Backend, old: BackendState, now: float, reason: str) -> None:
        new = b.state
        if new == old:
            return
        if old == "up":
            b.up_before += now - b.state_since
        b.state_since = now
        if new == "down":
            b.last_crashed = now
            b.last_crash_reason = reason
            log.warning("backend %s is DOWN: %s", b.id, reason)
        else:
            log.info("backend %s is %s (%s)", b.id, new.upper(), reason)
        self._static = None
        change = StateChange(b.id, old, new, now, reason)
        for listener in list(self.listeners):
            listener(change)

    def _apply(self, b: Backend, old: BackendState, t: HealthTransition | None) -> None:
        if t is not None:
            self._changed(b, old, t.at, t.reason)

    def check_result(self, backend_id: str, ok: bool, now: float, reason: str = "") -> None:
        """An active health check finished."""
        b = self._backends.get(backend_id)
        if b is None:
            return
        old = b.state
        h = b.health
        t = h.check_passed(now) if ok else h.check_failed(now, reason or "check failed")
        self._apply(b, old, t)

    def passive_failure(self, backend_id: str, now: float, reason: str) -> None:
        """Live traffic failed on the backend (connect error or timeout, connection lost
        before the response, response timeout)."""
        b = self._backends.get(backend_id)
        if b is None:
            return
        old = b.state
        self._apply(b, old, b.health.passive_failure(now, reason))

    def passive_success(self, backend_id: str, now: float, status: int = 0) -> None:
        """Live traffic went well: a connection was made, or a response completed
        (`status`; a 5xx answer proves nothing either way and is ignored)."""
        b = self._backends.get(backend_id)
        if b is not None and b.health.passive_failures and status < 500:
            b.health.passive_success()

    # --------------------------------------------------------------- selection
    def any_up(self) -> bool:
        return any(b.state == "up" for b in self._backends.values())

    def choose(
        self, now: float, key: bytes | None = None, exclude: frozenset[str] = frozenset()
    ) -> Choice:
        """The backend for the next client; FULL if all eligible ones are at max_conns;
        None if no backend is up."""
        if not exclude:
            static = self._static
            if static is None and self.settings.algorithm not in _LOAD_AWARE:
                static = self._static = self._static_candidates()
            if static:
                return self._pick(static, now, key)
        candidates: list[Candidate] = []
        saw_full = False
        for b in self._backends.values():
            if b.state != "up" or b.id in exclude:
                continue
            if b.full:
                saw_full = True
                continue
            candidates.append(Candidate(b.id, b.spec.weight, b.active))
        if not candidates:
            return FULL if saw_full else None
        return self._pick(candidates, now, key)

    def _static_candidates(self) -> tuple[Candidate, ...]:
        """Up backends as candidates, or () when some backend has a max_conns (fullness
        then changes per request and the slow path must look)."""
        out = []
        for b in self._backends.values():
            if b.spec.max_conns > 0:
                return ()
            if b.state == "up":
                out.append(Candidate(b.id, b.spec.weight, 0))
        return tuple(out)

    def _pick(self, candidates: Sequence[Candidate], now: float, key: bytes | None) -> Choice:
        if self.settings.algorithm not in HASH_ALGORITHMS:
            key = None
        if self._interval is not None:
            chosen = self._interval.pick(candidates, now, key)
        else:
            chosen = self._balancer.pick(candidates, key)
        return self._backends[chosen] if chosen is not None else None

    def snapshots(self, now: float) -> list[BackendSnapshot]:
        return [b.snapshot(now) for b in self._backends.values()]
