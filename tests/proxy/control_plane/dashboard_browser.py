"""Real headless Chromium (Debian's, through Playwright) for the dashboard tests: one
browser per test module, each test in a fresh browser context."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

__all__ = ["ARGS", "BROWSER_MARKS", "CHROMIUM", "browser", "expect", "sign_in"]

playwright_api = pytest.importorskip("playwright.async_api")
expect: Any = playwright_api.expect

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
BROWSER_MARKS = [
    # one Chromium for the whole module (each test gets a fresh browser context)
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.chromium,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium at /usr/bin"),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with playwright_api.async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def sign_in(page: Page, token: str) -> None:
    """Fill the login form and wait until the dashboard is live."""
    await page.fill("#token-input", token)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#login")).to_be_hidden()
    await expect(page.locator("#live")).to_have_text("live")
