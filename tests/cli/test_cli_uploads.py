"""``/upload`` and ``/download`` of ``parlour chat`` on their own: the parser, the wording of
ends and failures, the line mode's progress bar, and Ctrl+C (a real SIGINT) cancelling the
transfer and not the client. A stub stands in for the client library here; the commands
against the real server: test_cli_uploads_e2e.py."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from parlour.cli import _commands as c
from parlour.cli._uploads import FileJob, LineJobs, ServerFileCommands, job_line
from parlour.client import Attachment, ChecksumMismatch, FileTooLarge, TransferFailed
from parlour.protocol import EventName


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/upload a.txt", c.Upload("a.txt")),
        ("/upload a.txt the caption", c.Upload("a.txt", "the caption")),
        ('/upload "my file.pdf" see this', c.Upload("my file.pdf", "see this")),
        ("/upload 'it is.txt'", c.Upload("it is.txt")),
        ("/upload my\\ file.pdf", c.Upload("my file.pdf")),
        ("/upload ~/x/y.png", c.Upload("~/x/y.png")),
        ("/upload @bob a.txt hi bob", c.Upload("a.txt", "hi bob", to="bob")),
        ("/upload #random a.txt", c.Upload("a.txt", room="random")),
        ("/download AbC_d-123 ", c.Download("AbC_d-123")),
        ("/download AbC_d-123 ~/in", c.Download("AbC_d-123", "~/in")),
        ('/download AbC "/tmp/with space"', c.Download("AbC", "/tmp/with space")),
    ],
)
def test_parse(line: str, expected: c.Command) -> None:
    assert c.parse_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "/upload",
        "/upload   ",
        '/upload "unclosed',
        "/upload @ a.txt",
        "/upload @bob",
        "/download",
        "/download ../etc",
        "/download abc two words",
        "/download a/b",
    ],
)
def test_parse_refuses(line: str) -> None:
    cmd = c.parse_line(line)
    assert isinstance(cmd, c.Invalid) and cmd.message.startswith("usage: /")


def test_help_lists_both() -> None:
    assert "upload" in c.COMMAND_HELP and "download" in c.COMMAND_HELP


class StubClient:
    """upload()/download() of the library, scripted."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.error: BaseException | None = None
        self.started = asyncio.Event()
        self.hold = False

    async def upload(self, path: Path, **kw: Any) -> dict[str, Any]:
        self.calls.append(("upload", path, kw))
        return await self._go(kw["progress"], path.stat().st_size, {"ok": True})

    async def download(self, file: Any, folder: Path, **kw: Any) -> Path:
        self.calls.append(("download", file, {"folder": folder, **kw}))
        return await self._go(kw["progress"], 1000, folder / "saved.bin")  # type: ignore[no-any-return]

    async def _go(self, progress: Any, total: int, result: Any) -> Any:
        progress(0, total)
        progress(total // 2, total)
        self.started.set()
        if self.hold:
            await asyncio.Event().wait()  # until cancelled
        if self.error is not None:
            raise self.error
        progress(total, total)
        return result


def commands(stub: StubClient, *, interactive: bool = False, console: Console | None = None):  # type: ignore[no-untyped-def]
    out: list[str] = []
    err: list[str] = []
    cmds = ServerFileCommands(
        stub,  # type: ignore[arg-type]
        out=out.append,
        fail=err.append,
        display=LineJobs(interactive=interactive, console=console),
    )
    return cmds, out, err


async def test_upload_goes_to_the_current_room_or_the_named_target(tmp_path: Path) -> None:
    stub = StubClient()
    cmds, out, err = commands(stub)
    src = tmp_path / "notes.txt"
    src.write_bytes(b"x" * 1500)
    await cmds.execute(c.Upload(str(src), "read me"), room="general")
    await cmds.execute(c.Upload(str(src), to="bob"), room="general")
    await cmds.execute(c.Upload(str(src)), peer="carol")
    targets = [(kw["room"], kw["to"], kw["caption"]) for _, _, kw in stub.calls]
    assert targets == [("general", None, "read me"), (None, "bob", None), (None, "carol", None)]
    assert out[0].startswith("* uploaded notes.txt to #general (1.50 kB in ")
    assert out[1].startswith("* uploaded notes.txt to @bob")
    assert err == []


async def test_upload_refusals_are_worded(tmp_path: Path) -> None:
    stub = StubClient()
    cmds, out, err = commands(stub)
    await cmds.execute(c.Upload(str(tmp_path / "missing.txt")), room="general")
    await cmds.execute(c.Upload(str(tmp_path)), room="general")
    src = tmp_path / "a.bin"
    src.write_bytes(b"12345")
    await cmds.execute(c.Upload(str(src)))
    stub.error = FileTooLarge("file_too_large", "too big", {"max_file_size": 1000})
    await cmds.execute(c.Upload(str(src)), room="general")
    stub.error = TransferFailed("the server refused the upload (HTTP 500)", 500)
    await cmds.execute(c.Upload(str(src)), room="general")
    assert err[0].startswith("! cannot read ") and "missing.txt" in err[0]
    assert err[1].startswith("! not a file: ")
    assert err[2].startswith("! you are not in a room")
    assert err[3] == "! a.bin is too large for this server (at most 1.00 kB)"
    assert err[4] == "! upload of a.bin failed: the server refused the upload (HTTP 500)"
    assert out == []


async def test_download_uses_the_attachment_seen_and_the_downloads_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLOUR_DOWNLOADS", str(tmp_path / "dl"))
    stub = StubClient()
    cmds, out, err = commands(stub)
    att = Attachment("F1", "photo.jpg", 1000, "image/jpeg", "a" * 64)
    cmds.remember([{"attachment": att.to_wire(), "deleted": False}, {"attachment": None}])
    await cmds.execute(c.Download("F1"))
    await cmds.execute(c.Download("F2", str(tmp_path / "else")))
    (_, first, kw1), (_, second, kw2) = stub.calls
    assert first == att and kw1["folder"] == tmp_path / "dl"
    assert second == "F2" and kw2["folder"] == tmp_path / "else"
    assert out[0].startswith(f"* saved {tmp_path / 'dl' / 'saved.bin'} (SHA-256 checked; ")
    stub.error = ChecksumMismatch("bad", "a" * 64, "b" * 64)
    await cmds.execute(c.Download("F1"))
    assert err == ["! photo.jpg does not match its SHA-256: not saved (try again)"]


async def test_ctrl_c_cancels_the_transfer_not_the_client(tmp_path: Path) -> None:
    """A real SIGINT while a transfer runs in the foreground: the transfer stops, the
    command says how to resume, and the process (and its next command) goes on."""
    stub = StubClient()
    stub.hold = True
    cmds, out, err = commands(stub)
    src = tmp_path / "big.iso"
    src.write_bytes(b"x" * 1000)
    before = signal.getsignal(signal.SIGINT)
    running = asyncio.ensure_future(cmds.execute(c.Upload(str(src)), room="general"))
    await asyncio.wait_for(stub.started.wait(), 10)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(running, 10)
    assert err == ["! upload of big.iso cancelled at 50 %; /upload the same file again to resume"]
    assert signal.getsignal(signal.SIGINT) == before  # Ctrl+C is the client's again
    stub.hold = False
    stub.started.clear()
    await cmds.execute(c.Download("F9"))
    assert len(err) == 1 and out[-1].startswith("* saved ")


async def test_cancelling_the_command_itself_is_not_swallowed(tmp_path: Path) -> None:
    stub = StubClient()
    stub.hold = True
    cmds, _out, err = commands(stub)
    running = asyncio.ensure_future(cmds.execute(c.Download("F1")))
    await asyncio.wait_for(stub.started.wait(), 10)
    running.cancel()  # the client is closing: the command ends, quietly
    with pytest.raises(asyncio.CancelledError):
        await running
    assert err == []


async def test_interactive_bar_is_drawn_and_removed(tmp_path: Path) -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=120)
    stub = StubClient()
    cmds, _out, _err = commands(stub, interactive=True, console=console)
    display = cmds.display
    assert isinstance(display, LineJobs)
    seen: list[bool] = []
    original = stub._go

    async def go(progress: Any, total: int, result: Any) -> Any:
        seen.append(display.live_console is console)
        return await original(progress, total, result)

    stub._go = go  # type: ignore[method-assign]
    await cmds.execute(c.Download("F1"))
    assert seen == [True] and display.live_console is None
    assert "download F1" in stream.getvalue()


