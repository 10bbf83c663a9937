"""The web client's page in Debian's Chromium: bytes of the first load, time to a room view
with 50 messages, and the JS heap after scrolling back through 50,000 messages.

    python bench/web_page.py                  # 50,000 messages
    python bench/web_page.py --messages 5000  # quicker

Starts `parlour serve` (SQLite in a temporary directory) and fills two rooms over the TCP door:
``lobby50`` with 50 messages and ``mass50k`` with ``--messages``. Then, in a fresh browser
context:

* **first load** — every byte transferred (compressed, as on the wire) for the page and its
  files, from the browser's resource timing, next to the same files uncompressed and the
  JS + CSS budget (60 KB gzipped);
* **time to the room view** — from navigation start to the sign-in form, and to the room view
  with its 50 messages on screen (the script types the credentials as soon as the form is
  there), each the median of ``--loads`` fresh contexts;
* **bounded memory** — in ``mass50k``, the view is scrolled to the top again and again, each
  time waiting for the older page to arrive, until the first message is on screen: every
  message passed through the window. The JS heap (after a forced garbage collection, Chrome
  DevTools protocol) and the DOM size are printed at the room's opening and after the scroll,
  side by side with their ratio (the goal: heap <= 150 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
PASSWORD = "bench-password"
ADMIN_PASSWORD = "bench-admin-password"

SCROLL_UP = """async () => {
  const list = document.querySelector('.messages');
  const first = () => Number(list.querySelector('article[data-seq]').dataset.seq);
  const before = first();
  list.scrollTop = 0;
  list.dispatchEvent(new Event('scroll'));
  const deadline = performance.now() + 30000;
  const more = () => list.querySelector('.loading-older');
  while (first() === before && more() && performance.now() < deadline) {
    await new Promise((r) => requestAnimationFrame(r));
  }
  return [first(), list.querySelectorAll('article[data-seq]').length];
}"""

ROOM_SHOWN = """(count) => new Promise((resolve) => {
  const done = () => document.querySelectorAll('.messages article[data-seq]').length >= count;
  if (done()) { resolve(performance.now()); return; }
  const obs = new MutationObserver(() => {
    if (done()) { obs.disconnect(); resolve(performance.now()); }
  });
  obs.observe(document.body, { childList: true, subtree: true });
})"""


def start_server(data: str) -> tuple[subprocess.Popen[bytes], int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
    env.update(
        PARLOUR_ARGON2_TIME_COST="1",
        PARLOUR_ARGON2_MEMORY_KIB="64",
        PARLOUR_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    cmd = [
        sys.executable, "-m", "parlour", "serve", "--port", "0", "--web-port", "0",
        "--data-dir", data, "--rate", "1000000", "--burst", "1000000", "--log-level", "WARNING",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    port = url = None
    for raw in proc.stdout:
        line = raw.decode()
        if found := re.search(r"listening on tcp://[^:]+:(\d+)", line):
            port = int(found.group(1))
        if found := re.search(r"Web client: (\S+)", line):
            url = found.group(1)
        if line.startswith("Press Ctrl+C"):
            break
    assert port and url
    return proc, port, url


async def fill(port: int, messages: int) -> None:
    """Users and rooms over the TCP door: the admin makes the rooms, `writer` posts."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
    next_id = 0

    async def call(type: str, **fields: Any) -> dict[str, Any]:
        nonlocal next_id
        next_id += 1
        writer.write(json.dumps({"id": next_id, "type": type, **fields}).encode() + b"\n")
        while True:
            frame = json.loads(await reader.readline())
            if frame.get("id") == next_id:
                if frame["type"] != "ok":
                    raise RuntimeError(frame)
                return dict(frame["data"])

    await call("hello", version=1)
    await call("signup", username="writer", password=PASSWORD)
    await call("logout")
    await call("signup", username="reader", password=PASSWORD)
    await call("logout")
    await call("login", username="admin", password=ADMIN_PASSWORD)  # rooms are made by admins
    for room in ("lobby50", "mass50k"):
        await call("room_create", room=room)
    await call("logout")
    await call("login", username="writer", password=PASSWORD)
    for room, count in (("lobby50", 50), ("mass50k", messages)):
        await call("join", room=room, limit=1)
        sent = 0
        while sent < count:
            batch = min(1000, count - sent)
            first = next_id + 1
            writer.write(
                b"".join(
                    json.dumps(
                        {"id": first + i, "type": "send", "room": room,
                         "text": f"message {sent + i + 1} of {room}: some ordinary chat text",
                         "client_id": f"{room}-{sent + i}"}
                    ).encode() + b"\n"
                    for i in range(batch)
                )
            )  # fmt: skip
            next_id += batch
            acks = 0
            while acks < batch:
                frame = json.loads(await reader.readline())
                if frame.get("type") == "ok":
                    acks += 1
                elif frame.get("type") == "error":
                    raise RuntimeError(frame)
            sent += batch
    await call("logout")
    await call("login", username="reader", password=PASSWORD)
    for room in ("lobby50", "mass50k"):
        await call("join", room=room, limit=1)
    await call("logout")
    writer.close()


