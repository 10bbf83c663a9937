"""Sum the statistics of several worker processes into one view (sans-I/O).

With `--workers N` each worker counts its own share of the traffic; worker 0 serves the
admin API and adds the other workers' latest figures (read from the store) to its own
live ones. Counters and gauges (active connections, queue) are summed. Response-time
quantiles cannot be merged exactly from per-worker quantiles, so the merged p50/p99 is
the **maximum** over workers (a conservative upper bound: it never hides a slow worker).
Worker 0 is authoritative for the backend set and states: a backend another worker still
reports but worker 0 no longer has is left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from parlour.proxy.control import BackendSnapshot, TotalsSnapshot

__all__ = ["add_backend_counters", "merge_backends", "merge_totals"]


def _max_opt(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def add_backend_counters(base: BackendSnapshot, other: BackendSnapshot) -> BackendSnapshot:
    """`base` (identity, state, timing) with `other`'s counters added to its own."""
    return dataclasses.replace(
        base,
        active_conns=base.active_conns + other.active_conns,
        total_conns=base.total_conns + other.total_conns,
        requests=base.requests + other.requests,
        bytes_in=base.bytes_in + other.bytes_in,
        bytes_out=base.bytes_out + other.bytes_out,
        connect_errors=base.connect_errors + other.connect_errors,
        response_errors=base.response_errors + other.response_errors,
        retries=base.retries + other.retries,
        queued=base.queued + other.queued,
        last_connected=_max_opt(base.last_connected, other.last_connected),
        p50_ms=_max_opt(base.p50_ms, other.p50_ms),
        p99_ms=_max_opt(base.p99_ms, other.p99_ms),
    )


def merge_backends(
    own: Sequence[BackendSnapshot], others: Sequence[Sequence[BackendSnapshot]]
) -> list[BackendSnapshot]:
    """`own` backends with every other worker's counters for the same id added."""
    merged = {b.id: b for b in own}
    for worker in others:
        for b in worker:
            base = merged.get(b.id)
            if base is not None:
                merged[b.id] = add_backend_counters(base, b)
    return [merged[b.id] for b in own]


def merge_totals(own: TotalsSnapshot, others: Sequence[TotalsSnapshot]) -> TotalsSnapshot:
    """Worker 0's live totals plus the other workers' latest ones."""
    backends = merge_backends(own.backends, [t.backends for t in others])
    return TotalsSnapshot(
        started_at=own.started_at,
        active_conns=own.active_conns + sum(t.active_conns for t in others),
        total_conns=own.total_conns + sum(t.total_conns for t in others),
        requests=own.requests + sum(t.requests for t in others),
        bytes_in=own.bytes_in + sum(t.bytes_in for t in others),
        bytes_out=own.bytes_out + sum(t.bytes_out for t in others),
        errors=own.errors + sum(t.errors for t in others),
        backends=tuple(backends),
    )
