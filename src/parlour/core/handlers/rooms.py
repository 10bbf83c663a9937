"""Rooms: listing, creating, renaming and deleting them (admins), joining and leaving."""

from __future__ import annotations

import heapq
import logging

from parlour.core.accounts import username_problem
from parlour.core.context import Ctx, fail, log_event
from parlour.core.messages import to_record
from parlour.core.outcome import TO_ALL, Outcome, ToRoom
from parlour.core.records import RoomRecord, room_key
from parlour.core.sessions import Connection
from parlour.core.state import Room, room_scope
from parlour.core.writes import CreateRoom, DeleteRoom, RenameRoom, SetMembership
from parlour.protocol import (
    ErrorCode,
    JoinedEvent,
    JoinReply,
    JoinRequest,
    LeaveRequest,
    LeftEvent,
    Ok,
    RoomCreatedEvent,
    RoomCreateRequest,
    RoomDeletedEvent,
    RoomDeleteRequest,
    RoomRenamedEvent,
    RoomRenameReply,
    RoomRenameRequest,
    RoomReply,
    RoomRow,
    RoomsReply,
    RoomsRequest,
)

__all__ = [
    "delete_room",
    "join",
    "leave",
    "rename_room",
    "room_create",
    "room_delete",
    "room_rename",
    "rooms_list",
]


def rooms_list(cx: Ctx, c: Connection, rq: RoomsRequest) -> Outcome:
    u = cx.user(c)
    cx.may_read(c)
    rows: list[RoomRow] = [
        {
            "name": r.name,
            "members": len(r.members),
            "online": _online_count(cx, rk, r.members),
            "joined": u.key in r.members,
        }
        for rk, r in sorted(cx.state.rooms.items())
    ]
    cx.read_done(c, len(rows))
    return Outcome(Ok(rq.id, RoomsReply(rooms=rows)))


def _online_count(cx: Ctx, rk: str, members: set[str]) -> int:
    """Members of the room online here, or (several nodes) anywhere."""
    if cx.sessions.remote:
        online = cx.sessions.online
        return sum(1 for k in members if online(k))
    return len(cx.sessions.peek_room(rk).users())


def room_create(cx: Ctx, c: Connection, rq: RoomCreateRequest) -> Outcome:
    u = cx.admin(c)
    problem = username_problem(rq.room)
    if problem is not None:
        raise fail(ErrorCode.INVALID_FIELD, problem, field="room")
    if room_key(rq.room) in cx.state.rooms:
        raise fail(ErrorCode.ROOM_EXISTS, f"room {rq.room!r} exists", room=rq.room)
    now = cx.now
    out = cx.out()
    out.writes.append(CreateRoom(rq.room, u.name, now))
    cx.state.add_room(RoomRecord(rq.room, now, u.name), 0)
    cx.audit(out, u.name, "room_create", rq.room, "")
    log_event(logging.INFO, "room created", by=u.name, room=rq.room)
    out.event(RoomCreatedEvent(room=rq.room, by=u.name, ts=now), TO_ALL)
    return out.done(Ok(rq.id, RoomReply(room=rq.room)))


def room_rename(cx: Ctx, c: Connection, rq: RoomRenameRequest) -> Outcome:
    u = cx.admin(c)
    room = cx.find_room(rq.room)
    problem = username_problem(rq.new_name)
    if problem is not None:
        raise fail(ErrorCode.INVALID_FIELD, problem, field="new_name")
    rooms = cx.state.rooms
    old, new = room_key(room.name), room_key(rq.new_name)
    if new != old and new in rooms:
        raise fail(ErrorCode.ROOM_EXISTS, f"room {rq.new_name!r} exists", room=rq.new_name)
    out = cx.out()
    out.writes.append(RenameRoom(room.name, rq.new_name))
    old_name = room.name
    rename_room(cx, room, rq.new_name)
    cx.audit(out, u.name, "room_rename", old_name, f"renamed to {rq.new_name}")
    log_event(logging.INFO, "room renamed", by=u.name, room=old_name, new_name=rq.new_name)
    out.event(RoomRenamedEvent(room=old_name, new_name=rq.new_name, by=u.name, ts=cx.now), TO_ALL)
    return out.done(Ok(rq.id, RoomRenameReply(room=rq.new_name, new_name=rq.new_name)))


