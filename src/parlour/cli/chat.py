"""``parlour chat``: the line-mode terminal client (interactive or piped).

Interactive: prompts to log in or sign up, then reads lines while events print as they arrive.
Piped (stdin is not a terminal): needs ``--user`` and ``PARLOUR_PASSWORD``; runs every line in
order, waiting for each reply, prints what arrived, and exits at end of input::

    printf '/join general\\nhello\\n' | PARLOUR_PASSWORD=... parlour chat --user alice

Exit status: 0 normally, 1 when logging in fails, 2 when the server cannot be reached or the
arguments are wrong, 3 when the server ended the session (kick, ban) or reconnecting gave up,
4 when input was piped and at least one line failed (an error reply or bad usage).
Chat output and events go to stdout; errors and connection notices go to stderr.
Everything printed passes through :func:`parlour.cli._render.clean` (no terminal control
sequences from other users).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import io
import json
import os
import re
import ssl
import sys
import termios
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.text import Text

from parlour import __version__
from parlour.cli import _commands as c
from parlour.cli._render import (
    clean,
    format_time,
    render_audit,
    render_bans,
    render_event,
    render_join,
    render_record,
    render_rooms,
    render_session,
    render_who,
)
from parlour.cli._transfers import FileCommands, LineDisplay
from parlour.cli._uploads import LineJobs, ServerFileCommands
from parlour.cli._vocabulary import Vocabulary
from parlour.client import (
    DEFAULT_PORT,
    FILE_EVENTS,
    Ack,
    Backoff,
    Client,
    ClientClosed,
    ConnectionLost,
    ConnectionState,
    ServerError,
    Session,
    new_client_id,
)
from parlour.protocol import (
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_TEXT,
    NAME_RULE,
    Event,
    EventName,
    InvalidName,
    MessageRecord,
    ProtocolError,
    name_key,
    normalize_name,
)

if TYPE_CHECKING:
    from prompt_toolkit.completion import Completer

__all__ = ["ChatApp", "chat"]

EXIT_OK, EXIT_LOGIN, EXIT_CONNECT, EXIT_ENDED, EXIT_FAILED = 0, 1, 2, 3, 4
#: how parlour.client words a disconnect the server meant for good: "<reason> (<code>)"
_FINAL = ("(kicked)", "(banned)", "(logged_out)")
#: rate-limited messages are retried this many times, waiting at most this long each time
_RATE_RETRIES, _RATE_MAX_WAIT = 20, 5.0


def _checked_name(name: str) -> tuple[str | None, str]:
    """The normalised user name, or None and what is wrong with it."""
    try:
        return normalize_name(name), ""
    except InvalidName as exc:
        return None, f"! that user name {exc} (a user name is {NAME_RULE})"


#: room for the other fields of a send/dm frame next to the text
_FRAME_OVERHEAD = 256
#: longest input line kept (a message is at most the server's max_text, 4000 by default)
MAX_LINE = 65536
_CODE_SUFFIX = re.compile(r" \([a-z_]+\)$")


class _LineReader:
    """Reads stdin lines in a daemon thread, one per request (so the thread never holds the
    terminal while a hidden password prompt runs, and never blocks interpreter exit)."""

    def __init__(self, stream: IO[str], loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop
        self._want = threading.Semaphore(0)
        self._future: asyncio.Future[str | None] | None = None
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="parlour-stdin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._want.acquire()
            line: str | None
            try:
                line = self._read_bounded() or None
            except (OSError, ValueError):
                line = None
            self._loop.call_soon_threadsafe(self._deliver, line)
            if line is None:
                return

    def _read_bounded(self) -> str:
        """One line of at most MAX_LINE characters: the rest of a longer one is dropped (the
        server refuses such a message as too long anyway; memory stays bounded)."""
        line = self._stream.readline(MAX_LINE)
        if len(line) == MAX_LINE and not line.endswith("\n"):
            while (rest := self._stream.readline(MAX_LINE)) and not rest.endswith("\n"):
                pass
        return line

    def _deliver(self, line: str | None) -> None:
        fut = self._future
        if fut is not None and not fut.done():
            fut.set_result(line)

    async def readline(self) -> str | None:
        """The next line, or ``None`` at end of input."""
        if self._eof:
            return None
        self._future = self._loop.create_future()
        self._want.release()
        line = await self._future
        self._eof = line is None
        return line


class _PromptReader:
    """Interactive line mode on a terminal: prompt_toolkit's line editing (arrows, Home/End,
    Ctrl+W, ...), history (Up/Down, Ctrl+R) and a prompt naming the current room. Run inside
    ``patch_stdout``: lines printed while the user types appear above the input line, which is
    redrawn intact. A bracketed paste keeps its lines: Enter sends them as one message."""

    def __init__(self, prompt: Callable[[], str], completer: Completer | None = None) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import InMemoryHistory

        self._prompt = prompt
        self._session: PromptSession[str] = PromptSession(
            history=InMemoryHistory(), completer=completer, complete_while_typing=False
        )
        self._eof = False

    async def readline(self) -> str | None:
        """The next line, or ``None`` at Ctrl+D (or Ctrl+C)."""
        if self._eof:
            return None
        try:
            text = await self._session.prompt_async(self._prompt)
        except (EOFError, KeyboardInterrupt):
            self._eof = True
            return None
        return text[:MAX_LINE]


def _can_edit(stdin: IO[str], stdout: IO[str]) -> bool:
    """prompt_toolkit needs a real terminal at both ends (not TERM=dumb)."""
    if os.environ.get("TERM", "") in ("", "dumb", "unknown"):
        return False
    try:
        return stdin.isatty() and stdout.isatty()
    except (ValueError, OSError):
        return False


async def _in_daemon_thread(func: Callable[[str, bool], str], prompt: str, hidden: bool) -> str:
    """Run a blocking prompt in a daemon thread (``asyncio.to_thread`` would keep the process
    alive after Ctrl+C until the user pressed Enter)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()

    def settle(answer: str | None, error: BaseException | None) -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(answer or "")

    def run() -> None:
        try:
            answer = func(prompt, hidden)
        except BaseException as exc:  # EOFError at end of input, ...
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, answer, None)

    threading.Thread(target=run, name="parlour-prompt", daemon=True).start()
    return await fut


