"""The dashboard in real Chromium against a real proxy runtime (127.0.0.1, port 0): started
with no backends, the operator is asked for addresses, adds one from the prompt, sees it
take traffic, and is asked again when it goes down (issue 11, must fix 5). The
configuration page shows the listener's restart-only settings, read-only."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from dashboard_browser import BROWSER_MARKS, browser, expect, sign_in

from parlour.proxy.config import ProxyConfig
from parlour.proxy.control import ProxySettings
from parlour.proxy.runtime import ProxyRuntime

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

__all__ = ["browser"]

pytestmark = BROWSER_MARKS
TOKEN = "live-dashboard-token-1"


@contextlib.asynccontextmanager
async def hello_backend(name: str) -> AsyncIterator[web.AppRunner]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=name)

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def empty_proxy() -> AsyncIterator[ProxyRuntime]:
    cfg = ProxyConfig(
        listen_port=0,
        admin_port=0,
        admin_token=TOKEN,
        backlog=77,
        settings=ProxySettings(health_interval_s=0.1, health_rise=1, health_fall=1),
    )
    rt = ProxyRuntime(cfg)
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop(drain_timeout_s=0.5)


@contextlib.asynccontextmanager
async def signed_in(browser: Browser, rt: ProxyRuntime) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"http://127.0.0.1:{rt.admin_port}/")
        await sign_in(page, TOKEN)
        yield page
        assert errors == [], errors
    finally:
        await context.close()


async def fetch(rt: ProxyRuntime) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{rt.listen_port}/") as r:
        return r.status, await r.text()


async def test_empty_proxy_asks_for_addresses_and_takes_them(
    browser: Browser, tmp_path: Path
) -> None:
    async with empty_proxy() as rt, signed_in(browser, rt) as page:
        prompt = page.locator("#add-prompt")
        await expect(prompt).to_be_visible()
        await expect(prompt).to_contain_text("No backends yet")
        await page.screenshot(path=str(tmp_path / "prompt-empty.png"), full_page=True)
        assert (await fetch(rt))[0] == 503
        async with hello_backend("one") as runner:
            port = int(runner.addresses[0][1])
            await page.fill("#prompt-host", "127.0.0.1")
            await page.fill("#prompt-port", str(port))
            await page.click("#prompt-form button[type=submit]")
            # checked first (the prompt says so), then up: the prompt goes away
            await expect(page.locator("#load-bars .bar-row")).to_have_count(1)
            await expect(prompt).to_be_hidden()
            assert await fetch(rt) == (200, "one")
        # the backend goes away: its checks fail and the operator is asked again
        await expect(prompt).to_be_visible()
        await expect(prompt).to_contain_text("No backend is up")
        await expect(prompt).to_contain_text(f"127.0.0.1:{port}")
        await page.screenshot(path=str(tmp_path / "prompt-down.png"), full_page=True)


async def test_prompt_shows_what_the_proxy_refused(browser: Browser) -> None:
    async with empty_proxy() as rt, signed_in(browser, rt) as page:
        await page.fill("#prompt-host", "127.0.0.1")
        await page.fill("#prompt-port", "70000")
        await page.click("#prompt-form button[type=submit]")
        await expect(page.locator("#prompt-error")).to_contain_text("port")
        assert len(rt.pool) == 0


async def test_configuration_page_shows_the_listener_read_only(browser: Browser) -> None:
    async with empty_proxy() as rt, signed_in(browser, rt) as page:
        await page.click("nav a[data-page=config]")
        port = page.locator("#listener [name=listen_port]")
        await expect(port).to_have_value(str(rt.listen_port))
        await expect(page.locator("#listener [name=listen_host]")).to_have_value("127.0.0.1")
        await expect(page.locator("#listener [name=backlog]")).to_have_value("77")
        await expect(page.locator("#listener [name=load_from]")).to_have_value("config")
        await expect(page.locator("#listener [name=mode]")).to_have_value("http")
        assert await port.get_attribute("readonly") is not None
        await expect(page.locator("#listener")).to_contain_text("restart")
        # saving the live settings does not send the listener's
        await page.fill("#config-form [name=retry_limit]", "4")
        await page.click("#config-save")
        await expect(page.locator("#config-status")).to_contain_text(
            "Saved and applied: retry_limit"
        )
        assert rt.pool.settings.retry_limit == 4
