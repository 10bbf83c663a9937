"""Parsing of what the user types into ``parlour chat`` — pure, no I/O.

``parse_line(line)`` returns one :data:`Command` (a frozen dataclass) or :class:`Invalid` with a
message for the user. Plain text goes to the current room, ``@user text`` is a DM, ``/...`` is a
command (``//text`` sends text starting with ``/``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from parlour.protocol import InvalidName, normalize_name

__all__ = [
    "COMMAND_HELP",
    "FILE_COMMANDS",
    "SERVER_FILE_COMMANDS",
    "AcceptFile",
    "Audit",
    "Ban",
    "Bans",
    "Blocks",
    "Broadcast",
    "CancelFile",
    "Command",
    "DeclineFile",
    "Delete",
    "Direct",
    "DmHistory",
    "Download",
    "Edit",
    "Empty",
    "Help",
    "History",
    "Invalid",
    "Join",
    "Kick",
    "Leave",
    "Passwd",
    "Quit",
    "RoomCreate",
    "RoomDelete",
    "RoomRename",
    "Rooms",
    "Say",
    "SendFile",
    "Since",
    "ToggleBlock",
    "Transfers",
    "Unban",
    "Upload",
    "Who",
    "parse_duration",
    "parse_line",
]

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


@dataclass(frozen=True, slots=True)
class Empty:
    """A blank line: nothing to do."""


@dataclass(frozen=True, slots=True)
class Invalid:
    message: str


@dataclass(frozen=True, slots=True)
class Say:
    text: str


@dataclass(frozen=True, slots=True)
class Direct:
    to: str
    text: str


@dataclass(frozen=True, slots=True)
class Join:
    room: str


@dataclass(frozen=True, slots=True)
class Leave:
    room: str | None


@dataclass(frozen=True, slots=True)
class Rooms:
    pass


@dataclass(frozen=True, slots=True)
class Who:
    room: str | None = None
    since: float | None = None


@dataclass(frozen=True, slots=True)
class History:
    room: str | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class DmHistory:
    peer: str
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Since:
    """Messages since ``at`` (unix time) or since ``ago`` seconds before now."""

    at: float | None = None
    ago: float | None = None


@dataclass(frozen=True, slots=True)
class Edit:
    """Edit message ``seq`` (``None``: your last one) in the current room or DM with ``peer``."""

    seq: int | None
    text: str
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    seq: int | None
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class ToggleBlock:
    user: str
    block: bool


@dataclass(frozen=True, slots=True)
class Blocks:
    pass


@dataclass(frozen=True, slots=True)
class Kick:
    user: str
    room: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Ban:
    user: str
    duration: float | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Unban:
    user: str


@dataclass(frozen=True, slots=True)
class Bans:
    pass


@dataclass(frozen=True, slots=True)
class Audit:
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Broadcast:
    text: str


@dataclass(frozen=True, slots=True)
class RoomCreate:
    room: str


@dataclass(frozen=True, slots=True)
class RoomRename:
    room: str
    new_name: str


@dataclass(frozen=True, slots=True)
class RoomDelete:
    room: str


@dataclass(frozen=True, slots=True)
class Passwd:
    """Change password; without arguments the terminal asks for both (hidden)."""

    old: str | None = None
    new: str | None = None


@dataclass(frozen=True, slots=True)
class SendFile:
    """Offer the file at ``path`` to ``user`` (sent straight to them when they accept)."""

    user: str
    path: str


@dataclass(frozen=True, slots=True)
class AcceptFile:
    """Accept offer ``offer`` (its number or id), saving into ``dest`` (None: the default)."""

    offer: str
    dest: str | None = None


@dataclass(frozen=True, slots=True)
class DeclineFile:
    offer: str


@dataclass(frozen=True, slots=True)
class CancelFile:
    offer: str


@dataclass(frozen=True, slots=True)
class Transfers:
    """List the offers made to you and your transfers."""


@dataclass(frozen=True, slots=True)
class Upload:
    """Upload the file at ``path`` to the server and post it, with ``caption``, to the current
    room (``to`` / ``room`` set: that user as a DM, that room)."""

    path: str
    caption: str | None = None
    to: str | None = None
    room: str | None = None


@dataclass(frozen=True, slots=True)
class Download:
    """Download attachment ``file_id`` into ``dest`` (None: the downloads directory)."""

    file_id: str
    dest: str | None = None


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Help:
    topic: str | None = None


Command = (
    Empty
    | Invalid
    | Say
    | Direct
    | Join
    | Leave
    | Rooms
    | Who
    | History
    | DmHistory
    | Since
    | Edit
    | Delete
    | ToggleBlock
    | Blocks
    | Kick
    | Ban
    | Unban
    | Bans
    | Audit
    | Broadcast
    | RoomCreate
    | RoomRename
    | RoomDelete
    | Passwd
    | SendFile
    | AcceptFile
    | DeclineFile
    | CancelFile
    | Transfers
    | Upload
    | Download
    | Quit
    | Help
)

#: the file-transfer commands (handled by parlour.cli._transfers)
FILE_COMMANDS = (SendFile, AcceptFile, DeclineFile, CancelFile, Transfers)

#: the files-in-chat commands: uploads to the server, downloads (parlour.cli._uploads)
SERVER_FILE_COMMANDS = (Upload, Download)

#: command -> (usage, description); shown by /help
COMMAND_HELP: dict[str, tuple[str, str]] = {
    "join": ("/join <room>", "join a room and make it the current one"),
    "leave": ("/leave [room]", "leave the current (or given) room"),
    "rooms": ("/rooms", "list rooms with member and online counts"),
    "who": ("/who [--since 1h] [room]", "who is online (or was, within the window)"),
    "history": ("/history [room|@user] [n]", "the last n messages of a room (or DMs)"),
    "dm-history": ("/dm-history <user> [n]", "the last n direct messages with a user"),
    "since": ("/since <10m|2h|ISO time>", "room messages since a time"),
    "edit": ("/edit [@user] <seq|last> <text>", "edit your message (room, or DM with @user)"),
    "delete": ("/delete [@user] <seq|last>", "delete your message"),
    "block": ("/block <user>", "stop seeing a user's messages and presence"),
    "unblock": ("/unblock <user>", "undo /block"),
    "blocks": ("/blocks", "list whom you block"),
    "kick": ("/kick <user> [#room] [reason]", "admin: end a user's session or remove from room"),
    "ban": ("/ban <user> [duration] [reason]", "admin: ban a user (e.g. /ban bob 1h spam)"),
    "unban": ("/unban <user>", "admin: lift a ban"),
    "bans": ("/bans", "admin: list bans"),
    "audit": ("/audit [n]", "admin: the moderation audit log"),
    "broadcast": ("/broadcast <text>", "admin: announcement to everyone online"),
    "mkroom": ("/mkroom <room>", "admin: create a room"),
    "rename": ("/rename <room> <new name>", "admin: rename a room"),
    "rmroom": ("/rmroom <room>", "admin: delete a room"),
    "passwd": ("/passwd [old new]", "change your password"),
    "send-file": ("/send-file <user> <path>", "offer a file; it goes straight to them over UDP"),
    "accept": (
        "/accept <n> [dir]",
        "accept file offer n (default dir: ~/Downloads/parlour/<sender>)",
    ),
    "decline": ("/decline <n>", "refuse file offer n (or stop receiving it)"),
    "cancel": ("/cancel <n>", "withdraw your file offer n (or stop sending it)"),
    "transfers": ("/transfers", "file offers to you and your transfers, with progress"),
    "upload": (
        "/upload [@user|#room] <path> [caption]",
        "upload a file to the server and post it here (or to @user / #room)",
    ),
    "download": (
        "/download <file id> [dir]",
        "save a message's file (default dir: ~/Downloads/parlour)",
    ),
    "quit": ("/quit", "leave the chat"),
    "help": ("/help [command]", "this help"),
}


def parse_duration(text: str) -> float | None:
    """``90``, ``90s``, ``10m``, ``1h30m``, ``2d``, ``1w`` -> seconds; ``None`` if not one."""
    text = text.strip().lower()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if value > 0 and value < float("inf") else None
    if _DURATION.fullmatch(text) is None:
        return None
    total = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhdw])", text))
    return total if total > 0 else None


def _name(token: str) -> str | None:
    """A user or room name in any script (the server's PRECIS rule), normalised."""
    token = token.lstrip("#@")
    if _NAME.fullmatch(token):
        return token
    if token.isascii():
        return None
    try:
        return normalize_name(token)
    except InvalidName:
        return None


def _offer_ref(token: str) -> bool:
    """An offer's number (``3``) or id (``hK2w9TqzX1bA``)."""
    return bool(re.fullmatch(r"[A-Za-z0-9_-]{1,32}", token))


def split_path(text: str) -> tuple[str, str] | None:
    """The path at the start of ``text`` and the rest: ``"my file.txt" caption``,
    ``'my file.txt'`` (quoted), ``my\\ file.txt`` (a backslash keeps a space), or up to the
    first space; None when there is no path or a quote is not closed."""
    text = text.lstrip()
    if not text:
        return None
    if text[0] in "\"'":
        quote = text[0]
        end = text.find(quote, 1)
        if end <= 1:
            return None
        return text[1:end], text[end + 1 :].strip()
    out: list[str] = []
    i = 0
    while i < len(text) and not text[i].isspace():
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in " \\":
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out), text[i:].strip()