async def heap(page: Any) -> tuple[float, int]:
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("HeapProfiler.collectGarbage")
    usage = await cdp.send("Runtime.getHeapUsage")
    nodes = await page.evaluate("document.getElementsByTagName('*').length")
    await cdp.detach()
    return usage["usedSize"] / 1e6, int(nodes)


async def sign_in(page: Any) -> None:
    await page.wait_for_selector("input[name=username]")
    await page.fill("input[name=username]", "reader")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("form.card button[type=submit]")


async def run(args: argparse.Namespace) -> None:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="parlour-pagebench-") as data:
        proc, port, url = start_server(data)
        try:
            t0 = time.perf_counter()
            await fill(port, args.messages)
            print(f"  filled {args.messages + 50:,} messages in {time.perf_counter() - t0:.1f} s")
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                loads: list[tuple[float, float, int, int]] = []
                for _ in range(args.loads):
                    context = await browser.new_context(viewport={"width": 1280, "height": 800})
                    page = await context.new_page()
                    await page.goto(url)
                    await page.wait_for_selector("input[name=username]")
                    form_at = await page.evaluate("performance.now()")
                    shown = asyncio.ensure_future(page.evaluate(ROOM_SHOWN, 50))
                    await sign_in(page)
                    room_at = await shown
                    title = await page.inner_text("#conv-title")
                    assert title == "# lobby50", title
                    wire, raw = await page.evaluate(
                        """() => performance.getEntriesByType('navigation')
                          .concat(performance.getEntriesByType('resource'))
                          .reduce((a, e) => [a[0] + e.transferSize, a[1] + e.decodedBodySize],
                                  [0, 0])"""
                    )
                    loads.append((form_at, room_at, int(wire), int(raw)))
                    await context.close()
                form_ms = statistics.median(x[0] for x in loads)
                room_ms = statistics.median(x[1] for x in loads)
                wire, raw = loads[0][2], loads[0][3]
                from parlour.web.assets import Assets

                budget = Assets.load().gzipped_size(".js", ".css")
                print(f"first load ({args.loads} fresh contexts, median):")
                print(f"  {'bytes transferred (gzip, headers incl.)':<44} {wire:>10,}")
                print(f"  {'bytes of the files uncompressed':<44} {raw:>10,}")
                print(f"  {'JS + CSS gzipped (budget 61,440)':<44} {budget:>10,}")
                print(f"  {'navigation -> sign-in form (ms)':<44} {form_ms:>10.0f}")
                print(f"  {'navigation -> room view, 50 messages (ms)':<44} {room_ms:>10.0f}")

                context = await browser.new_context(viewport={"width": 1280, "height": 800})
                page = await context.new_page()
                await page.goto(url)
                await sign_in(page)
                await page.wait_for_selector("#conv-title")
                await page.click("[data-conv='room:mass50k']")
                await page.wait_for_selector(".messages article[data-seq]")
                heap0, nodes0 = await heap(page)
                t0 = time.perf_counter()
                first, shown_max, steps = 10**9, 0, 0
                while first > 1:
                    first, count = await page.evaluate(SCROLL_UP)
                    shown_max = max(shown_max, count)
                    steps += 1
                scroll_s = time.perf_counter() - t0
                heap1, nodes1 = await heap(page)
                await context.close()
                await browser.close()
            print(
                f"bounded memory: {args.messages:,} messages scrolled through in {steps} pages,"
                f" {scroll_s:.1f} s; at most {shown_max} messages in the DOM at once"
            )
            print(f"  {'':<30} {'at opening':>12} {'after scroll':>14} {'ratio':>7}")
            print(
                f"  {'JS heap used (MB)':<30} {heap0:>12.1f} {heap1:>14.1f} {heap1 / heap0:>7.2f}"
            )
            print(f"  {'DOM elements':<30} {nodes0:>12,} {nodes1:>14,} {nodes1 / nodes0:>7.2f}")
            print(f"target: JS heap after 50,000 messages <= 150 MB: {heap1:.1f} MB")
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50000)
    parser.add_argument("--loads", type=int, default=5, help="fresh page loads to time")
    args = parser.parse_args()
    print(
        f"parlour web page benchmark ({os.cpu_count()} CPUs, load average"
        f" {os.getloadavg()[0]:.2f})",
        flush=True,
    )
    asyncio.run(run(args))
    print(f"(load average {os.getloadavg()[0]:.2f} at the end)")


if __name__ == "__main__":
    main()
