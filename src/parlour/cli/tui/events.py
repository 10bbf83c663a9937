"""Server events applied to the buffers (pure: the model changes, nothing is drawn or sent).

:func:`apply_event` returns the buffer that changed (``None``: nothing to show). Messages go
to their room's or conversation's buffer (opened if needed: a DM from someone new opens a
buffer), edits and deletions change the loaded message in place, ``joined``/``left``/
``presence`` keep member lists current, ``read_marker`` (your other session read something)
moves the read position and the marker line, and notices go to the buffer they concern or
the server buffer.
"""

from __future__ import annotations

from parlour.cli._render import render_event
from parlour.protocol import (
    BannedEvent,
    BroadcastEvent,
    DisconnectEvent,
    DmDeletedEvent,
    DmEditedEvent,
    DmEvent,
    Event,
    JoinedEvent,
    KickedEvent,
    LeftEvent,
    MessageDeletedEvent,
    MessageEditedEvent,
    MessageEvent,
    PresenceEvent,
    ReadMarkerEvent,
    RoomCreatedEvent,
    RoomDeletedEvent,
    RoomRenamedEvent,
)

from .buffers import Buffer, BufferKind, BufferList, EntryKind, Target

__all__ = ["apply_event", "event_line"]


def event_line(event: Event, me: str) -> str:
    """The notice for an event, without the line-mode client's ``* ``/``! `` prefix."""
    line = render_event(event, me) or ""
    return line[2:] if line[:2] in ("* ", "! ") else line


def apply_event(bufs: BufferList, event: Event, now: float) -> Buffer | None:
    me = bufs.me
    if isinstance(event, MessageEvent):
        buf = bufs.open(Target(BufferKind.ROOM, event.room))
        buf.add(event.record)
        return buf
    if isinstance(event, MessageEditedEvent | MessageDeletedEvent):
        buf = bufs.open(Target(BufferKind.ROOM, event.room))
        buf.update(event.record)
        return buf
    if isinstance(event, DmEvent):
        buf = bufs.open(Target(BufferKind.DM, event.peer))
        if not buf.entries:
            buf.has_older = event.seq > 1
        buf.add(event.record)
        return buf
    if isinstance(event, DmEditedEvent | DmDeletedEvent):
        found = bufs.dm(event.peer)
        if found is not None:
            found.update(event.record)
        return found
    if isinstance(event, JoinedEvent | LeftEvent):
        found = bufs.room(event.room)
        if found is None:
            return None
        if isinstance(event, JoinedEvent):
            found.member_joined(event.user)
            verb = "joined"
        else:
            found.member_left(event.user)
            verb = "left"
            if found.is_mine(event.user):
                found.parted = True
        found.note(f"{event.user} {verb} #{event.room}", event.ts)
        return found
    if isinstance(event, PresenceEvent):
        touched = [b for b in bufs if b.presence(event.user, event.online)]
        return bufs.current if bufs.current in touched else (touched[0] if touched else None)
    if isinstance(event, ReadMarkerEvent):
        found = bufs.room(event.room) if event.room is not None else bufs.dm(event.peer or "")
        if found is not None:
            found.mark_read(event.seq, elsewhere=True)
        return found
    if isinstance(event, BroadcastEvent):
        server = bufs.server
        server.note(f"broadcast from {event.sender}: {event.text}", event.ts, EntryKind.BROADCAST)
        if server is not bufs.current:
            server.highlights += 1
        return server
    if isinstance(event, KickedEvent):
        room = bufs.room(event.room) if event.room else None
        if room is not None:
            room.parted = True
        buf = room or bufs.server
        buf.note(event_line(event, me), event.ts, EntryKind.ERROR)
        return buf
    if isinstance(event, BannedEvent | DisconnectEvent):
        line = event_line(event, me)
        if not line:
            return None
        bufs.server.note(line, now, EntryKind.ERROR)
        if bufs.current is not bufs.server:
            bufs.current.note(line, now, EntryKind.ERROR)
            return bufs.current
        return bufs.server
    if isinstance(event, RoomRenamedEvent):
        buf = bufs.rename_room(event.room, event.new_name) or bufs.server
        buf.note(event_line(event, me), event.ts)
        return buf
    if isinstance(event, RoomDeletedEvent):
        found = bufs.room(event.room)
        if found is not None:
            found.parted = True
        buf = found or bufs.server
        buf.note(event_line(event, me), event.ts, EntryKind.ERROR)
        return buf
    if isinstance(event, RoomCreatedEvent):
        bufs.server.note(event_line(event, me), event.ts)
        return bufs.server
    return None
