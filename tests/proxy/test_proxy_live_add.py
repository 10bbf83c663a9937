"""A backend added live is checked before it takes traffic (issue 11, must fix 8: a
mistyped port added from the dashboard got 5 of 20 requests as 502s).

It starts in state `checking` (no traffic) and a health check runs at once: passing puts
it `up`, failing puts it `down` with the reason. Backends of the configuration at start
are up at once, as before (a proxy that restarts keeps serving).
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import aiohttp
from proxy_helpers import BackendFactory, ProxyFactory, wait_state

from parlour.proxy.control import BackendSpec


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound and closed: refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def statuses(port: int, n: int) -> Counter[tuple[int, str]]:
    got: Counter[tuple[int, str]] = Counter()
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.get(f"http://127.0.0.1:{port}/") as r:
                got[(r.status, await r.text() if r.status == 200 else "")] += 1
    return got


async def test_mistyped_backend_added_live_never_takes_a_request(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], retry_limit=0)  # (no retry to hide a bad pick)
    wrong = BackendSpec("127.0.0.1", closed_port())
    added = rt.add_backend(wrong)
    assert added.state == "checking"
    assert await statuses(rt.listen_port or 0, 20) == Counter({(200, "a"): 20})
    await wait_state(rt, wrong.id, "down")  # the first check ran at once (interval: 60 s)
    snap = next(b for b in rt.backends() if b.id == wrong.id)
    assert snap.requests == 0 and "refused" in (snap.last_crash_reason or "").lower()


async def test_good_backend_added_live_takes_traffic_after_its_first_check(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a, b = await backends("a"), await backends("b")
    rt = await proxy([a.spec], health_rise=3)
    assert rt.add_backend(b.spec).state == "checking"
    await wait_state(rt, b.spec.id, "up")  # one passed check is enough for a new backend
    got = await statuses(rt.listen_port or 0, 10)
    assert got == Counter({(200, "a"): 5, (200, "b"): 5})


async def test_backends_at_start_are_up_at_once(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    assert [b.state for b in rt.backends()] == ["up"]
    assert await statuses(rt.listen_port or 0, 1) == Counter({(200, "a"): 1})


async def test_backend_added_by_a_reload_is_checked_first(
    backends: BackendFactory, proxy: ProxyFactory, tmp_path: object
) -> None:
    from pathlib import Path

    a = await backends("a")
    conf = Path(str(tmp_path)) / "proxy.toml"
    wrong = closed_port()
    conf.write_text(f"[[backends]]\nhost = '127.0.0.1'\nport = {a.port}\n")
    rt = await proxy([a.spec], path=str(conf), retry_limit=0)
    conf.write_text(
        f"[[backends]]\nhost = '127.0.0.1'\nport = {a.port}\n"
        f"[[backends]]\nhost = '127.0.0.1'\nport = {wrong}\n"
    )
    await rt.reload()
    assert rt.pool.get(f"127.0.0.1:{wrong}").state == "checking"
    assert await statuses(rt.listen_port or 0, 10) == Counter({(200, "a"): 10})
    await asyncio.wait_for(wait_state(rt, f"127.0.0.1:{wrong}", "down"), 10)
