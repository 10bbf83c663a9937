"""The widgets of the full-screen client. They draw the model (:mod:`.buffers`) and turn
keys into messages for the app; none of them talks to the server."""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import TextArea

from parlour.cli._render import clean

from .buffers import Buffer, BufferKind, BufferList
from .render import LineRenderer
from .viewport import Row, Viewport

__all__ = ["BufferListView", "ChatInput", "MemberList", "MessageView", "StatusBar", "TitleBar"]

#: input lines remembered for Up/Down
HISTORY = 500
#: entries from the top of what is loaded at which older history is asked for
PAGE_AHEAD = 200


class MessageView(Widget):
    """The scrollback of the current buffer, drawn line by line (Textual's line API): only the
    lines on the screen are rendered, whatever the buffer's length."""

    DEFAULT_CSS = """
    MessageView { height: 1fr; width: 1fr; }
    """

    class Shown(Message):
        """The screen now shows entries of ``buffer`` up to message ``newest`` (None: no
        message); ``need_older``: the top of what is loaded is close."""

        def __init__(self, buffer: Buffer, newest: int | None, need_older: bool) -> None:
            super().__init__()
            self.buffer = buffer
            self.newest = newest
            self.need_older = need_older

    def __init__(self, renderer: LineRenderer, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.renderer = renderer
        self.buffer: Buffer | None = None
        self._key: tuple[object, ...] | None = None
        self._screen: list[Strip] = []
        self._shown: tuple[object, ...] | None = None

    def show(self, buffer: Buffer) -> None:
        self.buffer = buffer
        self.refresh()

    def _state(self) -> tuple[object, ...]:
        buf = self.buffer
        if buf is None:
            return (None,)
        v = buf.view
        return (id(buf), buf.version, self.size, v.follow, v.anchor, v.offset, buf.jump_to_marker)

    def lines(self) -> list[Strip]:
        """The strips on the screen now, top to bottom (computed once per change)."""
        state = self._state()
        if state == self._key:
            return self._screen
        buf = self.buffer
        width, height = self.size.width, self.size.height
        if buf is None or width <= 0 or height <= 0:
            self._key, self._screen = state, []
            return self._screen
        height_of = self.renderer.height_fn(buf, width)
        if buf.jump_to_marker:
            buf.jump_to_marker = False
            marker = buf.marker_index()
            if marker is not None:
                buf.view.show_at_top(marker, len(buf), height, height_of)
        rows = buf.view.rows(len(buf), height, height_of)
        marker = buf.marker_index()
        strips = [self.renderer.entry_lines(buf, i, width, marker)[line] for i, line in rows]
        blank = Strip.blank(width)
        self._screen = [blank] * (height - len(strips)) + strips
        self._key = self._state()
        self._report(buf, rows)
        self.call_after_refresh(self._prefetch, self._key)
        return self._screen

    def _prefetch(self, key: tuple[object, ...]) -> None:
        """Render a screen above and below into the line cache while the user reads, so the
        next PageUp/PageDown only composes cached lines."""
        buf = self.buffer
        if buf is None or key != self._key:
            return
        width, height = self.size.width, self.size.height
        height_of = self.renderer.height_fn(buf, width)
        marker = buf.marker_index()
        for direction in (1, -1):
            ghost = Viewport()
            v = buf.view
            ghost.follow, ghost.anchor, ghost.offset = v.follow, v.anchor, v.offset
            ghost.scroll(direction * max(1, height - 2), len(buf), height, height_of)
            for index, _ in ghost.rows(len(buf), height, height_of):
                self.renderer.entry_lines(buf, index, width, marker)

    def _report(self, buf: Buffer, rows: list[Row]) -> None:
        newest = None
        for index, _ in reversed(rows):
            seq = buf.entries[index].seq
            if seq is not None:
                newest = seq
                break
        top = rows[0][0] if rows else 0
        need = buf.has_older and not buf.loading_older and top < PAGE_AHEAD
        shown = (id(buf), newest, need)
        if shown != self._shown:
            self._shown = shown
            # (drawing runs under another widget's context: name the sender, or the message
            # would stop bubbling at that widget)
            self.post_message(self.Shown(buf, newest, need).set_sender(self))

    def render_line(self, y: int) -> Strip:
        lines = self.lines()
        if 0 <= y < len(lines):
            return lines[y]
        return Strip.blank(self.size.width)

    def scroll_lines(self, lines: int) -> None:
        """Scroll ``lines`` towards older messages (negative: newer)."""
        buf = self.buffer
        if buf is None:
            return
        width, height = self.size.width, self.size.height
        buf.view.scroll(lines, len(buf), height, self.renderer.height_fn(buf, width))
        self.refresh()

    def page(self, direction: int) -> None:
        self.scroll_lines(direction * max(1, self.size.height - 2))

    def to_bottom(self) -> None:
        if self.buffer is not None:
            self.buffer.view.to_bottom()
            self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self.refresh()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.scroll_lines(3)
        event.stop()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self.scroll_lines(-3)
        event.stop()


def _count_text(buf: Buffer) -> Text:
    text = Text()
    if buf.mentions:
        text.append(f" {buf.mentions}!", style=Style(color="red", bold=True))
    if buf.unread:
        more = "+" if buf.capped else ""
        text.append(f" {buf.unread}{more}", style=Style(color="yellow"))
    return text


class BufferListView(Widget):
    """Numbered buffers with their unread (yellow) and mention (red, ``!``) counts."""

    DEFAULT_CSS = """
    BufferListView { width: 22; height: 1fr; border-right: solid $primary-darken-2; }
    """

    class Picked(Message):
        def __init__(self, number: int) -> None:
            super().__init__()
            self.number = number

    def __init__(self, buffers: BufferList, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.buffers = buffers
        #: the first buffer shown (0-based) when they do not all fit
        self.top = 0
        self._shown_current: Buffer | None = None

    def window(self, count: int, current: int, height: int) -> int:
        """The first buffer to show of `count` in `height` lines: as before, moved just
        enough to show the `current` one when it changed (scrolling may hide it again)."""
        if height <= 0 or count <= height:
            return 0
        top = max(0, min(self.top, count - height))
        if self.buffers.current is not self._shown_current and current >= 0:
            if current < top:
                top = current
            elif current >= top + height:
                top = current - height + 1
        return top

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self._scroll(3)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._scroll(-3)

    def _scroll(self, lines: int) -> None:
        count, height = len(self.buffers.ordered()), self.size.height
        self.top = max(0, min(self.top + lines, count - height))
        self.refresh()

    def render(self) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis")
        ordered = self.buffers.ordered()
        current_at = next((i for i, b in enumerate(ordered) if b is self.buffers.current), -1)
        height = self.size.height
        self.top = self.window(len(ordered), current_at, height)
        self._shown_current = self.buffers.current
        shown = ordered[self.top : self.top + height] if height > 0 else ordered
        for n, buf in enumerate(shown, start=self.top + 1):
            current = buf is self.buffers.current
            style = Style(reverse=True) if current else Style()
            if buf.parted:
                style += Style(dim=True)
            elif buf.mentions and not current:
                style += Style(color="red", bold=True)
            elif buf.unread and not current:
                style += Style(bold=True)
            line = Text(f"{n:>2} ", style=Style(dim=True))
            line.append(clean(buf.target.label), style=style)
            line.append_text(_count_text(buf))
            if n > self.top + 1:
                out.append("\n")
            out.append_text(line)
        return out

    def on_click(self, event: events.Click) -> None:
        self.post_message(self.Picked(self.top + event.y + 1))


class MemberList(Widget):
    """Members of the current room: online first (bold), then away (dim)."""

    DEFAULT_CSS = """
    MemberList { width: 20; height: 1fr; border-left: solid $primary-darken-2; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.buffer: Buffer | None = None

    def show(self, buffer: Buffer) -> None:
        self.buffer = buffer
        self.refresh()

    def render(self) -> Text:
        buf = self.buffer
        out = Text(no_wrap=True, overflow="ellipsis")
        if buf is None or buf.target.kind is not BufferKind.ROOM:
            return out
        online = sorted((n for k, n in buf.members.items() if k in buf.online), key=str.casefold)
        away = sorted((n for k, n in buf.members.items() if k not in buf.online), key=str.casefold)
        out.append(f"{len(buf.online)} online, {buf.members_total} members", style="dim")
        for name in online:
            out.append("\n")
            out.append(clean(name), style="bold")
        for name in away:
            out.append("\n")
            out.append(clean(name), style="dim")
        more = buf.members_total - len(buf.members)
        if more > 0:
            out.append(f"\n… {more} more", style="dim")
        return out


class TitleBar(Widget):
    DEFAULT_CSS = """
    TitleBar { height: 1; background: $primary-darken-2; color: $text; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.text = Text()

    def set(self, text: Text) -> None:
        self.text = text
        self.refresh()

    def render(self) -> Text:
        return self.text


class StatusBar(TitleBar):
    """``[alice] 2:#general | connected | -MORE(3)- | Act: 3:#random(5) 4:@bob(1!)``."""

    DEFAULT_CSS = """
    StatusBar { height: 1; background: $primary-darken-3; color: $text; }
    """


class ChatInput(TextArea):
    """The input line: Enter sends, Alt+Enter or Ctrl+J adds a line, a paste keeps its lines
    (sent as one message), Up/Down recall earlier input, Tab completes."""

    DEFAULT_CSS = """
    ChatInput { height: auto; max-height: 8; min-height: 1; border: none; padding: 0 1; }
    ChatInput:focus { border: none; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+j,alt+enter,shift+enter", "newline", "New line", show=False),
    ]

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Complete(Message):
        """Tab (or Shift+Tab, ``backwards``) was pressed."""

        def __init__(self, backwards: bool) -> None:
            super().__init__()
            self.backwards = backwards

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            id=id,
            soft_wrap=True,
            tab_behavior="focus",
            show_line_numbers=False,
            compact=True,
            highlight_cursor_line=False,
        )
        self.sent: list[str] = []
        self._recall: int | None = None
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.submit()
            return
        if event.key in ("tab", "shift+tab"):
            event.stop()
            event.prevent_default()
            self.post_message(self.Complete(event.key == "shift+tab"))
            return
        await super()._on_key(event)

    def action_newline(self) -> None:
        self.insert("\n")

    def submit(self) -> None:
        text = self.text
        if not text.strip():
            return
        if not self.sent or self.sent[-1] != text:
            self.sent.append(text)
            del self.sent[:-HISTORY]
        self._recall = None
        self.load_text("")
        self.post_message(self.Submitted(text))

    def set_text(self, text: str, cursor: int | None = None) -> None:
        """Replace the input (cursor at ``cursor`` characters, default the end)."""
        self.load_text(text)
        offset = len(text) if cursor is None else cursor
        row = text.count("\n", 0, offset)
        column = offset - (text.rfind("\n", 0, offset) + 1)
        self.move_cursor((row, column))

    @property
    def cursor_offset(self) -> int:
        row, column = self.cursor_location
        lines = self.text.split("\n")
        return sum(len(line) + 1 for line in lines[:row]) + column

    def action_cursor_up(self, select: bool = False) -> None:
        if select or self.cursor_location[0] > 0 or not self.sent:
            super().action_cursor_up(select)
            return
        if self._recall is None:
            self._draft, self._recall = self.text, len(self.sent)
        if self._recall > 0:
            self._recall -= 1
            self.set_text(self.sent[self._recall])

    def action_cursor_down(self, select: bool = False) -> None:
        last_row = self.text.count("\n")
        if select or self.cursor_location[0] < last_row or self._recall is None:
            super().action_cursor_down(select)
            return
        self._recall += 1
        if self._recall >= len(self.sent):
            self._recall = None
            self.set_text(self._draft)
        else:
            self.set_text(self.sent[self._recall])
