"""Keypress-to-screen time of the full-screen ``parlour chat`` with 100,000 messages in the
current buffer, side by side with baselines measured in the same run.

    python bench/tui.py                       # 100,000 messages, 300 keys per variant
    python bench/tui.py --messages 20000 --keys 100

Each variant runs as a child process on a real pseudo-terminal (120x40) and draws with
Textual's real Linux driver; this script plays the terminal: it answers Textual's query for
synchronised output (so every frame ends with ``ESC[?2026l``), writes one key, and takes the
time until the end of the first frame drawn after it. Between keys it waits until the child has
been quiet for 50 ms, so each measurement starts from rest. Keys: a letter then Backspace (the
input line redraws), PageUp then PageDown (the scrollback redraws a screen of messages).

Variants (the chat server is ``ChatTestServer`` in this process, on 127.0.0.1):

* ``parlour``: the real client (``ChatTui``) logged in, its ``#general`` buffer filled with
  ``--messages`` messages (as if paged from the server) before it starts;
* ``parlour-100``: the same with 100 messages (the cost of a long scrollback is the ratio);
* ``richlog``: a naive Textual app, a ``RichLog`` holding every message as a rendered line plus
  a ``TextArea``, the obvious way to write a chat log in Textual (no paging, no re-wrap).

Printed per variant: time to load the messages, median and p99 per key kind, and the child's
RSS (VmRSS, after the keys). Results: docs/benchmarks/tui.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pty
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SYNC_QUERY = b"\x1b[?2026$p"
SYNC_SUPPORTED = b"\x1b[?2026;2$y"
FRAME_END = b"\x1b[?2026l"
COLS, ROWS = 120, 40
PASSWORD = "bench-password"
#: a key whose frame takes longer than this ends the variant's run (reported)
KEY_LIMIT = 30.0
KEYS = {"type": [b"a", b"\x7f"], "scroll": [b"\x1b[5~", b"\x1b[6~"]}


# ---------------------------------------------------------------------- child side


def _records(n: int) -> list[object]:
    from parlour.protocol import MessageRecord

    base = time.time() - n
    words = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
        "sed",
        "do",
    ]
    return [
        MessageRecord(
            room="general",
            seq=i,
            ts=base + i,
            sender=("bob", "carol", "dave")[i % 3],
            text=f"message {i} " + " ".join(words[: 3 + i % 9]),
        )
        for i in range(1, n + 1)
    ]


async def _child_parlour(port: int, messages: int, ready: Path) -> None:
    from parlour.cli.chat import ChatApp
    from parlour.cli.tui.app import ChatTui
    from parlour.cli.tui.buffers import BufferKind, Target
    from parlour.client import Client

    async with Client("127.0.0.1", port) as client:
        session = await client.login("alice", PASSWORD)
        runner = ChatApp(client, interactive=True, out=lambda s: None, err=lambda s: None)
        app = ChatTui(client, session, runner, room="general")
        started = time.perf_counter()
        buf = app.buffers.open(Target(BufferKind.ROOM, "general"))
        buf.has_older = False
        for rec in _records(messages):
            buf.add(rec)  # type: ignore[arg-type]
        buf.mark_read(messages)
        buf.marker_seq = messages
        ready.write_text(f"{time.perf_counter() - started:.3f}")

        def mounted() -> None:
            app.input.cursor_blink = False

        app.call_later(mounted)
        await app.run_async()


def _child_richlog(messages: int, ready: Path) -> None:
    from rich.text import Text
    from textual.app import App, ComposeResult
    from textual.widgets import RichLog, TextArea

    class Naive(App[None]):
        BINDINGS = [("pageup", "up"), ("pagedown", "down")]  # noqa: RUF012

        def compose(self) -> ComposeResult:
            yield RichLog(wrap=True, id="log")
            yield TextArea(id="input", compact=True)

        def on_ready(self) -> None:
            # after the first layout, so each write renders its line at once (before it,
            # RichLog defers them all to its first resize) and "load" is the real cost
            log = self.query_one(RichLog)
            started = time.perf_counter()
            for rec in _records(messages):
                line = Text()
                line.append(time.strftime("%H:%M", time.localtime(rec.ts)), style="dim")  # type: ignore[attr-defined]
                line.append(f" {rec.sender:>12} │ ", style="green")  # type: ignore[attr-defined]
                line.append(rec.text)  # type: ignore[attr-defined]
                log.write(line, scroll_end=False)  # one scroll at the end, not 100,000
            log.scroll_end(animate=False)
            ready.write_text(f"{time.perf_counter() - started:.3f}")
            box = self.query_one(TextArea)
            box.cursor_blink = False
            box.focus()

        def action_up(self) -> None:
            self.query_one(RichLog).scroll_page_up(animate=False)

        def action_down(self) -> None:
            self.query_one(RichLog).scroll_page_down(animate=False)

    Naive().run()


# ---------------------------------------------------------------------- parent side


@dataclass
class Result:
    name: str
    load_s: float = 0.0
    first_screen_s: float = 0.0
    times: dict[str, list[float]] = field(default_factory=dict)
    rss_mib: float = 0.0
    #: what went wrong (a key without a frame within the time limit), if anything
    failed: str = ""


class Terminal:
    """The master side of a pty: collects output, answers the sync-output query."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.frames = 0
        self.changed = asyncio.Event()
        self.last_output = time.perf_counter()
        self._tail = b""
        asyncio.get_running_loop().add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 1 << 16)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.fd)
            return
        self.last_output = time.perf_counter()
        chunk = self._tail + data
        if SYNC_QUERY in chunk:
            os.write(self.fd, SYNC_SUPPORTED)
        self.frames += chunk.count(FRAME_END)
        self._tail = chunk[-16:]
        self.changed.set()

    async def next_frame(self, after: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while self.frames <= after:
                self.changed.clear()
                await self.changed.wait()

    async def quiet(self, span: float = 0.05, timeout: float = 10.0) -> None:
        """Until nothing was written for ``span`` seconds (bounded)."""
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            idle = time.perf_counter() - self.last_output
            if idle >= span:
                return
            await asyncio.sleep(span - idle)

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def run_variant(name: str, port: int, messages: int, keys: int, tmp: Path) -> Result:
    ready = tmp / f"{name}.ready"
    ready.unlink(missing_ok=True)
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(COLS), LINES=str(ROWS))
    variant = "richlog" if name == "richlog" else "parlour"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", variant, "--port", str(port),
         "--messages", str(messages), "--ready", str(ready)],
        stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    term = Terminal(master)
    result = Result(name)
    try:
        async with asyncio.timeout(600):
            while not ready.exists() or not ready.read_text():
                await asyncio.sleep(0.05)  # polling a file the child writes (not a test)
        result.load_s = float(ready.read_text())
        await term.next_frame(0, timeout=120)
        await term.quiet(0.3, timeout=60)
        result.first_screen_s = time.perf_counter() - started
        for kind, sequence in KEYS.items():
            samples: list[float] = []
            result.times[kind] = samples
            for i in range(keys):
                key = sequence[i % len(sequence)]
                await term.quiet()
                before = term.frames
                t0 = time.perf_counter()
                os.write(master, key)
                try:
                    await term.next_frame(before, timeout=KEY_LIMIT)
                except TimeoutError:
                    result.failed = f"{kind} key {i}: no frame within {KEY_LIMIT:.0f} s"
                    break
                samples.append(time.perf_counter() - t0)
            if result.failed:
                break
        result.rss_mib = _rss_mib(proc.pid)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        term.close()
    return result


