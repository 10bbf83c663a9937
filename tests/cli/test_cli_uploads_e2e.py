"""``/upload`` and ``/download`` of ``parlour chat`` against the real server (ChatTestServer
with its web listener and files endpoints on 127.0.0.1): the line mode in-process and as a
piped process, and the full-screen client through Textual's pilot. Messages with files show
``[file <id> name (size, type)]`` and that id downloads the file."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cli_helpers import ChatProcess
from tui_helpers import PASSWORD, tui, until

from parlour.cli.chat import ChatApp
from parlour.cli.tui.app import ChatTui
from parlour.client import Client, attachment_of
from parlour.protocol import EventName
from parlour.server.testing import ChatTestServer

TIMEOUT = 30
FILE_LINE = re.compile(r"\[file ([A-Za-z0-9_-]{22}) (.+) \((.+), (.+)\)\]")


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ChatTestServer]:
    async with ChatTestServer(
        rooms=("general",), web=True, web_port=0, data_dir=tmp_path / "data"
    ) as server:
        for name in ("alice", "bob"):
            await server.add_user(name, PASSWORD)
        yield server


def web_url(srv: ChatTestServer) -> str:
    assert srv.server is not None and srv.server.web is not None
    host, port = srv.server.web.addresses[0][:2]
    return f"http://{host}:{port}/"


class Lines:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.changed = asyncio.Event()

    def add_out(self, line: str) -> None:
        self.out.append(line)
        self.changed.set()

    def add_err(self, line: str) -> None:
        self.err.append(line)
        self.changed.set()

    async def wait_for(self, needle: str, *, err: bool = False) -> str:
        async def find() -> str:
            while True:
                for line in self.err if err else self.out:
                    if needle in line:
                        return line
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(find(), TIMEOUT)


@asynccontextmanager
async def line_mode(
    srv: ChatTestServer, name: str, tmp: Path
) -> AsyncIterator[tuple[ChatApp, Lines]]:
    lines = Lines()
    client = Client("127.0.0.1", srv.port, state_dir=tmp / f"state-{name}", files_url=web_url(srv))
    await client.connect()
    app = ChatApp(client, interactive=False, out=lines.add_out, err=lines.add_err)
    printer: asyncio.Task[None] | None = None
    try:
        assert await app.authenticate(name, PASSWORD, signup=False)
        printer = asyncio.ensure_future(app.print_events())
        yield app, lines
    finally:
        if printer is not None:
            printer.cancel()
        await client.close()


async def test_line_mode_upload_shows_the_file_and_its_id_downloads_it(
    srv: ChatTestServer, tmp_path: Path
) -> None:
    src = tmp_path / "notes.txt"
    src.write_text("hello from a file\n" * 100)
    async with (
        line_mode(srv, "alice", tmp_path) as (alice, a),
        line_mode(srv, "bob", tmp_path) as (bob, b),
    ):
        await alice.run_line("/join general")
        await bob.run_line("/join general")
        await alice.run_line(f"/upload {src} the notes")
        assert (await a.wait_for("* uploaded notes.txt to #general")).startswith("* uploaded")
        line = await b.wait_for("[file ")
        assert line.startswith("#general <alice> the notes [file ")
        m = FILE_LINE.search(line)
        assert m is not None
        file_id, name, size, kind = m.groups()
        assert (name, size, kind) == ("notes.txt", "1.80 kB", "text/plain")
        await bob.run_line(f"/download {file_id} {tmp_path / 'got'}")
        saved = await b.wait_for("* saved ")
        assert str(tmp_path / "got" / "notes.txt") in saved and "SHA-256 checked" in saved
        assert (tmp_path / "got" / "notes.txt").read_bytes() == src.read_bytes()
        # history shows it too, and an unknown id is a clear failure
        await bob.run_line("/history general 5")
        await b.wait_for(f"[file {file_id} notes.txt (1.80 kB, text/plain)]")
        await bob.run_line(f"/download {'A' * 22} {tmp_path / 'got'}")
        assert "no such file (HTTP 404)" in await b.wait_for("! download of", err=True)
        assert bob.failures == 1


async def test_line_mode_upload_to_a_user(srv: ChatTestServer, tmp_path: Path) -> None:
    src = tmp_path / "photo.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(500))
    async with (
        line_mode(srv, "alice", tmp_path) as (alice, a),
        line_mode(srv, "bob", tmp_path) as (_bob, b),
    ):
        await alice.run_line(f"/upload @bob {src}")
        await a.wait_for("* uploaded photo.png to @bob")
        line = await b.wait_for("[file ")
        assert line.startswith("[DM] alice: [file ")


async def test_piped_upload_and_a_failing_line(srv: ChatTestServer, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(200_000))
    chat = await ChatProcess.start(
        srv.port,
        "--user",
        "alice",
        "--files-url",
        web_url(srv),
        extra_env={
            "PARLOUR_STATE_DIR": str(tmp_path / "state"),
            "PARLOUR_DOWNLOADS": str(tmp_path / "dl"),
        },
    )
    try:
        await chat.send("/join general", f"/upload {src} piped", f"/upload {tmp_path / 'missing'}")
        code, out, err = await chat.finish()
    finally:
        chat.kill()
    assert code == 4, (out, err)
    assert "* uploaded data.bin to #general" in out
    assert "! cannot read" in err and "missing" in err
    stored = [m for m in srv.room_messages("general") if m.sender == "alice"]
    assert len(stored) == 1 and stored[0].text == "piped"


async def test_full_screen_upload_shows_the_file_and_downloads_it(
    srv: ChatTestServer, tmp_path: Path
) -> None:
    src = tmp_path / "report.txt"
    src.write_text("quarterly\n" * 50)
    options = {"state_dir": tmp_path / "state", "files_url": web_url(srv)}
    async with (
        tui(srv, "alice", room="general", client_options=options) as (app, pilot),
        Client("127.0.0.1", srv.port, state_dir=tmp_path / "bob") as bob,
    ):
        await bob.login("bob", PASSWORD)
        await bob.join("general")
        room = app.current
        app.input.set_text(f"/upload {src} the report")
        await pilot.press("enter")
        await until(pilot, lambda: has(room, "uploaded report.txt to #general"))
        await until(pilot, lambda: any(e.attachment is not None for e in room.entries))
        entry = next(e for e in room.entries if e.attachment is not None)
        att = entry.attachment
        assert att is not None and entry.text == "the report"
        await until(pilot, lambda: shows_text(app, f"[file {att.id} report.txt"))

        async def bobs_event() -> object:
            async for event in bob.events():
                if event.name is EventName.MESSAGE:
                    return attachment_of(event.fields)
            return None

        assert await asyncio.wait_for(bobs_event(), TIMEOUT) == att
        app.input.set_text("/download ")
        await pilot.press("tab")  # completes the id of the newest file here
        await until(pilot, lambda: app.input.text == f"/download {att.id} ")
        app.input.set_text(f"/download {att.id} {tmp_path / 'dl'}")
        await pilot.press("enter")
        await until(pilot, lambda: has(room, "saved "))
        assert (tmp_path / "dl" / "report.txt").read_bytes() == src.read_bytes()


def has(buf: object, needle: str) -> bool:
    return any(needle in (e.text or "") for e in buf.entries)  # type: ignore[attr-defined]


def shows_text(app: ChatTui, needle: str) -> bool:
    lines = [strip.text for strip in app.log_view.lines()]
    return needle in " ".join(line.split("│", 1)[-1].strip() for line in lines)
