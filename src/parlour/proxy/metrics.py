"""Prometheus exposition and JSON statistics, both computed from `ProxyControl` snapshots.

Nothing is counted here: the data plane keeps the counters and a custom collector turns
one consistent snapshot into metric families at scrape time, so there is no second copy
of the numbers to drift.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from parlour.proxy.control import BackendSnapshot, ProxyControl, ProxySettings, TotalsSnapshot

__all__ = [
    "CONTENT_TYPE",
    "ProxyCollector",
    "air_time_s",
    "backend_prompt",
    "families",
    "render_prometheus",
    "render_snapshot",
    "stats_json",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_STATES: Final = ("up", "down", "disabled", "draining", "checking")
_LABELS: Final = ["backend", "host", "port"]


def air_time_s(snap: BackendSnapshot, now: float) -> float:
    """Seconds the backend has been serving since its last state change (0 unless up)."""
    if snap.state != "up" or snap.state_since <= 0:
        return 0.0
    return max(0.0, now - snap.state_since)


class ProxyCollector:
    """A prometheus-client collector reading one totals snapshot per scrape."""

    def __init__(self, control: ProxyControl, clock: Callable[[], float] = time.time) -> None:
        self._control = control
        self._clock = clock

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families are built per scrape

    def collect(self) -> Iterator[Metric]:
        return families(self._control.totals(), self._control.settings(), self._clock())


class _FrozenCollector:
    """Collects a snapshot taken earlier (so rendering can run off the event loop)."""

    def __init__(self, totals: TotalsSnapshot, settings: ProxySettings, now: float) -> None:
        self._args = (totals, settings, now)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        return families(*self._args)


def families(totals: TotalsSnapshot, settings: ProxySettings, now: float) -> Iterator[Metric]:
    """The metric families for one snapshot of the proxy."""
    info = GaugeMetricFamily(
        "parlour_proxy_info",
        "Current balancing algorithm and selection mode.",
        labels=["algorithm", "selection_mode"],
    )
    info.add_metric([settings.algorithm, settings.selection_mode], 1)
    yield info
    yield GaugeMetricFamily(
        "parlour_proxy_start_time_seconds",
        "Unix time the proxy started.",
        value=totals.started_at,
    )
    yield GaugeMetricFamily(
        "parlour_proxy_active_connections",
        "Client connections open now.",
        value=totals.active_conns,
    )
    yield CounterMetricFamily(
        "parlour_proxy_connections",
        "Client connections accepted since the proxy started.",
        value=totals.total_conns,
    )
    yield CounterMetricFamily(
        "parlour_proxy_requests", "Requests proxied since the proxy started.", value=totals.requests
    )
    yield CounterMetricFamily(
        "parlour_proxy_errors", "Proxy errors since the proxy started.", value=totals.errors
    )
    tbytes = CounterMetricFamily(
        "parlour_proxy_bytes",
        "Bytes relayed since the proxy started (removed backends included).",
        labels=["direction"],
    )
    tbytes.add_metric(["in"], totals.bytes_in)
    tbytes.add_metric(["out"], totals.bytes_out)
    yield tbytes

    def gauge(name: str, doc: str, extra: list[str] | None = None) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=_LABELS + (extra or []))

    def counter(name: str, doc: str, extra: list[str] | None = None) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=_LABELS + (extra or []))

    up = gauge("parlour_proxy_backend_up", "1 if the backend is up and gets traffic.")
    state = gauge(
        "parlour_proxy_backend_state", "Backend state (1 for the current one).", ["state"]
    )
    weight = gauge("parlour_proxy_backend_weight", "Balancing weight.")
    max_conns = gauge("parlour_proxy_backend_max_conns", "Connection limit (0 = none).")
    active = gauge("parlour_proxy_backend_active_connections", "Connections open now.")
    queued = gauge("parlour_proxy_backend_queued", "Clients waiting for a connection slot.")
    conns = counter("parlour_proxy_backend_connections", "Connections made to the backend.")
    requests = counter("parlour_proxy_backend_requests", "Requests sent to the backend.")
    nbytes = counter("parlour_proxy_backend_bytes", "Bytes relayed.", ["direction"])
    errors = counter("parlour_proxy_backend_errors", "Errors by kind.", ["kind"])
    retries = counter("parlour_proxy_backend_retries", "Retries away from this backend.")
    latency = gauge(
        "parlour_proxy_backend_response_seconds",
        "Response time quantiles over the recent window.",
        ["quantile"],
    )
    total_up = gauge("parlour_proxy_backend_up_seconds_total", "Total time up, seconds.")
    air = gauge("parlour_proxy_backend_air_time_seconds", "Time up since last state change.")
    crashed = gauge(
        "parlour_proxy_backend_last_crashed_timestamp_seconds", "Unix time it last went down."
    )
    connected = gauge(
        "parlour_proxy_backend_last_connected_timestamp_seconds",
        "Unix time of the last connection to it.",
    )
    for b in totals.backends:
        labels = [b.id, b.host, str(b.port)]
        up.add_metric(labels, 1 if b.state == "up" else 0)
        for s in _STATES:
            state.add_metric([*labels, s], 1 if b.state == s else 0)
        weight.add_metric(labels, b.weight)
        max_conns.add_metric(labels, b.max_conns)
        active.add_metric(labels, b.active_conns)
        queued.add_metric(labels, b.queued)
        conns.add_metric(labels, b.total_conns)
        requests.add_metric(labels, b.requests)
        nbytes.add_metric([*labels, "in"], b.bytes_in)
        nbytes.add_metric([*labels, "out"], b.bytes_out)
        errors.add_metric([*labels, "connect"], b.connect_errors)
        errors.add_metric([*labels, "response"], b.response_errors)
        retries.add_metric(labels, b.retries)
        if b.p50_ms is not None:
            latency.add_metric([*labels, "0.5"], b.p50_ms / 1000.0)
        if b.p99_ms is not None:
            latency.add_metric([*labels, "0.99"], b.p99_ms / 1000.0)
        total_up.add_metric(labels, b.total_up_s)
        air.add_metric(labels, air_time_s(b, now))
        if b.last_crashed is not None:
            crashed.add_metric(labels, b.last_crashed)
        if b.last_connected is not None:
            connected.add_metric(labels, b.last_connected)
    yield from (up, state, weight, max_conns, active, queued, conns, requests, nbytes)
    yield from (errors, retries, latency, total_up, air, crashed, connected)


def render_prometheus(control: ProxyControl) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of the proxy's current statistics."""
    return render_snapshot(control.totals(), control.settings(), time.time())