def test_job_line() -> None:
    job = FileJob("upload", "a\x1b.txt", 3_000_000, "#general")
    assert job_line(job) == (
        "upload a\\x1b.txt → #general: ░░░░░░░░░░░░ 0 B of 3.00 MB (0 %), starting"
    )
    job.progress(1_500_000, 3_000_000)
    assert job_line(job, end="cancelled") == (
        "upload a\\x1b.txt → #general: ██████░░░░░░ 1.50 MB of 3.00 MB (50 %), cancelled"
    )


def test_records_with_files_render_their_id_name_size_and_type() -> None:
    from parlour.cli._render import render_event, render_record
    from parlour.protocol import MessageRecord, event_from_fields

    att = {
        "id": "q4PzV2cX9mBnR0kLw1sYtA",
        "name": "evil\x1b[2Jname\u202e.txt",
        "size": 2_500_000,
        "type": "text/plain",
        "sha256": "a" * 64,
        "inline": True,
        "thumbnail": False,
    }
    rec = MessageRecord(room="general", seq=7, ts=1.0, sender="bob", text="", attachment=att)  # type: ignore[arg-type]
    assert render_record(rec, "alice") == (
        '#general <bob> [file q4PzV2cX9mBnR0kLw1sYtA "evil\\x1b[2Jname\\u202e.txt" '
        "(2.50 MB, text/plain)] [7]"
    )
    dm = MessageRecord(peer="bob", seq=3, ts=1.0, sender="alice", text="see", attachment=att)  # type: ignore[arg-type]
    assert render_record(dm, "alice").startswith(
        "[DM] you → bob: see [file q4PzV2cX9mBnR0kLw1sYtA "
    )
    gone = MessageRecord(room="general", seq=8, ts=1.0, sender="bob", text=None, deleted=True)
    assert render_record(gone, "alice") == "#general <bob> (deleted) [8]"
    event = event_from_fields(EventName.MESSAGE, rec.to_wire())
    assert "[file q4PzV2cX9mBnR0kLw1sYtA" in (render_event(event, "alice") or "")


