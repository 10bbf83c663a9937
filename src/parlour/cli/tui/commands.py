"""Slash commands of the full-screen client: a registry others can extend.

Every command is a :class:`CommandSpec` (name, aliases, usage, one-line summary, longer help)
with an ``async run(host, args, line)``. The full-screen client registers its own commands
(buffers: ``/join``, ``/query``, ``/close``, ...) and, for every command of the line-mode
client that it does not replace, one that runs the line through the line-mode command code
(:class:`parlour.cli.chat.ChatApp`), so both clients keep the same commands with the same
meaning. ``/help`` and Tab completion read the registry.

To add a command (file transfers, say), register it before the app starts::

    registry = default_registry()
    registry.register(CommandSpec("upload", "/upload <path>", "send a file to this buffer",
                                  run=my_upload, details="..."))
    ChatTui(..., registry=registry)

A handler talks to the app through :class:`CommandHost`: the client, the buffers, printing a
line into the current buffer and rewriting a line in place (for progress).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from parlour.cli._commands import COMMAND_HELP

if TYPE_CHECKING:
    from parlour.client import Client

    from .buffers import Buffer, BufferList, Entry

__all__ = ["CommandHost", "CommandRegistry", "CommandSpec", "Handler", "default_registry"]


class CommandHost(Protocol):
    """What a command handler may use."""

    @property
    def client(self) -> Client: ...

    @property
    def buffers(self) -> BufferList: ...

    def notice(self, text: str, *, error: bool = False, buffer: Buffer | None = None) -> Entry:
        """Print a local line (into the current buffer unless ``buffer`` is given)."""
        ...

    def rewrite(self, entry: Entry, text: str) -> None:
        """Change a printed line in place (e.g. a progress line)."""
        ...

    async def legacy(self, line: str) -> None:
        """Run ``line`` as the line-mode client would, output into the current buffer."""
        ...

    async def open_room(self, room: str) -> None: ...

    async def open_dm(self, peer: str, text: str | None = None) -> None: ...

    async def leave_room(self, room: str | None) -> None: ...

    def close_buffer(self, name: str | None) -> None: ...

    def switch_to(self, name: str) -> bool: ...

    def show_help(self, topic: str | None) -> None: ...

    def toggle_members(self) -> None: ...

    async def change_password(self, args: str) -> None: ...

    async def server_file(self, line: str) -> None:
        """Run ``/upload`` or ``/download`` (files in chat) for the current buffer."""
        ...

    def quit(self) -> None: ...


#: ``run(host, args, line)``: ``args`` is the text after the command name
Handler = Callable[["CommandHost", str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    usage: str
    summary: str
    run: Handler
    details: str = ""
    aliases: tuple[str, ...] = field(default=())
    #: run beside the input queue instead of in it (a long task that must not hold up the
    #: messages typed after it, e.g. hashing a file before offering it)
    background: bool = False


class CommandRegistry:
    def __init__(self, specs: Iterable[CommandSpec] = ()) -> None:
        self._specs: dict[str, CommandSpec] = {}
        self._names: dict[str, str] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: CommandSpec) -> None:
        """Add (or replace) a command."""
        self._specs[spec.name] = spec
        for name in (spec.name, *spec.aliases):
            self._names[name.lower()] = spec.name

    def get(self, name: str) -> CommandSpec | None:
        key = self._names.get(name.lower().lstrip("/"))
        return self._specs.get(key) if key is not None else None

    def names(self) -> list[str]:
        """Command names (without aliases), for completion and the help overview."""
        return sorted(self._specs)

    def specs(self) -> list[CommandSpec]:
        return [self._specs[n] for n in self.names()]

    def help(self, name: str) -> list[str] | None:
        """The help of one command, or None if there is no such command."""
        spec = self.get(name)
        if spec is None:
            return None
        lines = [f"{spec.usage}  — {spec.summary}"]
        if spec.aliases:
            lines.append("also: " + ", ".join(f"/{a}" for a in spec.aliases))
        if spec.details:
            lines.extend(spec.details.split("\n"))
        return lines


# ---------------------------------------------------------------------- built-in handlers


async def _legacy(host: CommandHost, args: str, line: str) -> None:
    await host.legacy(line)


async def _join(host: CommandHost, args: str, line: str) -> None:
    if len(args.split()) != 1:
        host.notice("usage: /join <room>", error=True)
        return
    await host.open_room(args.strip().lstrip("#"))


async def _leave(host: CommandHost, args: str, line: str) -> None:
    parts = args.split()
    if len(parts) > 1:
        host.notice("usage: /leave [room]", error=True)
        return
    await host.leave_room(parts[0].lstrip("#") if parts else None)


async def _query(host: CommandHost, args: str, line: str) -> None:
    name, _, text = args.strip().partition(" ")
    if not name:
        host.notice("usage: /query <user> [text]", error=True)
        return
    await host.open_dm(name.lstrip("@"), text.strip() or None)


async def _close(host: CommandHost, args: str, line: str) -> None:
    host.close_buffer(args.strip() or None)


async def _buffer(host: CommandHost, args: str, line: str) -> None:
    if not args.strip():
        host.notice("usage: /buffer <number|#room|@user>", error=True)
        return
    if not host.switch_to(args.strip()):
        host.notice(f"no buffer {args.strip()}", error=True)


async def _help(host: CommandHost, args: str, line: str) -> None:
    host.show_help(args.strip().lstrip("/") or None)


async def _members(host: CommandHost, args: str, line: str) -> None:
    host.toggle_members()


async def _passwd(host: CommandHost, args: str, line: str) -> None:
    await host.change_password(args)


async def _server_file(host: CommandHost, args: str, line: str) -> None:
    await host.server_file(line)


async def _quit(host: CommandHost, args: str, line: str) -> None:
    host.quit()


_DETAILS = {
    "history": "Prints them into this buffer; scrolling up (PageUp, mouse wheel) pages\n"
    "older messages into the scrollback itself.",
    "edit": "In a DM buffer, @user may be left out. Messages show their number at the\n"
    "end, e.g. [12]: /edit 12 new text, or /edit last new text.",
    "delete": "In a DM buffer, @user may be left out: /delete 12, /delete last.",
    "since": "Examples: /since 10m, /since 2h, /since 2024-11-21T20:00.",
    "ban": "Durations: 90s, 10m, 1h, 2d, 1w; without one the ban lasts until /unban.",
    "who": "/who lists everyone online; /who --since 1h those who logged in within the\n"
    "last hour; /who general the members of a room who are online.",
    # peer-to-peer files (parlour.cli.tui.transfers shows them)
    "send-file": "The file goes straight to them over UDP, encrypted, once they /accept it\n"
    "(through the server's relay when no direct path is found). Its lines and a progress\n"
    "line (bytes, percent, rate, ETA) show in this buffer; the status bar counts running\n"
    "files. Tab completes the user name. /cancel <n> withdraws it. It runs beside the\n"
    "chat: what you type while a big file is being hashed is sent at once.",
    "accept": "Offers to you show in your DM buffer with the sender (else the current one)\n"
    "as [file n]. Saved into dir, by default ~/Downloads/parlour/<sender>/ (or\n"
    "$PARLOUR_DOWNLOADS), never over an existing file; checked against its SHA-256.\n"
    "Accepting again after a failed attempt resumes it. Tab completes offer numbers.",
    "decline": "The sender is told. While the file is arriving, this stops it.",
    "cancel": "Your own offer: withdrawn, a running transfer stops, the receiver is told.\n"
    "An offer to you: the same as /decline.",
    "transfers": "Offers waiting for you (/accept them by number), then every transfer of\n"
    "this session: direction, state, percent.",
}


#: line-mode commands that run in the background (hashing a big file, probing the relay)
_BACKGROUND = frozenset({"send-file", "accept"})
#: other names the line mode accepts for its commands
_ALIASES = {"send-file": ("sendfile",), "transfers": ("files",)}


def _own_commands() -> list[CommandSpec]:
    return [
        CommandSpec(
            "join",
            "/join <room>",
            "join a room (or switch to its buffer)",
            _join,
            "Opens a buffer for the room with its recent messages and members. Joining a\n"
            "room you are in just switches to it. Alt+1..9, Ctrl+N/Ctrl+P switch buffers.",
        ),
        CommandSpec(
            "leave",
            "/leave [room]",
            "leave the current (or given) room",
            _leave,
            "The room's buffer stays open, read-only, until you /close it.",
        ),
        CommandSpec(
            "query",
            "/query <user> [text]",
            "open a direct-message buffer (and send text)",
            _query,
            "Plain text typed in a DM buffer goes to that user. @user text from any buffer\n"
            "also sends a direct message.",
            aliases=("msg",),
        ),
        CommandSpec(
            "close",
            "/close [buffer]",
            "close a DM buffer or a room you left",
            _close,
            "Closing a room buffer does not leave the room: use /leave first.",
        ),
        CommandSpec(
            "buffer",
            "/buffer <n|#room|@user>",
            "switch to a buffer",
            _buffer,
            "Buffers are numbered in the list on the left; Alt+1..9 switch directly and\n"
            "Alt+A jumps to the next buffer with mentions or unread messages.",
        ),
        CommandSpec(
            "members",
            "/members",
            "show or hide the member list (F2)",
            _members,
        ),
        CommandSpec(
            "passwd",
            "/passwd [old new]",
            "change your password (asks, hidden, without arguments)",
            _passwd,
        ),
        CommandSpec(
            "upload",
            "/upload [@user|#room] <path> [caption]",
            "upload a file to the server and post it in this buffer",
            _server_file,
            "The file goes to the server (resumable: after a dropped connection, a cancel or\n"
            "a restart, /upload the same file again and it goes on where it stopped), then\n"
            "into this room or DM as a message with the caption. A path with spaces:\n"
            '"my file.pdf" or my\\ file.pdf. A progress line shows here and the status bar\n'
            "counts running transfers; Ctrl+C on an empty input line cancels them. Messages\n"
            "show their files as [file <id> name (size, type)].",
            background=True,
        ),
        CommandSpec(
            "download",
            "/download <file id> [dir]",
            "save a message's file (default: ~/Downloads/parlour)",
            _server_file,
            "The id is the one in [file <id> name (size, type)]. Saved into dir (default\n"
            "$PARLOUR_DOWNLOADS or ~/Downloads/parlour) under its name, never over an\n"
            "existing file (name (1).ext), once its SHA-256 is checked. An interrupted\n"
            "download resumes when you run the same command again.",
            background=True,
        ),
        CommandSpec("quit", "/quit", "leave the chat (Ctrl+Q)", _quit, aliases=("exit", "q")),
        CommandSpec(
            "help",
            "/help [command]",
            "list commands, or explain one",
            _help,
            aliases=("?",),
        ),
    ]


def default_registry() -> CommandRegistry:
    """The full-screen client's commands: its own, plus every line-mode command it does not
    replace (run through the line-mode code)."""
    registry = CommandRegistry(_own_commands())
    for name, (usage, summary) in COMMAND_HELP.items():
        if registry.get(name) is None:
            details, aliases = _DETAILS.get(name, ""), _ALIASES.get(name, ())
            registry.register(
                CommandSpec(
                    name, usage, summary, _legacy, details, aliases, background=name in _BACKGROUND
                )
            )
    return registry
