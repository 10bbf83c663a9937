"""How entries look: one entry -> the screen lines it takes at a width (pure; Rich text and
Textual strips, no terminal).

Every string that came from a user or the server is put into a Rich ``Text`` with
``append``: it is never parsed as markup, so ``[bold red]x[/]`` or ``[link=...]`` in a message
shows literally; control characters, line separators and bidi overrides are shown as visible
escapes first (:func:`parlour.cli._render.clean`). Lines are wrapped with a hanging indent
(continuation lines start under the text, weechat style); rendered lines are cached by entry,
version and width, so scrolling a long scrollback re-renders only what comes into view.
"""

from __future__ import annotations

import io
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable

from rich.console import Console
from rich.style import Style
from rich.text import Text
from textual.strip import Strip

from parlour.cli._render import clean, render_attachment
from parlour.protocol import name_key

from .buffers import Buffer, Entry, EntryKind

__all__ = ["LineRenderer", "day_key", "plain_text"]

_TIME = Style(dim=True)
_SEQ = Style(dim=True)
_NOTE = Style(dim=True, italic=True)
_ERROR = Style(color="yellow")
_BROADCAST = Style(color="magenta", bold=True)
_OWN = Style(color="cyan", bold=True)
_MENTION_NICK = Style(color="black", bgcolor="yellow", bold=True)
_MENTION_TEXT = Style(bold=True)
_DELETED = Style(dim=True, italic=True)
_MARKER = Style(color="red", bold=True)
_DAY = Style(color="blue", bold=True)
_FILE = Style(color="cyan")
_PALETTE = (
    "green",
    "blue",
    "magenta",
    "red",
    "bright_green",
    "bright_blue",
    "bright_magenta",
    "bright_red",
    "dark_orange",
    "deep_sky_blue1",
    "orchid",
    "spring_green2",
)
_CACHE = 1024


def day_key(ts: float) -> tuple[int, int, int]:
    t = time.localtime(ts)
    return (t.tm_year, t.tm_mon, t.tm_mday)


def _nick_style(name: str) -> Style:
    return Style(color=_PALETTE[zlib.crc32(name_key(name).encode()) % len(_PALETTE)])


def _body_lines(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\t", "    ")
    return [clean(part) for part in text.split("\n")]


def plain_text(strips: list[Strip]) -> list[str]:
    """The text of rendered lines (tests, screen dumps)."""
    return [strip.text for strip in strips]


class LineRenderer:
    """Renders entries of buffers for one user (``me``), caching the result."""

    def __init__(self, me: str, *, clock: Callable[[float], str] | None = None) -> None:
        self.me = me
        self._console = Console(
            width=200, file=io.StringIO(), color_system="truecolor", force_terminal=True
        )
        self._cache: OrderedDict[tuple[object, ...], list[Strip]] = OrderedDict()
        self._clock = clock or (lambda ts: time.strftime("%H:%M", time.localtime(ts)))
        self.show_seq = True

    # ------------------------------------------------------------------ per buffer

    def entry_lines(self, buf: Buffer, index: int, width: int, marker: int | None) -> list[Strip]:
        """The lines of ``buf.entries[index]``, with a day separator above it when the day
        changed and the read-marker line above it when ``index == marker``."""
        entries = buf.entries
        entry = entries[index]
        if index == 0:
            day = not buf.has_older
        else:
            day = day_key(entries[index - 1].ts) != day_key(entry.ts)
        return self.lines(entry, width, day=day, marker=index == marker)

    def height_fn(self, buf: Buffer, width: int) -> Callable[[int], int]:
        marker = buf.marker_index()
        return lambda i: len(self.entry_lines(buf, i, width, marker))

    # ------------------------------------------------------------------ one entry

    def lines(self, entry: Entry, width: int, *, day: bool, marker: bool) -> list[Strip]:
        width = max(width, 8)
        key = (entry.uid, entry.version, width, day, marker, self.show_seq)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        strips: list[Strip] = []
        if day:
            label = time.strftime(" %A %d %B %Y ", time.localtime(entry.ts))
            strips.append(self._rule(label, width, _DAY))
        if marker:
            strips.append(self._rule(" new messages ", width, _MARKER))
        strips.extend(self._entry(entry, width))
        self._cache[key] = strips
        if len(self._cache) > _CACHE:
            self._cache.popitem(last=False)
        return strips

    def _rule(self, label: str, width: int, style: Style) -> Strip:
        text = Text(label, style=style)
        side = max(0, (width - text.cell_len) // 2)
        line = Text("─" * side, style=style)
        line.append_text(text)
        line.append("─" * max(0, width - side - text.cell_len), style=style)
        line.truncate(width)
        return self._strip(line, width)

    def _strip(self, text: Text, width: int) -> Strip:
        segments = list(text.render(self._console))
        return Strip(segments).adjust_cell_length(width)

    def _prefix(self, entry: Entry, nick_width: int) -> Text:
        prefix = Text()
        prefix.append(self._clock(entry.ts), style=_TIME)
        prefix.append(" ")
        if entry.kind is EntryKind.MESSAGE:
            name = clean(entry.sender or "?")
            style = _OWN if entry.own else _nick_style(name)
            if entry.mention:
                style = _MENTION_NICK
            nick = Text(name, style=style)
        elif entry.kind is EntryKind.ERROR:
            nick = Text("!", style=_ERROR)
        elif entry.kind is EntryKind.BROADCAST:
            nick = Text("***", style=_BROADCAST)
        else:
            nick = Text("--", style=_NOTE)
        if nick.cell_len > nick_width:
            nick.truncate(nick_width - 1)
            nick.append("+", style=_TIME)
        nick.pad_left(nick_width - nick.cell_len)
        prefix.append_text(nick)
        prefix.append(" │ ", style=_TIME)
        return prefix

    def _body(self, entry: Entry) -> Text:
        body = Text()
        if entry.kind is EntryKind.MESSAGE:
            if entry.deleted or entry.text is None:
                body.append("(message deleted)", style=_DELETED)
            else:
                style = _MENTION_TEXT if entry.mention else Style()
                body.append("\n".join(_body_lines(entry.text)), style=style)
                if entry.attachment is not None:
                    if entry.text:
                        body.append(" ")
                    body.append(render_attachment(entry.attachment), style=_FILE)
                if entry.edited:
                    body.append(" (edited)", style=_SEQ)
            if self.show_seq and entry.seq is not None:
                body.append(f" [{entry.seq}]", style=_SEQ)
            return body
        style = {EntryKind.ERROR: _ERROR, EntryKind.BROADCAST: _BROADCAST}.get(entry.kind, _NOTE)
        body.append("\n".join(_body_lines(entry.text or "")), style=style)
        return body

    def _entry(self, entry: Entry, width: int) -> list[Strip]:
        nick_width = 12 if width >= 70 else 8
        prefix = self._prefix(entry, nick_width)
        indent = prefix.cell_len
        body_width = width - indent
        if body_width < 16:  # too narrow for a hanging indent: text on its own lines
            indent, body_width = 2, width - 2
            head = [self._strip(prefix, width)]
        else:
            head = []
        lines = self._body(entry).wrap(self._console, body_width, overflow="fold")
        out = head
        for n, line in enumerate(lines):
            row = prefix.copy() if n == 0 and not head else Text(" " * indent)
            row.append_text(line)
            out.append(self._strip(row, width))
        return out or [self._strip(prefix, width)]
