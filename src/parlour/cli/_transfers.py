"""``/send-file``, ``/accept``, ``/decline``, ``/cancel`` and ``/transfers`` of ``parlour chat``.

The transfers themselves are the client library's (:mod:`parlour.client.files`); this runs
the commands and words their events (:mod:`parlour.cli._filetext`), and hands each transfer
it starts to a :class:`TransferDisplay` that follows it. The line mode's display
(:class:`LineDisplay`): interactive, a ``rich`` progress display (a bar per running transfer
with bytes, rate and ETA) kept at the bottom of the terminal while chat lines print above it,
and one final line per transfer (verified, or failed and why); piped, no bars, and each file
command waits for its transfer's end before the next line runs (a script's ``/send-file``
line "succeeds" only when the file arrived verified; a failure counts toward exit status 4).
The full-screen client has its own display (:mod:`parlour.cli.tui.transfers`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from parlour.cli import _commands as c
from parlour.cli._filetext import (
    final_line,
    listing,
    notice_line,
    progress_figures,
)
from parlour.cli._render import (
    clean,
    format_size,
    render_offer,
    render_offer_ended,
)
from parlour.client import Client, Transfer, UnknownOffer
from parlour.p2p import Progress as TransferProgress
from parlour.protocol import (
    Event,
    FileAcceptedEvent,
    FileEndedEvent,
    FileOfferEvent,
    name_key,
)

__all__ = ["FileCommands", "LineDisplay", "TransferDisplay"]

Line = Callable[[str], None]


class TransferDisplay(Protocol):
    """How a user interface follows the transfers its commands start."""

    def follow(self, t: Transfer) -> None:
        """Show this transfer from now on: its notices, progress and end."""
        ...

    async def settle(self, t: Transfer) -> None:
        """Return when the command that started ``t`` is done (at once, or at its end)."""
        ...

    async def close(self) -> None: ...


class FileCommands:
    """The five commands and the words of file events; ``display`` follows the transfers
    (the line mode's :class:`LineDisplay`, or the full-screen client's)."""

    def __init__(self, client: Client, *, out: Line, fail: Line, display: TransferDisplay) -> None:
        self.client = client
        self._out, self._fail = out, fail
        self.display = display
        #: offer id -> (sender, file name) of the offers shown (to word their end)
        self._shown_offers: dict[str, tuple[str, str]] = {}

    # ------------------------------------------------------------------ commands

    async def execute(self, cmd: c.Command) -> None:
        files = self.client.files
        try:
            if isinstance(cmd, c.SendFile):
                path = Path(cmd.path).expanduser()
                if not path.is_file():
                    self._fail(f"! no file at {clean(path)}")
                    return
                self._out(f"* hashing {clean(path.name)} ({format_size(path.stat().st_size)})…")
                t = await self.client.offer_file(cmd.user, path)
                self.display.follow(t)
                self._out(
                    f"* [file {t.number}] offered {clean(t.filename)} ({format_size(t.size)})"
                    f" to {clean(t.peer)}; it is sent when they accept (/cancel {t.number})"
                )
                await self.display.settle(t)
            elif isinstance(cmd, c.AcceptFile):
                dest = Path(cmd.dest).expanduser() if cmd.dest else None
                t = await self.client.accept(cmd.offer, dest)
                self.display.follow(t)
                where = clean(dest) if dest is not None else clean(files.default_dir(t.peer))
                self._out(
                    f"* [file {t.number}] receiving {clean(t.filename)} ({format_size(t.size)})"
                    f" from {clean(t.peer)} into {where}"
                )
                await self.display.settle(t)
            elif isinstance(cmd, c.DeclineFile):
                await self.client.decline(cmd.offer)
                self._out(f"* declined file offer {clean(cmd.offer)}")
            elif isinstance(cmd, c.CancelFile):
                await self.client.cancel(cmd.offer)
                self._out(f"* cancelled file {clean(cmd.offer)}")
            elif isinstance(cmd, c.Transfers):
                for line in listing(files):
                    self._out(line)
        except UnknownOffer as exc:
            self._fail(f"! {exc} (/transfers lists them)")
        except OSError as exc:
            self._fail(f"! cannot read the file: {exc.strerror or exc}")

    # ------------------------------------------------------------------ events

    def render_event(self, event: Event) -> str | None:
        """The line for a ``file_*`` event (None: nothing to show: its transfer says it)."""
        files = self.client.files
        if isinstance(event, FileOfferEvent):
            offer = files.incoming.get(event.offer)
            number = offer.number if offer is not None else files.number_of(event.offer)
            return render_offer(
                number or 0, event.sender, event.filename, event.size, event.expires
            )
        if isinstance(event, FileEndedEvent):
            t = files.transfers.get(event.offer)
            if t is not None or event.reason == "done":
                return None  # the transfer's final line says how it ended
            me = self.client.session.username if self.client.session else None
            if me is not None and event.by is not None and name_key(event.by) == name_key(me):
                return None  # your own /decline: its line said so
            shown = self._shown_offers.get(event.offer)
            if shown is None:
                return None
            return render_offer_ended(
                files.number_of(event.offer), shown[0], shown[1], event.reason, event.by
            )
        if isinstance(event, FileAcceptedEvent):
            return None
        return None

    def remember(self, event: Event) -> None:
        """Keep what an offer event said (its end is shown with the file's name)."""
        if isinstance(event, FileOfferEvent):
            self._shown_offers[event.offer] = (event.sender, event.filename)
            while len(self._shown_offers) > 512:
                del self._shown_offers[next(iter(self._shown_offers))]

    @property
    def live_console(self) -> Console | None:
        """The console of the line mode's progress display while it is shown (print through
        it: the lines then go above the bars instead of through them)."""
        display = self.display
        return display.live_console if isinstance(display, LineDisplay) else None

    async def close(self) -> None:
        await self.display.close()


class LineDisplay:
    """The line mode's display: ``rich`` bars when interactive; piped, each command waits."""

    def __init__(
        self,
        *,
        interactive: bool,
        out: Line,
        err: Line,
        fail: Line,
        console: Console | None = None,
    ) -> None:
        self.interactive = interactive
        self._out, self._err, self._fail = out, err, fail
        self._console = console
        self._bars: Progress | None = None
        self._rows: dict[int, TaskID] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    def follow(self, t: Transfer) -> None:
        t.on_notice = lambda text: self._out(notice_line(t, text))
        if self.interactive:
            t.on_progress = self._progress_of(t)
            task = asyncio.ensure_future(self._watch(t))
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)

    async def settle(self, t: Transfer) -> None:
        """Piped: the line is done when the transfer is (its final line; a failure counts)."""
        if self.interactive:
            return
        result = await t.wait()
        (self._out if result.ok else self._fail)(final_line(t, result))

    async def _watch(self, t: Transfer) -> None:
        result = await t.wait()
        self._drop_row(t.number)
        (self._out if result.ok else self._err)(final_line(t, result))

    def _progress_of(self, t: Transfer) -> Callable[[TransferProgress], None]:
        arrow = f"→ {t.peer}" if t.direction == "send" else f"← {t.peer}"

        def update(p: TransferProgress) -> None:
            bars = self._display()
            row = self._rows.get(t.number)
            fig = progress_figures(p)
            if row is None:
                label = escape(clean(f"[{t.number}] {t.filename} {arrow}"))
                row = bars.add_task(
                    label, total=p.total or 1, speed=fig.speed, eta=fig.eta, via=fig.via
                )
                self._rows[t.number] = row
            bars.update(row, completed=p.done, speed=fig.speed, eta=fig.eta, via=fig.via)

        return update

    @property
    def live_console(self) -> Console | None:
        return self._bars.console if self._bars is not None else None

    def _display(self) -> Progress:
        if self._bars is None:
            self._bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.completed:>12,.0f} B"),
                TextColumn("{task.fields[speed]:>11}"),
                TextColumn("{task.fields[eta]}{task.fields[via]}"),
                console=self._console or Console(stderr=True),
                transient=True,
            )
            self._bars.start()
        return self._bars

    def _drop_row(self, number: int) -> None:
        row = self._rows.pop(number, None)
        if row is not None and self._bars is not None:
            self._bars.remove_task(row)
            if not self._rows:
                self._bars.stop()
                self._bars = None

    async def close(self) -> None:
        for task in list(self._watchers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
