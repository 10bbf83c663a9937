"""Helpers of the browser tests (imported by name): Chromium, an in-process server, pages that
collect their errors, and the few gestures every test repeats."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from parlour.server.app import ChatServer
from parlour.server.config import Settings
from parlour.server.testing import PlainHasher

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect
# Playwright's 5 s default is a round trip or two of a page on a loaded two-core CI machine
# (a reload, a WebSocket, a login): it failed a test there once. A wait, not a threshold:
# a passing expectation returns as soon as it holds.
expect.set_options(timeout=15_000)

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "password-123"
#: where screenshots go (kept as test artefacts, never committed: /build is ignored)
ARTIFACTS = (
    Path(
        os.environ.get(
            "PARLOUR_ARTIFACTS", Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
        )
    )
    / "web"
)
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}


def needs_chromium() -> list[pytest.MarkDecorator]:
    return [
        pytest.mark.asyncio(loop_scope="module"),
        pytest.mark.chromium,
        pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium"),
    ]


async def launch(pw: Any) -> Browser:
    browser: Browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    return browser


@contextlib.asynccontextmanager
async def chat_server(**overrides: Any) -> AsyncIterator[ChatServer]:
    settings = Settings(
        port=0,
        store="memory",
        admin_password=ADMIN_PASSWORD,
        rate=1000.0,
        burst=1000,
        log_level="WARNING",
    )
    settings = dataclasses.replace(settings, **overrides)
    server = await ChatServer.start(settings, password_hasher=PlainHasher(), tick_interval=0.2)
    try:
        yield server
    finally:
        await server.stop(grace=2)


class Pages:
    """Browser contexts (one per user: separate storage) whose pages record their errors and
    any Content-Security-Policy violation; ``check()`` fails the test on any."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    async def new(
        self, url: str, viewport: dict[str, int] | None = None, dark: bool = False
    ) -> Page:
        context = await self.browser.new_context(
            viewport=viewport or DESKTOP, color_scheme="dark" if dark else "light"
        )
        self.contexts.append(context)
        return await self.page(context, url)

    async def page(self, context: BrowserContext, url: str) -> Page:
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

        def console(msg: Any) -> None:
            if msg.type == "error" and "WebSocket" not in msg.text and "ERR_" not in msg.text:
                self.errors.append(f"console: {msg.text}")

        page.on("console", console)
        page.on("dialog", lambda dialog: dialog.accept())
        await page.goto(url)
        return page

    def check(self) -> None:
        assert self.errors == [], self.errors

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


@contextlib.asynccontextmanager
async def pages(browser: Browser) -> AsyncIterator[Pages]:
    p = Pages(browser)
    try:
        yield p
        p.check()
    finally:
        await p.close()


async def sign_up(page: Page, name: str, password: str = PASSWORD) -> None:
    await page.get_by_role("tab", name="Create account").click()
    await page.fill("input[name=username]", name)
    await page.fill("input[name=password]", password)
    await page.fill("input[name=confirm]", password)
    await page.click("form.card button[type=submit]")
    await expect(page.locator("#conv-title")).to_be_visible()


async def sign_in(page: Page, name: str, password: str = PASSWORD) -> None:
    await page.get_by_role("tab", name="Sign in").click()
    await page.fill("input[name=username]", name)
    await page.fill("input[name=password]", password)
    await page.click("form.card button[type=submit]")
    await expect(page.locator("#conv-title")).to_be_visible()


async def join(page: Page, room: str) -> None:
    """Join ``room`` (from the lobby or the room browser), or open it if already joined."""
    await expect(page.locator("#conv-title")).to_be_visible()
    if await page.locator(f"[data-conv='room:{room}']").count():
        await open_conv(page, f"room:{room}")
        return
    lobby = page.locator(f".lobby [data-join='{room}']")
    if await lobby.count():
        await lobby.click()
    else:
        await page.get_by_role("button", name="Browse rooms").click()
        await page.click(f".sidebar [data-join='{room}']")
    await expect(page.locator("#conv-title")).to_have_text(f"# {room}")
    await expect(page.locator("#composer")).to_have_attribute("aria-label", f"Message #{room}")


async def open_conv(page: Page, conv: str) -> None:
    """Open ``room:NAME`` or ``dm:PEER`` and wait until its view is the one shown."""
    await page.click(f"[data-conv='{conv}']")
    kind, key = conv.split(":", 1)
    await expect(page.locator("#conv-title")).to_have_text(
        f"# {key}" if kind == "room" else f"@ {key}"
    )
    label = f"Message #{key}" if kind == "room" else f"Message {key}"
    await expect(page.locator("#composer")).to_have_attribute("aria-label", label)


async def send(page: Page, text: str) -> None:
    await page.fill("#composer", text)
    await page.press("#composer", "Enter")


async def seqs(page: Page) -> list[int]:
    """The sequence numbers of the messages on screen, in order."""
    found: list[int] = await page.eval_on_selector_all(
        ".messages article[data-seq]", "els => els.map(e => Number(e.dataset.seq))"
    )
    return found


def message(page: Page, seq: int) -> Any:
    return page.locator(f".messages article[data-seq='{seq}']")


async def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=False)
    return path


class Bot:
    """A raw NDJSON client on the TCP door (fast set-up and traffic beside the browsers)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.next = 1

    @classmethod
    async def connect(cls, port: int) -> Bot:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        return cls(reader, writer)

    async def request(self, type: str, **fields: Any) -> dict[str, Any]:
        rid = self.next
        self.next += 1
        self.writer.write(json.dumps({"id": rid, "type": type, **fields}).encode() + b"\n")
        while True:
            frame = json.loads(await asyncio.wait_for(self.reader.readline(), 15))
            if frame.get("id") == rid:
                assert frame["type"] == "ok", frame
                data: dict[str, Any] = frame["data"]
                return data

    async def user(self, name: str, password: str = PASSWORD, signup: bool = True) -> None:
        await self.request("hello", version=1)
        await self.request("signup" if signup else "login", username=name, password=password)

    async def flood(self, room: str, texts: list[str]) -> None:
        """Send every text (pipelined) and wait for all the replies."""
        first = self.next
        self.writer.write(
            b"".join(
                json.dumps(
                    {"id": first + i, "type": "send", "room": room, "text": t,
                     "client_id": f"bot-{first + i}"}
                ).encode() + b"\n"
                for i, t in enumerate(texts)
            )
        )  # fmt: skip
        self.next += len(texts)
        got = 0
        while got < len(texts):
            frame = json.loads(await asyncio.wait_for(self.reader.readline(), 30))
            if frame.get("type") != "event":
                assert frame["type"] == "ok", frame
                got += 1

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
