"""Room messages: send, history, since, edit and delete (edit and delete of DMs too)."""

from __future__ import annotations

import logging

from parlour.core.context import Ctx, fail, log_event
from parlour.core.handlers.dms import dm_events
from parlour.core.handlers.uploads import attachment_for, mark_attached
from parlour.core.messages import MessageLog, to_record
from parlour.core.needs import ReadSince
from parlour.core.outcome import Delivery, Outcome, ToRoom
from parlour.core.records import StoredMessage, room_key, user_key
from parlour.core.sessions import Connection
from parlour.core.state import Room, UserState
from parlour.core.writes import (
    ASSIGN,
    AppendRoomMessage,
    DeleteDm,
    DeleteRoomMessage,
    EditDm,
    EditRoomMessage,
)
from parlour.protocol import (
    DeleteRequest,
    DmDeletedEvent,
    DmEditedEvent,
    EditRequest,
    ErrorCode,
    HistoryReply,
    HistoryRequest,
    MessageDeletedEvent,
    MessageEditedEvent,
    MessageEvent,
    MessageRecord,
    MessageReply,
    Ok,
    SendReply,
    SendRequest,
    SinceReply,
    SinceRequest,
)

__all__ = ["delete", "edit", "history", "send", "since"]


def send(cx: Ctx, c: Connection, rq: SendRequest) -> Outcome:
    u = cx.user(c)
    room = cx.member_room(u, rq.room)
    cx.check_text(rq.text)
    attachment = None
    if rq.attachment is not None and cx.state.client_ids.get(room.uid, u.key, rq.client_id) is None:
        # (may need the store: before any change)
        attachment = attachment_for(
            cx, u, rq.attachment, client_id=rq.client_id, where=(room_key(room.name), None)
        )
    cx.rate(c)
    dup = cx.state.client_ids.get(room.uid, u.key, rq.client_id)
    if dup is not None:
        return Outcome(
            Ok(
                rq.id,
                SendReply(
                    room=room.name,
                    seq=dup[0],
                    ts=dup[1],
                    client_id=rq.client_id,
                    duplicate=True,
                ),
            )
        )
    now = cx.now
    name = room.name
    if attachment is not None:
        mark_attached(cx, attachment["id"], rq.client_id, (room_key(name), None))
    if cx.cfg.cluster:
        # the store assigns the sequence number; the message is applied and delivered here
        # and on every node once it is committed (`parlour.core.replica`)
        return Outcome(
            Ok(
                rq.id,
                SendReply(room=name, seq=ASSIGN, ts=now, client_id=rq.client_id, duplicate=False),
            ),
            writes=(
                AppendRoomMessage(name, ASSIGN, u.name, rq.text, now, rq.client_id, attachment),
            ),
        )
    seq = room.log.last_seq + 1
    room.log.append(
        StoredMessage(
            name, seq, now, u.name, rq.text, client_id=rq.client_id, attachment=attachment
        )
    )
    cx.state.client_ids.put(room.uid, u.key, rq.client_id, seq, now)
    event = MessageEvent(
        room=name,
        seq=seq,
        ts=now,
        sender=u.name,
        text=rq.text,
        client_id=rq.client_id,
        attachment=attachment,
    )
    log_event(logging.INFO, "message", user=u.name, room=name, seq=seq, size=len(rq.text))
    if cx.cfg.log_message_text:
        log_event(logging.INFO, "message text", user=u.name, room=name, seq=seq, text=rq.text)
    address = ToRoom(room_key(name), u.key)
    return Outcome(
        Ok(
            rq.id,
            SendReply(room=name, seq=seq, ts=now, client_id=rq.client_id, duplicate=False),
        ),
        (Delivery(event, cx.router.room(address), address),),
        (AppendRoomMessage(name, seq, u.name, rq.text, now, rq.client_id, attachment),),
    )


def _page_limit(cx: Ctx, limit: int | None) -> int:
    return min(limit or cx.cfg.join_history, cx.cfg.max_page)


def history(cx: Ctx, c: Connection, rq: HistoryRequest) -> Outcome:
    u = cx.user(c)
    cx.may_read(c)
    limit = _page_limit(cx, rq.limit)
    if rq.room is not None:
        room = cx.member_room(u, rq.room)
        msgs, more = room.log.before(rq.before, limit)
        recs = [to_record(m, room=room.name) for m in cx.visible(u.key, msgs)]
        cx.read_done(c, len(recs))
        return Outcome(Ok(rq.id, HistoryReply(room=room.name, messages=recs, has_more=more)))
    assert rq.peer is not None
    peer = cx.find_user(rq.peer)
    if peer.key == u.key:
        raise fail(ErrorCode.SELF_MESSAGE, "there is no conversation with yourself")
    if not cx.state.conv_exists(u.key, peer.key):
        # nothing was ever said: answered without keeping a conversation in memory
        cx.read_done(c)
        return Outcome(Ok(rq.id, HistoryReply(peer=peer.name, messages=[], has_more=False)))
    conv = cx.state.conv(u.key, peer.key)
    msgs, more = conv.log.before(rq.before, limit)
    recs = [to_record(m, peer=peer.name) for m in cx.visible(u.key, msgs)]
    cx.read_done(c, len(recs))
    return Outcome(Ok(rq.id, HistoryReply(peer=peer.name, messages=recs, has_more=more)))


