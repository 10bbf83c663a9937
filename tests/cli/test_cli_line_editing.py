"""Interactive line mode (``parlour chat --plain`` on a terminal) over a real pseudo-terminal
(pexpect): arrow keys edit the line, Up recalls history, and a message arriving while you type
does not corrupt what you are typing. The server is real (ChatTestServer on 127.0.0.1); every
wait is on output or on what the server stored."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator

import pexpect
import pytest

from parlour.client import Client
from parlour.server.testing import ChatTestServer

PASSWORD = "password-123"
LEFT, UP = "\x1b[D", "\x1b[A"
TIMEOUT = 30


@pytest.fixture
async def srv() -> AsyncIterator[ChatTestServer]:
    async with ChatTestServer(rooms=("general",)) as server:
        await server.add_user("alice", PASSWORD)
        await server.add_user("bob", PASSWORD)
        yield server


@pytest.fixture
async def terminal(srv: ChatTestServer) -> AsyncIterator[pexpect.spawn]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
    # pexpect is not a terminal emulator: nobody answers prompt_toolkit's cursor position
    # requests, so tell it not to ask (a real terminal answers them)
    env.update(
        PARLOUR_PASSWORD=PASSWORD,
        TERM="xterm-256color",
        PYTHONUNBUFFERED="1",
        PROMPT_TOOLKIT_NO_CPR="1",
    )
    args = ["-m", "parlour", "chat", "--plain", "--port", str(srv.port), "--user", "alice"]
    child = pexpect.spawn(
        sys.executable,
        [*args, "--room", "general"],
        env=env,
        encoding="utf-8",
        dimensions=(24, 100),
        timeout=TIMEOUT,
    )
    try:
        await child.expect_exact("#general>", async_=True)
        yield child
    finally:
        if child.async_pw_transport is not None:
            child.async_pw_transport[1].close()
        child.terminate(force=True)
        child.close()


def texts(srv: ChatTestServer) -> list[str | None]:
    return [m.text for m in srv.room_messages("general")]


async def test_arrow_keys_edit_the_line(srv: ChatTestServer, terminal: pexpect.spawn) -> None:
    terminal.send("abc" + LEFT + "X\r")  # one step left: between b and c
    await srv.wait_for(lambda: texts(srv) == ["abXc"], TIMEOUT)
    terminal.send("abc" + LEFT + LEFT + "X\r")  # two steps: between a and b
    await srv.wait_for(lambda: texts(srv) == ["abXc", "aXbc"], TIMEOUT)
    assert "\x1b" not in "".join(t or "" for t in texts(srv))


async def test_up_recalls_history(srv: ChatTestServer, terminal: pexpect.spawn) -> None:
    terminal.send("first message\r")
    await srv.wait_for(lambda: texts(srv) == ["first message"], TIMEOUT)
    terminal.send("second\r")
    await srv.wait_for(lambda: len(texts(srv)) == 2, TIMEOUT)
    terminal.send(UP + UP + " again\r")
    await srv.wait_for(lambda: texts(srv) == ["first message", "second", "first message again"])


async def test_an_incoming_message_does_not_corrupt_the_input(
    srv: ChatTestServer, terminal: pexpect.spawn
) -> None:
    async with Client("127.0.0.1", srv.port) as bob:
        await bob.login("bob", PASSWORD)
        await bob.join("general")
        terminal.send("hel")
        await terminal.expect_exact("hel", async_=True)
        await bob.send("general", "incoming while you type")
        await terminal.expect_exact("<bob> incoming while you type", async_=True)
        # the prompt and the half-typed line are drawn again below the message
        await terminal.expect(r"#general>(\x1b\[[0-9;?]*[A-Za-z]| )*hel", async_=True)
        terminal.send("lo\r")
        await srv.wait_for(lambda: texts(srv) == ["incoming while you type", "hello"], TIMEOUT)


async def test_ctrl_d_leaves(terminal: pexpect.spawn) -> None:
    terminal.sendcontrol("d")
    await terminal.expect(pexpect.EOF, async_=True)
    terminal.wait()
    assert terminal.exitstatus == 0


async def test_tab_completes_commands_and_the_names_seen(
    srv: ChatTestServer, terminal: pexpect.spawn
) -> None:
    async with Client("127.0.0.1", srv.port) as bob:
        await bob.login("bob", PASSWORD)
        await bob.join("general")
        await bob.send("general", "anyone here?")
        await terminal.expect_exact("<bob> anyone here?", async_=True)
        terminal.send("hi @b\t")  # only bob has spoken: completed at once
        await terminal.expect_exact("@bob", async_=True)
        terminal.send("there\r")
        await srv.wait_for(lambda: texts(srv)[-1:] == ["hi @bob there"], TIMEOUT)
        terminal.send("/bro\t")  # one command starts so
        await terminal.expect_exact("/broadcast", async_=True)
        terminal.send("\x15/help ki\t")  # Ctrl+U clears the line; the argument of /help
        await terminal.expect_exact("kick", async_=True)
        terminal.send("\r")
        await terminal.expect_exact("/kick <user>", async_=True)
