"""Totals count this run, and counters never go down (issue 11, must fix 6: "Traffic" and
`parlour_proxy_bytes_total` included earlier runs while requests counted this run only,
and removing a backend made the byte counter go down).

The proxy's totals (dashboard cards, `parlour_proxy_*_total`) count this run, every one
of them; the per-backend counters (properties log, `parlour_proxy_backend_*_total`) carry
over restarts. Neither kind ever decreases while the proxy runs: removing a backend keeps
its share of the totals, and a backend removed and added again goes on from its counts.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from proxy_helpers import BackendFactory, FakeStore, ProxyFactory, wait_state

from parlour.proxy.control import BackendSnapshot, TotalsSnapshot
from parlour.proxy.metrics import render_prometheus
from parlour.proxy.runtime import ProxyRuntime
from parlour.proxy.stats_merge import merge_totals
from parlour.proxy.stats_store import StatsStore


async def get(port: int, n: int = 1) -> None:
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
        writer.close()


def metrics(rt: ProxyRuntime) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(render_prometheus(rt).decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(
    m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return m[(name, tuple(sorted(labels.items())))]


async def test_totals_count_this_run_and_backends_carry_earlier_runs(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    store = FakeStore()
    earlier = BackendSnapshot(
        id=a.spec.id, host="127.0.0.1", port=a.port, weight=1, max_conns=0, state="up",
        total_conns=40, requests=50, bytes_in=10_000, bytes_out=5_000,
    )  # fmt: skip
    store.snaps[a.spec.id] = earlier
    rt = await proxy([a.spec], store=store)
    t = rt.totals()
    assert (t.requests, t.bytes_in, t.bytes_out) == (0, 0, 0)
    await get(rt.listen_port or 0, 3)
    t = rt.totals()
    (b,) = t.backends
    assert t.requests == 3 and b.requests == 53
    assert 0 < t.bytes_in < 10_000 and 0 < t.bytes_out < 5_000
    assert (b.bytes_in, b.bytes_out) == (10_000 + t.bytes_in, 5_000 + t.bytes_out)
    m = metrics(rt)
    assert total(m, "parlour_proxy_requests_total") == 3
    assert total(m, "parlour_proxy_bytes_total", direction="in") == t.bytes_in
    labels = {"backend": a.spec.id, "host": "127.0.0.1", "port": str(a.port)}
    assert total(m, "parlour_proxy_backend_bytes_total", direction="in", **labels) == b.bytes_in


async def test_removing_a_backend_never_lowers_a_counter(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a, b = await backends("a"), await backends("b")
    rt = await proxy([a.spec, b.spec])
    port = rt.listen_port or 0
    await get(port, 4)
    before = metrics(rt)
    b_before = next(x for x in rt.backends() if x.id == b.spec.id)
    assert b_before.requests == 2
    rt.remove_backend(b.spec.id)
    after = metrics(rt)
    for key, value in before.items():
        name = key[0]
        if name.startswith("parlour_proxy_") and name.endswith("_total") and key in after:
            assert after[key] >= value, key
    assert total(after, "parlour_proxy_bytes_total", direction="in") == total(
        before, "parlour_proxy_bytes_total", direction="in"
    )
    await get(port, 2)
    # added again: its counters go on from where they were (a counter must not reset
    # while the process runs)
    rt.add_backend(b.spec)
    await wait_state(rt, b.spec.id, "up")
    await get(port, 2)
    b_after = next(x for x in rt.backends() if x.id == b.spec.id)
    assert b_after.requests == 3 and b_after.bytes_in > b_before.bytes_in
    t = rt.totals()
    assert t.requests == 8
    assert t.bytes_in == sum(x.bytes_in for x in t.backends)  # (nothing lost, nothing twice)


def test_other_workers_bytes_count_their_removed_backends(tmp_path: Path) -> None:
    """Workers 1..N-1 save their own totals of this run (removed backends included), and
    worker 0 adds those, not the sum of the backends they still have."""
    snap = BackendSnapshot(
        id="h:1", host="h", port=1, weight=1, max_conns=0, state="up", bytes_in=5, bytes_out=6
    )
    t = TotalsSnapshot(
        started_at=1.0, active_conns=0, total_conns=3, requests=4, bytes_in=50, bytes_out=60,
        errors=0, backends=(snap,),
    )  # fmt: skip
    with StatsStore(tmp_path / "s.db") as store:
        store.save_worker_totals("run", 1, t)
        (loaded,) = store.load_worker_totals("run")
    assert (loaded.bytes_in, loaded.bytes_out) == (50, 60)
    own = dataclasses.replace(t, bytes_in=7, bytes_out=8, backends=())
    merged = merge_totals(own, [loaded])
    assert (merged.bytes_in, merged.bytes_out) == (57, 68)
