"""How ``parlour chat`` shows things — pure functions from protocol values to text lines.

Room messages: ``#general <bob> hello [12]``; DMs: ``[DM] alice: hi [3]`` (and
``[DM] you → alice: ...`` for your own). The number in brackets at the end is the message's
sequence number, used by ``/edit`` and ``/delete``. Notices start with ``*`` (room and presence
changes) or ``!`` (things that happened to you, errors).

Everything that came from other users or the server goes through :func:`clean`, so no
message, name or reason can move the cursor, change colours, retitle the window or reorder
text on the screen: control characters are shown as visible escapes (``\\x1b``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from parlour.client.types import (
    Attachment,
    AuditRecord,
    BanInfo,
    JoinResult,
    RoomInfo,
    Session,
    UserPresence,
    attachment_of,
)
from parlour.protocol import Event, EventName, MessageRecord, name_key

__all__ = [
    "clean",
    "clean_text",
    "format_duration",
    "format_rate",
    "format_size",
    "format_time",
    "render_attachment",
    "render_audit",
    "render_bans",
    "render_event",
    "render_file_result",
    "render_join",
    "render_offer",
    "render_offer_ended",
    "render_record",
    "render_rooms",
    "render_session",
    "render_who",
]

#: C0 and C1 control characters, DEL, Unicode line/paragraph separators and the bidirectional
#: formatting characters (text-direction spoofing, "Trojan Source")
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: continuation lines of a multi-line message are indented by this
INDENT = "    "


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: object) -> str:
    """``value`` as one line of safe text: every control character is shown as an escape."""
    return _UNSAFE.sub(_escape, str(value))


def clean_text(text: str) -> str:
    """Message text: newlines become indented continuation lines, tabs spaces, and every other
    control character a visible escape."""
    text = text.replace("\r\n", "\n").replace("\t", "    ")
    return f"\n{INDENT}".join(clean(part) for part in text.split("\n"))


def format_time(ts: float | None, *, with_date: bool = False, zone: bool = False) -> str:
    """Local time ``HH:MM`` (``YYYY-MM-DD HH:MM`` with ``with_date``, plus the time zone's
    name with ``zone``); ``-`` for ``None``."""
    if ts is None:
        return "-"
    try:
        moment = datetime.fromtimestamp(ts).astimezone()
    except (OverflowError, OSError, ValueError):
        return "?"
    shape = "%Y-%m-%d %H:%M" if with_date else "%H:%M"
    return moment.strftime(f"{shape} %Z" if zone else shape)


def _is_me(name: str, me: str | None) -> bool:
    return me is not None and name_key(name) == name_key(me)


#: characters of the label itself: a name with one of them is shown quoted, so that no name
#: can end the label early and fake a size, a type or a second file
_LABEL_CHARS = frozenset('[]()"')


def render_attachment(att: Attachment) -> str:
    """``[file <id> name (size, type)]``: the id is what ``/download`` takes. A name that
    contains brackets, parentheses or quotes is quoted (``"a] [file x"``)."""
    name = att.name
    if _LABEL_CHARS.intersection(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"[file {clean(att.id)} {clean(name)} ({format_size(att.size)}, {clean(att.type)})]"


def render_record(record: MessageRecord, me: str | None, *, with_time: bool = False) -> str:
    """One message as found in history, ``since``, ``join`` or a ``message``/``dm`` event;
    a file it carries shows after its text as ``[file <id> name (size, type)]``."""
    when = f"{format_time(record.ts)} " if with_time else ""
    seq = f"[{record.seq}]"
    sender = clean(record.sender)
    body = "(deleted)" if record.deleted or record.text is None else clean_text(record.text)
    att = attachment_of(record)
    if att is not None:
        body = f"{body} {render_attachment(att)}" if body else render_attachment(att)
    mark = " (edited)" if record.edited and not record.deleted else ""
    if record.room is not None:
        return f"{when}#{clean(record.room)} <{sender}> {body}{mark} {seq}"
    peer = clean(record.peer or "?")
    who = f"you → {peer}" if _is_me(record.sender, me) else sender
    return f"{when}[DM] {who}: {body}{mark} {seq}"


def _change(record: MessageRecord, me: str | None, edited: bool) -> str:
    """A ``*_edited`` / ``*_deleted`` event: say what changed, not just the new state."""
    where = f"#{clean(record.room)}" if record.room is not None else f"[DM {clean(record.peer)}]"
    author = "you" if _is_me(record.sender, me) else clean(record.sender)
    if edited:
        text = clean_text(record.text or "")
        return f"{where} * {author} edited [{record.seq}]: {text}"
    return f"{where} * message [{record.seq}] by {author} was deleted"


def _record(event: Event) -> MessageRecord | None:
    try:
        return MessageRecord.from_wire(event.fields)
    except Exception:
        return None


#: Events that keep a client's state in step and have no line of their own.
SILENT_EVENTS = frozenset({EventName.READ_MARKER, EventName.FILE_ACCEPTED})


def render_event(event: Event, me: str | None = None) -> str | None:
    """The line to print for a server event (``None``: nothing worth showing)."""
    f = event.fields
    name = event.name

    def get(key: str) -> str:
        return clean(f.get(key))

    if name in (EventName.MESSAGE, EventName.DM):
        rec = _record(event)
        return render_record(rec, me) if rec else None
    if name in (EventName.MESSAGE_EDITED, EventName.DM_EDITED):
        rec = _record(event)
        return _change(rec, me, edited=True) if rec else None
    if name in (EventName.MESSAGE_DELETED, EventName.DM_DELETED):
        rec = _record(event)
        return _change(rec, me, edited=False) if rec else None
    if name is EventName.JOINED:
        return f"* {get('user')} joined #{get('room')}"
    if name is EventName.LEFT:
        return f"* {get('user')} left #{get('room')}"
    if name is EventName.PRESENCE:
        state = "online" if f.get("online") else "offline"
        return f"* {get('user')} is {state}"
    if name is EventName.BROADCAST:
        return f"*** broadcast from {get('from')}: {clean_text(str(f.get('text') or ''))}"
    if name is EventName.KICKED:
        where = f"#{get('room')}" if f.get("room") else "the server"
        reason = f": {get('reason')}" if f.get("reason") else ""
        again = " (/join it again to come back)" if f.get("room") else ""
        return f"! you were kicked from {where} by {get('by')}{reason}{again}"
    if name is EventName.BANNED:
        until = f.get("until")
        span = (
            f"until {format_time(until, with_date=True, zone=True)}"
            if isinstance(until, int | float)
            else "permanently"
        )
        reason = f": {get('reason')}" if f.get("reason") else ""
        return f"! you were banned {span} by {get('by')}{reason}"
    if name is EventName.ROOM_CREATED:
        return f"* {get('by')} created #{get('room')}"
    if name is EventName.ROOM_RENAMED:
        return f"* {get('by')} renamed #{get('room')} to #{get('new_name')}"
    if name is EventName.ROOM_DELETED:
        return f"* {get('by')} deleted #{get('room')}"
    if name is EventName.FILE_OFFER:
        return render_offer(
            get("offer"), get("from"), get("filename"), int(f.get("size") or 0), f.get("expires")
        )
    if name is EventName.FILE_ENDED:
        what = _ENDED.get(str(f.get("reason")), f"ended ({get('reason')})")
        by = f" by {get('by')}" if f.get("by") else ""
        return f"* file offer {get('offer')} {what}{by}"
    if name is EventName.DISCONNECT:
        if f.get("code") in ("kicked", "banned"):  # the kicked/banned event said it already
            return None
        return f"! the server is closing the connection: {clean(f.get('reason') or f.get('code'))}"
    return None


def render_session(session: Session) -> str:
    rooms = ", ".join(f"#{clean(r)}" for r in session.rooms) or "none yet (/rooms, /join NAME)"
    return f"* logged in as {clean(session.username)} ({clean(session.role)}); your rooms: {rooms}"


def render_join(result: JoinResult, me: str | None) -> list[str]:
    lines = [render_record(m, me) for m in result.messages]
    online = {name_key(n) for n in result.online}
    people = ", ".join(
        f"{clean(m)}{'' if name_key(m) in online else ' (away)'}" for m in result.members
    )
    more = result.members_total - len(result.members)
    if more > 0:
        people += f" and {more} more"
    lines.append(f"* you are in #{clean(result.room)} — members: {people or 'none'}")
    return lines


def render_rooms(rooms: Iterable[RoomInfo], current: str | None) -> list[str]:
    out = []
    for r in rooms:
        mark = "* " if r.name == current else ("+ " if r.joined else "  ")
        out.append(f"{mark}#{clean(r.name):<20} {r.members:>4} members {r.online:>4} online")
    if out:
        out.append("(* current room, + joined)")
    return out or ["(no rooms)"]


def render_who(users: Iterable[UserPresence]) -> list[str]:
    out = []
    for u in users:
        state = "online " if u.online else "offline"
        role = " (admin)" if u.role == "admin" else ""
        login = format_time(u.login_ts, with_date=True)
        active = format_time(u.last_active, with_date=True)
        out.append(f"{clean(u.username) + role:<30} {state}  login {login}  active {active}")
    return out or ["(nobody)"]


def render_bans(bans: Iterable[BanInfo]) -> list[str]:
    out = []
    for b in bans:
        until = format_time(b.until, with_date=True, zone=True) if b.until else "permanent"
        by = f" by {clean(b.by)}" if b.by else ""
        reason = f": {clean(b.reason)}" if b.reason else ""
        out.append(f"{clean(b.user):<20} until {until}{by}{reason}")
    return out or ["(no bans)"]


def render_audit(entries: Iterable[AuditRecord]) -> list[str]:
    out = []
    for e in entries:
        reason = f": {clean(e.reason)}" if e.reason else ""
        out.append(
            f"{format_time(e.ts, with_date=True)}  {clean(e.actor)} {clean(e.action)}"
            f" {clean(e.target)}{reason}"
        )
    return out or ["(audit log is empty)"]


# ---------------------------------------------------------------------------- file transfers


def format_size(size: float) -> str:
    """Bytes for people: ``999 B``, ``12.3 kB``, ``700.0 MB``, ``1.07 GB`` (powers of 1000)."""
    if size < 1000:
        return f"{int(size)} B"
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000 or unit == "TB":
            return f"{size:.2f} {unit}" if size < 10 else f"{size:.1f} {unit}"
    raise AssertionError  # pragma: no cover


def format_rate(rate: float) -> str:
    return f"{format_size(rate)}/s"


def format_duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 01 min``; ``?`` when unknown."""
    if seconds is None or not 0 <= seconds < 1e9:  # (NaN fails the comparison too)
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def render_offer(
    number: int | str, sender: str, filename: str, size: int, expires: float | None
) -> str:
    """An offer made to you (``number``: the client's number for it, or its id)."""
    until = f", open until {format_time(expires)}" if expires is not None else ""
    ref = clean(number)
    return (
        f"! {clean(sender)} offers you {clean(filename)} ({format_size(size)}) [file {ref}]"
        f" — /accept {ref} [dir] or /decline {ref}{until}"
    )