def render_snapshot(totals: TotalsSnapshot, settings: ProxySettings, now: float) -> bytes:
    """Render a snapshot taken on the event loop; safe to call from a worker thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FrozenCollector(totals, settings, now))
    data: bytes = generate_latest(registry)
    return data


_SNAPSHOT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(BackendSnapshot))


def _backend_json(b: BackendSnapshot, now: float) -> dict[str, object]:
    # flat fields only, so this is `asdict` without its deep-copy cost (~5x faster)
    item: dict[str, object] = {name: getattr(b, name) for name in _SNAPSHOT_FIELDS}
    item["air_time_s"] = air_time_s(b, now)
    item["errors"] = b.connect_errors + b.response_errors
    return item


def backend_prompt(backends: tuple[BackendSnapshot, ...]) -> dict[str, str] | None:
    """What the operator is asked when no backend takes traffic (the source design: "when
    all servers are down the operator is asked for new addresses"), or None."""
    if not backends:
        return {
            "reason": "no_backends",
            "message": "No backends yet: clients get 503 until one is added. Add a backend "
            'address on the dashboard, or with POST /api/backends {"host": ..., "port": ...}.',
        }
    if any(b.state == "up" for b in backends):
        return None
    states: dict[str, int] = {}
    for b in backends:
        states[b.state] = states.get(b.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    n = len(backends)
    return {
        "reason": "none_up",
        "message": f"No backend is up ({n} backend{'s' if n != 1 else ''}: {summary}): "
        "clients get 503 (HTTP) or a closed connection (TCP). Bring one back, or add new "
        "addresses (POST /api/backends).",
    }


def stats_json(control: ProxyControl, now: float | None = None) -> dict[str, object]:
    """Totals, settings and every backend's statistics as a JSON-ready dict."""
    now = time.time() if now is None else now
    totals = control.totals()
    return {
        "now": now,
        "started_at": totals.started_at,
        "uptime_s": max(0.0, now - totals.started_at),
        "totals": {
            "active_conns": totals.active_conns,
            "total_conns": totals.total_conns,
            "requests": totals.requests,
            "bytes_in": totals.bytes_in,
            "bytes_out": totals.bytes_out,
            "errors": totals.errors,
            "backends": len(totals.backends),
            "backends_up": sum(1 for b in totals.backends if b.state == "up"),
        },
        "settings": dataclasses.asdict(control.settings()),
        "backends": [_backend_json(b, now) for b in totals.backends],
        "prompt": backend_prompt(totals.backends),
    }
