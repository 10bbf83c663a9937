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
    cx.may_read(c)
    # Users `u` blocks are left out (the blocked user still sees `u`: blocks are invisible to
    # the blocked user; docs/design/core-blocking.md).
    blocked = cx.state.blocks.blocked_by_user(u.key)
    users = cx.state.users
    window = rq.since
    if window is None and rq.recent:
        window = cx.cfg.presence_window
    # Only users online now are listed; a window keeps those of them who logged in within
    # it ("online users who logged in within the last hour"). Offline accounts are never
    # listed, so `who` cannot enumerate the accounts of the server.
    room_name: str | None = None
    online_keys: Iterable[str] = cx.sessions.by_user
    if cx.sessions.remote:  # several nodes: users online on the others too
        online_keys = [
            *cx.sessions.by_user,
            *(k for k in cx.sessions.remote if k not in cx.sessions.by_user),
        ]
    if rq.room is not None:
        room = cx.find_room(rq.room)
        room_name = room.name
        online_keys = [k for k in room.members if cx.sessions.online(k)]
    horizon = None if window is None else cx.now - window
    found = [
        u
        for u in (users[k] for k in online_keys if k not in blocked)
        if horizon is None or (u.last_login or 0.0) >= horizon
    ]
    rows = _who_rows(cx, found)
    cx.read_done(c, len(rows))
    return Outcome(Ok(rq.id, WhoReply(users=rows, since=window, room=room_name)))


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
    cx.may_read(c)
    names = sorted(cx.state.users[k].name for k in cx.state.blocks.blocked_by_user(u.key))
    cx.read_done(c, len(names))
    return Outcome(Ok(rq.id, UsersReply(users=names)))
