"""Several nodes: what this node does with committed facts — its own and the other nodes'.

Pure and synchronous like the rest of the core (docs/design/scale-out.md). With
`CoreConfig.cluster`, the store assigns sequence numbers, so a message exists for the core only
once it is committed; this module then

* **orders** committed messages per room, conversation and for the broadcasts (the
  *sequencer*): a message is appended to its window and delivered to this node's sessions only
  when every lower sequence number was; one that arrives early (seq N+2 after N: another node's
  N+1 is still on the bus) is *held*. A gap that the bus does not fill within `gap_grace` is
  read from the store (`gaps`: the core asks for `ReadRoom`/`ReadDm`/`ReadBroadcasts` after the
  last delivered sequence; the adapter answers with `filled`). A scope with nobody on this node
  to deliver to is not held at all: its window is reset and the store serves it;
* **applies other nodes' committed writes** to the caches (users, rooms, memberships, bans,
  blocks, cursors, markers, edits) with their node-local consequences (a membership change
  updates this node's room fan-out);
* **applies other nodes' remote effects**: end a user's sessions here (kick, ban, password
  change, `replace` login elsewhere), count their sessions (presence, the duplicate-login
  policy), count failed logins (shared throttles);
* forgets a node that died (`node_gone`): its users that are now offline everywhere are said
  offline to the co-members here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence

from parlour.core.blocking import Blocks
from parlour.core.context import Ctx, Out, log_event
from parlour.core.handlers.offers_shared import node_gone as offers_gone
from parlour.core.handlers.offers_shared import remote_offer, share_offers
from parlour.core.handlers.rooms import delete_room, rename_room
from parlour.core.handlers.sessions import end_all_sessions, end_session, presence
from parlour.core.moderation import Bans
from parlour.core.needs import Need, ReadBroadcasts, ReadDm, ReadRoom
from parlour.core.outcome import (
    EMPTY,
    TO_ALL,
    Delivery,
    EndSessions,
    LoginFailed,
    LoginSucceeded,
    OfferAccepted,
    OfferEnded,
    OfferShared,
    OffersWanted,
    Outcome,
    RemoteEffect,
    SessionsChanged,
    ToConns,
    ToRoom,
    ToUsers,
)
from parlour.core.records import (
    AuditEntry,
    BanRecord,
    BroadcastRecord,
    RoomRecord,
    StoredMessage,
    StoreSnapshot,
    UserRecord,
    conv_members,
    room_key,
    user_key,
)
from parlour.core.state import Room, UserState, room_scope
from parlour.core.writes import (
    ASSIGN,
    AddBan,
    AddBlock,
    AddSessionToken,
    AppendBroadcast,
    AppendDm,
    AppendRoomMessage,
    Assigned,
    Audit,
    CreateRoom,
    CreateUser,
    DeleteDm,
    DeleteRoom,
    DeleteRoomMessage,
    EditDm,
    EditRoomMessage,
    RecordLogin,
    RemoveBan,
    RemoveBlock,
    RenameRoom,
    RevokeSessionTokens,
    SetBroadcastCursor,
    SetDmCursor,
    SetMembership,
    SetPassword,
    SetReadMarker,
    Write,
)
from parlour.protocol import (
    BroadcastEvent,
    BroadcastReply,
    DmEvent,
    DmReply,
    ErrorCode,
    MessageEvent,
    Ok,
    ReadMarkerEvent,
    SendReply,
)

__all__ = ["Held", "Replica"]

#: most messages one gap read asks for (a longer gap is read page after page)
GAP_PAGE = 500

_APPENDS = (AppendRoomMessage, AppendDm, AppendBroadcast)


class Held:
    """Committed messages of one scope that arrived before a lower sequence number did."""

    __slots__ = ("msgs", "reading", "since", "target")

    def __init__(self, now: float) -> None:
        #: seq -> the message (a DM with whether it was delivered live)
        self.msgs: dict[int, StoredMessage | tuple[StoredMessage, bool] | BroadcastRecord] = {}
        #: when the scope was last seen with a gap (the bus gets `gap_grace` to fill it)
        self.since = now
        #: a store read for the gap is in flight
        self.reading = False
        #: the highest sequence known to exist (held, or said by the store's heads)
        self.target = 0


def _room_event(m: StoredMessage, room: str) -> MessageEvent:
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


def _dm_event(m: StoredMessage, peer: str) -> DmEvent:
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


class Replica:
    """The sequencer and the application of committed facts, for one `ChatService`."""

    __slots__ = ("cx", "held")

    def __init__(self, cx: Ctx) -> None:
        self.cx = cx
        #: ("room", Room) / ("dm", conversation) / ("broadcast", "") -> what is held there
        self.held: dict[tuple[str, object], Held] = {}

    # ================================================================== own commits

    def committed(
        self, outcome: Outcome, assigned: Sequence[Assigned], now: float
    ) -> tuple[Outcome, tuple[Write, ...]]:
        """An outcome of this node is committed, `assigned` being what the store gave its
        store-assigned appends (in order). Returns the outcome to dispatch — its reply carries
        the sequence number, its deliveries include the messages now in order — and its writes
        as committed (each append with its sequence, resends left out), for the other nodes."""
        cx = self.cx
        cx.now = now
        out = cx.out()
        facts: list[Write] = []
        answers = iter(assigned)
        first: Assigned | None = None
        for write in outcome.writes:
            if isinstance(write, _APPENDS) and write.seq == ASSIGN:
                got = next(answers)
                if first is None:
                    first = got
                if got.duplicate:
                    continue
                write = dataclasses.replace(write, seq=got.seq)
                self.message(write, out)
                if isinstance(write, AppendRoomMessage | AppendDm):
                    where = write.room if isinstance(write, AppendRoomMessage) else write.recipient
                    log_event(
                        logging.INFO,
                        "message" if isinstance(write, AppendRoomMessage) else "dm",
                        user=write.sender,
                        to=where,
                        seq=write.seq,
                        size=len(write.text),
                    )
            facts.append(write)
        reply = outcome.reply
        if first is not None and isinstance(reply, Ok):
            data = reply.data
            if isinstance(data, SendReply | DmReply) and data.seq == ASSIGN:
                data = dataclasses.replace(
                    data, seq=first.seq, ts=first.ts, duplicate=first.duplicate
                )
            elif isinstance(data, BroadcastReply) and data.seq == ASSIGN:
                data = dataclasses.replace(data, seq=first.seq)
            reply = Ok(reply.id, data)
        deliveries = (
            outcome.deliveries + tuple(out.deliveries) if out.deliveries else outcome.deliveries
        )
        close = outcome.close + tuple(out.close) if out.close else outcome.close
        done = Outcome(reply, deliveries, tuple(out.writes), close)
        return done, tuple(facts)

    # ================================================================== the sequencer

    def message(self, write: AppendRoomMessage | AppendDm | AppendBroadcast, out: Out) -> None:
        """A committed message (with its sequence number) of this node or another."""
        state = self.cx.state
        if isinstance(write, AppendRoomMessage):
            room = state.rooms.get(room_key(write.room))
            if room is None:
                return  # deleted meanwhile (the deletion was committed after it)
            msg = StoredMessage(
                room.name,
                write.seq,
                write.ts,
                write.sender,
                write.text,
                client_id=write.client_id,
                attachment=write.attachment,
            )
            self._room(room, msg, out)
        elif isinstance(write, AppendDm):
            msg = StoredMessage(
                write.conv,
                write.seq,
                write.ts,
                write.sender,
                write.text,
                client_id=write.client_id,
                recipient=write.recipient,
                attachment=write.attachment,
            )
            self._dm(msg, write.delivered, out)
        else:
            self._broadcast(BroadcastRecord(write.seq, write.ts, write.sender, write.text), out)

    def _hold(self, key: tuple[str, object], seq: int, item: object) -> None:
        held = self.held.get(key)
        if held is None:
            held = self.held[key] = Held(self.cx.now)
        held.msgs[seq] = item  # type: ignore[assignment]
        held.target = max(held.target, seq)

    def _room(self, room: Room, msg: StoredMessage, out: Out) -> None:
        log = room.log
        seq = msg.seq
        if seq <= log.last_seq:
            return  # already here (from the store, or twice from the bus)
        key = ("room", room)
        held = self.held.get(key)
        if seq != log.last_seq + 1:
            if held is None and not len(self.cx.sessions.peek_room(room_key(room.name))):
                log.reset(seq - 1)  # nobody here to deliver to: the store has the rest
            else:
                self._hold(key, seq, msg)
                return
        self._deliver_room(room, msg, out)
        if held is not None:
            self._drain(key, held, out)

    def _deliver_room(self, room: Room, msg: StoredMessage, out: Out) -> None:
        cx = self.cx
        msg = room.log.fresh(msg)
        room.log.append(msg)
        sender = user_key(msg.sender)
        if msg.client_id is not None:
            cx.state.client_ids.put(room.uid, sender, msg.client_id, msg.seq, msg.ts)
        out.event(_room_event(msg, room.name), ToRoom(room_key(room.name), sender))

    def _dm(self, msg: StoredMessage, delivered: bool, out: Out) -> None:
        state = self.cx.state
        cid = msg.scope
        last = state.dm_last_seq(cid)
        seq = msg.seq
        if seq <= last:
            return
        key = ("dm", cid)
        held = self.held.get(key)
        if seq != last + 1:
            a, b = conv_members(cid)
            here = self.cx.sessions.by_user
            if held is None and a not in here and b not in here:
                conv = state.convs.pop(cid, None)  # read again from the store when needed
                if conv is not None:
                    state.dm_last[cid] = conv.log.last_seq
            else:
                self._hold(key, seq, (msg, delivered))
                return
        self._deliver_dm(msg, delivered, out)
        if held is not None:
            self._drain(key, held, out)

    def _deliver_dm(self, msg: StoredMessage, delivered: bool, out: Out) -> None:
        state = self.cx.state
        cid, seq = msg.scope, msg.seq
        conv = state.convs.get(cid)
        if conv is not None:
            if seq != conv.log.last_seq + 1:
                conv.log.reset(seq - 1)
            conv.log.append(msg)
        state.dm_last[cid] = seq
        sender_key = user_key(msg.sender)
        peer_key = user_key(msg.recipient or "")
        sender, peer = state.users.get(sender_key), state.users.get(peer_key)
        if sender is not None:
            sender.convs.add(cid)
        if peer is not None:
            peer.convs.add(cid)
        if msg.client_id is not None:
            state.client_ids.put(cid, sender_key, msg.client_id, seq, msg.ts)
        if delivered and seq > state.cursors.get((peer_key, cid), 0):
            state.cursors[(peer_key, cid)] = seq
        own = (sender_key, cid)
        if state.cursors.get(own, 0) == seq - 1:
            state.cursors[own] = seq
        if sender is None or peer is None:
            return
        out.event(_dm_event(msg, peer.name), ToUsers((sender_key,)))
        if delivered and not state.blocks.blocks(peer_key, sender_key):
            out.event(_dm_event(msg, sender.name), ToUsers((peer_key,)))

    def _broadcast(self, rec: BroadcastRecord, out: Out) -> None:
        state = self.cx.state
        seq = rec.seq
        if seq <= state.broadcast_last:
            return
        key = ("broadcast", "")
        held = self.held.get(key)
        if seq != state.broadcast_last + 1:
            if held is None and not self.cx.sessions.by_user:
                state.broadcast_last = seq - 1
            else:
                self._hold(key, seq, rec)
                return
        self._deliver_broadcast(rec, out)
        if held is not None:
            self._drain(key, held, out)

    def _deliver_broadcast(self, rec: BroadcastRecord, out: Out) -> None:
        self.cx.state.broadcast_last = rec.seq
        event = BroadcastEvent(sender=rec.sender, text=rec.text, ts=rec.ts, seq=rec.seq)
        out.event(event, TO_ALL)

    def _last(self, key: tuple[str, object]) -> int:
        kind, scope = key
        state = self.cx.state
        if kind == "room":
            assert isinstance(scope, Room)
            return scope.log.last_seq
        if kind == "dm":
            assert isinstance(scope, str)
            return state.dm_last_seq(scope)
        return state.broadcast_last

    def _drain(self, key: tuple[str, object], held: Held, out: Out) -> None:
        """Deliver what is held and now in order."""
        msgs = held.msgs
        last = self._last(key)
        for seq in [s for s in msgs if s <= last]:
            del msgs[seq]
        while last + 1 in msgs:
            item = msgs.pop(last + 1)
            if isinstance(item, BroadcastRecord):
                self._deliver_broadcast(item, out)
            elif isinstance(item, tuple):
                self._deliver_dm(item[0], item[1], out)
            else:
                assert isinstance(key[1], Room)
                self._deliver_room(key[1], item, out)
            last += 1
        if not msgs and held.target <= last:
            del self.held[key]
        elif not held.reading:
            held.since = self.cx.now  # a gap remains: the bus gets its grace again

    # ---------------------------------------------------------------- gaps

    def gaps(self, now: float) -> tuple[Need, ...]:
        """Store reads for the gaps the bus has not filled within `gap_grace`."""
        grace = self.cx.cfg.gap_grace
        needs: list[Need] = []
        for key, held in list(self.held.items()):
            if held.reading or now - held.since < grace:
                continue
            kind, scope = key
            last = self._last(key)
            want = min(max(held.target - last, 1), GAP_PAGE)
            if kind == "room":
                assert isinstance(scope, Room)
                if self.cx.state.rooms.get(room_key(scope.name)) is not scope:
                    del self.held[key]  # the room was deleted
                    continue
                needs.append(ReadRoom(scope.name, None, last, want))
            elif kind == "dm":
                assert isinstance(scope, str)
                needs.append(ReadDm(scope, None, last, want))
            else:
                needs.append(ReadBroadcasts(last, want))
            held.reading = True
        return tuple(needs)

    def filled(self, need: Need, found: Sequence[object], now: float) -> Outcome:
        """The answer to a gap read (`gaps`): deliver what is now in order. An empty `found`
        means the read failed (the gap is read again after the grace)."""
        cx = self.cx
        cx.now = now
        out = cx.out()
        state = cx.state
        key: tuple[str, object] | None = None
        if isinstance(need, ReadRoom):
            room = state.rooms.get(room_key(need.room))
            if room is not None:
                key = ("room", room)
                for m in found:
                    assert isinstance(m, StoredMessage)
                    self._room(room, m, out)
        elif isinstance(need, ReadDm):
            key = ("dm", need.conv)
            for m in found:
                assert isinstance(m, StoredMessage)
                delivered = state.cursors.get((user_key(m.recipient or ""), need.conv), 0) >= m.seq
                self._dm(m, delivered or self._online(m.recipient), out)
        elif isinstance(need, ReadBroadcasts):
            key = ("broadcast", "")
            for b in found:
                assert isinstance(b, BroadcastRecord)
                self._broadcast(b, out)
        if key is not None:
            held = self.held.get(key)
            if held is not None:
                held.reading = False
                held.since = now
                self._drain(key, held, out)
        return out.done(None)

    def _online(self, name: str | None) -> bool:
        return name is not None and self.cx.sessions.online(user_key(name))

    def heads(
        self, rooms: Mapping[str, int], dms: Mapping[str, int], broadcast: int, now: float
    ) -> bool:
        """The store's last sequence of every room (by name), of some conversations, and of
        the broadcasts (after losing the bus, and from time to time): what is behind here is
        read (scopes with sessions here) or taken from the store (the others). False when a
        room is unknown here (a creation was missed: the caller reloads the caches)."""
        cx = self.cx
        known = True
        for name, last in rooms.items():
            room = cx.state.rooms.get(room_key(name))
            if room is None:
                known = False
                continue
            if last > room.log.last_seq:
                if len(cx.sessions.peek_room(room_key(room.name))):
                    self._behind(("room", room), last, now)
                elif ("room", room) not in self.held:
                    room.log.reset(last)
        for cid, last in dms.items():
            if last > cx.state.dm_last_seq(cid):
                self._behind(("dm", cid), last, now)
        if broadcast > cx.state.broadcast_last:
            if cx.sessions.by_user:
                self._behind(("broadcast", ""), broadcast, now)
            else:
                cx.state.broadcast_last = broadcast
        return known

    def _behind(self, key: tuple[str, object], last: int, now: float) -> None:
        held = self.held.get(key)
        if held is None:
            held = self.held[key] = Held(now - 2 * self.cx.cfg.gap_grace)  # read at once
        held.target = max(held.target, last)

    # ================================================================== other nodes

    def remote(
        self,
        origin: str,
        facts: Iterable[Write],
        deliveries: Iterable[Delivery],
        effects: Iterable[RemoteEffect],
        now: float,
    ) -> Outcome:
        """What another node committed (`facts`), the events it produced for every node
        (`deliveries`, with logical addresses) and its `effects`, applied here. Returns what
        this node dispatches: events to its sessions, sessions to close, and its own writes
        (a broadcast cursor moved for a session that ended here)."""
        cx = self.cx
        cx.now = now
        out = cx.out()
        for fact in facts:
            self.fact(fact, out)
        for d in deliveries:
            if d.address is not None:
                out.event(d.event, d.address)
        for effect in effects:
            self.effect(origin, effect, out)
        return out.done(None)

    def effect(self, origin: str, effect: RemoteEffect, out: Out) -> None:
        cx = self.cx
        if isinstance(effect, SessionsChanged):
            cx.sessions.remote_changed(origin, effect.user, effect.delta)
        elif isinstance(effect, EndSessions):
            u = cx.state.users.get(effect.user)
            if u is not None and cx.sessions.of(u.key):
                code = ErrorCode(effect.code)
                end_all_sessions(
                    cx, u, code, effect.reason, out, quiet=effect.quiet, everywhere=False
                )
        elif isinstance(effect, OfferShared | OfferAccepted | OfferEnded):
            remote_offer(cx, origin, effect, out)
        elif isinstance(effect, OffersWanted):
            share_offers(cx)
        else:
            self._login_check(effect)

    def want_offers(self) -> Outcome:
        """Ask every node to share its open offers again (this one may have missed some)."""
        self.cx.tell(OffersWanted())
        return EMPTY

    def restore_logins(self, checks: Iterable[RemoteEffect], now: float) -> int:
        n = sum(self._login_check(check) for check in checks)
        self.cx.sessions.throttle.expire(now)
        return n

    def _login_check(self, check: RemoteEffect) -> bool:
        """Count another node's password check in this node's throttles."""
        throttle = self.cx.sessions.throttle
        if isinstance(check, LoginFailed):
            throttle.failure(check.user, check.address, check.ts)
        elif isinstance(check, LoginSucceeded):
            throttle.success(check.user, check.address)
        else:
            return False
        return True

    def node_gone(self, node: str, now: float) -> Outcome:
        """`node` died or left: forget its sessions; its users now offline everywhere are said
        offline to the co-members here."""
        cx = self.cx
        cx.now = now
        out = cx.out()
        for user in cx.sessions.node_gone(node):
            u = cx.state.users.get(user)
            if u is not None and not cx.sessions.online(user):
                presence(cx, u, False, out)
        offers_gone(cx, node, out)
        return out.done(None)

    def fact(self, fact: Write, out: Out) -> None:
        """Apply one write another node committed to this node's caches."""
        cx = self.cx
        state = cx.state
        if isinstance(fact, _APPENDS):
            if fact.seq != ASSIGN:
                self.message(fact, out)
        elif isinstance(fact, CreateUser):
            key = user_key(fact.name)
            if key not in state.users:
                rec = UserRecord(fact.name, fact.password_hash, fact.role, fact.ts)
                state.users[key] = UserState(rec, key)
                if state.broadcast_last:  # a new account starts after every broadcast so far
                    state.broadcast_cursors.setdefault(key, state.broadcast_last)
        elif isinstance(fact, SetPassword):
            u = state.users.get(user_key(fact.user))
            if u is not None:
                u.password_hash = fact.password_hash
                cx.file_tokens.revoke(u.key, cx.now)  # issued on the old password
        elif isinstance(fact, RecordLogin):
            u = state.users.get(user_key(fact.user))
            if u is not None:
                u.last_login = fact.ts
                u.last_active = fact.ts
        elif isinstance(fact, CreateRoom):
            if room_key(fact.name) not in state.rooms:
                state.add_room(RoomRecord(fact.name, fact.ts, fact.by), 0)
        elif isinstance(fact, RenameRoom):
            room = state.rooms.get(room_key(fact.old))
            if room is not None and (
                room_key(fact.new) == room_key(fact.old) or room_key(fact.new) not in state.rooms
            ):
                rename_room(cx, room, fact.new)
        elif isinstance(fact, DeleteRoom):
            room = state.rooms.get(room_key(fact.name))
            if room is not None:
                self.held.pop(("room", room), None)
                delete_room(cx, room)
        elif isinstance(fact, SetMembership):
            self._membership(fact)
        elif isinstance(fact, EditRoomMessage | DeleteRoomMessage):
            room = state.rooms.get(room_key(fact.room))
            if room is not None:
                room.log.changed(fact.seq, fact.text if isinstance(fact, EditRoomMessage) else None)
        elif isinstance(fact, EditDm | DeleteDm):
            conv = state.convs.get(fact.conv)
            if conv is not None:
                conv.log.changed(fact.seq, fact.text if isinstance(fact, EditDm) else None)
        elif isinstance(fact, SetDmCursor):
            key2 = (user_key(fact.user), fact.conv)
            if fact.seq > state.cursors.get(key2, 0):
                state.cursors[key2] = fact.seq
        elif isinstance(fact, AddBan):
            state.bans.add(BanRecord(fact.user, fact.until, fact.reason, fact.by, fact.ts))
        elif isinstance(fact, RemoveBan):
            state.bans.remove(user_key(fact.user))
        elif isinstance(fact, AddBlock):
            state.blocks.add(user_key(fact.blocker), user_key(fact.blocked))
        elif isinstance(fact, RemoveBlock):
            state.blocks.remove(user_key(fact.blocker), user_key(fact.blocked))
        elif isinstance(fact, Audit):
            state.audit.append(
                AuditEntry(fact.ts, fact.actor, fact.action, fact.target, fact.reason)
            )
        elif isinstance(fact, SetReadMarker):
            self._read_marker(fact, out)
        elif isinstance(fact, AddSessionToken):
            state.tokens.remember(fact.token_hash, user_key(fact.user), fact.expires)
        elif isinstance(fact, RevokeSessionTokens):
            state.tokens.revoke(user_key(fact.user), fact.token_hash)
        elif isinstance(fact, SetBroadcastCursor):
            key4 = user_key(fact.user)
            if fact.seq > state.broadcast_cursors.get(key4, 0):
                state.broadcast_cursors[key4] = fact.seq

    def refresh(self, snap: StoreSnapshot, now: float) -> Outcome:
        """The caches again from a fresh snapshot of the store (after losing bus messages):
        users, rooms, memberships, bans, blocks, tokens; cursors and markers never go back.
        Message windows are kept (`heads` brings them up to date). A user now banned loses
        the sessions here."""
        cx = self.cx
        cx.now = now
        out = cx.out()
        state = cx.state
        for rec in snap.users:
            key = user_key(rec.name)
            u = state.users.get(key)
            if u is None:
                state.users[key] = UserState(rec, key)
            elif u.password_hash != rec.password_hash or u.role != rec.role:
                u.password_hash = rec.password_hash
                u.role = rec.role
        fresh = {room_key(r.name): r for r in snap.rooms}
        for rk, room in list(state.rooms.items()):
            if rk not in fresh:
                self.held.pop(("room", room), None)
                delete_room(cx, room)
        for rk, room_rec in fresh.items():
            if rk not in state.rooms:
                state.add_room(
                    room_rec,
                    snap.room_last_seq.get(room_rec.name, 0),
                    snap.recent.get(room_rec.name, ()),
                )
        members: dict[str, set[str]] = {}
        for m in snap.memberships:
            members.setdefault(room_key(m.room), set()).add(user_key(m.user))
        for rk, room in state.rooms.items():
            want = {k for k in members.get(rk, set()) if k in state.users}
            for k in want - room.members:
                room.members.add(k)
                state.users[k].rooms.add(rk)
                cx.sessions.joined(rk, k)
            for k in room.members - want:
                cx.sessions.left(rk, k)
                room.members.discard(k)
                if k in state.users:
                    state.users[k].rooms.discard(rk)
        state.bans = Bans(snap.bans)
        for key in list(cx.sessions.by_user):
            ban = state.bans.active(key, now)
            u = state.users.get(key)
            if ban is not None and u is not None:
                end_all_sessions(cx, u, ErrorCode.BANNED, "banned", out, everywhere=False)
        blocks = Blocks()
        for b in snap.blocks:
            blocks.add(user_key(b.blocker), user_key(b.blocked))
        state.blocks = blocks
        for t in snap.session_tokens:
            state.tokens.remember(t.token_hash, user_key(t.user), t.expires)
        for cur in snap.dm_cursors:
            ck = (user_key(cur.user), cur.conv)
            state.cursors[ck] = max(state.cursors.get(ck, 0), cur.seq)
        for marker in snap.read_markers:
            if marker.room is not None:
                mk = (user_key(marker.user), room_scope(room_key(marker.room)))
            elif marker.conv is not None:
                mk = (user_key(marker.user), marker.conv)
            else:
                continue
            state.read_markers[mk] = max(state.read_markers.get(mk, 0), marker.seq)
        for name, seq in snap.broadcast_cursors.items():
            bk = user_key(name)
            state.broadcast_cursors[bk] = max(state.broadcast_cursors.get(bk, 0), seq)
        return out.done(None)

    def undo_login(self, conn: int, created: str | None, now: float) -> None:
        """The login or sign-up on `conn` was not committed (the store is down, or another
        node took the name at the same moment): the session it started here ends, quietly
        (nobody was told it began), and an account made for a sign-up goes — if the name
        exists in the store after all, the next resync brings the real account. The
        connection stays open: the client may try again."""
        cx = self.cx
        cx.now = now
        c = cx.sessions.conns.get(conn)
        if c is not None and c.user is not None:
            end_session(cx, c, cx.out(), quiet=True)
        if created is not None:
            key = user_key(created)
            gone = cx.state.users.get(key)
            if gone is not None and not cx.sessions.online(key):
                del cx.state.users[key]
        cx.others.clear()  # nothing of it was published

    def _read_marker(self, fact: SetReadMarker, out: Out) -> None:
        """A user's read marker moved on another node: this node's sessions of the user hear
        it (`read_marker`), as the other sessions on the origin node did."""
        state = self.cx.state
        who = user_key(fact.user)
        room: str | None = None
        peer: str | None = None
        if fact.room is not None:
            where, room = room_scope(room_key(fact.room)), fact.room
        elif fact.conv is not None:
            where = fact.conv
            a, b = conv_members(fact.conv)
            other = state.users.get(b if a == who else a)
            peer = other.name if other is not None else None
        else:
            return
        key = (who, where)
        if fact.seq <= state.read_markers.get(key, 0):
            return
        state.read_markers[key] = fact.seq
        conns = self.cx.sessions.of(who)
        if conns and (room is not None or peer is not None):
            event = ReadMarkerEvent(room=room, peer=peer, seq=fact.seq)
            out.event(event, ToConns(tuple(conns)))

    def _membership(self, fact: SetMembership) -> None:
        cx = self.cx
        state = cx.state
        u = state.users.get(user_key(fact.user))
        room = state.rooms.get(room_key(fact.room))
        if u is None or room is None:
            return
        rk = room_key(room.name)
        if fact.member and u.key not in room.members:
            room.members.add(u.key)
            u.rooms.add(rk)
            cx.sessions.joined(rk, u.key)
        elif not fact.member and u.key in room.members:
            cx.sessions.left(rk, u.key)
            room.members.discard(u.key)
            u.rooms.discard(rk)
