"""The admin API and stats store against the real proxy runtime (127.0.0.1, port 0)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from parlour.proxy.config import ProxyConfig
from parlour.proxy.control import BackendSpec
from parlour.proxy.runtime import ProxyRuntime
from parlour.proxy.stats_store import StatsStore

TOKEN = "integration-token-1234"
H = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def _backend(name: str) -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=name)

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _proxy(db: Path, ports: list[int], load_from: str) -> AsyncIterator[ProxyRuntime]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    config = ProxyConfig(
        listen_port=sock.getsockname()[1],
        admin_port=0,
        admin_token=TOKEN,
        store=str(db),
        load_from=load_from,  # type: ignore[arg-type]
        backends=tuple(BackendSpec("127.0.0.1", p) for p in ports),
    )
    with StatsStore(db) as store:
        runtime = ProxyRuntime(config, store=store)
        await runtime.start(sock)
        try:
            yield runtime
        finally:
            await runtime.stop(drain_timeout_s=1.0)


async def test_admin_api_drives_the_real_proxy_and_stats_survive_restart(tmp_path: Path) -> None:
    db = tmp_path / "proxy.db"
    async with _backend("one") as p1, _backend("two") as p2:
        a, b = f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"
        # one client connection per request, so every request is a new balancing decision
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            _proxy(db, [p1, p2], "config") as rt,
            aiohttp.ClientSession(connector=connector) as s,
        ):
            admin = f"http://127.0.0.1:{rt.admin_port}"
            front = f"http://127.0.0.1:{rt.listen_port}/"
            seen = []
            for _ in range(10):
                async with s.get(front) as resp:
                    seen.append(await resp.text())
            assert sorted(set(seen)) == ["one", "two"]
            stats = await (await s.get(admin + "/api/stats", headers=H)).json()
            assert stats["totals"]["requests"] == 10
            assert sum(x["requests"] for x in stats["backends"]) == 10
            resp = await s.post(f"{admin}/api/backends/{a}/drain", headers=H)
            assert resp.status == 200 and (await resp.json())["backend"]["state"] == "draining"
            resp = await s.put(admin + "/api/settings", headers=H, json={"algorithm": "least_conn"})
            assert resp.status == 200
            resp = await s.put(admin + "/api/settings", headers=H, json={"interval_s": 0})
            assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid"
            resp = await s.post(
                admin + "/api/backends", headers=H, json={"host": "127.0.0.1", "port": p2}
            )
            assert resp.status == 409
            resp = await s.post(admin + "/api/backends/nope:1/enable", headers=H)
            assert resp.status == 404
            for _ in range(4):
                async with s.get(front) as resp:
                    assert await resp.text() == "two"  # drained backend takes no new clients
            text = await (await s.get(admin + "/metrics", headers=H)).text()
            samples = {
                (x.name, x.labels.get("backend")): x.value
                for f in text_string_to_metric_families(text)
                for x in f.samples
            }
            assert samples[("parlour_proxy_requests_total", None)] == 14
            assert samples[("parlour_proxy_backend_up", b)] == 1
        # a new proxy process over the same database: backends, operator states, settings
        # and counters come back
        async with _proxy(db, [p1, p2], "previous") as rt:
            snaps = {x.id: x for x in rt.backends()}
            assert snaps[a].state == "draining"
            assert snaps[a].requests + snaps[b].requests == 14
            assert rt.settings().algorithm == "least_conn"
