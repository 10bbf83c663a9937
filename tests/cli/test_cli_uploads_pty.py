"""``/upload`` in the interactive line mode over a real pseudo-terminal (pexpect): the upload
runs with its bar and the prompt comes back; Ctrl+C while a transfer hangs cancels the
transfer and the client goes on (the next line is sent). The chat server is real; the
"web listener" of the hanging case is a socket that accepts and never answers, so the
transfer waits for ever, deterministically."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pexpect
import pytest

from parlour.server.testing import ChatTestServer

PASSWORD = "password-123"
TIMEOUT = 30


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ChatTestServer]:
    async with ChatTestServer(
        rooms=("general",), web=True, web_port=0, data_dir=tmp_path / "data"
    ) as server:
        await server.add_user("alice", PASSWORD)
        yield server


def web_url(srv: ChatTestServer) -> str:
    assert srv.server is not None and srv.server.web is not None
    host, port = srv.server.web.addresses[0][:2]
    return f"http://{host}:{port}/"


def spawn(srv: ChatTestServer, tmp: Path, files_url: str) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
    env.update(
        PARLOUR_PASSWORD=PASSWORD,
        PARLOUR_STATE_DIR=str(tmp / "state"),
        TERM="xterm-256color",
        PYTHONUNBUFFERED="1",
        PROMPT_TOOLKIT_NO_CPR="1",
    )
    args = ["-m", "parlour", "chat", "--plain", "--port", str(srv.port), "--user", "alice"]
    return pexpect.spawn(
        sys.executable,
        [*args, "--room", "general", "--files-url", files_url],
        env=env,
        encoding="utf-8",
        dimensions=(24, 120),
        timeout=TIMEOUT,
    )


def close(child: pexpect.spawn) -> None:
    if child.async_pw_transport is not None:
        child.async_pw_transport[1].close()
    child.terminate(force=True)
    child.close()


def texts(srv: ChatTestServer) -> list[str | None]:
    return [m.text for m in srv.room_messages("general")]


async def test_upload_on_a_terminal(srv: ChatTestServer, tmp_path: Path) -> None:
    src = tmp_path / "notes.txt"
    src.write_text("x" * 5000)
    child = spawn(srv, tmp_path, web_url(srv))
    try:
        await child.expect_exact("#general>", async_=True)
        child.send(f"/upload {src} the notes\r")
        await child.expect_exact("uploaded notes.txt to #general", async_=True)
        child.send("after\r")
        await srv.wait_for(lambda: texts(srv) == ["the notes", "after"], TIMEOUT)
    finally:
        close(child)


async def test_ctrl_c_cancels_a_hanging_transfer_not_the_client(
    srv: ChatTestServer, tmp_path: Path
) -> None:
    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()

    hole = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = hole.sockets[0].getsockname()[1]
    src = tmp_path / "big.iso"
    src.write_bytes(b"x" * 100_000)
    child = spawn(srv, tmp_path, f"http://127.0.0.1:{port}/")
    try:
        await child.expect_exact("#general>", async_=True)
        child.send(f"/upload {src}\r")
        await asyncio.wait_for(accepted.wait(), TIMEOUT)  # the transfer is waiting now
        child.sendintr()
        await child.expect_exact("upload of big.iso cancelled at 0 %", async_=True)
        child.send("still here\r")
        await srv.wait_for(lambda: texts(srv) == ["still here"], TIMEOUT)
        assert child.isalive()
    finally:
        close(child)
        for writer in held:
            writer.close()
        hole.close()
        await hole.wait_closed()
