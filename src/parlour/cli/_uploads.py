"""``/upload`` and ``/download`` of ``parlour chat``: files in chat (docs/design/files.md).

The transfers are the client library's (:meth:`parlour.client.Client.upload` and
:meth:`~parlour.client.Client.download`: tus uploads, resumable, checked downloads); this runs
the commands, words their ends, keeps the attachments it has seen (so ``/download <id>``
checks the file against the SHA-256 its message gave), and hands each transfer to a
:class:`JobDisplay` that shows its progress:

* line mode (:class:`LineJobs`): the command runs in the foreground with a ``rich`` progress
  bar (bytes, percent, rate, ETA) kept at the bottom while chat lines print above it; Ctrl+C
  cancels the transfer, not the client (it resumes when the same command runs again); piped,
  no bar, and a failure counts toward exit status 4;
* the full-screen client has its own display (:mod:`parlour.cli.tui.uploads`): a progress
  line in the buffer, the transfer beside the chat, Ctrl+C on an empty input cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from parlour.cli import _commands as c
from parlour.cli._render import clean, format_duration, format_rate, format_size
from parlour.client import (
    Attachment,
    ChecksumMismatch,
    Client,
    FileChanged,
    FilesUnavailable,
    FileTooLarge,
    QuotaExceeded,
    TooManyUploads,
    TransferFailed,
    attachment_of,
)
from parlour.client.files import default_downloads

__all__ = ["FileJob", "JobDisplay", "LineJobs", "ServerFileCommands", "job_line"]

Line = Callable[[str], None]
#: attachments remembered from the messages shown (for /download's SHA-256 check)
_SEEN = 4096


@dataclass(eq=False)
class FileJob:
    """One upload or download as a display follows it."""

    kind: str  # "upload" or "download"
    name: str
    total: int
    where: str  # "#general", "@bob" (uploads) or the directory (downloads)
    done: int = 0
    #: where it started (a resumed transfer starts above 0)
    start: int | None = None
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[Any] | None = field(default=None, repr=False)
    #: watched by a display: called after each progress report
    on_change: Callable[[FileJob], None] | None = field(default=None, repr=False)

    def progress(self, done: int, total: int) -> None:
        if self.start is None:
            self.start = done
        self.done = done
        if total > 0:
            self.total = total
        if self.on_change is not None:
            self.on_change(self)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        moved = self.done - (self.start or 0)
        return moved / elapsed if elapsed > 0 and moved > 0 else 0.0

    def cancel(self) -> bool:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            return True
        return False


def _percent(done: int, total: int) -> int:
    return 100 if total <= 0 else max(0, min(100, 100 * done // total))


def job_line(job: FileJob, *, end: str | None = None) -> str:
    """``upload report.pdf → #general: ████░░░░ 1.20 MB of 3.00 MB (40 %), 2.00 MB/s, ETA 1 s``"""
    arrow = "→" if job.kind == "upload" else "←"
    cells = 12
    full = cells if job.total <= 0 else max(0, min(cells, cells * job.done // job.total))
    line = (
        f"{job.kind} {clean(job.name)} {arrow} {clean(job.where)}: "
        f"{'█' * full}{'░' * (cells - full)} {format_size(job.done)} of "
        f"{format_size(job.total)} ({_percent(job.done, job.total)} %)"
    )
    if end is not None:
        return f"{line}, {end}"
    rate = job.rate
    if rate <= 0:
        return f"{line}, starting"
    eta = (job.total - job.done) / rate
    return f"{line}, {format_rate(rate)}, ETA {format_duration(eta)}"


class JobDisplay(Protocol):
    """How a user interface shows the transfers of ``/upload`` and ``/download``."""

    async def run(self, job: FileJob, work: Callable[[FileJob], Awaitable[Any]]) -> Any:
        """Run ``work(job)`` showing its progress; raises what it raises (CancelledError
        when the user cancelled it)."""
        ...

    async def close(self) -> None: ...


class ServerFileCommands:
    """``/upload`` and ``/download`` over a client, with ``display`` showing the progress."""

    def __init__(self, client: Client, *, out: Line, fail: Line, display: JobDisplay) -> None:
        self.client = client
        self._out, self._fail = out, fail
        self.display = display
        self.seen: OrderedDict[str, Attachment] = OrderedDict()
        self.downloads: Path | None = None

    def remember(self, records: Iterable[object]) -> None:
        """Keep the attachments of messages shown (their names and SHA-256)."""
        for record in records:
            att = attachment_of(record)
            if att is None:
                continue
            self.seen[att.id] = att
            self.seen.move_to_end(att.id)
            while len(self.seen) > _SEEN:
                self.seen.popitem(last=False)

    async def execute(
        self, cmd: c.Upload | c.Download, *, room: str | None = None, peer: str | None = None
    ) -> None:
        """Run a command; ``room`` / ``peer``: where an ``/upload`` without a target goes."""
        if isinstance(cmd, c.Upload):
            await self.upload(cmd, room=room, peer=peer)
        else:
            await self.download(cmd)

    async def upload(self, cmd: c.Upload, *, room: str | None, peer: str | None) -> None:
        to, here = cmd.to, cmd.room
        if to is None and here is None:
            to, here = peer, room
            if to is not None:
                here = None
        if to is None and here is None:
            self._fail("! you are not in a room: /join <room> first, or /upload @user <path>")
            return
        path = Path(cmd.path).expanduser()
        try:
            size = path.stat().st_size
        except OSError as exc:
            self._fail(f"! cannot read {clean(path)}: {exc.strerror or exc}")
            return
        if not path.is_file():
            self._fail(f"! not a file: {clean(path)}")
            return
        where = f"@{to}" if to is not None else f"#{here}"
        job = FileJob("upload", path.name, size, where)

        async def work(j: FileJob) -> Any:
            return await self.client.upload(
                path, room=here, to=to, caption=cmd.caption, progress=j.progress
            )

        try:
            await self.display.run(job, work)
        except asyncio.CancelledError:
            if not _cancelled_by_user():
                raise
            self._fail(
                f"! upload of {clean(path.name)} cancelled at {_percent(job.done, job.total)} %;"
                " /upload the same file again to resume"
            )
            return
        except FileTooLarge as exc:
            limit = exc.extra.get("max_file_size")
            most = f" (at most {format_size(limit)})" if isinstance(limit, int) else ""
            self._fail(f"! {clean(path.name)} is too large for this server{most}")
            return
        except QuotaExceeded as exc:
            self._fail(f"! no room left in your quota for {clean(path.name)}: {clean(exc.message)}")
            return
        except TooManyUploads:
            self._fail("! you have too many unfinished uploads on the server; finish one first")
            return
        except FilesUnavailable:
            self._fail("! this server takes no uploads")
            return
        except FileChanged as exc:
            self._fail(f"! {clean(exc.message)}")
            return
        except TransferFailed as exc:
            self._fail(f"! upload of {clean(path.name)} failed: {clean(exc.message)}")
            return
        except OSError as exc:
            self._fail(f"! cannot read {clean(path)}: {exc.strerror or exc}")
            return
        self._out(f"* uploaded {clean(path.name)} to {clean(where)} ({_figures(job)})")

    def target_dir(self, dest: str | None) -> Path:
        if dest:
            return Path(dest).expanduser()
        return self.downloads or default_downloads()

    async def download(self, cmd: c.Download) -> None:
        att = self.seen.get(cmd.file_id)
        folder = self.target_dir(cmd.dest)
        name = att.name if att is not None else cmd.file_id
        job = FileJob("download", name, att.size if att is not None else 0, str(folder))

        async def work(j: FileJob) -> Path:
            return await self.client.download(att or cmd.file_id, folder, progress=j.progress)

        try:
            saved = await self.display.run(job, work)
        except asyncio.CancelledError:
            if not _cancelled_by_user():
                raise
            self._fail(
                f"! download of {clean(name)} cancelled at {_percent(job.done, job.total)} %;"
                f" /download {cmd.file_id} again to resume"
            )
            return
        except ChecksumMismatch:
            self._fail(f"! {clean(name)} does not match its SHA-256: not saved (try again)")
            return
        except TransferFailed as exc:
            self._fail(f"! download of {clean(name)} failed: {clean(exc.message)}")
            return
        except OSError as exc:
            self._fail(f"! cannot save into {clean(folder)}: {exc.strerror or exc}")
            return
        self._out(f"* saved {clean(saved)} (SHA-256 checked; {_figures(job)})")

    async def close(self) -> None:
        await self.display.close()


def _figures(job: FileJob) -> str:
    seconds = time.monotonic() - job.started
    moved = job.done - (job.start or 0)
    resumed = f", resumed at {format_size(job.start)}" if job.start else ""
    rate = f", {format_rate(moved / seconds)}" if seconds > 0 and moved > 0 else ""
    took = f"{seconds:.1f} s" if seconds < 10 else format_duration(seconds)
    return f"{format_size(job.total)} in {took}{rate}{resumed}"


def _cancelled_by_user() -> bool:
    """In an ``except CancelledError``: True when the transfer was cancelled (the user asked),
    False when the command itself is being cancelled (the client or the screen is closing)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() == 0


class LineJobs:
    """The line mode's display: the transfer in the foreground, a ``rich`` bar when on a
    terminal, Ctrl+C (SIGINT) cancels it."""

    def __init__(self, *, interactive: bool, console: Console | None = None) -> None:
        self.interactive = interactive
        self._console = console
        self._bars: Progress | None = None

    @property
    def live_console(self) -> Console | None:
        return self._bars.console if self._bars is not None else None

    async def run(self, job: FileJob, work: Callable[[FileJob], Awaitable[Any]]) -> Any:
        task = asyncio.ensure_future(work(job))
        job.task = task
        row: TaskID | None = None
        if self.interactive:
            bars = self._display()
            arrow = "→" if job.kind == "upload" else "←"
            row = bars.add_task(
                escape(f"{job.kind} {clean(job.name)} {arrow} {clean(job.where)}"),
                total=job.total or None,
            )

            def update(j: FileJob) -> None:
                assert row is not None
                bars.update(row, completed=j.done, total=j.total or None)

            job.on_change = update
        with _sigint_cancels(job):
            try:
                return await task
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                job.on_change = None
                if row is not None and self._bars is not None:
                    self._bars.remove_task(row)
                    if not self._bars.tasks:
                        self._bars.stop()
                        self._bars = None

    def _display(self) -> Progress:
        if self._bars is None:
            self._bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                TextColumn("Ctrl+C cancels"),
                console=self._console or Console(stderr=True),
                transient=True,
            )
            self._bars.start()
        return self._bars

    async def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None


@contextlib.contextmanager
def _sigint_cancels(job: FileJob) -> Iterator[None]:
    """While a transfer runs in the foreground, Ctrl+C cancels it instead of the client."""
    loop = asyncio.get_running_loop()

    def on_sigint(signum: int, frame: object) -> None:
        loop.call_soon_threadsafe(job.cancel)

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: leave Ctrl+C alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
