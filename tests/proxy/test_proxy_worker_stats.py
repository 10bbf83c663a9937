"""`--workers 2`: the admin API reports totals over every worker, and a restart carries
the previous run's totals (every worker's share) exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from proxy_helpers import (
    BackendFactory,
    ProxyFactory,
    poll_admin_until,
    poll_worker_tick,
    proxy_process,
)

from parlour.proxy.control import BackendSnapshot, BackendSpec, TotalsSnapshot
from parlour.proxy.stats_merge import merge_totals
from parlour.proxy.stats_store import StatsStore

TOKEN = "worker-stats-token-123456"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def two_workers(cfg: Path) -> AsyncIterator[tuple[int, int]]:
    """Run `parlour proxy` with the config (workers = 2); yield (listen port, admin port)
    once both workers are ready; SIGTERM it afterwards and check it exits cleanly."""
    async with proxy_process(cfg, TOKEN) as p:
        port = int((await asyncio.wait_for(p.wait_for(r"listening on [\d.]+:(\d+)", 2), 20))[0][1])
        found = await asyncio.wait_for(p.wait_for(r"dashboard on http://[\d.]+:(\d+)/"), 5)
        admin = int(found[0][1])
        await asyncio.wait_for(p.wait_for(r"worker \d \(pid \d+\) ready", 2), 10)
        yield port, admin


def worker1_rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (rows,) = conn.execute("SELECT COUNT(*) FROM worker_stats").fetchone()
    return int(rows)


def worker1_requests(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (value,) = conn.execute("SELECT COALESCE(SUM(requests), 0) FROM worker_totals").fetchone()
    return int(value)


async def test_two_workers_report_totals_and_restart_counts_once(
    tmp_path: Path, backends: BackendFactory
) -> None:
    a = await backends("a")
    db = tmp_path / "s.db"
    cfg = tmp_path / "proxy.toml"
    cfg.write_text(
        f'[proxy]\nlisten_port = 0\nworkers = 2\nstore = "{db}"\n[admin]\nport = 0\n'
        f"[[backends]]\nhost = '127.0.0.1'\nport = {a.port}\n"
    )
    n = 40
    bid = f"127.0.0.1:{a.port}"
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as s:
        async with two_workers(cfg) as (port, admin):
            for _ in range(n):  # a fresh connection each: the kernel spreads them
                async with s.get(f"http://127.0.0.1:{port}/") as r:
                    assert r.status == 200 and await r.text() == "a"

            def all_counted(stats: dict[str, Any]) -> bool:
                return bool(stats["totals"]["requests"] == n)

            stats = await poll_admin_until(s, admin, TOKEN, all_counted)
            assert 0 < worker1_requests(db) < n  # both workers took a share
            assert len(a.seen) == n
            (backend,) = stats["backends"]
            assert backend["requests"] == n and stats["totals"]["total_conns"] == n
            assert backend["bytes_in"] == stats["totals"]["bytes_in"] > 0
            async with s.get(f"http://127.0.0.1:{admin}/metrics", headers=AUTH) as r:
                text = await r.text()
            assert f"parlour_proxy_requests_total {float(n)}" in text
            assert re.search(rf"parlour_proxy_backend_requests_total\{{[^}}]*\}} {float(n)}", text)
        for _ in range(2):  # each restart carries the same totals: nothing counted twice
            async with two_workers(cfg) as (port, admin):

                def restored(stats: dict[str, Any]) -> bool:
                    return bool(stats["backends"][0]["requests"] >= n)

                stats = await poll_admin_until(s, admin, TOKEN, restored)
                assert stats["backends"][0]["id"] == bid
                assert stats["backends"][0]["requests"] == n
                # once the new worker 1 has published (its own count, zero), still n
                probe = lambda: asyncio.to_thread(worker1_rows, db)  # noqa: E731
                await poll_worker_tick(probe, lambda rows: rows > 0, 10)
                stats = await poll_admin_until(s, admin, TOKEN, restored)
                assert stats["backends"][0]["requests"] == n
                assert stats["totals"]["requests"] == 0  # this run's own traffic


def _backend(bid: str, **counts: Any) -> BackendSnapshot:
    return BackendSnapshot(id=bid, host="h", port=1, weight=1, max_conns=0, state="up", **counts)


def test_merge_sums_counters_and_takes_max_quantiles() -> None:
    own = TotalsSnapshot(
        started_at=1.0, active_conns=2, total_conns=5, requests=7, bytes_in=10, bytes_out=3,
        errors=1, backends=(_backend("x", requests=7, bytes_in=10, bytes_out=3, p50_ms=2.0),),
    )  # fmt: skip
    other = TotalsSnapshot(
        started_at=2.0, active_conns=1, total_conns=4, requests=6, bytes_in=20, bytes_out=4,
        errors=2, backends=(
            _backend("x", requests=6, bytes_in=20, bytes_out=4, p50_ms=5.0, p99_ms=9.0),
            _backend("gone", requests=100),
        ),
    )  # fmt: skip
    merged = merge_totals(own, [other])
    assert (merged.active_conns, merged.total_conns, merged.requests, merged.errors) == (
        3,
        9,
        13,
        3,
    )
    (x,) = merged.backends
    assert (x.requests, x.bytes_in, x.bytes_out, x.p50_ms, x.p99_ms) == (13, 30, 7, 5.0, 9.0)
    assert (merged.bytes_in, merged.bytes_out, merged.started_at) == (30, 7, 1.0)


def test_store_worker_rows_round_trip_and_previous_runs_are_taken_once(tmp_path: Path) -> None:
    with StatsStore(tmp_path / "s.db") as store:
        t = TotalsSnapshot(
            started_at=1.0, active_conns=1, total_conns=3, requests=4, bytes_in=5, bytes_out=6,
            errors=0, backends=(_backend("h:1", requests=4, bytes_in=5, bytes_out=6,
                                         active_conns=1),),
        )  # fmt: skip
        store.save_worker_totals("old", 1, t)
        store.save_worker_totals("new", 1, t)
        store.save_worker_totals("new", 1, t)  # replaces, not adds
        (loaded,) = store.load_worker_totals("new")
        assert (loaded.requests, loaded.backends[0].requests, loaded.bytes_in) == (4, 4, 5)
        taken = store.take_previous_runs("new")
        assert taken["h:1"].requests == 4 and taken["h:1"].active_conns == 0
        assert store.take_previous_runs("new") == {}
        assert store.load_worker_totals("old") == []
        assert len(store.load_worker_totals("new")) == 1


async def test_worker0_folds_previous_runs_once(tmp_path: Path, proxy: ProxyFactory) -> None:
    """At start worker 0 adds the previous run's other-worker rows to its restored
    counters (also for a backend not in this run's set) and drops them: once only."""
    x, y = BackendSpec("127.0.0.1", 1), BackendSpec("127.0.0.1", 2)
    with StatsStore(tmp_path / "s.db") as store:
        store.save_snapshot([_backend(x.id, requests=10, bytes_in=100)])
        prev = TotalsSnapshot(
            started_at=1.0, active_conns=0, total_conns=0, requests=8, bytes_in=0,
            bytes_out=0, errors=0, backends=(
                _backend(x.id, requests=5, bytes_in=50), _backend(y.id, requests=3),
            ),
        )  # fmt: skip
        store.save_worker_totals("previous-run", 1, prev)
        rt = await proxy([x], store=store, health_interval_s=60.0)
        (snap,) = rt.backends()
        assert (snap.requests, snap.bytes_in) == (15, 150)
        assert store.load_snapshots()[y.id].requests == 3  # kept for a later run
        assert store.load_worker_totals("previous-run") == []
        await rt.stop(drain_timeout_s=0.1)
        rt2 = await proxy([x, y], store=store, health_interval_s=60.0)
        assert {b.id: b.requests for b in rt2.backends()} == {x.id: 15, y.id: 3}
        await rt2.stop(drain_timeout_s=0.1)
