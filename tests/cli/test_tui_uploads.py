"""``/upload`` and ``/download`` in the full-screen client, driven through Textual's pilot
against a real chat server. Here the client library's transfer is a scripted stand-in (held
part-way on an event, never on time) to look at the screen: the target taken from the
buffer, the progress line and status bar, Ctrl+C cancelling. The real transfers through the
real server: test_cli_uploads_e2e.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_helpers import PASSWORD, tui, until

from parlour.cli.tui.app import ChatTui
from parlour.cli.tui.buffers import Buffer
from parlour.client import Client
from parlour.server.testing import ChatTestServer

TIMEOUT = 30


@pytest.fixture
async def srv() -> AsyncIterator[ChatTestServer]:
    async with ChatTestServer(rooms=("general",)) as server:
        for name in ("alice", "bob"):
            await server.add_user(name, PASSWORD)
        yield server


class Scripted:
    """Client.upload / Client.download stand-ins: half the bytes, then (if ``hold``) wait
    until cancelled, else the rest."""

    def __init__(self, client: Client) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.halfway = asyncio.Event()
        self.hold = False
        client.upload = self.upload  # type: ignore[method-assign]
        client.download = self.download  # type: ignore[method-assign]

    async def upload(self, path: Path, **kw: Any) -> None:
        self.calls.append(("upload", path, kw))
        await self._go(kw["progress"], 4_000_000)

    async def download(self, file: Any, folder: Path, **kw: Any) -> Path:
        self.calls.append(("download", file, {"folder": folder, **kw}))
        await self._go(kw["progress"], 4_000_000)
        return folder / "saved.bin"

    async def _go(self, progress: Any, total: int) -> None:
        progress(0, total)
        progress(total // 2, total)
        self.halfway.set()
        if self.hold:
            await asyncio.Event().wait()
        progress(total, total)


def texts(buf: Buffer) -> list[str]:
    return [e.text or "" for e in buf.entries]


def has(buf: Buffer, needle: str) -> bool:
    return any(needle in text for text in texts(buf))


def status(app: ChatTui) -> str:
    return str(app.query_one("#status").render())


async def enter(app: ChatTui, pilot: Pilot[int], line: str) -> None:
    app.input.set_text(line)
    await pilot.press("enter")


async def test_upload_goes_to_the_dm_of_the_buffer_with_a_progress_line(
    srv: ChatTestServer, tmp_path: Path
) -> None:
    src = tmp_path / "notes.txt"
    src.write_bytes(b"x" * 100)
    async with tui(srv, "alice", room="general") as (app, pilot):
        scripted = Scripted(app.client)
        await enter(app, pilot, "/query bob")
        await until(pilot, lambda: app.current.target.name == "bob")
        dm = app.current
        await enter(app, pilot, f"/upload {src} for you")
        await until(pilot, lambda: has(dm, "uploaded notes.txt to @bob"))
        (_, path, kw) = scripted.calls[0]
        assert path == src and kw["to"] == "bob" and kw["room"] is None
        assert kw["caption"] == "for you"
        assert any(
            t.startswith("upload notes.txt → @bob: ████████████ 4.00 MB of 4.00 MB (100 %), done")
            for t in texts(dm)
        )
        # in a room buffer: that room
        await enter(app, pilot, "/buffer #general")
        await until(pilot, lambda: app.current.target.name == "general")
        await enter(app, pilot, f'/upload "{src}"')
        await until(pilot, lambda: len(scripted.calls) == 2)
        assert scripted.calls[1][2]["room"] == "general" and scripted.calls[1][2]["to"] is None


async def test_ctrl_c_on_an_empty_input_cancels_and_the_chat_goes_on(
    srv: ChatTestServer, tmp_path: Path
) -> None:
    src = tmp_path / "big.iso"
    src.write_bytes(b"x" * 100)
    async with tui(srv, "alice", room="general") as (app, pilot):
        scripted = Scripted(app.client)
        scripted.hold = True
        room = app.current
        await enter(app, pilot, f"/upload {src}")
        await asyncio.wait_for(scripted.halfway.wait(), TIMEOUT)
        await until(pilot, lambda: "up 1: 50 %" in status(app))
        assert "Ctrl+C cancels" in status(app)
        # the chat is not held up by the transfer
        await enter(app, pilot, "still here")
        await until(
            pilot, lambda: any(m.text == "still here" for m in srv.room_messages("general"))
        )
        await pilot.press("ctrl+c")
        await until(pilot, lambda: has(room, "upload of big.iso cancelled at 50 %"))
        assert any(t.endswith("(50 %), cancelled") for t in texts(room))
        await until(pilot, lambda: "up 1" not in status(app))
        assert app.is_running  # Ctrl+C did not end the client


async def test_download_in_the_background_into_the_given_dir(
    srv: ChatTestServer, tmp_path: Path
) -> None:
    async with tui(srv, "alice", room="general") as (app, pilot):
        scripted = Scripted(app.client)
        room = app.current
        await enter(app, pilot, f"/download AbCdEfGhIjKlMnOpQrStUv {tmp_path / 'in'}")
        await until(pilot, lambda: has(room, "saved "))
        (_, file, kw) = scripted.calls[0]
        assert file == "AbCdEfGhIjKlMnOpQrStUv" and kw["folder"] == tmp_path / "in"
        await enter(app, pilot, "/download ../../etc")
        await until(pilot, lambda: has(room, "usage: /download <file id> [dir]"))


async def test_help_explains_both(srv: ChatTestServer) -> None:
    async with tui(srv, "alice", room="general") as (app, pilot):
        room = app.current
        await enter(app, pilot, "/help upload")
        await until(pilot, lambda: has(room, "resumable"))
        await enter(app, pilot, "/help download")
        await until(pilot, lambda: has(room, "SHA-256 is checked"))