_ENDED = {
    "declined": "was declined",
    "cancelled": "was withdrawn",
    "expired": "expired",
    "offline": "was withdrawn (the sender went offline)",
    "done": "is done",
}


def render_offer_ended(
    number: int | None, sender: str, filename: str, reason: str, by: str | None
) -> str:
    """An offer made to you ended before you took it."""
    what = _ENDED.get(reason, f"ended ({clean(reason)})")
    tag = f" [file {number}]" if number is not None else ""
    who = f" by {clean(by)}" if by and reason in ("declined",) else ""
    return f"* the offer of {clean(filename)} from {clean(sender)}{tag} {what}{who}"


def render_file_result(
    number: int,
    direction: str,
    peer: str,
    filename: str,
    ok: bool,
    message: str,
    size: int,
    seconds: float,
    via_relay: bool,
    path: str | None = None,
) -> str:
    """The final line of a transfer: verified, or failed and why."""
    arrow = f"→ {clean(peer)}" if direction == "send" else f"← {clean(peer)}"
    head = f"[file {number}] {clean(filename)} {arrow}"
    if not ok:
        return f"! {head}: failed: {clean(message)}"
    rate = f", {format_rate(size / seconds)}" if seconds > 0 else ""
    route = "through the server's relay" if via_relay else "direct"
    saved = f", saved as {clean(path)}" if path else ""
    return (
        f"* {head}: verified (SHA-256){saved} — {format_size(size)} in "
        f"{format_duration(seconds)}{rate}, {route}"
    )