class ChatApp:
    """The terminal client's logic over a :class:`Client` (I/O through ``out``/``err``)."""

    def __init__(
        self,
        client: Client,
        *,
        interactive: bool,
        out: Callable[[str], None],
        err: Callable[[str], None],
        ask: Callable[[str, bool], str] | None = None,
    ) -> None:
        self.client = client
        self.interactive = interactive
        self._out = out
        self._err = err
        self.ask = ask  # (prompt, hidden) -> answer; interactive only
        self.me: str | None = None
        self.room: str | None = None
        #: rooms and users seen, for Tab completion on a terminal (parlour.cli._completion)
        self.vocabulary = Vocabulary()
        #: lines that failed (error reply, bad usage); piped runs exit 4 if any
        self.failures = 0
        #: your last acknowledged message per room / DM peer (for ``/edit last``)
        self.last_room_seq: dict[str, int] = {}
        self.last_dm_seq: dict[str, int] = {}
        #: /send-file, /accept, /decline, /cancel, /transfers (parlour.cli._transfers)
        self.files = FileCommands(
            client,
            out=self.out,
            fail=self.fail,
            display=LineDisplay(
                interactive=interactive, out=self.out, err=self.err, fail=self.fail
            ),
        )
        #: /upload and /download: files in chat, through the server (parlour.cli._uploads)
        self.server_files = ServerFileCommands(
            client, out=self.out, fail=self.fail, display=LineJobs(interactive=interactive)
        )
        #: when the full-screen client runs, connection changes go to it instead
        self.tui_sink: Callable[[ConnectionState, str], None] | None = None

    # ------------------------------------------------------------------ output

    def out(self, text: str) -> None:
        """Print to stdout, one call per line, every line made safe for a terminal."""
        for line in text.split("\n"):
            self._out(clean(line))

    def err(self, text: str) -> None:
        for line in text.split("\n"):
            self._err(clean(line))

    def fail(self, text: str) -> None:
        self.failures += 1
        self.err(text)

    # ------------------------------------------------------------------ login

    async def authenticate(self, username: str | None, password: str | None, signup: bool) -> bool:
        try:
            return await self._authenticate(username, password, signup)
        except EOFError:  # Ctrl+D at a prompt
            self.err("")
            return False

    async def _authenticate(self, username: str | None, password: str | None, signup: bool) -> bool:
        if username is not None:
            username, problem = _checked_name(username)
            if username is None:
                self.err(problem)
                if not self.interactive:
                    return False
        attempts = 3 if self.interactive else 1
        for _ in range(attempts):
            if username is None or password is None:
                if self.ask is None:
                    self.err(
                        "! --user and PARLOUR_PASSWORD are needed when stdin is not a terminal"
                    )
                    return False
                if username is None:
                    choice = await _in_daemon_thread(self.ask, "Log in or sign up? [L/s] ", False)
                    signup = choice.strip().lower().startswith("s")
                    username = (await _in_daemon_thread(self.ask, "User name: ", False)).strip()
                username, problem = _checked_name(username)
                if username is None:
                    self.err(problem)
                    continue
                if password is None:
                    password = await _in_daemon_thread(self.ask, "Password: ", True)
                    if signup:
                        again = await _in_daemon_thread(self.ask, "Password (again): ", True)
                        if again != password:
                            self.err("! the passwords differ")
                            password = None
                            continue
            try:
                if signup:
                    session = await self.client.signup(username, password)
                else:
                    session = await self.client.login(username, password)
            except ServerError as exc:
                self.err(f"! {'sign-up' if signup else 'login'} failed: {exc.message}")
                if exc.code in ("banned", "locked_out", "already_logged_in"):
                    return False
                password = None
                if exc.code in ("username_taken", "bad_credentials", "invalid_field"):
                    username = None if self.interactive else username
                continue
            except ProtocolError as exc:  # refused before sending (e.g. a huge password)
                self.err(f"! {exc.message}")
                password = None
                continue
            except (ClientClosed, ConnectionLost) as exc:
                self.err(f"! login failed: {exc}")
                return False
            self._logged_in(session)
            return True
        return False

    def _logged_in(self, session: Session) -> None:
        self.me = session.username
        self.vocabulary.saw_rooms(*session.rooms)
        if self.room is None and session.rooms:
            self.room = session.rooms[0]
        self.out(render_session(session))
        if self.room is not None:
            self.out(f"* talking in #{self.room} (/join another room to switch)")
        if self.interactive:
            self.out("* type a message, @user text to DM, /help for commands")

    # ------------------------------------------------------------------ events

    def show_event(self, event: Event) -> None:
        try:
            self._track(event)
            self._remember_names(event)
            if isinstance(event, FILE_EVENTS):
                self.files.remember(event)
                line = self.files.render_event(event)
            else:
                if event.name in (EventName.MESSAGE, EventName.DM):
                    self.server_files.remember([event.fields])
                line = render_event(event, self.me)
        except Exception as exc:  # an odd event must not stop the printing of later ones
            line = f"! could not show a {event.name} event: {type(exc).__name__}"
        if line is not None:
            self.out(line)

    def _remember_names(self, event: Event) -> None:
        """The rooms and people an event names, for Tab completion."""
        fields = event.fields
        if event.name is EventName.ROOM_DELETED:
            self.vocabulary.forget_room(str(fields.get("room", "")))
            return
        for key in ("room", "new_name"):
            value = fields.get(key)
            if isinstance(value, str):
                self.vocabulary.saw_rooms(value)
        for key in ("user", "peer", "from"):
            value = fields.get(key)
            if isinstance(value, str):
                self.vocabulary.saw_users(value)

    def _track(self, event: Event) -> None:
        """Keep the current room right when the server changes it under us."""
        name, room = event.name, event.fields.get("room")
        if room is None or room != self.room:
            return
        if name in (EventName.KICKED, EventName.ROOM_DELETED):
            self.room = None
        elif name is EventName.ROOM_RENAMED:
            self.room = str(event.fields.get("new_name"))

    async def print_events(self) -> None:
        async for event in self.client.events():
            self.show_event(event)

    def on_state(self, state: ConnectionState, detail: str) -> None:
        if self.tui_sink is not None:
            self.tui_sink(state, detail)
            return
        if state is ConnectionState.DISCONNECTED:
            if not detail.endswith(_FINAL):  # kicked/banned: the event and exit line say it
                self.err(f"! connection to the server lost: {_CODE_SUFFIX.sub('', detail)}")
        elif state is ConnectionState.RECONNECTING and detail.startswith("attempt 1 "):
            self.err("! reconnecting… (what you type is sent once the server is back)")
        elif state is ConnectionState.CONNECTED and self.client.reconnects > 0:
            self.err("! reconnected (messages you missed are shown too)")

    # ------------------------------------------------------------------ commands

    async def run_line(self, line: str) -> bool:
        """Execute one input line; False when the user asked to quit."""
        cmd = c.parse_line(line)
        if isinstance(cmd, c.Quit):
            return False
        try:
            await self.execute(cmd)
        except (ServerError, ProtocolError) as exc:  # ProtocolError: refused before sending
            self.fail(f"! {exc.message} [{exc.code}]")
        except ConnectionLost as exc:
            self.fail(f"! not done, the connection dropped ({exc}); try again")
        except ClientClosed:
            raise
        except Exception as exc:  # a bug: say so, keep the session
            self.fail(f"! unexpected error (please report it): {type(exc).__name__}: {exc}")
        return True

    async def execute(self, cmd: c.Command) -> None:
        client, me = self.client, self.me
        if isinstance(cmd, c.Empty):
            return
        if isinstance(cmd, c.Invalid):
            self.fail(f"! {cmd.message}")
        elif isinstance(cmd, c.Help):
            self.help(cmd.topic)
        elif isinstance(cmd, c.FILE_COMMANDS):
            await self.files.execute(cmd)
        elif isinstance(cmd, c.SERVER_FILE_COMMANDS):
            await self.server_files.execute(cmd, room=self.room)
        elif isinstance(cmd, c.Say):
            if self.room is None:
                self.fail("! you are not in a room: /join <room> first (/rooms lists them)")
                return
            if self._too_long(cmd.text):
                return
            self._offline_notice()
            here, cid = self.room, new_client_id()
            ack = await self._paced(lambda: client.send(here, cmd.text, client_id=cid))
            self.last_room_seq[ack.room or here] = ack.seq
        elif isinstance(cmd, c.Direct):
            if self._too_long(cmd.text):
                return
            self._offline_notice()
            cid = new_client_id()  # shown by the `dm` event (on all your sessions)
            ack = await self._paced(lambda: client.dm(cmd.to, cmd.text, client_id=cid))
            self.last_dm_seq[ack.peer or cmd.to] = ack.seq
        elif isinstance(cmd, c.Join):
            result = await client.join(cmd.room)
            self.room = result.room
            self.server_files.remember(result.messages)
            for out in render_join(result, me):
                self.out(out)
        elif isinstance(cmd, c.Leave):
            await self.leave(cmd.room or self.room)
        elif isinstance(cmd, c.Rooms):
            for out in render_rooms(await client.rooms(), self.room):
                self.out(out)
        elif isinstance(cmd, c.Who):
            present = await client.who(cmd.room, cmd.since)
            if cmd.since is None:
                present = [u for u in present if u.online]
            for out in render_who(present):
                self.out(out)
        elif isinstance(cmd, c.History):
            room = cmd.room or self.room
            if room is None:
                self.fail("! which room? /history <room> [n]")
                return
            page = await client.history(room, limit=cmd.limit)
            self._page(page.messages, page.has_more, f"* no messages in #{room}")
        elif isinstance(cmd, c.DmHistory):
            page = await client.history(peer=cmd.peer, limit=cmd.limit)
            self._page(page.messages, page.has_more, f"* no direct messages with {cmd.peer}")
        elif isinstance(cmd, c.Since):
            ts = cmd.at if cmd.at is not None else time.time() - (cmd.ago or 0.0)
            page = await client.since(max(ts, 0.0))
            self._page(page.messages, page.has_more, "* nothing since then")
        elif isinstance(cmd, c.Edit | c.Delete):
            if isinstance(cmd, c.Edit) and self._too_long(cmd.text):
                return
            await self.change(cmd)
        elif isinstance(cmd, c.ToggleBlock):
            if cmd.block:
                await client.block(cmd.user)
                self.out(f"* you block {cmd.user}: you will not see their messages")
            else:
                await client.unblock(cmd.user)
                self.out(f"* you no longer block {cmd.user}")
        elif isinstance(cmd, c.Blocks):
            users = await client.blocks()
            self.out("* you block: " + (", ".join(users) if users else "nobody"))
        elif isinstance(cmd, c.Kick):
            res = await client.kick(cmd.user, cmd.room, cmd.reason)
            where = f" from #{res.room}" if res.room else ""
            self.out(f"* kicked {res.user}{where} ({res.sessions} session(s) told)")
        elif isinstance(cmd, c.Ban):
            ban = await client.ban(cmd.user, cmd.duration, cmd.reason)
            until = (
                format_time(ban.until, with_date=True, zone=True) if ban.until else "further notice"
            )
            reason = f": {ban.reason}" if ban.reason else ""
            self.out(f"* banned {ban.user} until {until}{reason}")
        elif isinstance(cmd, c.Unban):
            await client.unban(cmd.user)
            self.out(f"* unbanned {cmd.user}")
        elif isinstance(cmd, c.Bans):
            for out in render_bans(await client.bans()):
                self.out(out)
        elif isinstance(cmd, c.Audit):
            for out in render_audit(await client.audit(cmd.limit)):
                self.out(out)
        elif isinstance(cmd, c.Broadcast):
            if self._too_long(cmd.text):
                return
            n = await client.broadcast(cmd.text)
            self.out(f"* broadcast sent to {n} session(s)")
        # room changes: every online user (you too) gets the room_* event, which says it
        elif isinstance(cmd, c.RoomCreate):
            await client.room_create(cmd.room)
        elif isinstance(cmd, c.RoomRename):
            new = await client.room_rename(cmd.room, cmd.new_name)
            if self.room == cmd.room:
                self.room = new
        elif isinstance(cmd, c.RoomDelete):
            await client.room_delete(cmd.room)
            if self.room == cmd.room:
                self.room = None
        elif isinstance(cmd, c.Passwd):
            await self.passwd(cmd)

    def _too_long(self, text: str) -> bool:
        """Refuse here what the server would refuse: a frame over its limit would even cost
        the connection (and be resent after every reconnect)."""
        welcome = self.client.welcome
        limits = welcome.limits if welcome is not None else {}
        max_text = limits.get("max_text", DEFAULT_MAX_TEXT)
        max_frame = limits.get("max_frame", DEFAULT_MAX_FRAME)
        if len(text) > max_text:
            self.fail(f"! message too long: {len(text)} characters, the server allows {max_text}")
            return True
        if len(json.dumps(text)) + _FRAME_OVERHEAD > max_frame:
            self.fail(f"! message too long for one frame ({max_frame} bytes)")
            return True
        return False

    async def _paced(self, post: Callable[[], Awaitable[Ack]]) -> Ack:
        """Post a message; when the server's rate limit says "retry in N s", wait that long and
        send it again (same client id), so pasted or piped bursts arrive whole and in order."""
        for _ in range(_RATE_RETRIES):
            try:
                return await post()
            except ServerError as exc:
                wait = exc.extra.get("retry_after")
                if exc.code != "rate_limited" or not isinstance(wait, int | float):
                    raise
            await asyncio.sleep(min(max(float(wait), 0.01), _RATE_MAX_WAIT))
        return await post()

    def _offline_notice(self) -> None:
        if not self.client.connected and self.client.closed_reason is None:
            self.err("! not connected right now: this is sent when the server is back")

    def _page(self, messages: Sequence[MessageRecord], has_more: bool, empty: str) -> None:
        self.server_files.remember(messages)
        for rec in messages:
            self.out(render_record(rec, self.me, with_time=True))
        if not messages:
            self.out(empty)
        elif has_more:
            self.out("* (older messages exist: ask for more with a larger n)")

    async def leave(self, room: str | None) -> None:
        if room is None:
            self.fail("! you are not in a room")
            return
        await self.client.leave(room)
        self.out(f"* you left #{room}")
        if room == self.room:
            self.room = None
            joined = [r.name for r in await self.client.rooms() if r.joined]
            if joined:
                self.room = joined[0]
                self.out(f"* now talking in #{self.room}")
            else:
                self.out("* you are in no room now: /join <room> to talk")

    async def change(self, cmd: c.Edit | c.Delete) -> None:
        room = None if cmd.peer else self.room
        if cmd.peer is None and room is None:
            self.fail("! join a room first (or use @user for a DM)")
            return
        seq = cmd.seq
        if seq is None:
            seq = await self._last_own(room, cmd.peer)
            if seq is None:
                where = f"to {cmd.peer}" if cmd.peer else f"in #{room}"
                self.fail(f"! you have no recent message {where}; give its number")
                return
        # the change comes back as an event to all your sessions, this one included
        if isinstance(cmd, c.Edit):
            await self.client.edit(seq, cmd.text, room=room, peer=cmd.peer)
        else:
            await self.client.delete(seq, room=room, peer=cmd.peer)
            table, key = (self.last_dm_seq, cmd.peer) if cmd.peer else (self.last_room_seq, room)
            if key is not None and table.get(key) == seq:
                del table[key]  # "last" now means the one before: look it up again

    async def _last_own(self, room: str | None, peer: str | None) -> int | None:
        """Your latest message in the room / DM conversation: from this session's acks, else
        the newest page of history."""
        known = self.last_dm_seq.get(peer) if peer else self.last_room_seq.get(room or "")
        if known is not None:
            return known
        page = await self.client.history(room, peer=peer, limit=100)
        mine = [
            m.seq
            for m in page.messages
            if not m.deleted and self.me and name_key(m.sender) == name_key(self.me)
        ]
        return mine[-1] if mine else None

    async def passwd(self, cmd: c.Passwd) -> None:
        old, new = cmd.old, cmd.new
        if old is None or new is None:
            if self.ask is None:
                self.fail("! usage: /passwd <old> <new>")
                return
            try:
                old = await _in_daemon_thread(self.ask, "Old password: ", True)
                new = await _in_daemon_thread(self.ask, "New password: ", True)
                again = await _in_daemon_thread(self.ask, "New password (again): ", True)
            except EOFError:
                self.fail("! nothing changed")
                return
            if new != again:
                self.fail("! the passwords differ; nothing changed")
                return
        await self.client.passwd(old, new)
        self.out("* password changed")

    def help(self, topic: str | None) -> None:
        if topic:
            spec = c.COMMAND_HELP.get(topic.lower())
            if spec is None:
                self.fail(f"! no command /{topic}; /help lists them")
                return
            self.out(f"{spec[0]}  — {spec[1]}")
            return
        self.out("text                             send to the current room")
        self.out("@user text                       direct message (delivered later if offline)")
        self.out("//text                           send text that starts with /")
        for usage, text in c.COMMAND_HELP.values():
            self.out(f"{usage:<32} {text}")
        self.out("Messages end with their number, e.g. [12]: /edit 12 new text, /delete 12.")

    # ------------------------------------------------------------------ main loop

    async def loop(self, reader: _LineReader | _PromptReader) -> int:
        printer = asyncio.create_task(self.print_events(), name="parlour-chat-printer")
        ended = asyncio.create_task(self.client.wait_closed(), name="parlour-chat-ended")
        try:
            while True:
                line_task = asyncio.ensure_future(reader.readline())
                await asyncio.wait({line_task, ended}, return_when=asyncio.FIRST_COMPLETED)
                if not line_task.done():
                    line_task.cancel()
                    return self._ended(ended.result())
                line = line_task.result()
                if line is None:
                    break
                try:
                    if not await self.run_line(line):
                        break
                except ClientClosed:
                    await asyncio.wait({ended}, timeout=5)
                    reason = ended.result() if ended.done() else "connection closed"
                    return self._ended(reason)
            if not self.interactive:
                # flush: events pushed before this round trip are printed before we exit
                try:
                    await asyncio.wait_for(self.client.ping(), 10)
                except (ServerError, ConnectionLost, ClientClosed, TimeoutError):
                    # the connection ended under us: was it the server ending the session?
                    await asyncio.wait({ended}, timeout=2)
            if ended.done():
                return self._ended(ended.result())
            return EXIT_FAILED if self.failures and not self.interactive else EXIT_OK
        finally:
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer
            while (event := self.client.next_event_nowait()) is not None:
                self.show_event(event)
            ended.cancel()
            await self.files.close()
            await self.server_files.close()

    def _ended(self, reason: str) -> int:
        again = "; run parlour chat again to come back" if reason.endswith("(kicked)") else ""
        self.err(f"! disconnected: {reason}{again}")
        return EXIT_ENDED


