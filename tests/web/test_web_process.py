"""`parlour serve` as a real process with the web client in Chromium: the start-up output names
the web client's URL, and the pages follow a graceful restart and a `kill -9` in the middle of
a conversation, resuming with no gap and no duplicate on screen (checked by sequence number
and by text)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from browser_helpers import (
    ADMIN_PASSWORD,
    expect,
    join,
    message,
    needs_chromium,
    pages,
    send,
    seqs,
    shot,
    sign_in,
    sign_up,
)

from parlour.client import Client
from parlour.client.backoff import Backoff

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = needs_chromium()
TIMEOUT = 30.0


class Serve:
    """`python -m parlour serve` on fixed or free ports, with its start-up output."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, url: str, banner: str):
        self.proc = proc
        self.port = port
        self.url = url
        self.banner = banner

    @classmethod
    async def start(
        cls, data: Path, port: int = 0, web_port: int = 0, admin_env: bool = True
    ) -> Serve:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
        env.update(
            PARLOUR_ARGON2_TIME_COST="1",
            PARLOUR_ARGON2_MEMORY_KIB="64",
            PARLOUR_RATE="1000",
            PARLOUR_BURST="1000",
        )
        if admin_env:
            env["PARLOUR_ADMIN_PASSWORD"] = ADMIN_PASSWORD
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "parlour", "serve", "--data-dir", str(data),
            "--port", str(port), "--web-port", str(web_port), "--log-level", "WARNING",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("Press Ctrl+C"):
            line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
            if not line:
                raise AssertionError(f"server exited early: {lines}")
            lines.append(line.decode())
        banner = "".join(lines)
        tcp = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", banner)
        web = re.search(r"Web client: (http://127\.0\.0\.1:\d+/)", banner)
        assert tcp and web, banner
        return cls(proc, int(tcp.group(1)), web.group(1), banner)

    @property
    def web_port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].rstrip("/"))

    async def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), TIMEOUT)

    async def kill9(self) -> None:
        self.proc.kill()
        await asyncio.wait_for(self.proc.wait(), TIMEOUT)


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[list[Serve]]:
    started: list[Serve] = []
    try:
        yield started
    finally:
        for s in started:
            with contextlib.suppress(ProcessLookupError):
                s.proc.kill()
            await s.proc.wait()


async def test_serve_prints_the_web_clients_url_and_the_printed_admin_password_works(
    tmp_path: Path, browser: Browser
) -> None:
    async with serving() as started, pages(browser) as p:
        server = await Serve.start(tmp_path / "data", admin_env=False)
        started.append(server)
        assert server.web_port != server.port
        async with aiohttp.ClientSession() as http, http.get(server.url) as r:
            assert r.status == 200 and "Parlour" in await r.text()
        found = re.search(r"password: (\S+)", server.banner)
        assert found, server.banner
        page = await p.new(server.url)
        await sign_in(page, "admin", found.group(1))
        # change the password in Settings; the new one is the one that works from now on
        await page.click(".user-menu summary")
        await page.get_by_role("button", name="Settings").click()
        await page.fill("#old-password", found.group(1))
        await page.fill("#new-password", "a-new-admin-password")
        await page.fill("#new-password-2", "a-new-admin-password")
        await page.get_by_role("button", name="Change password").click()
        await expect(page.locator("dialog")).to_contain_text("Password changed.")
        await page.click("dialog .close")
        await page.click(".user-menu summary")
        await page.click("#sign-out")
        await page.fill("input[name=password]", found.group(1))
        await page.click("form.card button[type=submit]")
        # a wrong password costs a full Argon2 check (production parameters): give it time
        await expect(page.locator("#auth-error")).to_contain_text(
            "wrong user name or password", timeout=30_000
        )
        await sign_in(page, "admin", "a-new-admin-password")
        assert await server.terminate() == 0


async def wait_down(page: Page) -> None:
    await expect(page.locator("#link-state")).to_contain_text("Connection lost", timeout=15000)


async def wait_up(page: Page) -> None:
    await expect(page.locator("#link-state")).to_have_text("Connected", timeout=30000)


async def test_restart_and_kill_9_mid_conversation_resume_exactly(
    tmp_path: Path, browser: Browser
) -> None:
    data = tmp_path / "data"
    async with serving() as started, pages(browser) as p:
        first = await Serve.start(data)
        started.append(first)
        port, web_port = first.port, first.web_port
        alice, bob = await p.new(first.url), await p.new(first.url)
        await sign_up(alice, "alice")
        await sign_up(bob, "bob")
        await join(alice, "general")
        await join(bob, "general")

        # a third member talks steadily through everything that follows; its client resends
        # with the same client id after a reconnect, so every message is stored once
        talker = Client("127.0.0.1", port, backoff=Backoff(base=0.05, maximum=0.5))
        await talker.connect()
        await talker.signup("talker", "password-123")
        await talker.join("general")
        acked: list[str] = []
        talking = asyncio.Event()
        talking.set()

        async def talk() -> None:
            n = 0
            while talking.is_set():
                n += 1
                await talker.send("general", f"talk {n}")
                acked.append(f"talk {n}")
                await asyncio.sleep(0.05)  # pacing the traffic (20 msg/s), not waiting for it

        chatter = asyncio.create_task(talk())
        await send(alice, "before the restart")
        await expect(bob.locator(".messages")).to_contain_text("before the restart")
        await expect(bob.locator(".messages")).to_contain_text("talk 5")

        # graceful restart: the pages say so, come back and resume
        assert await first.terminate() == 0
        await wait_down(alice)
        await wait_down(bob)
        second = await Serve.start(data, port, web_port)
        started.append(second)
        await wait_up(alice)
        await wait_up(bob)
        await send(bob, "after the restart")
        await expect(alice.locator(".messages")).to_contain_text("after the restart")
        count = len(acked)
        await expect(bob.locator(".messages")).to_contain_text(f"talk {count + 3}")

        # kill -9 in the middle of the conversation; bob writes while the server is gone
        await second.kill9()
        await wait_down(bob)
        await send(bob, "written while the server was down")
        await expect(bob.locator(".msg.pending")).to_contain_text("written while the server")
        await shot(bob, "reconnecting")
        third = await Serve.start(data, port, web_port)
        started.append(third)
        await wait_up(alice)
        await wait_up(bob)
        await expect(alice.locator(".messages")).to_contain_text("written while the server")
        count = len(acked)
        await expect(alice.locator(".messages")).to_contain_text(f"talk {count + 3}")
        talking.clear()
        await chatter
        await talker.close()

        # the server's own record of the room, read back over the protocol
        reader = Client("127.0.0.1", port)
        await reader.connect()
        await reader.login("admin", ADMIN_PASSWORD)
        joined = await reader.join("general", limit=1)
        last = joined.last_seq
        page = await reader.history("general", before=last + 1, limit=last)
        stored = [m.text for m in page.messages]
        await reader.close()
        assert [m.seq for m in page.messages] == list(range(1, last + 1))
        assert len(stored) == len(set(stored)), "a message was stored twice"
        assert set(acked) <= set(stored) and last == len(acked) + 3

        for who in (alice, bob):
            await expect(message(who, last)).to_be_visible()
            on_screen = await seqs(who)
            assert on_screen == list(range(1, last + 1)), "gap or duplicate on screen"
            texts = await who.eval_on_selector_all(
                ".messages article[data-seq] .text", "els => els.map(e => e.textContent)"
            )
            assert texts == stored
            assert await who.locator(".msg.pending").count() == 0
        assert await third.terminate() == 0
