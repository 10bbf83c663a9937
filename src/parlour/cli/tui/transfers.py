"""Peer-to-peer file transfers in the full-screen client: where offers and progress show.

The commands (``/send-file``, ``/accept``, ``/decline``, ``/cancel``, ``/transfers``) are the
line mode's (:class:`parlour.cli._transfers.FileCommands`: same parsing, wording, errors);
this is the full screen's :class:`~parlour.cli._transfers.TransferDisplay` and the home of
file events:

* **An offer to you** goes to the DM buffer with its sender when you have one open, else to
  the buffer you are looking at (irssi's rule for DCC requests: the query window with that
  nick, else the active window; no buffer is opened behind your back). In a buffer you are
  not looking at it counts as a highlight (red in the buffer list and ``Act:``) and raises
  a toast. If it ends before you took it (withdrawn, expired), that is said in the same
  buffer.
* **A transfer's lines** (the command's answer, notices such as the relay fallback, one
  progress line rewritten in place, the final verified/failed line) go to the buffer the
  command was typed in. The progress line is redrawn at most every :data:`DRAW_INTERVAL`
  seconds per transfer (the newest figures always make it: a late report is drawn when the
  interval is over). If the buffer is not on screen when the transfer ends, a toast says how
  it ended, and a failure counts as a highlight there.
* **The status bar** shows the running transfers (count, overall percent, rate) and the
  offers waiting for you (:meth:`TuiTransfers.indicator`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from rich.style import Style
from rich.text import Text

from parlour.cli._filetext import (
    final_line,
    notice_line,
    percent,
    progress_line,
    unprefixed,
)
from parlour.cli._render import format_rate
from parlour.client import FileTransfers, Transfer
from parlour.p2p import Progress
from parlour.protocol import Event, FileEndedEvent, FileOfferEvent

from .buffers import Buffer, BufferList, Entry

if TYPE_CHECKING:
    from parlour.cli._transfers import FileCommands

__all__ = ["DRAW_INTERVAL", "Throttle", "TransferHost", "TuiTransfers"]

#: the shortest time between two redraws of one transfer's progress line (seconds)
DRAW_INTERVAL = 0.25
#: offers whose buffer is remembered (to say their end where they were shown)
_OFFERS = 512


class TransferHost(Protocol):
    """What the display needs from the application."""

    @property
    def buffers(self) -> BufferList: ...

    @property
    def output_buffer(self) -> Buffer:
        """Where the output of the command running now goes."""
        ...

    def notice(self, text: str, *, error: bool = False, buffer: Buffer | None = None) -> Entry: ...

    def rewrite(self, entry: Entry, text: str, *, buffer: Buffer | None = None) -> None: ...

    def toast(self, text: str, *, title: str) -> None: ...


class Throttle:
    """At most one draw per ``interval`` (pure: the time is passed in)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: float | None = None

    def delay(self, now: float) -> float:
        """Seconds to wait before the next draw may happen (0: now)."""
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.interval - now)

    def drew(self, now: float) -> None:
        self._last = now


