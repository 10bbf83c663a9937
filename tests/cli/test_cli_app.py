"""ChatApp in-process against a real server: the interactive prompts (sign up, log in, retry,
/passwd), state kept in step with server events, and output made terminal-safe."""

from __future__ import annotations

import asyncio
import io
from collections import deque

from cli_helpers import ADMIN_PASSWORD, LiveServer

from parlour.cli.chat import EXIT_ENDED, EXIT_OK, ChatApp, _LineReader
from parlour.client import Client


class Terminal:
    """Scripted answers to prompts, and everything printed."""

    def __init__(self, *answers: str) -> None:
        self.answers = deque(answers)
        self.prompts: list[tuple[str, bool]] = []
        self.out: list[str] = []
        self.err: list[str] = []

    def ask(self, prompt: str, hidden: bool) -> str:
        self.prompts.append((prompt, hidden))
        if not self.answers:
            raise EOFError
        return self.answers.popleft()


def app_for(client: Client, term: Terminal) -> ChatApp:
    return ChatApp(client, interactive=True, out=term.out.append, err=term.err.append, ask=term.ask)


async def test_sign_up_prompts_retry_on_mismatch_then_log_in(live: LiveServer) -> None:
    term = Terminal("s", "alice", "secret-one", "secret-two", "secret-one", "secret-one")
    async with Client("127.0.0.1", live.port) as client:
        app = app_for(client, term)
        assert await app.authenticate(None, None, signup=False)
    assert ("Password: ", True) in term.prompts and ("Password (again): ", True) in term.prompts
    assert "! the passwords differ" in term.err
    assert term.out[0].startswith("* logged in as alice (member)")

    term = Terminal("", "alice", "wrong-password", "l", "alice", "secret-one")
    async with Client("127.0.0.1", live.port) as client:
        app = app_for(client, term)
        assert await app.authenticate(None, None, signup=False)
        assert "! login failed: wrong user name or password" in term.err
        # /passwd asks three times, hidden, and the new password works next time
        term.answers.extend(["secret-one", "secret-three", "secret-three"])
        await app.run_line("/passwd")
        assert term.out[-1] == "* password changed"
        assert term.prompts[-1] == ("New password (again): ", True)
    async with Client("127.0.0.1", live.port) as client:
        assert (await client.login("alice", "secret-three")).username == "alice"


async def test_ctrl_d_at_a_prompt_gives_up_quietly(live: LiveServer) -> None:
    async with Client("127.0.0.1", live.port) as client:
        assert not await app_for(client, Terminal("s", "bob")).authenticate(None, None, False)


async def show_until(app: ChatApp, name: str) -> None:
    """Feed the app the client's events until one called ``name`` has been shown."""
    async with asyncio.timeout(30):
        async for event in app.client.events():
            app.show_event(event)
            if event.name == name:
                return


async def test_room_follows_renames_kicks_and_output_is_clean(live: LiveServer) -> None:
    term = Terminal()
    async with (
        Client("127.0.0.1", live.port) as client,
        Client("127.0.0.1", live.port) as admin,
    ):
        app = app_for(client, term)
        assert await app.authenticate("carol", "carol-password", signup=True)
        await admin.login("admin", ADMIN_PASSWORD)
        await admin.room_create("ops")
        await app.run_line("/join ops")
        await admin.room_rename("ops", "operations")
        await show_until(app, "room_renamed")
        assert app.room == "operations"  # the current room follows the rename

        app.interactive = False  # as when piped: the end of input waits for a round trip
        lines = io.StringIO("evil \x1b]0;pwned\x07 title\n/quit\n")
        assert await app.loop(_LineReader(lines, asyncio.get_running_loop())) == EXIT_OK
        assert "#operations <carol> evil \\x1b]0;pwned\\x07 title [1]" in term.out
        assert all("\x1b" not in line and "\x07" not in line for line in term.out + term.err)

        await admin.kick("carol", room="operations", reason="testing")
        await show_until(app, "kicked")
        assert app.room is None
        assert term.out[-1] == (
            "! you were kicked from #operations by admin: testing (/join it again to come back)"
        )
        await admin.kick("carol", reason="bye")
        ended = await app.loop(_LineReader(io.StringIO(""), asyncio.get_running_loop()))
        assert ended == EXIT_ENDED
        assert term.err[-1].startswith("! disconnected: ") and "come back" in term.err[-1]


async def test_bad_names_and_oversize_passwords_are_explained_not_crashed(
    live: LiveServer,
) -> None:
    term = Terminal("l", "still in general?", "s", "dora", "p" * 2000, "p" * 2000)
    term.answers.extend(["dora-password", "dora-password"])
    async with Client("127.0.0.1", live.port) as client:
        app = app_for(client, term)
        # a bad name, then a password too long for the protocol, then a good one
        assert await app.authenticate(None, None, signup=False)
        assert term.err[0].startswith("! that user name contains ' '")
        assert "letters or digits of one script" in term.err[0]
        assert "password" in term.err[1] and app.me == "dora"
        await app.run_line(f"/passwd dora-password {'q' * 2000}")
        assert app.failures == 1 and "[invalid_field]" in term.err[-1]
    piped = ChatApp(client, interactive=False, out=term.out.append, err=term.err.append)
    assert not await piped.authenticate("bad name!", "whatever-pw", signup=False)
