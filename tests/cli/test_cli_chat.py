"""`parlour chat` as a user runs it: a subprocess against the fake server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest
from click.testing import CliRunner

from parlour.cli.chat import chat
from parlour.client import Client
from parlour.server.testing import ChatTestServer


@pytest.fixture
async def server() -> AsyncIterator[ChatTestServer]:
    async with ChatTestServer() as srv:
        await srv.add_user("alice", "alice-password")
        await srv.add_user("bob", "bob-password")
        yield srv


async def start_chat(port: int, *args: str, password: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PARLOUR_PASSWORD": password, "PYTHONUNBUFFERED": "1"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parlour",
        "chat",
        "--port",
        str(port),
        "--retries",
        "20",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def run_chat(
    port: int, script: str, *args: str, password: str = "alice-password"
) -> tuple[int, str, str]:
    proc = await start_chat(port, *args, password=password)
    out, err = await asyncio.wait_for(proc.communicate(script.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def read_until(stream: asyncio.StreamReader, needle: str) -> str:
    seen = ""
    while needle not in seen:
        line = await asyncio.wait_for(stream.readline(), 30)
        if not line:
            raise AssertionError(f"stream ended before {needle!r}; got {seen!r}")
        seen += line.decode()
    return seen


async def test_piped_script_joins_talks_and_exits_cleanly(server: ChatTestServer) -> None:
    code, out, err = await run_chat(
        server.port, "/join general\nhello\n@bob hi bob\n/history 5\n", "--user", "alice"
    )
    assert code == 0, err
    assert "#general <alice> hello [1]" in out
    # (the real server echoes DMs to the sender's sessions as `dm` events; the fake does not,
    # see test_cli_live.py for the echo)
    assert [m.text for m in server.room_messages("general")] == ["hello"]
    assert len(server.dm_messages("alice", "bob")) == 1


async def test_signup_then_errors_are_reported_and_script_continues(server: ChatTestServer) -> None:
    script = "hello before joining\n/join nowhere\n/kick bob\n/frob\n/join random\nok now\n"
    code, out, err = await run_chat(
        server.port, script, "--user", "carol", "--signup", password="carol-password"
    )
    assert code == 4  # piped, and some lines failed
    assert "logged in as carol" in out
    assert "not in a room" in err
    assert "[unknown_room]" in err and "[forbidden]" in err and "unknown command" in err
    assert "#random <carol> ok now [1]" in out


async def test_wrong_password_exits_1(server: ChatTestServer) -> None:
    code, _, err = await run_chat(server.port, "hi\n", "--user", "alice", password="nope-nope")
    assert code == 1
    assert "login failed" in err


async def test_unreachable_server_exits_2() -> None:
    async with ChatTestServer() as srv:
        port = srv.port
    code, _, err = await run_chat(port, "hi\n", "--user", "alice")
    assert code == 2
    assert "cannot reach the chat server" in err


async def test_sees_other_users_and_survives_a_server_restart(server: ChatTestServer) -> None:
    proc = await start_chat(
        server.port, "--user", "alice", "--room", "general", password="alice-password"
    )
    assert proc.stdin and proc.stdout and proc.stderr
    await read_until(proc.stdout, "you are in #general")
    async with Client("127.0.0.1", server.port) as bob:
        await bob.login("bob", "bob-password")
        await bob.join("general")
        await bob.send("general", "hi alice")
        await read_until(proc.stdout, "#general <bob> hi alice [1]")
        await bob.close()
    # the server goes away and comes back: the client says so and reconnects by itself
    await server.stop()
    await read_until(proc.stderr, "connection to the server lost")
    await server.start()
    await read_until(proc.stderr, "reconnected")
    proc.stdin.write(b"still here\n")
    await proc.stdin.drain()
    await read_until(proc.stdout, "#general <alice> still here [2]")
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_kicked_user_sees_why_and_exits_3(server: ChatTestServer) -> None:
    proc = await start_chat(server.port, "--user", "alice", password="alice-password")
    assert proc.stdin and proc.stdout and proc.stderr
    await read_until(proc.stdout, "logged in as alice")
    async with Client("127.0.0.1", server.port) as admin:
        await admin.login("admin", "admin-password")
        await admin.kick("alice", reason="flooding")
    await read_until(proc.stdout, "you were kicked from the server by admin: flooding")
    assert await asyncio.wait_for(proc.wait(), 30) == 3
    assert "disconnected" in (await proc.stderr.read()).decode()
    proc.stdin.close()


def test_piped_without_credentials_is_a_usage_error() -> None:
    result = CliRunner().invoke(chat, ["--port", "1"], input="hi\n", env={"PARLOUR_PASSWORD": ""})
    assert result.exit_code == 2
    assert "PARLOUR_PASSWORD" in result.output
