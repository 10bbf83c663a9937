"""Moderation (admins): kick, ban, unban, the bans list and the audit log."""

from __future__ import annotations

import logging

from parlour.core.context import Ctx, fail, log_event
from parlour.core.handlers.accounts import utc
from parlour.core.handlers.sessions import end_all_sessions
from parlour.core.outcome import Outcome, ToRoom, ToUsers
from parlour.core.records import BanRecord, room_key
from parlour.core.sessions import Connection
from parlour.core.writes import AddBan, RemoveBan, SetMembership
from parlour.protocol import (
    AuditReply,
    AuditRequest,
    AuditRow,
    BannedEvent,
    BanReply,
    BanRequest,
    BanRow,
    BansReply,
    BansRequest,
    ErrorCode,
    KickedEvent,
    KickReply,
    KickRequest,
    LeftEvent,
    Ok,
    UnbanRequest,
    UserReply,
)

__all__ = ["audit_list", "ban", "bans_list", "kick", "unban"]


def kick(cx: Ctx, c: Connection, rq: KickRequest) -> Outcome:
    admin = cx.admin(c)
    target = cx.find_user(rq.user)
    if target.is_admin:
        raise fail(ErrorCode.FORBIDDEN, "admins cannot be kicked")
    reason = rq.reason or ""
    now = cx.now
    out = cx.out()
    where: str | None
    if rq.room is not None:
        room = cx.find_room(rq.room)
        if target.key not in room.members:
            raise fail(ErrorCode.NOT_MEMBER, f"{target.name} is not in {room.name}", room=room.name)
        rk = room_key(room.name)
        out.event(
            KickedEvent(room=room.name, by=admin.name, reason=reason, ts=now),
            ToUsers((target.key,)),
        )
        out.event(LeftEvent(room=room.name, user=target.name, ts=now), ToRoom(rk))
        cx.sessions.left(rk, target.key)
        room.members.discard(target.key)
        target.rooms.discard(rk)
        out.writes.append(SetMembership(target.name, room.name, False))
        sessions = len(cx.sessions.of(target.key))
        where = room.name
    else:
        out.event(
            KickedEvent(room=None, by=admin.name, reason=reason, ts=now),
            ToUsers((target.key,)),
        )
        sessions = end_all_sessions(
            cx,
            target,
            ErrorCode.KICKED,
            f"kicked by {admin.name}" + (f": {reason}" if reason else ""),
            out,
        )
        where = None
    cx.audit(out, admin.name, "kick" if where is None else f"kick:{where}", target.name, reason)
    log_event(
        logging.INFO,
        "kick",
        by=admin.name,
        user=target.name,
        room=where,
        reason=reason,
        sessions=sessions,
    )
    return out.done(Ok(rq.id, KickReply(user=target.name, room=where, sessions=sessions)))


def ban(cx: Ctx, c: Connection, rq: BanRequest) -> Outcome:
    admin = cx.admin(c)
    target = cx.find_user(rq.user)
    if target.is_admin:
        raise fail(ErrorCode.FORBIDDEN, "admins cannot be banned")
    reason = rq.reason or ""
    now = cx.now
    until = None if rq.duration is None else now + rq.duration
    cx.state.bans.add(BanRecord(target.name, until, reason, admin.name, now))
    out = cx.out()
    out.writes.append(AddBan(target.name, until, reason, admin.name, now))
    out.event(
        BannedEvent(by=admin.name, reason=reason, until=until, ts=now), ToUsers((target.key,))
    )
    end_all_sessions(
        cx,
        target,
        ErrorCode.BANNED,
        "banned"
        + (f" until {utc(until)}" if until is not None else "")
        + (f": {reason}" if reason else ""),
        out,
    )
    cx.audit(out, admin.name, "ban", target.name, reason)
    log_event(
        logging.INFO,
        "ban",
        by=admin.name,
        user=target.name,
        until="permanent" if until is None else utc(until),
        reason=reason,
    )
    return out.done(Ok(rq.id, BanReply(user=target.name, until=until, reason=reason)))


def unban(cx: Ctx, c: Connection, rq: UnbanRequest) -> Outcome:
    admin = cx.admin(c)
    target = cx.find_user(rq.user)
    if cx.state.bans.remove(target.key) is None:
        raise fail(ErrorCode.NOT_BANNED, f"{target.name} is not banned", user=target.name)
    out = cx.out()
    out.writes.append(RemoveBan(target.name))
    cx.audit(out, admin.name, "unban", target.name, "")
    log_event(logging.INFO, "unban", by=admin.name, user=target.name)
    return out.done(Ok(rq.id, UserReply(user=target.name)))


def bans_list(cx: Ctx, c: Connection, rq: BansRequest) -> Outcome:
    cx.admin(c)
    cx.may_read(c)
    rows: list[BanRow] = [
        {"user": b.user, "until": b.until, "reason": b.reason, "by": b.by, "ts": b.ts}
        for b in cx.state.bans.listing(cx.now)
    ]
    cx.read_done(c, len(rows))
    return Outcome(Ok(rq.id, BansReply(bans=rows)))


def audit_list(cx: Ctx, c: Connection, rq: AuditRequest) -> Outcome:
    cx.admin(c)
    cx.may_read(c)
    rows: list[AuditRow] = [
        {
            "ts": e.ts,
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "reason": e.reason,
        }
        for e in cx.state.audit.newest(min(rq.limit or 50, cx.cfg.max_page))
    ]
    cx.read_done(c, len(rows))
    return Outcome(Ok(rq.id, AuditReply(entries=rows)))
