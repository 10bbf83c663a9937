"""At login: what you missed (the client's requests; the model does the counting).

Every room you are in is joined again (idempotent: its newest messages and members, no event to
the others), ``unread`` gives the server's counts and read positions, DM conversations with
unread messages get their newest page, and a buffer whose read marker is above what is loaded
pages back until it is loaded (at most ``MISSED_PAGES`` pages) so the view can open there.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from parlour.client import Client, JoinResult, Session

from .buffers import Buffer, BufferKind, BufferList, EntryKind, Target

__all__ = ["MISSED_PAGES", "Missed", "fill_room", "load_missed", "reach_marker"]

#: pages loaded at login to reach the read marker of a buffer with many unread messages
MISSED_PAGES = 10


@dataclass(frozen=True, slots=True)
class Missed:
    #: the buffer to show first: the first that mentions you, else the first room
    first: Buffer | None
    #: every room on the server (for completion)
    rooms: list[str]


def fill_room(bufs: BufferList, result: JoinResult) -> Buffer:
    """A room's buffer from a ``join`` reply: newest messages, members, last sequence."""
    buf = bufs.open(Target(BufferKind.ROOM, result.room))
    buf.parted = False
    buf.set_members(result.members, result.online, result.members_total)
    msgs = result.messages
    buf.load_newest(msgs, bool(msgs) and msgs[0].seq > 1)
    if not msgs:
        buf.has_older = result.last_seq > 0
    buf.last_seq = max(buf.last_seq, result.last_seq)
    return buf


async def reach_marker(client: Client, buf: Buffer, page: int) -> None:
    """Page back until the read marker is loaded (the rest loads as you scroll)."""
    for _ in range(MISSED_PAGES):
        if not buf.unread or not buf.has_older or buf.marker_index() is not None:
            return
        target = buf.target
        room = target.name if target.kind is BufferKind.ROOM else None
        peer = target.name if target.kind is BufferKind.DM else None
        history = await client.history(room, peer=peer, before=buf.first_seq, limit=page)
        buf.add_older(history.messages, history.has_more)


async def load_missed(client: Client, session: Session, bufs: BufferList, page: int) -> Missed:
    server = bufs.server
    server.note(f"logged in as {session.username} ({session.role})", time.time())
    rows = await client.unread()
    known = [r.name for r in await client.rooms()]
    rooms = list(session.rooms)
    joined = await asyncio.gather(
        *(client.join(r, limit=page) for r in rooms), return_exceptions=True
    )
    for room, result in zip(rooms, joined, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            server.note(f"could not open #{room}: {result}", time.time(), EntryKind.ERROR)
            continue
        fill_room(bufs, result)
    for row in rows:
        if row.room is not None:
            found = bufs.room(row.room)
            if found is not None:
                found.set_counts(row)
        elif row.peer is not None and row.unread > 0:
            buf = bufs.open(Target(BufferKind.DM, row.peer))
            history = await client.history(peer=row.peer, limit=page)
            buf.load_newest(history.messages, history.has_more)
            buf.set_counts(row)
    for buf in bufs:
        await reach_marker(client, buf, page)
    missed = []
    for buf in bufs:
        if buf.unread:
            buf.jump_to_marker = True
            mention = f", {buf.mentions} for you" if buf.mentions else ""
            more = "+" if buf.capped else ""
            missed.append(f"{buf.target.label} {buf.unread}{more}{mention}")
    if missed:
        server.note("while you were away: " + "; ".join(missed), time.time())
    else:
        server.note("nothing new since you were last here", time.time())
    room_bufs = [b for b in bufs if b.target.kind is BufferKind.ROOM]
    with_news = [b for b in bufs if b.mentions] or room_bufs
    return Missed(with_news[0] if with_news else None, known)