def _ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def parent(args: argparse.Namespace) -> None:
    from parlour.client import Client
    from parlour.server.testing import ChatTestServer

    load = os.getloadavg()
    print(f"# bench/tui.py: {args.messages} messages, {args.keys} keys of each kind, "
          f"{COLS}x{ROWS}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"parlour-bench-tui-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    results: list[Result] = []
    async with ChatTestServer(rooms=("general",)) as srv:
        await srv.add_user("alice", PASSWORD)
        async with Client("127.0.0.1", srv.port) as alice:
            await alice.login("alice", PASSWORD)
            await alice.join("general")
        plan = [("parlour", args.messages), ("parlour-100", 100), ("richlog", args.messages)]
        for name, count in plan:
            if name not in args.variants:
                continue
            print(f"  running {name} ({count} messages)...", flush=True)
            results.append(await run_variant(name, srv.port, count, args.keys, tmp))
    print()
    header = f"{'variant':<13}{'messages':>9}{'load s':>8}{'type p50':>10}{'type p99':>10}"
    header += f"{'scroll p50':>12}{'scroll p99':>12}{'RSS MiB':>9}"
    print(header)
    counts = dict((n, c) for n, c in [("parlour", args.messages), ("parlour-100", 100),
                                       ("richlog", args.messages)])  # fmt: skip
    for r in results:
        print(
            f"{r.name:<13}{counts[r.name]:>9}{r.load_s:>8.2f}"
            f"{_ms(r.times.get('type', []), 0.5):>10.2f}"
            f"{_ms(r.times.get('type', []), 0.99):>10.2f}"
            f"{_ms(r.times.get('scroll', []), 0.5):>12.2f}"
            f"{_ms(r.times.get('scroll', []), 0.99):>12.2f}"
            f"{r.rss_mib:>9.1f}"
        )
        if r.failed:
            print(f"  {r.name}: {r.failed} ({len(r.times.get('type', []))} type and "
                  f"{len(r.times.get('scroll', []))} scroll keys measured)")  # fmt: skip
    by = {r.name: r for r in results}
    if "parlour" in by:
        base = by["parlour"]
        for other in ("parlour-100", "richlog"):
            if other in by and all(by[other].times.get(k) for k in KEYS):
                o = by[other]
                med = statistics.median
                ratios = ", ".join(
                    f"{kind} p50 {med(base.times[kind]) / med(o.times[kind]):.2f}x" for kind in KEYS
                )
                print(f"parlour / {other}: {ratios}, RSS {base.rss_mib / o.rss_mib:.2f}x")
    load = os.getloadavg()
    print(f"# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--variants", default="parlour,parlour-100,richlog")
    parser.add_argument("--child", choices=["parlour", "richlog"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready", type=Path)
    args = parser.parse_args()
    if args.child == "parlour":
        asyncio.run(_child_parlour(args.port, args.messages, args.ready))
    elif args.child == "richlog":
        _child_richlog(args.messages, args.ready)
    else:
        args.variants = args.variants.split(",")
        asyncio.run(parent(args))


if __name__ == "__main__":
    main()
