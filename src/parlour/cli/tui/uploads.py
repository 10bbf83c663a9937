"""``/upload`` and ``/download`` in the full-screen client: where their progress shows.

The commands are the line mode's (:class:`parlour.cli._uploads.ServerFileCommands`: same
wording, errors and resume); this is the full screen's
:class:`~parlour.cli._uploads.JobDisplay`:

* the transfer runs beside the chat (what you type meanwhile is sent at once);
* one progress line in the buffer the command was typed in, rewritten in place at most every
  :data:`~parlour.cli.tui.transfers.DRAW_INTERVAL` seconds (the newest figures always make
  it), and left with its last figures when the transfer ends;
* the status bar counts the running uploads and downloads (:meth:`TuiJobs.indicator`);
* Ctrl+C on an empty input line cancels them (:meth:`TuiJobs.cancel_all`); an upload or a
  download cancelled, failed or cut off resumes when the same command runs again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from rich.style import Style
from rich.text import Text

from parlour.cli._render import format_rate
from parlour.cli._uploads import FileJob, job_line

from .buffers import Buffer, Entry
from .transfers import DRAW_INTERVAL, Throttle, TransferHost

__all__ = ["TuiJobs"]


@dataclass(eq=False)
class _Row:
    job: FileJob
    buffer: Buffer
    throttle: Throttle
    entry: Entry | None = None
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class TuiJobs:
    """Shows uploads and downloads in the buffers of the full-screen client."""

    def __init__(
        self,
        host: TransferHost,
        *,
        interval: float = DRAW_INTERVAL,
        changed: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.interval = interval
        self._changed = changed
        self._rows: dict[FileJob, _Row] = {}
        #: progress lines drawn (rewrites included), for tests
        self.draws = 0

    @property
    def running(self) -> list[FileJob]:
        return list(self._rows)

    async def run(self, job: FileJob, work: Callable[[FileJob], Awaitable[Any]]) -> Any:
        row = _Row(job, self.host.output_buffer, Throttle(self.interval))
        self._rows[job] = row
        job.on_change = lambda j: self._progress(row)
        task = asyncio.ensure_future(work(job))
        job.task = task
        self._status()
        try:
            result = await task
        except asyncio.CancelledError:
            self._end(row, "cancelled")
            raise
        except BaseException:
            self._end(row, "stopped")
            raise
        self._end(row, "done")
        return result

    def _progress(self, row: _Row) -> None:
        if row.timer is not None:
            return  # a draw is due: it takes the newest figures
        loop = asyncio.get_running_loop()
        wait = row.throttle.delay(loop.time())
        if wait <= 0:
            self._draw(row)
        else:
            row.timer = loop.call_later(wait, self._draw, row)

    def _draw(self, row: _Row) -> None:
        row.timer = None
        if self._rows.get(row.job) is not row:
            return
        row.throttle.drew(asyncio.get_running_loop().time())
        self._line(row, job_line(row.job))
        self._status()

    def _line(self, row: _Row, text: str) -> None:
        self.draws += 1
        bufs = self.host.buffers
        if bufs.find(row.buffer.target) is not row.buffer:
            row.buffer, row.entry = bufs.current, None  # its buffer was closed
        if row.entry is None:
            row.entry = self.host.notice(text, buffer=row.buffer)
        else:
            self.host.rewrite(row.entry, text, buffer=row.buffer)

    def _end(self, row: _Row, how: str) -> None:
        if row.timer is not None:
            row.timer.cancel()
            row.timer = None
        row.job.on_change = None
        self._rows.pop(row.job, None)
        if row.entry is not None or how == "done":
            self._line(row, job_line(row.job, end=how))
        self._status()

    def _status(self) -> None:
        if self._changed is not None:
            self._changed()

    def cancel_all(self) -> int:
        """Cancel every running upload and download; returns how many."""
        return sum(1 for job in list(self._rows) if job.cancel())

    def indicator(self) -> Text | None:
        """``up 1 down 1: 35 %, 4.10 MB/s (Ctrl+C cancels)`` (None: nothing running)."""
        jobs = list(self._rows)
        if not jobs:
            return None
        ups = sum(1 for j in jobs if j.kind == "upload")
        downs = len(jobs) - ups
        done = sum(j.done for j in jobs)
        total = sum(j.total for j in jobs)
        pct = 100 if total <= 0 else max(0, min(100, 100 * done // total))
        rate = sum(j.rate for j in jobs)
        words = " ".join(
            part for part in (f"up {ups}" if ups else "", f"down {downs}" if downs else "") if part
        )
        return Text(
            f"{words}: {pct} %, {format_rate(rate)} (Ctrl+C cancels)", style=Style(color="cyan")
        )

    async def close(self) -> None:
        self.cancel_all()
