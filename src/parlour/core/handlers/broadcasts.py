"""Broadcasts: an announcement to every registered user.

Users online get it at once; the others at their next login, in the order things were sent
(offline delivery in `catch_up`). Who may broadcast is a setting (`broadcast_policy`: admins by
default, everyone if enabled). Broadcasts are numbered (`seq`): a user's broadcast cursor says
what they have been given; it moves when their last session ends (they were online for
everything until then) and when a catch-up pushes what they missed.
"""

from __future__ import annotations

import logging

from parlour.core.context import Ctx, fail, log_event
from parlour.core.outcome import TO_ALL, Outcome
from parlour.core.sessions import Connection
from parlour.core.writes import ASSIGN, AppendBroadcast
from parlour.protocol import (
    BroadcastEvent,
    BroadcastReply,
    BroadcastRequest,
    ErrorCode,
    Ok,
)

__all__ = ["broadcast"]


def broadcast(cx: Ctx, c: Connection, rq: BroadcastRequest) -> Outcome:
    u = cx.user(c)
    if cx.cfg.broadcast_policy == "admins" and not u.is_admin:
        raise fail(ErrorCode.FORBIDDEN, "only admins may broadcast on this server")
    cx.check_text(rq.text)
    cx.rate(c)
    state = cx.state
    now = cx.now
    out = cx.out()
    if cx.cfg.cluster:
        # the store numbers it; every node delivers it once committed (`parlour.core.replica`)
        out.writes.append(AppendBroadcast(ASSIGN, u.name, rq.text, now))
        sessions = len(cx.router.resolve(TO_ALL))
        cx.audit(out, u.name, "broadcast", "*", rq.text[:200])
        log_event(logging.INFO, "broadcast", by=u.name, sessions=sessions, size=len(rq.text))
        return out.done(Ok(rq.id, BroadcastReply(delivered=sessions, seq=ASSIGN)))
    seq = state.broadcast_last + 1
    state.broadcast_last = seq
    out.writes.append(AppendBroadcast(seq, u.name, rq.text, now))
    out.event(BroadcastEvent(sender=u.name, text=rq.text, ts=now, seq=seq), TO_ALL)
    sessions = len(out.deliveries[0].to) if out.deliveries else 0
    cx.audit(out, u.name, "broadcast", "*", rq.text[:200])
    log_event(logging.INFO, "broadcast", by=u.name, seq=seq, sessions=sessions, size=len(rq.text))
    if cx.cfg.log_message_text:
        log_event(logging.INFO, "broadcast text", by=u.name, seq=seq, text=rq.text)
    return out.done(Ok(rq.id, BroadcastReply(delivered=sessions, seq=seq)))