def rename_room(cx: Ctx, room: Room, new_name: str) -> None:
    """Rename `room` in the state and this node's sessions (the handler, or another node's
    committed rename)."""
    rooms = cx.state.rooms
    old, new = room_key(room.name), room_key(new_name)
    room.name = new_name
    del rooms[old]
    rooms[new] = room
    cx.sessions.renamed(old, new)
    if new != old:
        markers = cx.state.read_markers
        for key in [k for k in markers if k[1] == room_scope(old)]:
            markers[(key[0], room_scope(new))] = markers.pop(key)
        for mk in room.members:
            member = cx.state.users[mk]
            member.rooms.discard(old)
            member.rooms.add(new)


def delete_room(cx: Ctx, room: Room) -> None:
    """Forget `room` in the state and this node's sessions."""
    rk = room_key(room.name)
    for mk in room.members:
        member = cx.state.users.get(mk)
        if member is not None:
            member.rooms.discard(rk)
    del cx.state.rooms[rk]
    cx.sessions.dropped(rk)
    markers = cx.state.read_markers
    for key in [k for k in markers if k[1] == room_scope(rk)]:
        del markers[key]


def room_delete(cx: Ctx, c: Connection, rq: RoomDeleteRequest) -> Outcome:
    u = cx.admin(c)
    room = cx.find_room(rq.room)
    out = cx.out()
    out.writes.append(DeleteRoom(room.name))
    delete_room(cx, room)
    cx.audit(out, u.name, "room_delete", room.name, "")
    log_event(logging.INFO, "room deleted", by=u.name, room=room.name)
    out.event(RoomDeletedEvent(room=room.name, by=u.name, ts=cx.now), TO_ALL)
    return out.done(Ok(rq.id, RoomReply(room=room.name)))


def join(cx: Ctx, c: Connection, rq: JoinRequest) -> Outcome:
    u = cx.user(c)
    cx.may_read(c)
    room = cx.find_room(rq.room)
    rk = room_key(room.name)
    limit = min(rq.limit or cx.cfg.join_history, cx.cfg.max_page)
    msgs, _ = room.log.before(None, limit)  # may need the store: before any change
    out = cx.out()
    if u.key not in room.members:
        # the other members' connections hear about it; the joiner has the reply
        out.event(JoinedEvent(room=room.name, user=u.name, ts=cx.now), ToRoom(rk, exclude=u.key))
        room.members.add(u.key)
        u.rooms.add(rk)
        cx.sessions.joined(rk, u.key)
        out.writes.append(SetMembership(u.name, room.name, True))
        log_event(logging.INFO, "join", user=u.name, room=room.name, conn=c.id)
    # Bounded (a big room has thousands of members): at most `join_members` names, online
    # members first, each part in name order; `online` lists those of them online. Users the
    # joiner blocks are left out of the names (not of the room's totals).
    cap = cx.cfg.join_members
    online_keys = cx.sessions.peek_room(rk).users()
    if cx.sessions.remote:  # several nodes: members online on the others too
        online_keys |= {k for k in room.members if k in cx.sessions.remote}
    users = cx.state.users
    blocked = cx.state.blocks.blocked_by_user(u.key)
    online = heapq.nsmallest(
        cap, (users[k].name for k in online_keys if k not in blocked), key=str.casefold
    )
    away: list[str] = []
    if len(online) < cap:
        away = heapq.nsmallest(
            cap - len(online),
            (users[k].name for k in room.members if k not in online_keys and k not in blocked),
            key=str.casefold,
        )
    listable = len(room.members) - sum(1 for k in blocked if k in room.members)
    data = JoinReply(
        room=room.name,
        members=online + away,
        online=online,
        members_total=len(room.members),
        online_total=len(online_keys),
        members_truncated=len(online) + len(away) < listable,
        messages=[to_record(m, room=room.name) for m in cx.visible(u.key, msgs)],
        last_seq=room.log.last_seq,
    )
    cx.read_done(c, len(data.messages) + len(data.members))
    return out.done(Ok(rq.id, data))


def leave(cx: Ctx, c: Connection, rq: LeaveRequest) -> Outcome:
    u = cx.user(c)
    room = cx.member_room(u, rq.room)
    rk = room_key(room.name)
    out = cx.out()
    cx.sessions.left(rk, u.key)
    room.members.discard(u.key)
    u.rooms.discard(rk)
    out.writes.append(SetMembership(u.name, room.name, False))
    out.event(LeftEvent(room=room.name, user=u.name, ts=cx.now), ToRoom(rk))
    log_event(logging.INFO, "leave", user=u.name, room=room.name, conn=c.id)
    return out.done(Ok(rq.id, RoomReply(room=room.name)))
