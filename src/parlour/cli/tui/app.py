"""``parlour chat`` full screen: the Textual application over a :class:`parlour.client.Client`.

Layout (weechat-like)::

    ┌ title: #general — 3 online, 12 members ───────────────────────────────┐
    │ 1 server   │ 12:01      bob │ morning all                 │ 3 online  │
    │ 2 #general │ ─────────── new messages ───────────           │ alice     │
    │ 3 #random 4│ 12:05    carol │ @alice lunch?          [42] │ bob       │
    │ 4 @bob 1!  │                                             │ carol     │
    ├ status: [alice] 2:#general | connected | Act: 4:@bob(1!) 3:#random(4) ┤
    └ > input                                                               ┘

The app keeps the model (:mod:`.buffers`) in step with the server's events, asks for older
history as the user scrolls up, moves the server-side read marker as messages come into view
and runs commands (:mod:`.commands`) one at a time, in the order they were typed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical

from parlour.cli import _commands as c
from parlour.cli._render import clean
from parlour.client import (
    FILE_EVENTS,
    Attachment,
    Client,
    ClientClosed,
    ConnectionLost,
    ConnectionState,
    ServerError,
    Session,
)
from parlour.protocol import (
    BroadcastEvent,
    Event,
    InvalidName,
    ProtocolError,
    RoomCreatedEvent,
    RoomDeletedEvent,
    RoomRenamedEvent,
    name_key,
    normalize_name,
)

from .bars import status_text, title_text
from .buffers import DEFAULT_CAPACITY, Buffer, BufferKind, BufferList, Entry, EntryKind, Target
from .commands import CommandRegistry, default_registry
from .completion import Completer
from .dialogs import PasswordScreen
from .events import apply_event
from .missed import fill_room, load_missed
from .render import LineRenderer
from .transfers import TuiTransfers
from .uploads import TuiJobs
from .widgets import BufferListView, ChatInput, MemberList, MessageView, StatusBar, TitleBar

if TYPE_CHECKING:
    from parlour.cli.chat import ChatApp

__all__ = ["EXIT_ENDED", "EXIT_OK", "ChatTui", "PasswordScreen"]

EXIT_OK, EXIT_ENDED = 0, 3
#: messages asked for per history page (the server caps it at its ``max_page``)
PAGE = 200
#: events handled before letting the screen redraw during a burst
_BURST = 200
#: below these terminal widths the member list, then the buffer list, are hidden (the
#: status bar still names the buffer and the activity)
NARROW_MEMBERS, NARROW_BUFFERS = 90, 60
#: entries added after which the long-lived objects are moved out of the collector's way
_SETTLE = 5000
#: the buffer the running command was typed in (per task: commands may run in the background)
_OUTPUT: ContextVar[Buffer | None] = ContextVar("parlour_tui_output", default=None)


def _alt_digits_are_keys() -> None:
    """Textual reads ESC+digit (what Alt+1..9 send on Linux terminals) as the characters
    macOS's Option key types (Alt+2 -> "™"), so Alt+N never reached a binding and typed a
    symbol instead. The chat client wants weechat's Alt+1..9: drop those entries from
    Textual's sequence table so they parse as ``alt+1`` ... ``alt+9`` (macOS users typing
    those symbols with Option are unaffected: their terminal sends the characters)."""
    from textual import _ansi_sequences

    table = _ansi_sequences.ANSI_SEQUENCES_KEYS
    if isinstance(table, dict):  # (typed as a Mapping; it is a module-level dict)
        for digit in "0123456789":
            table.pop(f"\x1b{digit}", None)


_alt_digits_are_keys()


def settle_memory() -> None:
    """Move every object alive now out of the cyclic garbage collector's full passes
    (``gc.freeze``). A scrollback of 100,000 entries is that many tracked objects, and a
    full collection walking them stalls the screen for 100 ms or more; they hold no reference
    cycles, so reference counting still frees them when they are dropped."""
    gc.freeze()


_KEYS = [
    ("Enter", "send; Alt+Enter or Ctrl+J: new line; a paste keeps its lines"),
    ("Up / Down", "earlier input (at the first / last line of the input)"),
    ("Tab / Shift+Tab", "complete a name, #room or /command (again: next / previous)"),
    ("PageUp / PageDown", "scroll (older messages load as you go up); Alt+End: newest"),
    ("Ctrl+N / Ctrl+P", "next / previous buffer (also Alt+Right / Alt+Left)"),
    ("Alt+1..9", "buffer by number; Alt+A: next buffer with mentions or unread"),
    ("F2", "show or hide the member list"),
    ("Ctrl+C", "clear the input; on an empty input, cancel running uploads/downloads"),
    ("Ctrl+Q, /quit", "leave (Ctrl+D on an empty line too)"),
]


class ChatTui(App[int]):
    """The full-screen chat client. ``runner`` is the line-mode command code (every command
    the full-screen client does not handle itself runs through it)."""

    TITLE = "parlour chat"
    CSS = """
    #main { height: 1fr; }
    #centre { width: 1fr; }
    MemberList.-hidden { display: none; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit_chat", "Quit", priority=True, show=False),
        Binding("ctrl+c", "interrupt", show=False, priority=True),
        Binding("ctrl+d", "eof", show=False, priority=True),
        Binding("pageup", "page(1)", show=False, priority=True),
        Binding("pagedown", "page(-1)", show=False, priority=True),
        Binding("shift+pageup", "scroll_log(1)", show=False, priority=True),
        Binding("shift+pagedown", "scroll_log(-1)", show=False, priority=True),
        Binding("alt+end,ctrl+end", "bottom", show=False, priority=True),
        Binding("ctrl+n,alt+right", "step(1)", show=False, priority=True),
        Binding("ctrl+p,alt+left", "step(-1)", show=False, priority=True),
        Binding("alt+a", "next_active", show=False, priority=True),
        Binding("f2", "toggle_members", show=False, priority=True),
        *(Binding(f"alt+{n}", f"buffer({n})", show=False, priority=True) for n in range(1, 10)),
    ]

    def __init__(
        self,
        client: Client,
        session: Session,
        runner: ChatApp,
        *,
        room: str | None = None,
        registry: CommandRegistry | None = None,
        capacity: int = DEFAULT_CAPACITY,
        page: int = PAGE,
    ) -> None:
        super().__init__()
        self._client = client
        self.session = session
        self.me = session.username
        self.runner = runner
        self.registry = registry or default_registry()
        self.page = page
        self._buffers = BufferList(self.me, capacity=capacity)
        self.renderer = LineRenderer(self.me)
        self.completer = Completer()
        self.initial_room = room
        self.connection = "connected"
        self.loaded = asyncio.Event()
        self._focused = True
        self._commands: asyncio.Queue[str] = asyncio.Queue()
        self._marking: dict[tuple[BufferKind, str], int] = {}
        self._marker_tasks: set[asyncio.Task[None]] = set()
        self._ending = False
        #: every room on the server (for completion), from ``rooms`` at login and events
        self.known_rooms: list[str] = []
        self._grown = 0
        #: commands running in the background (``CommandSpec.background``)
        self._background: set[asyncio.Task[None]] = set()
        #: file offers and transfers (the line mode's commands, shown in buffers)
        self.transfers = TuiTransfers(self, lambda: client.files)
        runner.files.display = self.transfers
        #: /upload and /download (files in chat): progress lines and the status bar
        self.jobs = TuiJobs(self, changed=self._bars)
        runner.server_files.display = self.jobs
        #: status-bar items after the connection state (file transfers, uploads...)
        self.status_items: list[Callable[[], Text | None]] = [
            self.transfers.indicator,
            self.jobs.indicator,
        ]
        runner.interactive = True
        runner.ask = None
        runner._out = self._runner_out
        runner._err = self._runner_err

    # ------------------------------------------------------------------ CommandHost

    @property
    def client(self) -> Client:
        return self._client

    @property
    def buffers(self) -> BufferList:
        return self._buffers

    @property
    def current(self) -> Buffer:
        return self._buffers.current

    def notice(self, text: str, *, error: bool = False, buffer: Buffer | None = None) -> Entry:
        buf = buffer or self.current
        entry = buf.note(text, time.time(), EntryKind.ERROR if error else EntryKind.NOTICE)
        self._changed(buf)
        return entry

    def rewrite(self, entry: Entry, text: str, *, buffer: Buffer | None = None) -> None:
        if buffer is not None:
            buffer.rewrite(entry, text)
            self._changed(buffer)
            return
        for buf in self._buffers:
            if entry in buf.entries[-1000:]:
                buf.rewrite(entry, text)
                self._changed(buf)
                return

    @property
    def output_buffer(self) -> Buffer:
        """The buffer the running command was typed in (if still open), else the current."""
        buf = _OUTPUT.get()
        if buf is not None and self._buffers.find(buf.target) is buf:
            return buf
        return self.current

    def toast(self, text: str, *, title: str) -> None:
        self.notify(clean(text)[:200], title=clean(title), markup=False)

    def _runner_out(self, line: str) -> None:
        self.notice(line[2:] if line.startswith("* ") else line, buffer=self.output_buffer)

    def _runner_err(self, line: str) -> None:
        text = line[2:] if line.startswith("! ") else line
        self.notice(text, error=True, buffer=self.output_buffer)

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield TitleBar(id="title")
        with Horizontal(id="main"):
            yield BufferListView(self._buffers, id="buffers")
            with Vertical(id="centre"):
                yield MessageView(self.renderer, id="log")
            yield MemberList(id="members")
        yield StatusBar(id="status")
        yield ChatInput(id="input")

    @property
    def log_view(self) -> MessageView:
        return self.query_one("#log", MessageView)

    @property
    def input(self) -> ChatInput:
        return self.query_one("#input", ChatInput)

    def on_mount(self) -> None:
        self.input.focus()
        self._show_current()
        self.run_worker(self._start(), name="parlour-start", exit_on_error=False)
        self.run_worker(self._run_commands(), name="parlour-commands")
        self.run_worker(self._watch_closed(), name="parlour-closed")

    def _show_current(self, width: int | None = None) -> None:
        buf = self.current
        self.log_view.show(buf)
        members = self.query_one("#members", MemberList)
        members.show(buf)
        width = self.size.width if width is None else width
        members.display = (
            buf.target.kind is BufferKind.ROOM
            and not members.has_class("-hidden")
            and width >= NARROW_MEMBERS
        )
        self.query_one("#buffers", BufferListView).display = width >= NARROW_BUFFERS
        self._bars()

    def _changed(self, buf: Buffer) -> None:
        if not self.is_running:  # (not yet, or shutting down: the model is up to date)
            return
        if buf is self.current:
            self.log_view.refresh()
            self.query_one("#members", MemberList).refresh()
        self._bars()

    def _bars(self) -> None:
        if not self.is_running:
            return
        self.query_one("#buffers", BufferListView).refresh()
        self.query_one("#title", TitleBar).set(title_text(self.current))
        items = [item for make in self.status_items if (item := make()) is not None]
        self.query_one("#status", StatusBar).set(
            status_text(self._buffers, self.me, self.connection, items)
        )

    # ------------------------------------------------------------------ start-up

    async def _start(self) -> None:
        try:
            await self._load()
            settle_memory()
        except (ServerError, ConnectionLost) as exc:
            self.notice(f"could not load everything: {exc}", error=True)
        except ClientClosed:
            return
        finally:
            self.loaded.set()
        await self._consume()

    async def _load(self) -> None:
        missed = await load_missed(self._client, self.session, self._buffers, self.page)
        self.known_rooms = missed.rooms
        target = None
        if self.initial_room is not None:
            target = self._buffers.room(self.initial_room)
            if target is None:
                await self.open_room(self.initial_room)
                target = self.current
        self._switch(target or missed.first or self._buffers.server)

    # ------------------------------------------------------------------ events

    async def _consume(self) -> None:
        n = 0
        async for event in self._client.events():
            try:
                self.apply(event)
            except Exception as exc:  # an odd event must not stop the others
                self.notice(f"could not show a {event.name} event: {exc!r}", error=True)
            n += 1
            if n % _BURST == 0:
                await asyncio.sleep(0)

    def apply(self, event: Event) -> None:
        """Bring the model up to date with one server event."""
        if isinstance(event, FILE_EVENTS):
            self.transfers.show_event(event, self.runner.files)
            self._bars()  # (the offers waiting for you in the status bar)
            return
        buf = apply_event(self._buffers, event, time.time())
        if buf is None:
            return
        self._grown += 1
        if self._grown >= _SETTLE:
            self._grown = 0
            settle_memory()
        if isinstance(event, RoomCreatedEvent):
            self.known_rooms.append(event.room)
        elif isinstance(event, RoomRenamedEvent | RoomDeletedEvent):
            self.known_rooms = [r for r in self.known_rooms if name_key(r) != name_key(event.room)]
            if isinstance(event, RoomRenamedEvent):
                self.known_rooms.append(event.new_name)
        if isinstance(event, BroadcastEvent) and buf is not self.current:
            self.notify(
                clean(event.text)[:200],
                title=f"broadcast from {clean(event.sender)}",
                markup=False,  # user text: shown as typed, never as markup
            )
        self._changed(buf)

    def on_connection_state(self, state: ConnectionState, detail: str) -> None:
        """The client's ``on_state`` callback."""
        if state is ConnectionState.CONNECTED:
            self.connection = "connected"
            if self._client.reconnects > 0:
                self.notice("reconnected (what you missed follows)", buffer=self._buffers.server)
        elif state is ConnectionState.RECONNECTING:
            # detail: "attempt 3 in 1.6s" or "rate_limited: retry in 2s"
            self.connection = f"reconnecting… ({detail})" if detail else "reconnecting…"
            if detail.startswith("attempt 1 "):
                self.notice(
                    "connection lost, reconnecting… (what you type is sent once back)",
                    error=True,
                )
        elif state is ConnectionState.DISCONNECTED:
            self.connection = "disconnected"
        else:
            self.connection = "closed"
        self._bars()

    async def _watch_closed(self) -> None:
        reason = await self._client.wait_closed()
        if not self._ending:
            self._ending = True
            self.exit(EXIT_ENDED, message=f"disconnected: {reason}")

    # ------------------------------------------------------------------ the view

    @on(MessageView.Shown)
    def _shown(self, message: MessageView.Shown) -> None:
        buf = message.buffer
        if message.need_older:
            self._load_older(buf)
        if (
            buf is self.current
            and self._focused
            and message.newest is not None
            and message.newest > buf.read_seq
            and buf.target.kind is not BufferKind.SERVER
        ):
            buf.mark_read(message.newest)
            self._send_mark(buf, message.newest)
        self._bars()

    def _send_mark(self, buf: Buffer, seq: int) -> None:
        key = buf.target.key
        pending = self._marking.get(key)
        self._marking[key] = max(seq, pending or 0)
        if pending is not None:
            return  # the running task sends the newest position next
        task = asyncio.get_running_loop().create_task(self._mark_loop(buf))
        self._marker_tasks.add(task)
        task.add_done_callback(self._marker_tasks.discard)

    async def _mark_loop(self, buf: Buffer) -> None:
        key = buf.target.key
        sent = 0
        try:
            while (seq := self._marking.get(key, 0)) > sent:
                target = buf.target
                room = target.name if target.kind is BufferKind.ROOM else None
                peer = target.name if target.kind is BufferKind.DM else None
                with contextlib.suppress(ServerError, ProtocolError, ConnectionLost):
                    await self._client.mark_read(seq, room, peer=peer)
                sent = seq
        except ClientClosed:
            pass
        finally:
            self._marking.pop(key, None)

    def _load_older(self, buf: Buffer) -> None:
        if buf.loading_older or not buf.has_older or buf.target.kind is BufferKind.SERVER:
            return
        buf.loading_older = True
        self.run_worker(self._older(buf), group="older", exit_on_error=False)

    async def _older(self, buf: Buffer) -> None:
        target = buf.target
        try:
            if target.kind is BufferKind.ROOM:
                page = await self._client.history(
                    target.name, before=buf.first_seq, limit=self.page
                )
            else:
                page = await self._client.history(
                    peer=target.name, before=buf.first_seq, limit=self.page
                )
        except (ServerError, ProtocolError, ConnectionLost) as exc:
            buf.loading_older = False
            buf.has_older = False
            buf.note(f"could not load older messages: {exc}", time.time(), EntryKind.ERROR)
        except ClientClosed:
            buf.loading_older = False
            return
        else:
            buf.add_older(page.messages, page.has_more)
            settle_memory()
        self._changed(buf)

    def on_unmount(self) -> None:
        self.transfers.stop()  # transfers end with the client; their lines with the screen
        self.jobs.cancel_all()  # (uploads and downloads resume when run again)
        for task in self._background:
            task.cancel()

    def on_app_focus(self, event: events.AppFocus) -> None:
        self._focused = True
        self.log_view.refresh()

    def on_app_blur(self, event: events.AppBlur) -> None:
        self._focused = False

    def on_resize(self, event: events.Resize) -> None:
        self._show_current(event.size.width)  # narrow terminals drop the side panels
        self.log_view.refresh()

    # ------------------------------------------------------------------ buffers

    def _switch(self, buf: Buffer) -> None:
        self._buffers.switch(buf)
        self._show_current()

    def switch_to(self, name: str) -> bool:
        name = name.strip()
        buf: Buffer | None
        if name.isdigit():
            buf = self._buffers.by_number(int(name))
        elif name.startswith("@"):
            buf = self._buffers.dm(name[1:])
        else:
            buf = self._buffers.room(name.lstrip("#")) or self._buffers.dm(name)
            if buf is None and name.lower() == "server":
                buf = self._buffers.server
        if buf is None:
            return False
        self._switch(buf)
        return True

    @on(BufferListView.Picked)
    def _picked(self, message: BufferListView.Picked) -> None:
        self.switch_to(str(message.number))

    def action_step(self, delta: int) -> None:
        self._switch(self._buffers.step(delta))

    def action_buffer(self, number: int) -> None:
        self.switch_to(str(number))

    def action_next_active(self) -> None:
        buf = self._buffers.next_active()
        if buf is not None:
            self._switch(buf)

    def action_page(self, direction: int) -> None:
        self.log_view.page(direction)
        self._bars()

    def action_scroll_log(self, direction: int) -> None:
        self.log_view.scroll_lines(direction)
        self._bars()

    def action_bottom(self) -> None:
        self.log_view.to_bottom()
        self._bars()

    def action_toggle_members(self) -> None:
        self.toggle_members()

    def toggle_members(self) -> None:
        members = self.query_one("#members", MemberList)
        members.toggle_class("-hidden")
        self._show_current()

    async def open_room(self, room: str) -> None:
        buf = self._buffers.room(room)
        if buf is not None and not buf.parted:
            self._switch(buf)
            return
        result = await self._client.join(room, limit=self.page)
        buf = fill_room(self._buffers, result)
        buf.note(
            f"you are in #{result.room}: {len(result.online)} online, "
            f"{result.members_total} members",
            time.time(),
        )
        self._switch(buf)

    async def open_dm(self, peer: str, text: str | None = None) -> None:
        try:
            peer = normalize_name(peer)
        except InvalidName as exc:
            self.notice(f"that user name {exc}", error=True)
            return
        if name_key(peer) == name_key(self.me):
            self.notice("you cannot message yourself", error=True)
            return
        buf = self._buffers.dm(peer)
        if buf is None:
            page = await self._client.history(peer=peer, limit=self.page)
            buf = self._buffers.open(Target(BufferKind.DM, peer))
            buf.load_newest(page.messages, page.has_more)
            if not page.messages:
                buf.has_older = False
        self._switch(buf)
        if text:
            await self.say(text)

    async def leave_room(self, room: str | None) -> None:
        if room is None:
            if self.current.target.kind is not BufferKind.ROOM or self.current.parted:
                self.notice("this is not a room you are in: /leave <room>", error=True)
                return
            room = self.current.target.name
        await self._client.leave(room)
        buf = self._buffers.room(room)
        if buf is not None:
            buf.parted = True
            buf.note(f"you left #{room} (/close closes this buffer)", time.time())
            self._changed(buf)
        else:
            self.notice(f"you left #{room}")

    def close_buffer(self, name: str | None) -> None:
        buf = self.current
        if name is not None:
            found = None
            if name.startswith("@"):
                found = self._buffers.dm(name[1:])
            else:
                found = self._buffers.room(name.lstrip("#")) or self._buffers.dm(name)
            if found is None:
                self.notice(f"no buffer {name}", error=True)
                return
            buf = found
        if buf.target.kind is BufferKind.SERVER:
            self.notice("the server buffer stays open", error=True)
            return
        if buf.target.kind is BufferKind.ROOM and not buf.parted:
            self.notice(f"you are in #{buf.target.name}: /leave it first", error=True)
            return
        self._buffers.close(buf)
        self._show_current()

    def show_help(self, topic: str | None) -> None:
        if topic:
            lines = self.registry.help(topic)
            if lines is None:
                self.notice(f"no command /{topic}; /help lists them", error=True)
                return
            for line in lines:
                self.notice(line)
            return
        self.notice("text: send to this buffer (a room, or the person of a DM buffer)")
        self.notice("@user text: direct message; //text: send text starting with /")
        for spec in self.registry.specs():
            self.notice(f"{spec.usage:<34} {spec.summary}")
        self.notice("/help <command> explains one command. Keys:")
        for key, what in _KEYS:
            self.notice(f"{key:<20} {what}")

    async def change_password(self, args: str) -> None:
        if args.strip():
            await self.legacy(f"/passwd {args.strip()}")
            return
        answer = await self.push_screen_wait(PasswordScreen())
        if answer is None:
            self.notice("password not changed")
            return
        try:
            await self._client.passwd(*answer)
        except ServerError as exc:
            self.notice(f"{exc.message} [{exc.code}]", error=True)
        else:
            self.notice("password changed")

    async def server_file(self, line: str) -> None:
        """``/upload`` and ``/download``: into / from the current buffer's room or DM."""
        buf = self.current
        cmd = c.parse_line(line)
        if isinstance(cmd, c.Invalid):
            self.notice(cmd.message, error=True)
            return
        if not isinstance(cmd, c.SERVER_FILE_COMMANDS):
            return
        room = peer = None
        if isinstance(cmd, c.Upload) and cmd.to is None and cmd.room is None:
            if buf.target.kind is BufferKind.ROOM and not buf.parted:
                room = buf.target.name
            elif buf.target.kind is BufferKind.DM:
                peer = buf.target.name
            else:
                self.notice("upload into which room? /upload in a room or DM buffer", error=True)
                return
        if isinstance(cmd, c.Download) and cmd.file_id not in self.runner.server_files.seen:
            found = self.find_attachment(cmd.file_id)
            if found is not None:
                self.runner.server_files.remember([{"attachment": found}])
        token = _OUTPUT.set(buf)
        try:
            await self._guard(lambda: self.runner.server_files.execute(cmd, room=room, peer=peer))
        finally:
            _OUTPUT.reset(token)

    @staticmethod
    def _file_ids(buf: Buffer, limit: int = 50) -> list[str]:
        """Ids of the files in this buffer's messages, newest first (Tab after /download)."""
        ids: list[str] = []
        for entry in itertools.islice(reversed(buf.entries), 5000):
            att = entry.attachment
            if att is not None and att.id not in ids:
                ids.append(att.id)
                if len(ids) >= limit:
                    break
        return ids

    def find_attachment(self, file_id: str) -> Attachment | None:
        """The attachment with this id in a loaded message (current buffer first)."""
        for buf in (self.current, *self._buffers):
            for entry in reversed(buf.entries):
                att: Attachment | None = entry.attachment
                if att is not None and att.id == file_id:
                    return att
        return None

    def quit(self) -> None:
        self._ending = True
        self.exit(EXIT_OK)

    def action_quit_chat(self) -> None:
        self.quit()

    def action_interrupt(self) -> None:
        if self.input.text:
            self.input.load_text("")
        elif self.jobs.cancel_all():
            self._bars()
        else:
            self.notify("Ctrl+Q or /quit leaves the chat")

    def action_eof(self) -> None:
        if not self.input.text:
            self.quit()
        else:
            self.input.action_delete_right()

    # ------------------------------------------------------------------ input

    @on(ChatInput.Complete)
    def _complete(self, message: ChatInput.Complete) -> None:
        box = self.input
        buf = self.current
        users = list(buf.speakers())
        members = sorted(buf.members.values(), key=str.casefold)
        users += [m for m in members if not buf.is_mine(m)]
        if buf.target.kind is BufferKind.DM:
            users.insert(0, buf.target.name)
        for other in self._buffers:
            if other.target.kind is BufferKind.DM:
                users.append(other.target.name)
        result = self.completer.complete(
            box.text,
            box.cursor_offset,
            commands=self.registry.names(),
            rooms=self._buffers.rooms() + self.known_rooms,
            users=users,
            arguments={**self.transfers.completions(), "download": self._file_ids(buf)},
            backwards=message.backwards,
        )
        if result is not None:
            box.set_text(result.text, result.cursor)

    @on(ChatInput.Submitted)
    def _submitted(self, message: ChatInput.Submitted) -> None:
        self.completer.reset()
        self.log_view.to_bottom()  # what you send, and a command's output, is at the bottom
        self._commands.put_nowait(message.text)

    async def _run_commands(self) -> None:
        """Input runs one line at a time, in order (a message waits for the one before)."""
        while True:
            line = await self._commands.get()
            await self.loaded.wait()
            try:
                await self.run_input(line)
            except ClientClosed:
                return

    async def run_input(self, text: str) -> None:
        if text.startswith("/") and not text.startswith("//"):
            head = text[1:].split(maxsplit=1)
            name = head[0] if head else ""
            args = head[1] if len(head) > 1 else ""
            spec = self.registry.get(name)
            if spec is None:
                self.notice(f"unknown command /{name}; /help lists them", error=True)
                return
            if spec.background:
                self._spawn(self._guard(lambda: spec.run(self, args, text)))
            else:
                await self._guard(lambda: spec.run(self, args, text))
            return
        if text.startswith("@"):
            await self.legacy(text)
            return
        await self._guard(lambda: self.say(text[1:] if text.startswith("//") else text))

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            with contextlib.suppress(ClientClosed):
                await work

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def say(self, text: str) -> None:
        buf = self.current
        if buf.target.kind is BufferKind.SERVER:
            self.notice("this is the server buffer: /join a room or /query a user", error=True)
            return
        if buf.parted:
            self.notice("you are not in this room any more: /join it again", error=True)
            return
        buf.view.to_bottom()
        if buf.target.kind is BufferKind.ROOM:
            self.runner.room = buf.target.name
            await self.runner.execute(c.Say(text))
        else:
            await self.runner.execute(c.Direct(buf.target.name, text))
        self._changed(buf)

    async def legacy(self, line: str) -> None:
        buf = self.current
        cmd = c.parse_line(line)
        dm = buf.target.kind is BufferKind.DM
        if dm and isinstance(cmd, c.Edit | c.Delete) and cmd.peer is None:
            cmd = (
                c.Edit(cmd.seq, cmd.text, buf.target.name)
                if isinstance(cmd, c.Edit)
                else c.Delete(cmd.seq, buf.target.name)
            )
        if not isinstance(cmd, c.FILE_COMMANDS):  # (they may run beside a message being sent)
            room = (
                buf.target.name if buf.target.kind is BufferKind.ROOM and not buf.parted else None
            )
            self.runner.room = room
        token = _OUTPUT.set(buf)
        try:
            await self._guard(lambda: self.runner.execute(cmd))
        finally:
            _OUTPUT.reset(token)

    async def _guard(self, run: Callable[[], Awaitable[None]]) -> None:
        try:
            await run()
        except (ServerError, ProtocolError) as exc:
            self._runner_err(f"{exc.message} [{exc.code}]")
        except ConnectionLost as exc:
            self._runner_err(f"not done, the connection dropped ({exc}); try again")
        except ClientClosed:
            raise
        except Exception as exc:  # a bug: say so, keep the session
            self._runner_err(f"unexpected error (please report it): {exc!r}")
