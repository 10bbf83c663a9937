"""Catch-up: what a client missed, pushed after `login` (or `sync`) within a budget.

Resume pushes the room messages and DMs after the sequences the client says it has seen;
offline delivery then pushes what was sent to the user while they were away — DMs after each
conversation's delivery cursor, and broadcasts after the user's broadcast cursor — **in the
order it was sent** (by time across conversations and broadcasts, not grouped by sender; in
sequence order within each). Reading history may need the store (needs), so a catch-up is
*planned* first — every read done, nothing changed — and applied afterwards (`Plan.apply`):
the cursors move only once it is certain that the outcome carrying the messages will be
produced.
"""

from __future__ import annotations

import functools
import heapq
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from parlour.core.context import Ctx, Out
from parlour.core.needs import ReadBroadcasts
from parlour.core.outcome import ToConns
from parlour.core.records import BroadcastRecord, StoredMessage, conv_members, room_key, user_key
from parlour.core.sessions import Connection
from parlour.core.state import UserState
from parlour.core.writes import SetBroadcastCursor, SetDmCursor
from parlour.protocol import BroadcastEvent, DmEvent, Event, MessageEvent, Resume

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

    def take(self, msg: StoredMessage | BroadcastRecord) -> bool:
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
        attachment=m.attachment,
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
        attachment=m.attachment,
    )


@dataclass(slots=True)
class Plan:
    """A planned catch-up: the events to push, in order, the delivery cursors to move, and
    whether the budget cut it short (the client then asks again with `sync`)."""

    events: list[Event] = field(default_factory=list)
    cursors: list[tuple[str, int]] = field(default_factory=list)
    broadcast_cursor: int | None = None
    truncated: bool = False

    def apply(self, cx: Ctx, c: Connection, u: UserState, out: Out) -> None:
        to = ToConns((c.id,))
        for event in self.events:
            out.event(event, to)
        for cid, seq in self.cursors:
            if seq > cx.state.cursors.get((u.key, cid), 0):
                cx.state.cursors[(u.key, cid)] = seq
                out.writes.append(SetDmCursor(u.name, cid, seq))
        seen = self.broadcast_cursor
        if seen is not None and seen > cx.state.broadcast_cursors.get(u.key, 0):
            cx.state.broadcast_cursors[u.key] = seen
            out.writes.append(SetBroadcastCursor(u.name, seen))


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


@dataclass(slots=True)
class _Source:
    """What one conversation (or the broadcasts) has for an offline user: the messages to push
    in order, each with its time, how far the scan went, and whether there may be more."""

    key: str
    items: list[tuple[float, int, StoredMessage | BroadcastRecord, Event]]
    scanned: int
    more: bool
    taken: int = 0

    def cursor(self) -> int:
        """Past everything pushed and everything skipped before the first not pushed."""
        if self.taken < len(self.items):
            return self.items[self.taken][1] - 1
        return self.scanned


def _offline_dms(cx: Ctx, u: UserState, cid: str, cursor: int, last: int, cap: int) -> _Source:
    """The peer's DMs of one conversation after the delivery cursor (not blocked ones), at most
    `cap` (own and blocked ones are skipped: the cursor may pass them)."""
    conv = cx.state.conv(*conv_members(cid))
    peer = cx.state.users.get(conv.other(u.key))
    peer_name = peer.name if peer is not None else conv.other(u.key)
    blocked = cx.state.blocks.blocked_by_user(u.key)
    source = _Source(cid, [], cursor, False)
    while source.scanned < last:
        limit = max(cap + 1, SCAN_PAGE)
        msgs = conv.log.after(source.scanned, limit)
        for m in msgs:
            sender = user_key(m.sender)
            if sender != u.key and sender not in blocked:
                if len(source.items) >= cap:
                    source.more = True
                    return source
                source.items.append((m.ts, m.seq, m, _dm_event(m, peer_name)))
            source.scanned = m.seq
        if len(msgs) < limit:
            break
    source.scanned = max(source.scanned, last)
    return source


def _offline_broadcasts(cx: Ctx, u: UserState, after: int, cap: int) -> _Source:
    """Broadcasts after `after` made since the account exists, at most `cap`."""
    last = cx.state.broadcast_last
    source = _Source("", [], after, False)
    if last <= after:
        return source
    found: list[BroadcastRecord] = cx.need(ReadBroadcasts(after, cap + 1))
    for b in found:
        if len(source.items) >= cap:
            source.more = True
            return source
        if b.ts >= u.created:
            event = BroadcastEvent(sender=b.sender, text=b.text, ts=b.ts, seq=b.seq)
            source.items.append((b.ts, b.seq, b, event))
        source.scanned = b.seq
    if len(found) <= cap:
        source.scanned = max(source.scanned, last)
    return source


def _merge_offline(sources: list[_Source], budget: _Budget, plan: Plan) -> bool:
    """Push the sources' items by time (then source, then sequence) within `budget`; True when
    the budget cut it short or a source has more."""
    merged = heapq.merge(*(_keyed(s) for s in sources))
    for _, _, _, i, source, item, event in merged:
        if not budget.take(item):
            return True
        plan.events.append(event)
        source.taken = i + 1
    return any(s.more for s in sources)


def _keyed(
    source: _Source,
) -> list[tuple[float, str, int, int, _Source, StoredMessage | BroadcastRecord, Event]]:
    """The source's items with their merge key (time, source, sequence), in order."""
    return [
        (ts, source.key, seq, i, source, item, event)
        for i, (ts, seq, item, event) in enumerate(source.items)
    ]


def plan_catch_up(cx: Ctx, u: UserState, resume: Resume | None) -> Plan:
    """Plan what `resume` asks for, then the offline DMs (after each delivery cursor) and
    broadcasts (after the broadcast cursor, or `resume.broadcasts`) in the order they were
    sent, within the catch-up budget (`catch_up_messages` / `catch_up_bytes`). A round that
    is cut short has always planned at least one message, so repeated `sync` terminates. May
    raise `NeedMore` (nothing changed then)."""
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
    cap = budget.messages
    sources: list[_Source] = []
    for cid in sorted(u.convs):
        last = state.dm_last_seq(cid)
        cursor = state.cursors.get((u.key, cid), 0)
        if last <= cursor:
            continue
        if cid in resumed_convs:
            plan.cursors.append((cid, last))
            continue
        sources.append(_offline_dms(cx, u, cid, cursor, last, cap))
    seen = state.broadcast_cursors.get(u.key, 0)
    if resume is not None and resume.broadcasts is not None:
        seen = resume.broadcasts
    broadcasts = _offline_broadcasts(cx, u, seen, cap)
    sources.append(broadcasts)
    if _merge_offline(sources, budget, plan):
        plan.truncated = True
    for source in sources[:-1]:
        plan.cursors.append((source.key, source.cursor()))
    plan.broadcast_cursor = broadcasts.cursor()
    return plan
