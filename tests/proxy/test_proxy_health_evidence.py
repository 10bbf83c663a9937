"""Active and passive health evidence do not cancel each other (issue 11, must fix 2).

Active checks go down after `fall` consecutive failed checks whatever the live traffic
does meanwhile (HAProxy: check counters move on check results only; traffic observed with
`observe` has an error counter of its own). Passive failures (connect errors, timeouts,
lost connections) have their own streak, reset by a good response. Only checks bring a
down backend back.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import web
from proxy_helpers import ProxyFactory, wait_state

from parlour.proxy.control import BackendSpec, ProxySettings
from parlour.proxy.health import HealthState
from parlour.proxy.pool import BackendPool


def test_live_successes_do_not_reset_the_failed_checks() -> None:
    h = HealthState(rise=2, fall=3)
    assert h.check_failed(1.0, "status 500") is None
    h.passive_success()
    assert h.check_failed(2.0, "status 500") is None
    h.passive_success()
    t = h.check_failed(3.0, "status 500")
    assert t is not None and t.new == "down" and t.reason == "status 500"


def test_passive_failures_have_their_own_streak() -> None:
    h = HealthState(rise=2, fall=3)
    assert h.passive_failure(1.0, "refused") is None
    assert h.passive_failure(2.0, "refused") is None
    h.passive_success()  # a good response: the live streak starts again
    assert h.passive_failure(3.0, "refused") is None
    assert h.passive_failure(4.0, "refused") is None
    assert h.check_passed(4.5) is None  # a passed check does not excuse live failures
    t = h.passive_failure(5.0, "timeout")
    assert t is not None and t.new == "down" and t.reason == "timeout"


def test_mixed_evidence_counts_separately() -> None:
    h = HealthState(rise=1, fall=2)
    assert h.check_failed(1.0, "check") is None
    assert h.passive_failure(2.0, "live") is None  # one of each: neither streak at fall
    assert h.up


def test_only_checks_bring_a_down_backend_back() -> None:
    h = HealthState(rise=2, fall=1, initial="down")
    assert h.check_passed(1.0) is None
    h.passive_success()
    assert h.check_failed(2.0, "x") is None  # already down: the rise streak starts over
    assert h.check_passed(3.0) is None
    t = h.check_passed(4.0)
    assert t is not None and t.new == "up"
    assert h.check_failed(5.0, "x") is not None  # fall=1, streaks were reset on the way up


def test_pool_server_errors_are_not_passive_successes() -> None:
    pool = BackendPool(ProxySettings(health_fall=2))
    b = pool.add(BackendSpec("h", 1), 0.0)
    pool.passive_failure("h:1", 1.0, "lost")
    pool.passive_success("h:1", 1.5, status=503)  # a 5xx proves nothing about health
    pool.passive_failure("h:1", 2.0, "lost")
    assert b.state == "down"


async def test_failing_http_checks_take_a_backend_down_under_traffic(
    proxy: ProxyFactory,
) -> None:
    """Every check of /health answers 500, and before each answer a request through the
    proxy completes (200): the checks alone must take the backend down after `fall`."""
    checks: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
    closing = asyncio.Event()

    async def health(request: web.Request) -> web.Response:
        if not closing.is_set():
            served: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            await checks.put(served)
            await served  # a live request has completed since the previous check
        return web.Response(status=500, text="sick")

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        rt = await proxy(
            [BackendSpec("127.0.0.1", port)],
            health_kind="http",
            health_path="/health",
            health_interval_s=0.05,
            health_timeout_s=5.0,
            health_fall=3,
        )
        backend_id = f"127.0.0.1:{port}"

        async def traffic() -> None:
            async with aiohttp.ClientSession() as session:
                while True:
                    served = await checks.get()
                    if rt.pool.get(backend_id).state == "up":
                        url = f"http://127.0.0.1:{rt.listen_port}/"
                        async with session.get(url) as r:
                            assert r.status == 200 and await r.text() == "ok"
                    served.set_result(None)

        driver = asyncio.create_task(traffic())
        try:
            await wait_state(rt, backend_id, "down", timeout=5.0)
        finally:
            closing.set()
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver
            while not checks.empty():  # (checks under way answer at once)
                checks.get_nowait().set_result(None)
        (b,) = rt.backends()  # (with the fast lane's counters harvested)
        assert b.requests >= 2 and b.last_crash_reason == "health check: status 500 (want 200)"
    finally:
        await runner.cleanup()
