"""Catch-up: what a client missed, pushed after `login` (or `sync`) within a budget.

Resume pushes the room messages and DMs after the sequences the client says it has seen;
offline delivery pushes the DMs after each conversation's delivery cursor. Reading history
may need the store (needs), so a catch-up is *planned* first — every read done, nothing
changed — and applied afterwards (`Plan.apply`): the cursors move only once it is certain
that the outcome carrying the messages will be produced.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from parlour.core.context import Ctx, Out
from parlour.core.outcome import ToConns
from parlour.core.records import StoredMessage, conv_members, room_key, user_key
from parlour.core.sessions import Connection
from parlour.core.state import UserState
from parlour.core.writes import SetDmCursor
from parlour.protocol import DmEvent, Event, MessageEvent, Resume

__all__ = ["Plan", "plan_catch_up"]

#: smallest page a catch-up reads while skipping messages from blocked senders
SCAN_PAGE = 256

_json_str = json.JSONEncoder(ensure_ascii=False).encode


class _Budget:
    """How much one catch-up may still push (messages and approximate bytes)."""

    __slots__ = ("bytes", "messages", "taken")

    def __init__(self, messages: int, nbytes: int) -> None:
        self.messages = messages
        self.bytes = nbytes
        self.taken = 0

    def take(self, msg: StoredMessage) -> bool:
        # the frame's size on the wire: the text as JSON (escapes, UTF-8) plus the record
        size = 200 + len(msg.sender) + (len(_json_str(msg.text).encode()) if msg.text else 0)
        if self.messages <= 0:
            return False
        if size > self.bytes and self.taken:
            return False
        # The first message of a round is always taken, even one bigger than the whole byte
        # budget (it is at most a frame, as it was live): every truncated round makes progress.
        self.messages -= 1
        self.bytes = max(0, self.bytes - size)
        self.taken += 1
        return True


def _room_event(m: StoredMessage, room: str) -> Event:
    return MessageEvent(
        room=room,
        seq=m.seq,
        ts=m.ts,
        sender=m.sender,
        text=m.text,
        edited=m.edited,
        deleted=m.deleted,
        client_id=m.client_id,
    )


def _dm_event(m: StoredMessage, peer: str) -> Event:
    return DmEvent(
        peer=peer,
        seq=m.seq,
        ts=m.ts,
        sender=m.sender,
        text=m.text,
        edited=m.edited,
        deleted=m.deleted,
        client_id=m.client_id,
    )


@dataclass(slots=True)
class Plan:
    """A planned catch-up: the events to push, in order, the delivery cursors to move, and
    whether the budget cut it short (the client then asks again with `sync`)."""

    events: list[Event] = field(default_factory=list)
    cursors: list[tuple[str, int]] = field(default_factory=list)
    truncated: bool = False

    def apply(self, cx: Ctx, c: Connection, u: UserState, out: Out) -> None:
        to = ToConns((c.id,))
        for event in self.events:
            out.event(event, to)
        for cid, seq in self.cursors:
            if seq > cx.state.cursors.get((u.key, cid), 0):
                cx.state.cursors[(u.key, cid)] = seq
                out.writes.append(SetDmCursor(u.name, cid, seq))


def _push(
    cx: Ctx,
    u: UserState,
    fetch: Callable[[int, int], list[StoredMessage]],
    after: int,
    budget: _Budget,
    plan: Plan,
    make: Callable[[StoredMessage], Event],
) -> bool:
    """Plan the messages after `after` (read page by page with `fetch(after, limit)`) within
    `budget`, skipping blocked senders; True when there may be more than was planned. A run of
    messages from blocked senders does not use the budget: the scan goes on to the next
    message that can be pushed (a client cursor cannot move over what it never receives, so a
    round that pushed nothing would be repeated for ever)."""
    blocked = cx.state.blocks.blocked_by_user(u.key)
    while True:
        if budget.messages <= 0:
            return True
        limit = max(budget.messages + 1, SCAN_PAGE)
        msgs = fetch(after, limit)
        for m in msgs:
            after = m.seq
            if blocked and user_key(m.sender) in blocked:
                continue
            if not budget.take(m):
                return True
            plan.events.append(make(m))
        if len(msgs) < limit:
            return False


def _push_offline(
    cx: Ctx, u: UserState, cid: str, cursor: int, last: int, budget: _Budget, plan: Plan
) -> tuple[int, bool]:
    """Offline delivery of one conversation from the delivery cursor: the peer's DMs (not
    blocked ones) within `budget`. Returns the new cursor — past what was planned, in order,
    and past own and blocked DMs, never past one not planned — and whether the budget cut it
    short."""
    conv = cx.state.conv(*conv_members(cid))
    peer = cx.state.users.get(conv.other(u.key))
    peer_name = peer.name if peer is not None else conv.other(u.key)
    blocked = cx.state.blocks.blocked_by_user(u.key)
    while cursor < last:
        if budget.messages <= 0:
            return cursor, True
        limit = max(budget.messages + 1, SCAN_PAGE)
        msgs = conv.log.after(cursor, limit)
        for m in msgs:
            sender = user_key(m.sender)
            if sender != u.key and sender not in blocked:
                if not budget.take(m):
                    return cursor, True
                plan.events.append(_dm_event(m, peer_name))
            cursor = m.seq
        if len(msgs) < limit:
            break
    return max(cursor, last), False


def plan_catch_up(cx: Ctx, u: UserState, resume: Resume | None) -> Plan:
    """Plan what `resume` asks for and the offline DMs (after the delivery cursor), in order
    per room/conversation, within the catch-up budget (`catch_up_messages` /
    `catch_up_bytes`). A round that is cut short has always planned at least one message, so
    repeated `sync` terminates. May raise `NeedMore` (nothing changed then)."""
    budget = _Budget(cx.cfg.catch_up_messages, cx.cfg.catch_up_bytes)
    plan = Plan()
    state = cx.state
    resumed_convs: set[str] = set()
    if resume is not None:
        for name, seq in resume.rooms.items():
            room = state.rooms.get(room_key(name))
            if room is None or u.key not in room.members:
                continue
            make = functools.partial(_room_event, room=room.name)
            if _push(cx, u, room.log.after, seq, budget, plan, make):
                plan.truncated = True
                return plan
        for name, seq in resume.dms.items():
            peer = state.users.get(user_key(name))
            if peer is None or peer.key == u.key:
                continue
            conv = state.conv(u.key, peer.key)
            resumed_convs.add(conv.conv)
            make = functools.partial(_dm_event, peer=peer.name)
            if _push(cx, u, conv.log.after, seq, budget, plan, make):
                plan.truncated = True
                return plan
    for cid in sorted(u.convs):
        last = state.dm_last_seq(cid)
        cursor = state.cursors.get((u.key, cid), 0)
        if last <= cursor:
            continue
        truncated = False
        if cid not in resumed_convs:
            cursor, truncated = _push_offline(cx, u, cid, cursor, last, budget, plan)
        else:
            cursor = last
        plan.cursors.append((cid, cursor))
        if truncated:
            plan.truncated = True
            return plan
    return plan