def _ssl_context(tls: bool, ca: str | None, insecure: bool) -> ssl.SSLContext | None:
    if not (tls or ca or insecure):
        return None
    context = ssl.create_default_context(cafile=ca)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _explain(exc: BaseException, context: ssl.SSLContext | None) -> str:
    """A connection failure in words a user can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"{exc.verify_message or exc}; for a self-signed certificate pass --tls-ca FILE "
            "(or --tls-insecure for a test)"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc}); does the server use TLS?"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused; is `parlour serve` running there?"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if context is None and "during hello" in str(exc):
        return f"{exc} (if the server uses TLS, add --tls)"
    return str(exc) or type(exc).__name__


def _styled(line: str) -> str:
    """A little colour by line kind (lines are already clean: no escapes of their own)."""
    if line.startswith("!"):
        return click.style(line, fg="yellow")
    if line.startswith("***"):
        return click.style(line, bold=True)
    if line.startswith("[DM"):
        return click.style(line, fg="magenta")
    if line.startswith("* "):
        return click.style(line, dim=True)
    return line


def _echo(line: str, *, err: bool, live: Console | None = None) -> None:
    """Print a line; if the reader went away (``parlour chat | head -1``) keep chatting and
    drop the output, so a script's messages are still all sent. While transfer progress bars
    are shown (``live``), the line goes above them through their console."""
    if live is not None:
        live.print(Text.from_ansi(_styled(line)), soft_wrap=True)
        return
    stream = sys.stderr if err else sys.stdout
    try:
        click.echo(_styled(line), err=err)  # click drops the colours when not a terminal
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def _ask(prompt: str, hidden: bool) -> str:
    if hidden:
        return getpass.getpass(prompt)
    return input(prompt)


async def _main(
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    signup: bool,
    context: ssl.SSLContext | None,
    retries: int | None,
    room: str | None,
    interactive: bool,
    stdin: IO[str],
    mode: str = "plain",
    files_url: str | None = None,
) -> int:
    """``mode``: ``tui`` (full screen), ``edit`` (line mode with line editing) or ``plain``
    (line mode reading stdin as it comes: pipes, dumb terminals)."""

    def live() -> Console | None:
        if not app_holder:
            return None
        app = app_holder[0]
        display = app.server_files.display
        jobs = display.live_console if isinstance(display, LineJobs) else None
        return jobs or app.files.live_console

    def out(line: str) -> None:
        _echo(line, err=False, live=live())

    def err(line: str) -> None:
        _echo(line, err=True, live=live())

    if retries is None:
        retries = None if interactive else 10
    app_holder: list[ChatApp] = []
    client = Client(
        host,
        port,
        ssl=context,
        server_hostname=host if context else None,
        backoff=Backoff(maximum=5.0, max_attempts=retries),
        client_name=f"parlour-chat/{__version__}",
        on_state=lambda state, detail: (
            app_holder[0].on_state(state, detail) if app_holder else None
        ),
        files_url=files_url,
    )
    app = ChatApp(
        client, interactive=interactive, out=out, err=err, ask=_ask if interactive else None
    )
    app_holder.append(app)
    try:
        await client.connect()
    except (OSError, TimeoutError) as exc:
        app.err(f"! cannot reach the chat server at {host}:{port}: {_explain(exc, context)}")
        return EXIT_CONNECT
    try:
        if not await app.authenticate(username, password, signup):
            return EXIT_LOGIN
        if mode == "tui" and client.session is not None:
            from parlour.cli.tui import run_tui

            return await run_tui(client, client.session, app, room)
        if room is not None:
            await app.run_line(f"/join {room}")
        if mode == "edit":
            from prompt_toolkit.patch_stdout import patch_stdout

            from parlour.cli._completion import LineCompleter

            editor = _PromptReader(
                lambda: f"#{clean(app.room)}> " if app.room else "> ",
                LineCompleter(app.vocabulary, list(c.COMMAND_HELP), app.me),
            )
            with patch_stdout(raw=True):
                return await app.loop(editor)
        reader = _LineReader(stdin, asyncio.get_running_loop())
        return await app.loop(reader)
    finally:
        await client.close()


@click.command(name="chat")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="PARLOUR_HOST",
    help="Chat server address. [env PARLOUR_HOST]",
)
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(1, 65535),
    envvar="PARLOUR_PORT",
    help="Chat server port. [env PARLOUR_PORT]",
)
@click.option("--user", "username", help="User name (else asked interactively).")
@click.option("--signup", is_flag=True, help="Create the account, then log in.")
@click.option("--room", help="Join this room after logging in.")
@click.option("--tls", is_flag=True, help="Connect with TLS (system trust store).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), help="CA bundle for TLS.")
@click.option("--tls-insecure", is_flag=True, help="TLS without certificate checks (testing).")
@click.option(
    "--plain",
    is_flag=True,
    help="Line mode even on a terminal (no full-screen interface).",
)
@click.option(
    "--files-url",
    envvar="PARLOUR_FILES_URL",
    help="The server's web address for /upload and /download when it is not the chat host"
    " on the chat port + 1 (e.g. https://chat.example.org/). [env PARLOUR_FILES_URL]",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=None,
    help="Give up after this many failed reconnects (default: never when interactive, 10 piped).",
)
def chat(
    host: str,
    port: int,
    username: str | None,
    signup: bool,
    room: str | None,
    tls: bool,
    tls_ca: str | None,
    tls_insecure: bool,
    plain: bool,
    files_url: str | None,
    retries: int | None,
) -> None:
    """Terminal chat client (docs/chat.md).

    On a terminal it runs full screen (buffers for rooms and DMs, unread counts, scrollback,
    read marker; --plain for line mode). Without --user it asks whether to log in or sign
    up. The password comes from PARLOUR_PASSWORD, else a hidden prompt. Type text to talk
    in the current room, `@user text` for a direct message, /help for the commands.

    Piped input runs line by line, each line acknowledged before the next, and exits at the
    end:

    \b
        printf '/join general\\nhello\\n' | PARLOUR_PASSWORD=... parlour chat --user alice

    Exit status: 0 ok, 1 login failed, 2 server unreachable or bad usage, 3 the server ended
    the session (kick, ban) or reconnecting gave up, 4 piped input had failing lines.
    """
    stdin: IO[str] = sys.stdin
    if isinstance(stdin, io.TextIOWrapper):  # a stray invalid byte must not end a script
        stdin.reconfigure(errors="replace")
    interactive = stdin.isatty()
    password = os.environ.get("PARLOUR_PASSWORD") or None
    if not interactive and (username is None or password is None):
        raise click.UsageError("piped input needs --user NAME and the PARLOUR_PASSWORD variable")
    context = _ssl_context(tls, tls_ca, tls_insecure)
    from parlour.cli.tui import wants_tui

    if wants_tui(stdin, sys.stdout, plain=plain):
        mode = "tui"
    elif interactive and _can_edit(stdin, sys.stdout):
        mode = "edit"
    else:
        mode = "plain"
    with _terminal_restored(stdin if interactive else None):
        try:
            code = asyncio.run(
                _main(
                    host, port, username, password, signup, context, retries, room, interactive,
                    stdin, mode, files_url,
                )
            )  # fmt: skip
        except KeyboardInterrupt:
            click.echo("", err=True)
            code = EXIT_OK
    sys.exit(code)


@contextlib.contextmanager
def _terminal_restored(stream: IO[str] | None) -> Iterator[None]:
    """Put the terminal back as it was on the way out, even after Ctrl+C in a hidden-password
    prompt (which would otherwise leave echo off)."""
    saved: list[Any] | None = None
    fd = -1
    if stream is not None:
        try:
            fd = stream.fileno()
            saved = termios.tcgetattr(fd)
        except (OSError, ValueError, termios.error):
            saved = None
    try:
        yield
    finally:
        if saved is not None:
            with contextlib.suppress(OSError, termios.error):
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