def test_the_full_screen_renders_files_in_their_entry() -> None:
    from parlour.cli.tui.buffers import BufferKind, BufferList, Target
    from parlour.cli.tui.render import LineRenderer, plain_text
    from parlour.protocol import MessageRecord

    att = {
        "id": "q4PzV2cX9mBnR0kLw1sYtA",
        "name": "a.pdf",
        "size": 1000,
        "type": "application/pdf",
        "sha256": "a" * 64,
        "inline": True,
        "thumbnail": False,
    }
    bufs = BufferList("alice")
    buf = bufs.open(Target(BufferKind.ROOM, "general"))
    buf.add(MessageRecord(room="general", seq=1, ts=1.0, sender="bob", text="pdf", attachment=att))  # type: ignore[arg-type]
    entry = buf.entries[-1]
    assert entry.attachment is not None and entry.attachment.name == "a.pdf"
    renderer = LineRenderer("alice", clock=lambda ts: "12:00")
    text = " ".join(plain_text(renderer.lines(entry, 100, day=False, marker=False)))
    assert "pdf [file q4PzV2cX9mBnR0kLw1sYtA a.pdf (1.00 kB, application/pdf)] [1]" in text
    buf.update(MessageRecord(room="general", seq=1, ts=1.0, sender="bob", text=None, deleted=True))
    assert entry.attachment is None


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("plain name.txt", "plain name.txt"),
        (
            "a.pdf (1 kB, image/png)] [file FAKE b.png",
            '"a.pdf (1 kB, image/png)] [file FAKE b.png"',
        ),
        ('say "hi".txt', '"say \\"hi\\".txt"'),
        ("photo (1).jpg", '"photo (1).jpg"'),
        ("back\\slash [x]", '"back\\\\slash [x]"'),
    ],
)
def test_a_name_cannot_fake_the_label(name: str, shown: str) -> None:
    from parlour.cli._render import render_attachment

    att = Attachment("q4PzV2cX9mBnR0kLw1sYtA", name, 10, "application/x-msdownload", "a" * 64)
    label = render_attachment(att)
    assert label == f"[file q4PzV2cX9mBnR0kLw1sYtA {shown} (10 B, application/x-msdownload)]"


_PATHS = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=60
)


@given(_PATHS, st.text(alphabet="abc def", max_size=20))
def test_split_path_round_trips(path: str, caption: str) -> None:
    caption = caption.strip()
    if '"' not in path:
        assert c.split_path(f'"{path}" {caption}') == (path, caption)
    if not any(ch.isspace() and ch != " " for ch in path) and not path.startswith(('"', "'")):
        escaped = path.replace("\\", "\\\\").replace(" ", "\\ ")
        assert c.split_path(f"{escaped} {caption}") == (path, caption)


@given(st.text(max_size=80))
def test_parse_upload_never_raises(text: str) -> None:
    cmd = c.parse_line("/upload " + text)
    assert isinstance(cmd, c.Upload | c.Invalid)
    cmd = c.parse_line("/download " + text)
    assert isinstance(cmd, c.Download | c.Invalid)
