from __future__ import annotations

import json

from cp_fakes import FakeClock, FakeControl
from prometheus_client.parser import text_string_to_metric_families

from parlour.proxy.control import BackendSpec
from parlour.proxy.metrics import air_time_s, render_prometheus, stats_json


def _control() -> FakeControl:
    clock = FakeClock(1_000.0)
    c = FakeControl([BackendSpec("10.0.0.1", 80, weight=3), BackendSpec("10.0.0.2", 81)], clock)
    c.bump("10.0.0.1:80", requests=120, total_conns=10, active_conns=2, bytes_in=5000)
    c.bump("10.0.0.1:80", bytes_out=700, connect_errors=1, response_errors=2, retries=3)
    c.put("10.0.0.1:80", p50_ms=2.0, p99_ms=40.0, total_up_s=99.5, last_connected=990.0)
    c.put("10.0.0.2:81", state="down", last_crashed=995.0, last_crash_reason="refused")
    return c


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _b(backend: str, **extra: str) -> tuple[tuple[str, str], ...]:
    host, port = backend.rsplit(":", 1)
    return tuple(sorted({"backend": backend, "host": host, "port": port, **extra}.items()))


def test_prometheus_output_parses_with_per_backend_values() -> None:
    c = _control()
    text = render_prometheus(c).decode()
    s = _samples(text)
    a = "10.0.0.1:80"
    assert s[("parlour_proxy_requests_total", ())] == 120
    assert s[("parlour_proxy_active_connections", ())] == 2
    assert s[("parlour_proxy_bytes_total", (("direction", "in"),))] == 5000
    assert s[("parlour_proxy_backend_requests_total", _b(a))] == 120
    assert s[("parlour_proxy_backend_connections_total", _b(a))] == 10
    assert s[("parlour_proxy_backend_active_connections", _b(a))] == 2
    assert s[("parlour_proxy_backend_bytes_total", _b(a, direction="out"))] == 700
    assert s[("parlour_proxy_backend_errors_total", _b(a, kind="connect"))] == 1
    assert s[("parlour_proxy_backend_errors_total", _b(a, kind="response"))] == 2
    assert s[("parlour_proxy_backend_retries_total", _b(a))] == 3
    assert s[("parlour_proxy_backend_weight", _b(a))] == 3
    assert s[("parlour_proxy_backend_response_seconds", _b(a, quantile="0.99"))] == 0.04
    assert s[("parlour_proxy_backend_up", _b(a))] == 1
    assert s[("parlour_proxy_backend_up", _b("10.0.0.2:81"))] == 0
    assert s[("parlour_proxy_backend_state", _b("10.0.0.2:81", state="down"))] == 1
    assert s[("parlour_proxy_backend_state", _b("10.0.0.2:81", state="up"))] == 0
    assert s[("parlour_proxy_backend_last_crashed_timestamp_seconds", _b("10.0.0.2:81"))] == 995
    # no latency sample is invented for a backend without measurements
    assert ("parlour_proxy_backend_response_seconds", _b("10.0.0.2:81", quantile="0.5")) not in s
    assert (
        s[
            (
                "parlour_proxy_info",
                (("algorithm", "round_robin"), ("selection_mode", "per_connection")),
            )
        ]
        == 1
    )


def test_prometheus_escapes_hostile_labels() -> None:
    c = FakeControl()
    c.add_backend(BackendSpec('evil"\n\\host', 1))
    s = _samples(render_prometheus(c).decode())
    assert s[("parlour_proxy_backend_up", _b('evil"\n\\host:1'))] == 1


def test_stats_json_is_serialisable_and_complete() -> None:
    c = _control()
    data = stats_json(c, now=1_010.0)
    json.dumps(data)
    assert data["uptime_s"] == 10.0
    totals = data["totals"]
    assert isinstance(totals, dict)
    assert totals["requests"] == 120 and totals["backends"] == 2 and totals["backends_up"] == 1
    assert totals["errors"] == 3
    backends = data["backends"]
    assert isinstance(backends, list)
    first = backends[0]
    assert first["id"] == "10.0.0.1:80" and first["errors"] == 3
    assert first["air_time_s"] == 10.0  # up since the fake clock's 1000.0
    assert backends[1]["air_time_s"] == 0.0 and backends[1]["last_crash_reason"] == "refused"
    settings = data["settings"]
    assert isinstance(settings, dict) and settings["algorithm"] == "round_robin"


def test_air_time_only_counts_while_up() -> None:
    c = _control()
    up, down = c.backends()
    assert air_time_s(up, 1_060.0) == 60.0
    assert air_time_s(down, 1_060.0) == 0.0