#: a file id as the server makes them (URL-safe characters)
_FILE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _count(token: str) -> int | None:
    if not (token.isascii() and token.isdigit() and len(token) <= 4):
        return None
    return int(token) if 0 < int(token) <= 1000 else None


def parse_line(line: str) -> Command:
    """Parse one input line."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return Empty()
    if line.startswith("//"):
        return Say(line[1:])
    if line.startswith("@"):
        target, _, text = line[1:].partition(" ")
        if _name(target) is None:
            return Invalid(f"not a user name: @{target}")
        if not text.strip():
            return Invalid(f"nothing to send to @{target}")
        return Direct(target, text.lstrip(" "))
    if not line.startswith("/"):
        return Say(line)
    head, _, rest = line[1:].partition(" ")
    cmd = head.lower()
    rest = rest.strip()
    args = rest.split()

    def usage() -> Invalid:
        spec = COMMAND_HELP.get(cmd)
        return Invalid(f"usage: {spec[0]}" if spec else f"unknown command /{head}; try /help")

    def one_name() -> str | None:
        return _name(args[0]) if len(args) == 1 else None

    if cmd in ("quit", "exit", "q"):
        return Quit()
    if cmd in ("help", "?"):
        return Help(args[0].lstrip("/") if args else None)
    if cmd == "join":
        name = one_name()
        return Join(name) if name else usage()
    if cmd == "leave":
        if not args:
            return Leave(None)
        name = one_name()
        return Leave(name) if name else usage()
    if cmd == "rooms":
        return Rooms() if not args else usage()
    if cmd == "who":
        since: float | None = None
        room: str | None = None
        i = 0
        while i < len(args):
            if args[i] == "--since":
                if i + 1 >= len(args) or (since := parse_duration(args[i + 1])) is None:
                    return Invalid("usage: /who [--since 1h] [room] (duration like 30m, 1h, 2d)")
                i += 2
                continue
            if room is not None or (room := _name(args[i])) is None:
                return usage()
            i += 1
        return Who(room, since)
    if cmd == "history":
        hroom: str | None = None
        limit: int | None = None
        if args and args[0].startswith("@"):
            cmd = "history"
            if _name(args[0]) is None or len(args) > 2:
                return usage()
            n = _count(args[1]) if len(args) == 2 else None
            if len(args) == 2 and n is None:
                return usage()
            return DmHistory(_name(args[0]) or "", n)
        for token in args:
            if limit is None and _count(token) is not None:
                limit = _count(token)
            elif hroom is None and not token.isdigit() and _name(token):
                hroom = _name(token)
            else:
                return usage()
        return History(hroom, limit)
    if cmd in ("dm-history", "dmhistory"):
        cmd = "dm-history"
        if not 1 <= len(args) <= 2 or _name(args[0]) is None:
            return usage()
        n = _count(args[1]) if len(args) == 2 else None
        if len(args) == 2 and n is None:
            return usage()
        return DmHistory(_name(args[0]) or "", n)
    if cmd == "since":
        if not rest:
            return usage()
        ago = parse_duration(rest)
        if ago is not None:
            return Since(ago=ago)
        try:
            when = datetime.fromisoformat(rest)
        except ValueError:
            return Invalid("usage: /since <10m|2h|1d or 2024-11-21T20:00>")
        return Since(at=when.timestamp())
    if cmd in ("edit", "delete"):
        words = rest.split(None, 1)
        peer: str | None = None
        if words and words[0].startswith("@"):
            peer = _name(words[0])
            if peer is None:
                return usage()
            words = rest.split(None, 2)[1:]
        if not words:
            return usage()
        seq: int | None
        if words[0].lower() == "last":
            seq = None
        elif words[0].isascii() and words[0].isdigit() and 1 <= len(words[0]) <= 15:
            if int(words[0]) < 1:
                return usage()
            seq = int(words[0])
        else:
            return usage()
        if cmd == "delete":
            return Delete(seq, peer) if len(words) == 1 else usage()
        if len(words) != 2 or not words[1].strip():
            return usage()
        return Edit(seq, words[1], peer)
    if cmd in ("block", "unblock"):
        name = one_name()
        return ToggleBlock(name, cmd == "block") if name else usage()
    if cmd == "blocks":
        return Blocks() if not args else usage()
    if cmd == "kick":
        if not args or _name(args[0]) is None:
            return usage()
        kroom = None
        remaining = args[1:]
        if remaining and remaining[0].startswith("#"):
            kroom = _name(remaining[0])
            if kroom is None:
                return usage()
            remaining = remaining[1:]
        return Kick(_name(args[0]) or "", kroom, " ".join(remaining) or None)
    if cmd == "ban":
        if not args or _name(args[0]) is None:
            return usage()
        if len(args) > 1 and re.fullmatch(r"\d+(?:\.\d+)?", args[1]):
            # "/ban bob 3 strikes": seconds or part of the reason? Make the user say.
            return Invalid(
                "usage: /ban <user> [duration] [reason] (duration with a unit: 90s, 10m, 1h, 2d)"
            )
        duration = parse_duration(args[1]) if len(args) > 1 else None
        reason_words = args[2:] if duration is not None else args[1:]
        return Ban(_name(args[0]) or "", duration, " ".join(reason_words) or None)
    if cmd == "unban":
        name = one_name()
        return Unban(name) if name else usage()
    if cmd == "bans":
        return Bans() if not args else usage()
    if cmd == "audit":
        if not args:
            return Audit()
        n = _count(args[0]) if len(args) == 1 else None
        return Audit(n) if n else usage()
    if cmd == "broadcast":
        return Broadcast(rest) if rest else usage()
    if cmd == "mkroom":
        name = one_name()
        return RoomCreate(name) if name else usage()
    if cmd == "rmroom":
        name = one_name()
        return RoomDelete(name) if name else usage()
    if cmd == "rename":
        if len(args) != 2 or _name(args[0]) is None or _name(args[1]) is None:
            return usage()
        return RoomRename(_name(args[0]) or "", _name(args[1]) or "")
    if cmd == "passwd":
        if not args:
            return Passwd()
        return Passwd(args[0], args[1]) if len(args) == 2 else usage()
    if cmd in ("send-file", "sendfile"):
        cmd = "send-file"
        target, _, where = rest.partition(" ")
        if _name(target) is None or not where.strip():
            return usage()
        return SendFile(_name(target) or "", where.strip())
    if cmd == "accept":
        ref, _, dest = rest.partition(" ")
        if not _offer_ref(ref):
            return usage()
        return AcceptFile(ref, dest.strip() or None)
    if cmd in ("decline", "cancel"):
        if len(args) != 1 or not _offer_ref(args[0]):
            return usage()
        return DeclineFile(args[0]) if cmd == "decline" else CancelFile(args[0])
    if cmd in ("transfers", "files"):
        return Transfers() if not args else usage()
    if cmd == "upload":
        to: str | None = None
        up_room: str | None = None
        body = rest
        if args and args[0][:1] in ("@", "#"):
            up_target = _name(args[0])
            if up_target is None:
                return usage()
            if args[0].startswith("@"):
                to = up_target
            else:
                up_room = up_target
            body = rest[len(args[0]) :]
        split = split_path(body)
        if split is None or not split[0]:
            return usage()
        return Upload(split[0], split[1] or None, to, up_room)
    if cmd == "download":
        file_id, _, dest = rest.partition(" ")
        if not _FILE_ID.fullmatch(file_id):
            return usage()
        into = split_path(dest) if dest.strip() else None
        if dest.strip() and (into is None or into[1]):
            return usage()
        return Download(file_id, into[0] if into else None)
    return Invalid(f"unknown command /{head}; try /help")
