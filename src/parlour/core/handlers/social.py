"""Presence listings and blocking: who, block, unblock, blocks."""

from __future__ import annotations

from collections.abc import Iterable

from parlour.core.context import Ctx, fail
from parlour.core.outcome import Outcome
from parlour.core.sessions import Connection
from parlour.core.state import UserState
from parlour.core.writes import AddBlock, RemoveBlock, Write
from parlour.protocol import (
    BlockRequest,
    BlocksRequest,
    ErrorCode,
    Ok,
    UnblockRequest,
    UserReply,
    UsersReply,
    WhoReply,
    WhoRequest,
    WhoRow,
)

__all__ = ["block", "blocks_list", "unblock", "who"]


def _who_rows(cx: Ctx, users: Iterable[UserState]) -> list[WhoRow]:
    """`who` rows, sorted by name: user, role, online, login time, last activity, rooms."""
    rooms = cx.state.rooms
    rows: list[WhoRow] = []
    for u in sorted(users, key=lambda u: u.key):
        rows.append(
            {
                "username": u.name,
                "role": u.role,
                "online": cx.online(u),
                "login_ts": u.last_login,
                "last_active": u.last_active,
                "rooms": sorted(rooms[r].name for r in u.rooms if r in rooms),
            }
        )
    return rows


def who(cx: Ctx, c: Connection, rq: WhoRequest) -> Outcome:
    u = cx.user(c)
    # Users `u` blocks are left out (the blocked user still sees `u`: blocks are invisible to
    # the blocked user; docs/design/core-blocking.md).
    blocked = cx.state.blocks.blocked_by_user(u.key)
    users = cx.state.users
    window = rq.since
    if window is None and rq.recent:
        window = cx.cfg.presence_window
    room_name: str | None = None
    pool: Iterable[UserState]
    if rq.room is not None:
        room = cx.find_room(rq.room)
        room_name = room.name
        pool = (users[k] for k in room.members)
    elif window is not None:
        pool = users.values()
    else:
        pool = (users[k] for k in cx.sessions.by_user)
    if window is None:
        found = [x for x in pool if cx.online(x) and x.key not in blocked]
    else:
        horizon = cx.now - window
        found = [
            x
            for x in pool
            if (cx.online(x) or (x.last_active is not None and x.last_active >= horizon))
            and x.key not in blocked
        ]
    return Outcome(Ok(rq.id, WhoReply(users=_who_rows(cx, found), since=window, room=room_name)))


def block(cx: Ctx, c: Connection, rq: BlockRequest) -> Outcome:
    u = cx.user(c)
    other = cx.find_user(rq.user)
    if other.key == u.key:
        raise fail(ErrorCode.SELF_MESSAGE, "you cannot block yourself")
    writes: tuple[Write, ...] = ()
    if cx.state.blocks.add(u.key, other.key):
        writes = (AddBlock(u.name, other.name),)
    return Outcome(Ok(rq.id, UserReply(user=other.name)), writes=writes)


def unblock(cx: Ctx, c: Connection, rq: UnblockRequest) -> Outcome:
    u = cx.user(c)
    other = cx.find_user(rq.user)
    writes: tuple[Write, ...] = ()
    if cx.state.blocks.remove(u.key, other.key):
        writes = (RemoveBlock(u.name, other.name),)
    return Outcome(Ok(rq.id, UserReply(user=other.name)), writes=writes)


def blocks_list(cx: Ctx, c: Connection, rq: BlocksRequest) -> Outcome:
    u = cx.user(c)
    names = sorted(cx.state.users[k].name for k in cx.state.blocks.blocked_by_user(u.key))
    return Outcome(Ok(rq.id, UsersReply(users=names)))
