"""`/send-file`, `/accept`, `/decline`, `/cancel`, `/transfers` in `parlour chat`: two real
terminal clients (subprocesses, piped) against the real server, the file over UDP on
127.0.0.1; and the interactive progress display (rich) driven with known figures."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console

from parlour.cli import _commands as c
from parlour.cli._render import (
    format_duration,
    format_size,
    render_file_result,
    render_offer,
    render_offer_ended,
)
from parlour.cli._transfers import FileCommands, LineDisplay
from parlour.cli.chat import _echo
from parlour.client import Client, Transfer
from parlour.p2p import Progress
from parlour.server.testing import ChatTestServer

TIMEOUT = 30


@pytest.fixture
async def server() -> AsyncIterator[ChatTestServer]:
    async with ChatTestServer() as srv:
        await srv.add_user("alice", "alice-password")
        await srv.add_user("bob", "bob-password")
        yield srv


async def start_chat(port: int, user: str, tmp: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
    env.update(
        PARLOUR_PASSWORD=f"{user}-password",
        PARLOUR_DOWNLOADS=str(tmp / f"downloads-{user}"),
        PYTHONUNBUFFERED="1",
    )
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parlour", "chat", "--port", str(port), "--user", user,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip


async def read_until(stream: asyncio.StreamReader, needle: str) -> str:
    seen = ""
    while needle not in seen:
        line = await asyncio.wait_for(stream.readline(), TIMEOUT)
        if not line:
            raise AssertionError(f"stream ended before {needle!r}; got {seen!r}")
        seen += line.decode()
    return seen


async def say(proc: asyncio.subprocess.Process, line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(f"{line}\n".encode())
    await proc.stdin.drain()


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.close()
    out, err = await asyncio.wait_for(
        asyncio.gather(proc.stdout.read(), proc.stderr.read()), TIMEOUT
    )
    return await asyncio.wait_for(proc.wait(), TIMEOUT), out.decode(), err.decode()


async def test_a_file_from_one_terminal_to_another(server: ChatTestServer, tmp_path: Path) -> None:
    src = tmp_path / "report final.pdf"
    src.write_bytes(os.urandom(1_500_000))
    bob = await start_chat(server.port, "bob", tmp_path)
    alice = await start_chat(server.port, "alice", tmp_path)
    assert bob.stdout and alice.stdout
    await read_until(bob.stdout, "logged in as bob")
    await read_until(alice.stdout, "logged in as alice")
    await say(alice, f"/send-file bob {src}")
    seen = await read_until(alice.stdout, "[file 1] offered report final.pdf (1.50 MB) to bob")
    assert "hashing report final.pdf" in seen
    line = await read_until(bob.stdout, "offers you report final.pdf")
    assert "! alice offers you report final.pdf (1.50 MB) [file 1] — /accept 1" in line
    await say(bob, "/transfers")
    await read_until(bob.stdout, "[file 1] report final.pdf (1.50 MB) from alice — /accept 1")
    dest = tmp_path / "in here"
    await say(bob, f"/accept 1 {dest}")
    await read_until(bob.stdout, f"receiving report final.pdf (1.50 MB) from alice into {dest}")
    done = await read_until(bob.stdout, "verified")
    assert f"saved as {dest / 'report final.pdf'}" in done and "direct" in done
    code, out, err = await finish(alice)  # piped: /send-file waited for the end
    assert code == 0, err
    assert "bob accepted" in out
    assert "[file 1] report final.pdf → bob: verified (SHA-256)" in out
    code, _, err = await finish(bob)
    assert code == 0, err
    assert hashlib.sha256((dest / src.name).read_bytes()).digest() == (
        hashlib.sha256(src.read_bytes()).digest()
    )


async def test_a_declined_file_fails_the_senders_line(
    server: ChatTestServer, tmp_path: Path
) -> None:
    src = tmp_path / "x.bin"
    src.write_bytes(b"x" * 1000)
    bob = await start_chat(server.port, "bob", tmp_path)
    alice = await start_chat(server.port, "alice", tmp_path)
    assert bob.stdout and alice.stdout
    await read_until(bob.stdout, "logged in as bob")
    await read_until(alice.stdout, "logged in as alice")
    await say(alice, f"/send-file bob {src}")
    await read_until(bob.stdout, "offers you x.bin")
    await say(bob, "/accept 7")
    await say(bob, "/decline 1")
    await read_until(bob.stdout, "declined file offer 1")
    code, out, err = await finish(alice)
    assert code == 4, (out, err)  # piped, and the line failed
    assert "[file 1] x.bin → bob: failed: the offer was declined by bob" in err
    code, out, err = await finish(bob)
    assert "no offer number 7" in err and code == 4
    assert "was declined" not in out  # your own /decline is not echoed back as news


async def test_missing_file_and_unknown_user(server: ChatTestServer, tmp_path: Path) -> None:
    alice = await start_chat(server.port, "alice", tmp_path)
    assert alice.stdout
    await read_until(alice.stdout, "logged in as alice")
    await say(alice, f"/send-file bob {tmp_path / 'nope.bin'}")
    (tmp_path / "here.bin").write_bytes(b"1")
    await say(alice, f"/send-file bob {tmp_path / 'here.bin'}")  # bob is offline
    code, _, err = await finish(alice)
    assert code == 4
    assert "no file at" in err and "bob is not online [user_offline]" in err


# ---------------------------------------------------------------------------- display


async def test_the_progress_display_shows_bytes_rate_and_eta(tmp_path: Path) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=140, color_system=None)
    lines: list[str] = []
    client = Client("127.0.0.1", 1)
    view = LineDisplay(
        interactive=True, out=lines.append, err=lines.append, fail=lines.append, console=console
    )
    commands = FileCommands(client, out=lines.append, fail=lines.append, display=view)
    t = Transfer(
        direction="receive",
        number=4,
        offer="o",
        peer="alice",
        filename="[bold]evil\x1b[2J.iso",
        size=10_000_000,
        sha256="ab" * 32,
    )
    update = view._progress_of(t)
    assert commands.live_console is None
    update(Progress(b"t" * 8, "receive", 4_000_000, 10_000_000, 2_000_000.0, 3.0, False))
    assert view._bars is not None and commands.live_console is console
    # chat lines printed meanwhile go through the display's console, above the bars
    _echo("[DM] alice: hi there [1]", err=False, live=commands.live_console)
    assert "[DM] alice: hi there [1]" in screen.getvalue()
    view._bars.refresh()
    shown = screen.getvalue()
    assert "40%" in shown and "2.00 MB/s" in shown and "ETA 3 s" in shown
    assert "[4] [bold]evil\\x1b[2J.iso ← alice" in shown  # markup and escapes shown as text
    update(Progress(b"t" * 8, "receive", 10_000_000, 10_000_000, 2_500_000.0, 0.0, True))
    view._bars.refresh()
    assert "(relay)" in screen.getvalue()
    view._drop_row(4)
    assert view._bars is None  # the last bar gone: the display stops
    await commands.close()


def test_file_lines() -> None:
    assert format_size(999) == "999 B" and format_size(1_500_000) == "1.50 MB"
    assert format_size(734_003_200) == "734.0 MB" and format_size(2e12) == "2.00 TB"
    assert format_duration(5.4) == "5 s" and format_duration(185) == "3 min 05 s"
    assert format_duration(7260) == "2 h 01 min" and format_duration(None) == "?"
    assert format_duration(float("nan")) == "?" and format_duration(float("inf")) == "?"
    offer = render_offer(3, "mallory\x1b]0;x\x07", "a\u202etxt.exe", 10, None)
    assert "\x1b" not in offer and "\u202e" not in offer and "[file 3]" in offer
    assert render_offer_ended(3, "alice", "a.txt", "expired", None) == (
        "* the offer of a.txt from alice [file 3] expired"
    )
    ok = render_file_result(2, "send", "bob", "a.bin", True, "verified", 4_000_000, 2.0, False)
    assert ok == ("* [file 2] a.bin → bob: verified (SHA-256) — 4.00 MB in 2 s, 2.00 MB/s, direct")
    bad = render_file_result(
        2, "receive", "bob", "a.bin", False, "peer: the peer went silent", 1, 1.0, True
    )
    assert bad == "! [file 2] a.bin ← bob: failed: peer: the peer went silent"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/send-file bob ~/a b.txt", c.SendFile("bob", "~/a b.txt")),
        ("/sendfile bob x", c.SendFile("bob", "x")),
        ("/accept 3", c.AcceptFile("3")),
        ("/accept 3 ~/in coming", c.AcceptFile("3", "~/in coming")),
        ("/accept hK2w9TqzX1bA", c.AcceptFile("hK2w9TqzX1bA")),
        ("/decline 3", c.DeclineFile("3")),
        ("/cancel 12", c.CancelFile("12")),
        ("/transfers", c.Transfers()),
    ],
)
def test_file_commands_parse(line: str, expected: c.Command) -> None:
    assert c.parse_line(line) == expected


@pytest.mark.parametrize(
    "line", ["/send-file", "/send-file bob", "/send-file b!b x", "/accept", "/accept ../x",
             "/decline", "/decline 1 2", "/cancel", "/transfers now"],
)  # fmt: skip
def test_file_command_usage(line: str) -> None:
    result = c.parse_line(line)
    assert isinstance(result, c.Invalid) and result.message.startswith("usage:")
