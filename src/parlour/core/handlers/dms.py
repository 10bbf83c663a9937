"""Direct messages: one conversation per pair of users, with offline delivery by cursor."""

from __future__ import annotations

import logging

from parlour.core.context import Ctx, Out, fail, log_event
from parlour.core.handlers.uploads import attachment_for, mark_attached
from parlour.core.messages import to_record
from parlour.core.outcome import Outcome, ToUsers
from parlour.core.records import StoredMessage, user_key
from parlour.core.sessions import Connection
from parlour.core.state import Conversation, UserState
from parlour.core.writes import ASSIGN, AppendDm
from parlour.protocol import (
    DmDeletedEvent,
    DmEditedEvent,
    DmEvent,
    DmReply,
    DmRequest,
    ErrorCode,
    MessageRecord,
    Ok,
)

__all__ = ["PENDING_SCAN", "dm", "dm_events"]

#: how many messages a live DM looks back over for older undelivered ones before assuming
#: there are some (then it waits for offline delivery instead of being pushed live)
PENDING_SCAN = 1000

DmEventClass = type[DmEvent] | type[DmEditedEvent] | type[DmDeletedEvent]


def _event(
    kind: DmEventClass, m: StoredMessage, peer: str
) -> DmEvent | DmEditedEvent | DmDeletedEvent:
    return kind(
        peer=peer,
        seq=m.seq,
        ts=m.ts,
        sender=m.sender,
        text=m.text,
        edited=m.edited,
        deleted=m.deleted,
        client_id=m.client_id,
        attachment=m.attachment,
    )


def dm_events(
    cx: Ctx,
    kind: DmEventClass,
    msg: StoredMessage,
    sender: UserState,
    peer: UserState,
    out: Out,
    *,
    to_peer: bool = True,
) -> MessageRecord:
    """Deliver a DM event to both sides (not to a recipient who blocks the sender, nor when
    `to_peer` is false); returns the record as the sender sees it."""
    out.event(_event(kind, msg, peer.name), ToUsers((sender.key,)))
    if to_peer and cx.online(peer) and not cx.state.blocks.blocks(peer.key, sender.key):
        out.event(_event(kind, msg, sender.name), ToUsers((peer.key,)))
    return to_record(msg, peer=peer.name)


def _pending(cx: Ctx, user: str, conv: Conversation, seq: int) -> bool:
    """True if user key `user` has DMs from the peer before `seq` in `conv` that offline
    delivery has not pushed yet (the delivery cursor is behind them). May need the store."""
    cursor = cx.state.cursors.get((user, conv.conv), 0)
    gap = seq - 1 - cursor
    if gap <= 0:
        return False
    if gap > PENDING_SCAN:
        return True  # rare (own messages only, after a restart): catch-up will tell
    other = conv.other(user)
    return any(user_key(m.sender) == other for m in conv.log.after(cursor, gap))


def dm(cx: Ctx, c: Connection, rq: DmRequest) -> Outcome:
    u = cx.user(c)
    peer = cx.find_user(rq.to)
    if peer.key == u.key:
        raise fail(ErrorCode.SELF_MESSAGE, "you cannot send a direct message to yourself")
    cx.check_text(rq.text)
    state = cx.state
    conv = state.conv(u.key, peer.key)
    attachment = None
    if rq.attachment is not None and state.client_ids.get(conv.conv, u.key, rq.client_id) is None:
        # (may need the store: before any change)
        attachment = attachment_for(
            cx, u, rq.attachment, client_id=rq.client_id, where=(None, conv.conv)
        )
    seq = conv.log.last_seq + 1
    blocked = state.blocks.blocks(peer.key, u.key)
    # Delivered now, or deliberately never (blocked): either way the cursor moves on. An
    # online recipient with older offline DMs from this sender still pending (its catch-up
    # was cut short) gets this one after them, by offline delivery, in order: the cursor only
    # ever moves over DMs pushed in order. (`_pending` may need the store: before any change.)
    delivered = blocked or (cx.online(peer) and not _pending(cx, peer.key, conv, seq))
    cx.rate(c)
    dup = state.client_ids.get(conv.conv, u.key, rq.client_id)
    if dup is not None:
        return Outcome(
            Ok(
                rq.id,
                DmReply(
                    peer=peer.name, seq=dup[0], ts=dup[1], client_id=rq.client_id, duplicate=True
                ),
            )
        )
    now = cx.now
    if attachment is not None:
        mark_attached(cx, attachment["id"], rq.client_id, (None, conv.conv))
    if cx.cfg.cluster:
        # the store assigns the sequence number and moves the recipient's cursor when
        # `delivered`; the DM reaches both sides once committed (`parlour.core.replica`)
        write = AppendDm(
            conv.conv,
            ASSIGN,
            u.name,
            peer.name,
            rq.text,
            now,
            rq.client_id,
            delivered,
            attachment,
        )
        reply = DmReply(peer=peer.name, seq=ASSIGN, ts=now, client_id=rq.client_id, duplicate=False)
        return Outcome(Ok(rq.id, reply), writes=(write,))
    msg = StoredMessage(
        conv.conv,
        seq,
        now,
        u.name,
        rq.text,
        client_id=rq.client_id,
        recipient=peer.name,
        attachment=attachment,
    )
    conv.log.append(msg)
    state.client_ids.put(conv.conv, u.key, rq.client_id, seq, now)
    u.convs.add(conv.conv)
    peer.convs.add(conv.conv)
    if delivered:
        state.cursors[(peer.key, conv.conv)] = seq
    own = (u.key, conv.conv)
    if state.cursors.get(own, 0) == seq - 1:
        # nothing to deliver to the sender before or at `seq` (memory only: after a restart
        # `_pending` and the catch-up skip own messages)
        state.cursors[own] = seq
    log_event(logging.INFO, "dm", user=u.name, to=peer.name, seq=seq, size=len(rq.text))
    if cx.cfg.log_message_text:
        log_event(logging.INFO, "dm text", user=u.name, to=peer.name, seq=seq, text=rq.text)
    out = cx.out()
    out.writes.append(
        AppendDm(
            conv.conv, seq, u.name, peer.name, rq.text, now, rq.client_id, delivered, attachment
        )
    )
    dm_events(cx, DmEvent, msg, u, peer, out, to_peer=delivered)
    return out.done(
        Ok(
            rq.id,
            DmReply(peer=peer.name, seq=seq, ts=now, client_id=rq.client_id, duplicate=False),
        )
    )