@dataclass(eq=False)
class _Row:
    """One followed transfer: where its lines go and its progress line."""

    transfer: Transfer
    buffer: Buffer
    throttle: Throttle
    #: the progress line and the buffer it is in
    entry: Entry | None = None
    entry_buffer: Buffer | None = None
    pending: Progress | None = None
    last: Progress | None = None
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class TuiTransfers:
    """Follows file transfers and file events for the full-screen client."""

    def __init__(
        self,
        host: TransferHost,
        files: Callable[[], FileTransfers],
        *,
        interval: float = DRAW_INTERVAL,
    ) -> None:
        self.host = host
        self._files = files
        self.interval = interval
        self._rows: dict[Transfer, _Row] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        #: offer id -> the buffer its offer was shown in
        self._offers: OrderedDict[str, Buffer] = OrderedDict()
        #: progress lines drawn (rewrites included), for tests and curiosity
        self.draws = 0

    # ------------------------------------------------------------------ TransferDisplay

    def follow(self, t: Transfer) -> None:
        row = _Row(t, self.host.output_buffer, Throttle(self.interval))
        self._rows[t] = row

        def notice(text: str) -> None:
            self._say(row, notice_line(t, text))

        t.on_notice = notice
        t.on_progress = lambda report: self._progress(row, report)
        task = asyncio.ensure_future(self._watch(row))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def settle(self, t: Transfer) -> None:
        return None  # the command is done; the transfer goes on beside the chat

    async def close(self) -> None:
        self.stop()
        for task in list(self._watchers):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stop(self) -> None:
        """Stop following (the screen is going away); the transfers themselves go on."""
        for row in self._rows.values():
            if row.timer is not None:
                row.timer.cancel()
            row.transfer.on_progress = row.transfer.on_notice = None
        self._rows.clear()
        for task in self._watchers:
            task.cancel()

    # ------------------------------------------------------------------ following

    def _buffer(self, buf: Buffer | None) -> Buffer:
        """``buf`` if it is still open, else the current buffer."""
        bufs = self.host.buffers
        if buf is not None and bufs.find(buf.target) is buf:
            return buf
        return bufs.current

    def _say(self, row: _Row, line: str) -> Entry:
        text, alert = unprefixed(line)
        row.buffer = self._buffer(row.buffer)
        return self.host.notice(text, error=alert, buffer=row.buffer)

    def _progress(self, row: _Row, report: Progress) -> None:
        row.pending = row.last = report
        if row.timer is not None:
            return  # a draw is already due: it takes the newest report
        loop = asyncio.get_running_loop()
        wait = row.throttle.delay(loop.time())
        if wait <= 0:
            self._draw(row)
        else:
            row.timer = loop.call_later(wait, self._draw, row)

    def _draw(self, row: _Row) -> None:
        row.timer = None
        report, row.pending = row.pending, None
        if report is None or row.transfer.done or self._rows.get(row.transfer) is not row:
            return
        row.throttle.drew(asyncio.get_running_loop().time())
        self._line(row, progress_line(row.transfer, report))

    def _line(self, row: _Row, text: str) -> None:
        self.draws += 1
        if row.entry is None or self._buffer(row.entry_buffer) is not row.entry_buffer:
            row.entry = self._say(row, text)  # (the first, or its buffer was closed)
            row.entry_buffer = row.buffer
        else:
            self.host.rewrite(row.entry, text, buffer=row.entry_buffer)

    async def _watch(self, row: _Row) -> None:
        t = row.transfer
        result = await t.wait()
        if row.timer is not None:
            row.timer.cancel()
            row.timer = None
        self._rows.pop(t, None)
        if row.entry is not None:  # the progress line keeps its last figures
            last = row.last
            if result.ok and last is not None:
                last = Progress(
                    last.transfer_id, last.direction, t.size, t.size, 0.0, 0.0, last.via_relay
                )
            self._line(row, progress_line(t, last, end="done" if result.ok else "stopped"))
        line = final_line(t, result)
        buf = self._buffer(row.buffer)
        if buf is not self.host.buffers.current:
            if not result.ok:
                buf.highlights += 1
            text, _ = unprefixed(line)
            self.host.toast(text, title=f"file {'verified' if result.ok else 'failed'}")
        self._say(row, line)

    # ------------------------------------------------------------------ events

    def show_event(self, event: Event, news: FileCommands) -> Buffer | None:
        """A ``file_*`` event: its line (the line mode's words) in the right buffer; returns
        that buffer (None: nothing to show)."""
        news.remember(event)
        line = news.render_event(event)
        if line is None:
            return None
        bufs = self.host.buffers
        text, alert = unprefixed(line)
        if isinstance(event, FileOfferEvent):
            buf = bufs.dm(event.sender) or bufs.current
            self._offers[event.offer] = buf
            self._offers.move_to_end(event.offer)
            while len(self._offers) > _OFFERS:
                self._offers.popitem(last=False)
            if buf is not bufs.current:
                buf.highlights += 1
                self.host.toast(text, title=f"file offer from {event.sender}")
        elif isinstance(event, FileEndedEvent):
            buf = self._buffer(self._offers.pop(event.offer, None))
        else:
            buf = bufs.current
        self.host.notice(text, error=alert, buffer=buf)
        return buf

    # ------------------------------------------------------------------ status and completion

    def indicator(self) -> Text | None:
        """``files 2: 35 %, 4.10 MB/s | offer: /accept 3`` (None: nothing running or waiting)."""
        files = self._files()
        running = [t for t in files.active() if t.state == "transferring"]
        waiting = [
            o
            for o in files.incoming.values()
            if (t := files.transfers.get(o.offer)) is None or t.done
        ]
        if not running and not waiting:
            return None
        out = Text()
        if running:
            done = sum(t.progress.done if t.progress else 0 for t in running)
            total = sum(t.size for t in running)
            rate = sum(t.progress.rate if t.progress else 0.0 for t in running)
            out.append(
                f"files {len(running)}: {percent(done, total)} %, {format_rate(rate)}",
                style=Style(color="cyan"),
            )
        if waiting:
            if running:
                out.append(" | ")
            what = (
                f"offer: /accept {waiting[0].number}"
                if len(waiting) == 1
                else f"{len(waiting)} offers: /transfers"
            )
            out.append(what, style=Style(color="yellow", bold=True))
        return out

    def completions(self) -> dict[str, list[str]]:
        """Offer numbers for Tab after ``/accept``, ``/decline`` and ``/cancel`` (newest
        first)."""
        files = self._files()
        offers = [str(o.number) for o in reversed(files.incoming.values())]
        mine = [str(t.number) for t in reversed(files.active()) if t.direction == "send"]
        return {"accept": offers, "decline": offers, "cancel": mine + offers}
