"""How ``parlour chat`` shows things — pure functions from protocol values to text lines.

Room messages: ``[#general 12] bob: hello``; DMs: ``[dm] alice → you: hi`` (the number after a
room name is the message's sequence number, used by ``/edit`` and ``/delete``). Notices start
with ``*`` (room and presence changes) or ``!`` (things that happened to you).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from parlour.client.types import (
    AuditRecord,
    BanInfo,
    JoinResult,
    RoomInfo,
    Session,
    UserPresence,
)
from parlour.protocol import Event, EventName, MessageRecord

__all__ = [
    "format_time",
    "render_audit",
    "render_bans",
    "render_event",
    "render_join",
    "render_record",
    "render_rooms",
    "render_session",
    "render_who",
]


def format_time(ts: float | None, *, with_date: bool = False) -> str:
    """Local time ``HH:MM`` (``YYYY-MM-DD HH:MM`` with ``with_date``); ``-`` for ``None``."""
    if ts is None:
        return "-"
    moment = datetime.fromtimestamp(ts)
    return moment.strftime("%Y-%m-%d %H:%M" if with_date else "%H:%M")


def _who(name: str, me: str | None) -> str:
    return "you" if me is not None and name.casefold() == me.casefold() else name


def render_record(record: MessageRecord, me: str | None, *, with_time: bool = False) -> str:
    """One message line (live, history or ``since``)."""
    when = f" {format_time(record.ts)}" if with_time else ""
    if record.room is not None:
        head = f"[#{record.room} {record.seq}{when}]"
        if record.deleted:
            return f"{head} (message by {record.sender} deleted)"
        mark = " (edited)" if record.edited else ""
        return f"{head} {record.sender}: {record.text}{mark}"
    peer = record.peer or "?"
    sender_is_me = me is not None and record.sender.casefold() == me.casefold()
    arrow = f"you → {peer}" if sender_is_me else f"{record.sender} → you"
    head = f"[dm {record.seq}{when}]" if with_time else "[dm]"
    if record.deleted:
        return f"{head} {arrow}: (deleted)"
    mark = " (edited)" if record.edited else ""
    return f"{head} {arrow}: {record.text}{mark}"


def _record(event: Event) -> MessageRecord | None:
    try:
        return MessageRecord.from_wire(event.fields)
    except Exception:
        return None


def render_event(event: Event, me: str | None = None) -> str | None:
    """The line to print for a server event (``None``: nothing worth showing)."""
    f = event.fields
    name = event.name
    if name in (EventName.MESSAGE, EventName.DM):
        rec = _record(event)
        return render_record(rec, me) if rec else None
    if name in (EventName.MESSAGE_EDITED, EventName.DM_EDITED):
        rec = _record(event)
        return f"{render_record(rec, me)}" if rec else None
    if name in (EventName.MESSAGE_DELETED, EventName.DM_DELETED):
        rec = _record(event)
        return render_record(rec, me) if rec else None
    if name is EventName.JOINED:
        return f"* {f.get('user')} joined #{f.get('room')}"
    if name is EventName.LEFT:
        return f"* {f.get('user')} left #{f.get('room')}"
    if name is EventName.PRESENCE:
        state = "online" if f.get("online") else "offline"
        return f"* {f.get('user')} is {state}"
    if name is EventName.BROADCAST:
        return f"*** broadcast from {f.get('from')}: {f.get('text')}"
    if name is EventName.KICKED:
        where = f"#{f['room']}" if f.get("room") else "the server"
        reason = f": {f['reason']}" if f.get("reason") else ""
        return f"! you were kicked from {where} by {f.get('by')}{reason}"
    if name is EventName.BANNED:
        until = f.get("until")
        span = f"until {format_time(until, with_date=True)}" if until else "permanently"
        reason = f": {f['reason']}" if f.get("reason") else ""
        return f"! you were banned {span} by {f.get('by')}{reason}"
    if name is EventName.ROOM_CREATED:
        return f"* {f.get('by')} created #{f.get('room')}"
    if name is EventName.ROOM_RENAMED:
        return f"* {f.get('by')} renamed #{f.get('room')} to #{f.get('new_name')}"
    if name is EventName.ROOM_DELETED:
        return f"* {f.get('by')} deleted #{f.get('room')}"
    if name is EventName.DISCONNECT:
        return f"! the server is closing the connection: {f.get('reason') or f.get('code')}"
    return None


def render_session(session: Session) -> str:
    rooms = ", ".join(f"#{r}" for r in session.rooms) or "none yet (try /rooms, /join general)"
    return f"* logged in as {session.username} ({session.role}); your rooms: {rooms}"


def render_join(result: JoinResult, me: str | None) -> list[str]:
    lines = [render_record(m, me) for m in result.messages]
    online = set(result.online)
    people = ", ".join(f"{m}{'' if m in online else ' (away)'}" for m in result.members)
    lines.append(f"* you are in #{result.room} — members: {people}")
    return lines


def render_rooms(rooms: Iterable[RoomInfo], current: str | None) -> list[str]:
    out = []
    for r in rooms:
        mark = "*" if r.name == current else (" +" if r.joined else "  ")
        mark = mark if len(mark) == 2 else f"{mark} "
        out.append(f"{mark}#{r.name:<20} {r.members:>4} members {r.online:>4} online")
    return out or ["(no rooms)"]


def render_who(users: Iterable[UserPresence]) -> list[str]:
    out = []
    for u in users:
        state = "online " if u.online else "offline"
        role = " (admin)" if u.role == "admin" else ""
        out.append(
            f"{u.username + role:<30} {state}  login {format_time(u.login_ts, with_date=True)}"
            f"  active {format_time(u.last_active, with_date=True)}"
        )
    return out or ["(nobody)"]


def render_bans(bans: Iterable[BanInfo]) -> list[str]:
    out = []
    for b in bans:
        until = format_time(b.until, with_date=True) if b.until else "permanent"
        by = f" by {b.by}" if b.by else ""
        reason = f": {b.reason}" if b.reason else ""
        out.append(f"{b.user:<20} until {until}{by}{reason}")
    return out or ["(no bans)"]


def render_audit(entries: Iterable[AuditRecord]) -> list[str]:
    out = []
    for e in entries:
        reason = f": {e.reason}" if e.reason else ""
        out.append(f"{format_time(e.ts, with_date=True)}  {e.actor} {e.action} {e.target}{reason}")
    return out or ["(audit log is empty)"]
