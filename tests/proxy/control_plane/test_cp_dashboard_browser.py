"""The dashboard pages in real headless Chromium (Playwright), against the fake proxy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp.test_utils import TestServer
from cp_fakes import TOKEN, FakeClock, FakeControl
from dashboard_browser import BROWSER_MARKS, browser, expect, sign_in

from parlour.proxy.admin import create_admin_app
from parlour.proxy.control import BackendSnapshot, BackendSpec
from parlour.proxy.stats_store import StatsStore

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Route

__all__ = ["browser"]

pytestmark = BROWSER_MARKS
A, B = "10.0.0.1:8080", "10.0.0.2:8081"


def _control() -> FakeControl:
    clock = FakeClock()
    c = FakeControl(
        [BackendSpec("10.0.0.1", 8080, weight=2), BackendSpec("10.0.0.2", 8081, max_conns=20)],
        clock,
    )
    c.bump(A, requests=1500, total_conns=300, active_conns=4, bytes_in=9_000_000, bytes_out=40_000)
    c.bump(B, requests=700, total_conns=120, active_conns=11, response_errors=2)
    c.put(A, p50_ms=1.8, p99_ms=12.5, total_up_s=7200.0, last_connected=clock() - 3)
    c.put(B, p50_ms=2.4, p99_ms=31.0, last_crashed=clock() - 600, last_crash_reason="refused")
    return c


@contextlib.asynccontextmanager
async def dashboard(
    browser: Browser, control: FakeControl, store: StatsStore | None = None, login: bool = True
) -> AsyncIterator[Page]:
    app = create_admin_app(control, TOKEN, store, clock=control.clock)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        context = await browser.new_context(viewport={"width": 1440, "height": 900})
        try:
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda dialog: dialog.accept())
            await page.goto(str(server.make_url("/")))
            if login:
                await sign_in(page, TOKEN)
            yield page
            assert errors == [], errors
        finally:
            await context.close()


async def test_login_form_rejects_a_wrong_token_then_accepts_the_right_one(
    browser: Browser,
) -> None:
    async with dashboard(browser, _control(), login=False) as page:
        await expect(page.locator("#login")).to_be_visible()
        await page.fill("#token-input", "not-the-token")
        await page.click("#login-form button[type=submit]")
        await expect(page.locator("#login-error")).to_contain_text("token")
        await page.fill("#token-input", TOKEN)
        await page.click("#login-form button[type=submit]")
        await expect(page.locator("#login")).to_be_hidden()
        await expect(page.locator("#t-requests")).to_have_text("2,200")
        stored = await page.evaluate("sessionStorage.getItem('parlour.proxy.token')")
        assert stored == TOKEN
        # sign out forgets the token
        await page.click("#logout")
        await expect(page.locator("#login")).to_be_visible()
        assert await page.evaluate("sessionStorage.getItem('parlour.proxy.token')") is None


async def test_token_in_url_is_taken_once_and_removed_from_the_address(browser: Browser) -> None:
    control = _control()
    app = create_admin_app(control, TOKEN)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        context = await browser.new_context()
        try:
            page = await context.new_page()
            await page.goto(str(server.make_url(f"/?token={TOKEN}#log")))
            await expect(page.locator("#login")).to_be_hidden()
            await expect(page.locator("#log-table tbody tr")).to_have_count(2)
            assert "token" not in page.url and page.url.endswith("#log")
        finally:
            await context.close()


async def test_dashboard_shows_totals_charts_and_load_bars(
    tmp_path: Path, browser: Browser
) -> None:
    control = _control()
    async with dashboard(browser, control) as page:
        await expect(page.locator("#t-active")).to_have_text("15")
        await expect(page.locator("#t-up")).to_have_text("2 / 2")
        await expect(page.locator("#load-bars .bar-row")).to_have_count(2)
        await expect(page.locator(f"#load-bars [data-backend='{B}'] .bar-label")).to_contain_text(
            "11 active / 20"
        )
        # live update without reload: the fake's counters move, the page follows
        clock = control.clock
        assert isinstance(clock, FakeClock)
        control.bump(A, requests=800, active_conns=3)
        clock.now += 2.0
        await expect(page.locator("#t-requests")).to_have_text("3,000")
        await expect(page.locator("#t-active")).to_have_text("18")
        await expect(page.locator("#t-rps")).to_have_text("400")
        # the load bars show how traffic is spread right now: all of it went to A
        bar = page.locator(f"#load-bars [data-backend='{A}']")
        await expect(bar.locator(".bar-label")).to_contain_text("400 req/s (100%)")
        assert await bar.locator(".bar-fill").evaluate("e => e.style.width") == "100%"
        other = page.locator(f"#load-bars [data-backend='{B}']")
        await expect(other.locator(".bar-label")).to_contain_text("0.0 req/s (0%)")
        await expect(page.locator("#add-prompt")).to_be_hidden()
        # every backend out of rotation: the operator is asked for addresses
        control.put(A, state="down", last_crashed=clock(), last_crash_reason="refused")
        control.put(B, state="disabled")
        prompt = page.locator("#add-prompt")
        await expect(prompt).to_contain_text("No backend is up")
        await expect(prompt.locator("#prompt-backends li")).to_have_count(2)
        await expect(prompt.locator("#prompt-backends")).to_contain_text(f"{A} down refused")
        await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        control.put(B, state="up")
        await expect(prompt).to_be_hidden()


async def test_server_management_add_drain_weight_remove(browser: Browser) -> None:
    control = _control()
    async with dashboard(browser, control) as page:
        await page.click("nav a[data-page=servers]")
        rows = page.locator("#servers-table tbody tr")
        await expect(rows).to_have_count(2)
        # add through the form
        await page.fill("#add-host", "10.0.0.9")
        await page.fill("#add-port", "9000")
        await page.fill("#add-weight", "5")
        await page.click("#add-form button[type=submit]")
        await expect(rows).to_have_count(3)
        await expect(
            page.locator("#servers-table tbody tr[data-backend='10.0.0.9:9000']")
        ).to_be_visible()
        assert control.backends()[-1].weight == 5
        # a validation error from the API is shown, nothing is added
        await page.fill("#add-host", "10.0.0.10")
        await page.fill("#add-port", "70000")
        await page.click("#add-form button[type=submit]")
        await expect(page.locator("#add-error")).to_contain_text("port")
        assert len(control.backends()) == 3
        # drain one
        row = page.locator(f"#servers-table tbody tr[data-backend='{A}']")
        await row.get_by_role("button", name="Drain").click()
        await expect(row.locator(".badge")).to_have_text("draining")
        assert control.backends()[0].state == "draining"
        # a live update does not clobber a weight being edited
        await row.locator(".weight-input").fill("7")
        await page.locator("#add-host").focus()
        control.bump(A, active_conns=5)
        await expect(row.locator("td:nth-child(3)")).to_have_text("9")
        await expect(row.locator(".weight-input")).to_have_value("7")
        assert control.backends()[0].weight == 2
        # change a weight
        await row.locator(".weight-input").fill("9")
        await row.get_by_role("button", name="Set").click()
        await expect(row.locator(".weight-input")).to_have_value("9")
        assert control.backends()[0].weight == 9
        # disable, enable, remove
        await row.get_by_role("button", name="Disable").click()
        await expect(row.locator(".badge")).to_have_text("disabled")
        await row.get_by_role("button", name="Enable").click()
        await expect(row.locator(".badge")).to_have_text("up")
        row_b = page.locator(f"#servers-table tbody tr[data-backend='{B}']")
        await row_b.get_by_role("button", name="Remove").click()
        await expect(rows).to_have_count(2)
        assert [b.id for b in control.backends()] == [A, "10.0.0.9:9000"]


async def test_configuration_saves_live_and_shows_validation_errors(
    tmp_path: Path, browser: Browser
) -> None:
    control = _control()
    with StatsStore(tmp_path / "proxy.db") as store:
        async with dashboard(browser, control, store) as page:
            await page.click("nav a[data-page=config]")
            # enabled once the settings have filled the form (before, an answer arriving
            # after the edits below reset them, and the save sent nothing)
            await expect(page.locator("#cfg-algorithm")).to_be_enabled()
            await expect(page.locator("#cfg-algorithm")).to_have_value("round_robin")
            await page.select_option("#cfg-algorithm", "least_conn")
            await page.select_option("#cfg-selection_mode", "interval")
            await page.fill("input[name=interval_s]", "2.5")
            await page.click("#config-save")
            await expect(page.locator("#config-status")).to_contain_text("Saved")
            s = control.settings()
            assert (s.algorithm, s.selection_mode, s.interval_s) == ("least_conn", "interval", 2.5)
            assert s.retry_limit == 2  # untouched fields are not sent
            await expect(page.locator("#algo-pill")).to_contain_text("least conn")
            # the data plane refuses a value: the message is shown, nothing changes
            await page.fill("input[name=retry_limit]", "50")
            await page.click("#config-save")
            await expect(page.locator("#config-status")).to_contain_text("retry_limit")
            await expect(page.locator("input[name=retry_limit]")).to_have_class("invalid")
            assert control.settings().retry_limit == 2
            await page.click("#reload-btn")
            await expect(page.locator("#config-status")).to_contain_text("reloaded")
            assert control.reloads == 1
            await page.screenshot(path=str(tmp_path / "config.png"), full_page=True)
        saved = store.load_settings()
        assert saved is not None and saved["algorithm"] == "least_conn"


async def test_configuration_form_is_filled_before_editing_and_keeps_edits_made_meanwhile(
    browser: Browser,
) -> None:
    """The config page fetches the settings each time it is shown: the form is disabled
    until the first answer fills it, and a later answer that arrives after the operator
    started editing leaves the edits alone."""
    control = _control()
    control.update_settings(algorithm="least_conn", retry_limit=3)
    async with dashboard(browser, control) as page:
        held: list[Route] = []
        arrived = asyncio.Event()

        async def hold_settings_get(route: Route) -> None:
            if route.request.method != "GET":
                await route.continue_()
                return
            held.append(route)
            arrived.set()

        await page.route("**/api/settings", hold_settings_get)
        form = page.locator("#config-form")
        await page.click("nav a[data-page=config]")
        await asyncio.wait_for(arrived.wait(), 10)
        await expect(form).to_have_attribute("aria-busy", "true")
        await expect(page.locator("#cfg-algorithm")).to_be_disabled()
        await expect(page.locator("input[name=retry_limit]")).to_be_disabled()
        await expect(page.locator("#config-save")).to_be_disabled()
        arrived.clear()
        await held.pop().continue_()
        await expect(page.locator("#cfg-algorithm")).to_be_enabled()
        await expect(page.locator("#cfg-algorithm")).to_have_value("least_conn")
        await expect(page.locator("input[name=retry_limit]")).to_have_value("3")
        await expect(form).not_to_have_attribute("aria-busy", "true")
        # shown again: the settings are fetched again; an edit made meanwhile is kept
        await page.click("nav a[data-page=dashboard]")
        await page.click("nav a[data-page=config]")
        await asyncio.wait_for(arrived.wait(), 10)
        await expect(form).to_have_attribute("aria-busy", "true")
        await page.fill("input[name=retry_limit]", "4")
        await held.pop().continue_()
        await expect(form).not_to_have_attribute("aria-busy", "true")
        await expect(page.locator("input[name=retry_limit]")).to_have_value("4")
        await page.unroute("**/api/settings")
        await page.click("#config-save")
        await expect(page.locator("#config-status")).to_contain_text("Saved")
        await expect(page.locator("#config-status")).to_contain_text("retry_limit")
        assert control.settings().retry_limit == 4
        assert control.settings().algorithm == "least_conn"


async def _column(page: Page, index: int) -> list[str]:
    cells = page.locator(f"#log-table tbody tr td:nth-child({index})")
    return [str(t) for t in await cells.all_text_contents()]


async def test_properties_log_sorts_by_clicking_headers(tmp_path: Path, browser: Browser) -> None:
    control = _control()
    control.add_backend(BackendSpec("10.0.0.3", 8082))
    control.bump("10.0.0.3:8082", requests=3000)
    with StatsStore(tmp_path / "p.db") as store:
        store.record_event(B, "down", "health check: connection refused", control.clock() - 600)
        async with dashboard(browser, control, store) as page:
            await page.click("nav a[data-page=log]")
            await expect(page.locator("#log-table tbody tr")).to_have_count(3)
            assert await _column(page, 1) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            await page.click("#log-table th[data-key=requests]")
            await expect(page.locator("#log-table th[data-key=requests]")).to_have_attribute(
                "aria-sort", "ascending"
            )
            assert await _column(page, 10) == ["700", "1,500", "3,000"]
            await page.click("#log-table th[data-key=requests]")
            await expect(page.locator("#log-table tbody tr").first).to_have_attribute(
                "data-backend", "10.0.0.3:8082"
            )
            assert await _column(page, 10) == ["3,000", "1,500", "700"]
            row_b = page.locator(f"#log-table tbody tr[data-backend='{B}']")
            await expect(row_b).to_contain_text("refused")
            await expect(row_b).to_contain_text("31.0 ms")
            row_a = page.locator(f"#log-table tbody tr[data-backend='{A}']")
            await expect(row_a.locator("td:nth-child(7)")).to_have_text("2h 00m")
            await expect(page.locator("#events-table tbody tr")).to_have_count(1)
            await expect(page.locator("#events-table")).to_contain_text("connection refused")
            # sort order survives live updates
            control.bump(A, requests=5000)
            await expect(page.locator("#log-table tbody tr").first).to_have_attribute(
                "data-backend", A
            )
            await page.screenshot(path=str(tmp_path / "log.png"), full_page=True)


async def test_html_in_backend_fields_renders_as_text(browser: Browser) -> None:
    control = _control()
    evil = '<img src=x onerror="window.__xss=1">'
    control.insert_raw(
        BackendSnapshot(
            id=f"{evil}:1",
            host=evil,
            port=1,
            weight=1,
            max_conns=0,
            state="down",
            last_crashed=control.clock(),
            last_crash_reason="<b>bold</b><script>window.__xss=2</script>",
        )
    )
    async with dashboard(browser, control) as page:
        await expect(page.locator("#load-bars")).to_contain_text(evil)
        await page.click("nav a[data-page=log]")
        row = page.locator("#log-table tbody tr").filter(has_text="<img")
        await expect(row.locator("td").first).to_have_text(evil)
        await expect(row).to_contain_text("<b>bold</b><script>")
        await page.click("nav a[data-page=servers]")
        await expect(page.locator("#servers-table tbody")).to_contain_text(evil)
        assert await page.locator("main img, main script, main b").count() == 0
        assert await page.evaluate("window.__xss === undefined")