def since(cx: Ctx, c: Connection, rq: SinceRequest) -> Outcome:
    u = cx.user(c)
    cx.may_read(c)
    limit = min(rq.limit or cx.cfg.max_page, cx.cfg.max_page)
    rooms_by_key = cx.state.rooms
    if rq.rooms is None:
        rooms = [rooms_by_key[rk] for rk in sorted(u.rooms)]
    else:
        rooms = [cx.member_room(u, name) for name in rq.rooms]
    by_key = {room_key(r.name): r for r in rooms}
    found: dict[tuple[int, int], tuple[Room, StoredMessage]] = {}
    if rooms:
        stored: list[StoredMessage] = cx.need(
            ReadSince(tuple(r.name for r in rooms), rq.ts, limit + 1)
        )
        for m in stored:
            r = by_key.get(room_key(m.scope))
            if r is not None and m.seq < r.log.low:
                found[(r.uid, m.seq)] = (r, r.log.fresh(m))
    for r in rooms:
        for m in r.log.recent():
            if m.ts >= rq.ts:
                found[(r.uid, m.seq)] = (r, m)
    ordered = sorted(found.values(), key=lambda rm: (rm[1].ts, room_key(rm[0].name), rm[1].seq))
    more = len(ordered) > limit
    blocked = cx.state.blocks.blocked_by_user(u.key)
    recs = [
        to_record(m, room=r.name) for r, m in ordered[:limit] if user_key(m.sender) not in blocked
    ]
    cx.read_done(c, len(recs))
    return Outcome(Ok(rq.id, SinceReply(messages=recs, has_more=more)))


def _target(
    cx: Ctx, u: UserState, rq: EditRequest | DeleteRequest
) -> tuple[MessageLog, StoredMessage, Room | None, UserState | None]:
    if rq.room is not None:
        if u.is_admin and isinstance(rq, DeleteRequest):
            room = cx.find_room(rq.room)  # admins may delete anywhere
        else:
            room = cx.member_room(u, rq.room)
        msglog, peer = room.log, None
    else:
        assert rq.peer is not None
        peer = cx.find_user(rq.peer)
        if peer.key == u.key:
            raise fail(ErrorCode.SELF_MESSAGE, "there is no conversation with yourself")
        room, msglog = None, cx.state.conv(u.key, peer.key).log
    msg = msglog.get(rq.seq)  # may need the store: before any change
    if msg is None or msg.deleted:
        raise fail(ErrorCode.MESSAGE_NOT_FOUND, f"no message {rq.seq} there", seq=rq.seq)
    return msglog, msg, room, peer


def _room_event(
    kind: type[MessageEditedEvent] | type[MessageDeletedEvent], m: StoredMessage, room: str
) -> MessageEditedEvent | MessageDeletedEvent:
    return kind(
        room=room,
        seq=m.seq,
        ts=m.ts,
        sender=m.sender,
        text=m.text,
        edited=m.edited,
        deleted=m.deleted,
        client_id=m.client_id,
        attachment=m.attachment,
    )


def edit(cx: Ctx, c: Connection, rq: EditRequest) -> Outcome:
    u = cx.user(c)
    cx.check_text(rq.text)
    msglog, msg, room, peer = _target(cx, u, rq)
    if user_key(msg.sender) != u.key:
        raise fail(ErrorCode.FORBIDDEN, "you can only edit your own messages")
    cx.rate(c)
    new = msglog.edited(msg, rq.text)
    out = cx.out()
    rec: MessageRecord
    if room is not None:
        out.writes.append(EditRoomMessage(room.name, msg.seq, rq.text))
        rec = to_record(new, room=room.name)
        out.event(
            _room_event(MessageEditedEvent, new, room.name),
            ToRoom(room_key(room.name), u.key),
        )
    else:
        assert peer is not None
        conv = cx.state.conv(u.key, peer.key)
        out.writes.append(EditDm(conv.conv, msg.seq, rq.text))
        rec = dm_events(cx, DmEditedEvent, new, u, peer, out)
    return out.done(Ok(rq.id, MessageReply(message=rec)))


def delete(cx: Ctx, c: Connection, rq: DeleteRequest) -> Outcome:
    u = cx.user(c)
    msglog, msg, room, peer = _target(cx, u, rq)
    own = user_key(msg.sender) == u.key
    if not own and not (room is not None and u.is_admin):
        raise fail(ErrorCode.FORBIDDEN, "you can only delete your own messages")
    cx.rate(c)
    new = msglog.edited(msg, None)
    out = cx.out()
    rec: MessageRecord
    if room is not None:
        out.writes.append(DeleteRoomMessage(room.name, msg.seq))
        rec = to_record(new, room=room.name)
        out.event(
            _room_event(MessageDeletedEvent, new, room.name),
            ToRoom(room_key(room.name), user_key(msg.sender)),
        )
        if not own:
            cx.audit(out, u.name, "delete_message", msg.sender, f"{room.name}#{msg.seq}")
            log_event(
                logging.INFO, "message deleted by admin", by=u.name, room=room.name, seq=msg.seq
            )
    else:
        assert peer is not None
        conv = cx.state.conv(u.key, peer.key)
        out.writes.append(DeleteDm(conv.conv, msg.seq))
        rec = dm_events(cx, DmDeletedEvent, new, u, peer, out)
    return out.done(Ok(rq.id, MessageReply(message=rec)))
