"""Read positions kept on the server, and unread and mention counts.

A user's read marker per room and DM conversation is stored (`SetReadMarker`) and never moves
back, so the web client and the terminal client agree on what is unread; the user's other
sessions hear about a move (`read_marker` event). `unread` counts, per room and conversation,
the messages after the marker that are not the user's own nor from users they block, and how
many of those mention them (`@name`, any case); a count stops at `UNREAD_CAP` (`capped`).
"""

from __future__ import annotations

import re

from parlour.core.context import Ctx, fail
from parlour.core.messages import MessageLog
from parlour.core.outcome import Outcome, ToConns
from parlour.core.records import conv_id, conv_members, room_key, user_key
from parlour.core.sessions import Connection
from parlour.core.state import UserState, room_scope
from parlour.core.writes import SetReadMarker
from parlour.protocol import (
    ErrorCode,
    MarkReadReply,
    MarkReadRequest,
    Ok,
    ReadMarkerEvent,
    UnreadReply,
    UnreadRequest,
    UnreadRow,
)

__all__ = ["UNREAD_CAP", "mark_read", "mention_pattern", "unread"]

#: unread messages counted per room or conversation at most
UNREAD_CAP = 1000


def mention_pattern(name: str) -> re.Pattern[str]:
    """`@name` as a whole word, any case."""
    return re.compile(r"(?<![\w@])@" + re.escape(name) + r"(?![\w])", re.IGNORECASE)


def mark_read(cx: Ctx, c: Connection, rq: MarkReadRequest) -> Outcome:
    u = cx.user(c)
    state = cx.state
    if rq.room is not None:
        room = cx.member_room(u, rq.room)
        scope, last, where = room_scope(room_key(room.name)), room.log.last_seq, room.name
    else:
        assert rq.peer is not None
        peer = cx.find_user(rq.peer)
        if peer.key == u.key:
            raise fail(ErrorCode.SELF_MESSAGE, "there is no conversation with yourself")
        cid = conv_id(u.key, peer.key)
        scope, last, where = cid, state.dm_last_seq(cid), peer.name
    seq = min(rq.seq, last)  # not beyond what exists
    key = (u.key, scope)
    old = state.read_markers.get(key, 0)
    out = cx.out()
    if seq > old:
        state.read_markers[key] = seq
        room_name = where if rq.room is not None else None
        conv = None if rq.room is not None else scope
        out.writes.append(SetReadMarker(u.name, seq, room=room_name, conv=conv))
        others = tuple(conn for conn in cx.sessions.of(u.key) if conn != c.id)
        if others:
            event = ReadMarkerEvent(
                room=where if rq.room is not None else None,
                peer=where if rq.peer is not None else None,
                seq=seq,
            )
            out.event(event, ToConns(others))
    now_at = max(seq, old)
    if rq.room is not None:
        return out.done(Ok(rq.id, MarkReadReply(room=where, seq=now_at)))
    return out.done(Ok(rq.id, MarkReadReply(peer=where, seq=now_at)))


def _count(cx: Ctx, u: UserState, log: MessageLog, after: int, dm: bool) -> tuple[int, int, bool]:
    """(unread, mentions, capped) after `after` in `log`; may need the store."""
    if log.last_seq <= after:
        return 0, 0, False
    blocked = cx.state.blocks.blocked_by_user(u.key)
    mention = mention_pattern(u.name)
    unread = mentions = 0
    msgs = log.after(after, UNREAD_CAP + 1)
    capped = len(msgs) > UNREAD_CAP
    for m in msgs[:UNREAD_CAP]:
        sender = user_key(m.sender)
        if sender == u.key or sender in blocked or m.deleted:
            continue
        unread += 1
        if dm or (m.text is not None and mention.search(m.text)):
            mentions += 1
    return unread, mentions, capped


def unread(cx: Ctx, c: Connection, rq: UnreadRequest) -> Outcome:
    u = cx.user(c)
    cx.may_read(c)
    state = cx.state
    rooms: list[UnreadRow] = []
    for rk in sorted(u.rooms):
        room = state.rooms.get(rk)
        if room is None:
            continue
        read = state.read_markers.get((u.key, room_scope(rk)), 0)
        count, mentions, capped = _count(cx, u, room.log, read, dm=False)
        rooms.append(
            {
                "room": room.name,
                "last_seq": room.log.last_seq,
                "read_seq": read,
                "unread": count,
                "mentions": mentions,
                "capped": capped,
            }
        )
    dms: list[UnreadRow] = []
    for cid in sorted(u.convs):
        read = state.read_markers.get((u.key, cid), 0)
        last = state.dm_last_seq(cid)
        a, b = conv_members(cid)
        other = state.users.get(b if a == u.key else a)
        if other is None:
            continue
        if last > read:
            count, mentions, capped = _count(cx, u, state.conv(a, b).log, read, dm=True)
        else:
            count, mentions, capped = 0, 0, False
        dms.append(
            {
                "peer": other.name,
                "last_seq": last,
                "read_seq": read,
                "unread": count,
                "mentions": mentions,
                "capped": capped,
            }
        )
    cx.read_done(c, (len(rooms) + len(dms)) * 10)
    return Outcome(Ok(rq.id, UnreadReply(rooms=rooms, dms=dms)))
