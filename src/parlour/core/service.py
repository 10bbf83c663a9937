"""`ChatService`: the pure, synchronous chat core behind every transport.

Every call takes the current time (`now`, unix seconds) and returns an `Outcome`: the reply
for the calling connection, the events to deliver (each to a tuple of connection ids), the
storage writes that must be durable before any of it is sent, and the connections to close.
The service never does I/O except synchronous `Store` reads of committed history; everything
it may just have written is served from memory (docs/design/chat-architecture.md).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from parlour.core.accounts import Lockouts, password_problem, username_problem
from parlour.core.blocking import Blocks
from parlour.core.config import CoreConfig
from parlour.core.dms import Conversation
from parlour.core.limits import TokenBucket
from parlour.core.messages import ClientIds, MessageLog, record
from parlour.core.moderation import AuditTrail, Bans
from parlour.core.outcome import EMPTY, ConnId, Delivery, Outcome
from parlour.core.passwords import generate_password
from parlour.core.ports import (
    AuditEntry,
    BanRecord,
    PasswordHasher,
    RoomRecord,
    Store,
    StoredMessage,
    UserRecord,
    conv_id,
    conv_members,
    room_key,
    user_key,
)
from parlour.core.presence import Connection, UserState, who_entries
from parlour.core.rooms import Room
from parlour.core.writes import (
    AddBan,
    AddBlock,
    AppendDm,
    AppendRoomMessage,
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
    SetDmCursor,
    SetMembership,
    SetPassword,
    Write,
)
from parlour.protocol.errors import ErrorCode, ProtocolError
from parlour.protocol.schemas import (
    PROTOCOL_VERSION,
    AuditRequest,
    BanRequest,
    BansRequest,
    BlockRequest,
    BlocksRequest,
    BroadcastRequest,
    DeleteRequest,
    DmRequest,
    EditRequest,
    Error,
    Event,
    EventName,
    HelloRequest,
    HistoryRequest,
    JoinRequest,
    KickRequest,
    LeaveRequest,
    LoginRequest,
    LogoutRequest,
    Ok,
    PasswdRequest,
    PingRequest,
    Request,
    Resume,
    RoomCreateRequest,
    RoomDeleteRequest,
    RoomRenameRequest,
    RoomsRequest,
    SendRequest,
    SignupRequest,
    SinceRequest,
    SyncRequest,
    UnbanRequest,
    UnblockRequest,
    WhoRequest,
)

__all__ = ["ChatService"]

log = logging.getLogger("parlour.core")


#: protocol versions this core speaks (a `hello` with another gets `unsupported_version`)
SUPPORTED_VERSIONS: tuple[int, ...] = (PROTOCOL_VERSION,)

#: requests allowed before login (everything else needs an authenticated session)
_PUBLIC = (HelloRequest, SignupRequest, LoginRequest, PingRequest)

#: how many messages a live DM looks back over for older undelivered ones before assuming
#: there are some (then it waits for offline delivery instead of being pushed live)
_PENDING_SCAN = 1000

#: smallest page a catch-up reads while skipping messages from blocked senders
_SCAN_PAGE = 256


_json_str = json.JSONEncoder(ensure_ascii=False).encode


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fail(code: ErrorCode, message: str, **extra: Any) -> ProtocolError:
    return ProtocolError(code, message, **extra)


def _log(level: int, event: str, **fields: object) -> None:
    """A structured log line (``fields`` as in ``parlour.server.logs``). Never pass passwords;
    message bodies only at DEBUG."""
    if log.isEnabledFor(level):
        log.log(level, event, extra={"fields": fields})


class _Out:
    """Accumulates one outcome's effects."""

    __slots__ = ("close", "deliveries", "writes")

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.writes: list[Write] = []
        self.close: list[tuple[ConnId, str, str]] = []

    def event(self, name: EventName, fields: dict[str, Any], to: tuple[ConnId, ...]) -> None:
        if to:
            self.deliveries.append(Delivery(Event(name, fields), to))

    def done(self, reply: Ok | Error | None) -> Outcome:
        return Outcome(reply, tuple(self.deliveries), tuple(self.writes), tuple(self.close))


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


class ChatService:
    """The chat domain as a state machine driven by connections, requests and time."""

    def __init__(self, store: Store, config: CoreConfig, hasher: PasswordHasher) -> None:
        """Load hot state with `store.load()` (once) and keep `config` and `hasher`."""
        self._store = store
        self._cfg = config
        self._hasher = hasher
        self._uids = itertools.count(1)
        self._conns: dict[ConnId, Connection] = {}
        self._users: dict[str, UserState] = {}
        self._online: dict[str, UserState] = {}
        self._rooms: dict[str, Room] = {}
        self._convs: dict[str, Conversation] = {}
        self._cursors: dict[tuple[str, str], int] = {}
        self._client_ids = ClientIds(config.client_id_memory)
        self._lockouts = Lockouts(
            config.lockout_threshold, config.lockout_seconds, config.max_tracked_failures
        )
        self._blocks = Blocks()
        #: user key -> connection whose sign-up for that name is being hashed off the core
        #: (`begin_signup` / `end_signup`); a second sign-up for it is refused as taken
        self._signups: dict[str, ConnId] = {}
        snap = store.load()
        for u in snap.users:
            self._users[user_key(u.name)] = UserState(u, user_key(u.name))
        for r in snap.rooms:
            self._add_room(r, snap.room_last_seq.get(r.name, 0), warm=True)
        for m in snap.memberships:
            user, room = self._users.get(user_key(m.user)), self._rooms.get(room_key(m.room))
            if user is not None and room is not None:
                user.rooms.add(room_key(room.name))
                room.members.add(user.key)
        self._bans = Bans(snap.bans)
        for b in snap.blocks:
            self._blocks.add(user_key(b.blocker), user_key(b.blocked))
        for cur in snap.dm_cursors:
            self._cursors[(user_key(cur.user), cur.conv)] = cur.seq
        self._dm_last: dict[str, int] = dict(snap.dm_last_seq)
        for conv in self._dm_last:
            for k in conv_members(conv):
                if k in self._users:
                    self._users[k].convs.add(conv)
        self._audit = AuditTrail(config.audit_memory, store.audit_log(config.audit_memory))
        self._handlers: dict[type[Any], Callable[[Connection, Any, float], Outcome]] = {
            HelloRequest: self._hello,
            PingRequest: self._ping,
            SignupRequest: self._signup,
            LoginRequest: self._login,
            LogoutRequest: self._logout,
            PasswdRequest: self._passwd,
            RoomsRequest: self._rooms_list,
            RoomCreateRequest: self._room_create,
            RoomRenameRequest: self._room_rename,
            RoomDeleteRequest: self._room_delete,
            JoinRequest: self._join,
            LeaveRequest: self._leave,
            SendRequest: self._send,
            HistoryRequest: self._history,
            SinceRequest: self._since,
            EditRequest: self._edit,
            DeleteRequest: self._delete,
            DmRequest: self._dm,
            BroadcastRequest: self._broadcast,
            WhoRequest: self._who,
            BlockRequest: self._block,
            UnblockRequest: self._unblock,
            BlocksRequest: self._blocks_list,
            KickRequest: self._kick,
            BanRequest: self._ban,
            UnbanRequest: self._unban,
            BansRequest: self._bans_list,
            AuditRequest: self._audit_list,
            SyncRequest: self._sync,
        }

    # ================================================================== lifecycle

    def bootstrap(self, now: float, admin_password: str | None) -> str | None:
        """First start: create the admin account and the default rooms if there are no users.

        The writes are applied to the store directly (call before serving). Returns the
        generated admin password when `admin_password` is None and the admin was created (print
        it once), else None.
        """
        if self._users:
            return None
        name = self._cfg.admin_name
        problem = username_problem(name)
        if problem is not None:
            raise ValueError(f"admin name {name!r}: {problem}")
        generated = admin_password is None
        password = generate_password() if admin_password is None else admin_password
        problem = password_problem(password, self._cfg.password_min_length)
        if problem is not None:
            raise ValueError(f"admin password: {problem}")
        writes: list[Write] = [CreateUser(name, self._hasher.hash(password), "admin", now)]
        for room in self._cfg.default_rooms:
            if room_key(room) not in self._rooms and username_problem(room) is None:
                writes.append(CreateRoom(room, name, now))
        self._store.apply(writes)
        for w in writes:
            if isinstance(w, CreateUser):
                rec = UserRecord(w.name, w.password_hash, w.role, w.ts)
                self._users[user_key(w.name)] = UserState(rec, user_key(w.name))
            elif isinstance(w, CreateRoom):
                self._add_room(RoomRecord(w.name, w.ts, w.by), 0, warm=False)
        return password if generated else None

    def connect(self, conn: ConnId, peer: str, now: float) -> Outcome:
        """A new connection `conn` from `peer` ("host:port"); it must send `hello` first."""
        bucket = TokenBucket(self._cfg.rate_per_second, self._cfg.rate_burst, now)
        self._conns[conn] = Connection(conn, peer, now, bucket)
        return EMPTY

    def handle(self, conn: ConnId, request: Request, now: float) -> Outcome:
        """Turn one decoded protocol request of `conn` into an Outcome (exactly one reply)."""
        c = self._conns.get(conn)
        if c is None:
            return Outcome(Error(request.id, ErrorCode.INTERNAL_ERROR.value, "unknown connection"))
        try:
            handler = self._handlers.get(type(request))
            if handler is None:
                raise _fail(ErrorCode.UNKNOWN_TYPE, f"unsupported request {type(request).__name__}")
            if not c.hello and not isinstance(request, HelloRequest | PingRequest):
                raise _fail(ErrorCode.HELLO_REQUIRED, "send hello first")
            if c.user is None:
                if not isinstance(request, _PUBLIC):
                    raise _fail(ErrorCode.NOT_AUTHENTICATED, "log in first")
            else:
                self._users[c.user].last_active = now
            return handler(c, request, now)
        except ProtocolError as exc:
            return Outcome(Error(request.id, exc.code.value, exc.message, dict(exc.extra)))
        except Exception:  # a bug must cost one request, never the server
            log.exception("internal error handling %s", type(request).__name__)
            return Outcome(Error(request.id, ErrorCode.INTERNAL_ERROR.value, "internal error"))

    def disconnect(self, conn: ConnId, now: float, reason: str) -> Outcome:
        """`conn` is gone (closed by either side): end its session; co-members see the user go
        offline when it was their last session."""
        c = self._conns.pop(conn, None)
        if c is None or c.user is None:
            return EMPTY
        out = _Out()
        self._end_session(c, now, out)
        return out.done(None)

    def tick(self, now: float) -> Outcome:
        """Expire timed state (bans, lockouts); call about once a second."""
        self._lockouts.expire(now)
        expired = self._bans.expired(now)
        if not expired:
            return EMPTY
        for b in expired:
            _log(logging.INFO, "ban expired", user=b.user, by=b.by, until=_utc(b.until or now))
        return Outcome(writes=tuple(RemoveBan(b.user) for b in expired))

    # ================================================================== introspection

    def online_users(self) -> list[str]:
        """Names of users with a live session (for metrics and the server console)."""
        return sorted(u.name for u in self._online.values())

    def stored_password_hash(self, username: str) -> str | None:
        """The current password hash of `username` (for hashing ahead of time off the event
        loop; includes changes not yet committed), None for an unknown user."""
        u = self._users.get(user_key(username))
        return None if u is None else u.password_hash

    def password_work(self, conn: ConnId, request: Request, now: float) -> bool:
        """Whether handling `request` on `conn` now could run the password hasher: False
        when the core will refuse it before any Argon2 work (signup for a taken or invalid
        name or one another connection is signing up (`begin_signup`), a too-short password,
        from a logged-in connection or before `hello`; login to an unknown or locked-out
        name; `passwd` without a session or with a too-short new password). The server
        hashes ahead of time only when this is True, so a refused request costs the server
        no more than it costs the client. Reads hot state only."""
        c = self._conns.get(conn)
        if c is None or not c.hello:
            return False
        if isinstance(request, SignupRequest):
            key = user_key(request.username)
            return (
                c.user is None
                and username_problem(request.username) is None
                and key not in self._users
                and self._signups.get(key, conn) == conn
                and password_problem(request.password, self._cfg.password_min_length) is None
            )
        if isinstance(request, LoginRequest):
            key = user_key(request.username)
            return (
                c.user is None and key in self._users and self._lockouts.locked_for(key, now) <= 0
            )
        if isinstance(request, PasswdRequest):
            return (
                c.user is not None
                and password_problem(request.new_password, self._cfg.password_min_length) is None
            )
        return False

    def begin_signup(self, conn: ConnId, username: str) -> bool:
        """`conn`'s sign-up for `username` is about to be hashed off the core: until
        `end_signup`, a sign-up for the same name (case-insensitively) from any other
        connection is refused as `username_taken` without hashing. False when another
        connection holds the name already (nothing is recorded then). The caller must call
        `end_signup` however the hashing ends (a `finally`); at most one entry per connection
        that is preparing a sign-up."""
        return self._signups.setdefault(user_key(username), conn) == conn

    def end_signup(self, conn: ConnId, username: str) -> None:
        """Undo `begin_signup` (only `conn`'s own hold on the name)."""
        key = user_key(username)
        if self._signups.get(key) == conn:
            del self._signups[key]

    def session_user(self, conn: ConnId) -> str | None:
        """The user name logged in on `conn`, if any."""
        c = self._conns.get(conn)
        return None if c is None or c.user is None else self._users[c.user].name

    # ================================================================== helpers

    def _add_room(self, rec: RoomRecord, last_seq: int, *, warm: bool) -> Room:
        store, window = self._store, self._cfg.recent_window
        holder: list[Room] = []

        def read(before: int | None, after: int | None, limit: int) -> list[StoredMessage]:
            return store.room_messages(holder[0].name, before=before, after=after, limit=limit)

        recent = (
            store.room_messages(rec.name, before=None, after=None, limit=window)
            if warm and last_seq
            else []
        )
        room = Room(
            next(self._uids),
            rec.name,
            rec.created,
            rec.created_by,
            MessageLog(last_seq, window, read, recent),
        )
        holder.append(room)
        for m in room.log.recent():
            if m.client_id is not None:
                self._client_ids.put(room.uid, user_key(m.sender), m.client_id, m.seq, m.ts)
        self._rooms[room_key(rec.name)] = room
        return room

    def _conv(self, a: str, b: str) -> Conversation:
        """The conversation of user keys `a` and `b`, loaded on first use."""
        cid = conv_id(a, b)
        c = self._convs.get(cid)
        if c is not None:
            return c
        store, window = self._store, self._cfg.recent_window
        last = self._dm_last.get(cid, 0)

        def read(before: int | None, after: int | None, limit: int) -> list[StoredMessage]:
            return store.dm_messages(cid, before=before, after=after, limit=limit)

        recent = store.dm_messages(cid, before=None, after=None, limit=window) if last else []
        lo, hi = conv_members(cid)
        c = Conversation(next(self._uids), cid, lo, hi, MessageLog(last, window, read, recent))
        for m in c.log.recent():
            if m.client_id is not None:
                self._client_ids.put(c.uid, user_key(m.sender), m.client_id, m.seq, m.ts)
        self._convs[cid] = c
        return c

    def _dm_last_seq(self, cid: str) -> int:
        c = self._convs.get(cid)
        return c.log.last_seq if c is not None else self._dm_last.get(cid, 0)

    def _user(self, c: Connection) -> UserState:
        assert c.user is not None
        return self._users[c.user]

    def _admin(self, c: Connection) -> UserState:
        u = self._user(c)
        if not u.is_admin:
            raise _fail(ErrorCode.FORBIDDEN, "only admins may do that")
        return u

    def _find_user(self, name: str) -> UserState:
        u = self._users.get(user_key(name))
        if u is None:
            raise _fail(ErrorCode.UNKNOWN_USER, f"no user named {name!r}", user=name)
        return u

    def _find_room(self, name: str) -> Room:
        r = self._rooms.get(room_key(name))
        if r is None:
            raise _fail(ErrorCode.UNKNOWN_ROOM, f"no room named {name!r}", room=name)
        return r

    def _member_room(self, u: UserState, name: str) -> Room:
        r = self._find_room(name)
        if u.key not in r.members:
            raise _fail(
                ErrorCode.NOT_MEMBER, f"you are not in {r.name!r}; join it first", room=r.name
            )
        return r

    def _check_text(self, text: str) -> None:
        if len(text) > self._cfg.max_message_length:
            raise _fail(
                ErrorCode.TEXT_TOO_LONG,
                f"text longer than {self._cfg.max_message_length} characters",
                max_text=self._cfg.max_message_length,
            )

    def _rate(self, c: Connection, now: float) -> None:
        wait = c.bucket.take(now)
        if wait > 0:
            retry = math.ceil(wait * 1000) / 1000
            raise _fail(
                ErrorCode.RATE_LIMITED,
                f"too many messages; retry in {retry:.3f} s",
                retry_after=retry,
            )

    def _all_conns(self) -> tuple[ConnId, ...]:
        return tuple(c for u in self._online.values() for c in u.conns)

    def _visible(self, viewer: str, msgs: Iterable[StoredMessage]) -> list[StoredMessage]:
        """`msgs` without those from users `viewer` blocks."""
        blocked = self._blocks.blocked_by_user(viewer)
        if not blocked:
            return list(msgs)
        return [m for m in msgs if user_key(m.sender) not in blocked]

    def _room_targets(self, room: Room, sender: str) -> tuple[ConnId, ...]:
        """Fan-out target of a message from user key `sender` (blockers filtered out)."""
        blockers = self._blocks.blockers_of(sender)
        if blockers and not blockers.isdisjoint(room.online.values()):
            return room.conns_except(set(blockers))
        return room.conns()

    def _audit_write(
        self, out: _Out, actor: str, action: str, target: str, reason: str, now: float
    ) -> None:
        out.writes.append(Audit(actor, action, target, reason, now))
        self._audit.append(AuditEntry(now, actor, action, target, reason))

    # ================================================================== sessions

    def _start_session(self, c: Connection, u: UserState, now: float, out: _Out) -> None:
        first = not u.conns
        c.user = u.key
        c.login_at = now
        u.conns.append(c.id)
        u.last_login = now
        u.last_active = now
        self._online[u.key] = u
        for rk in u.rooms:
            self._rooms[rk].add_conn(c.id, u.key)
        out.writes.append(RecordLogin(u.name, now))
        if first:
            self._presence(u, True, now, out)

    def _end_session(self, c: Connection, now: float, out: _Out) -> None:
        if c.user is None:
            return
        u = self._users[c.user]
        c.user = None
        if c.id in u.conns:
            u.conns.remove(c.id)
        for rk in u.rooms:
            room = self._rooms.get(rk)
            if room is not None:
                room.remove_conn(c.id)
        u.last_active = now
        if not u.conns:
            self._online.pop(u.key, None)
            self._presence(u, False, now, out)

    def _presence(self, u: UserState, online: bool, now: float, out: _Out) -> None:
        limit = self._cfg.presence_room_limit
        targets: dict[ConnId, None] = {}
        for rk in u.rooms:
            room = self._rooms[rk]
            if len(room.online) <= limit:
                targets.update(dict.fromkeys(room.online))
        for conn in u.conns:
            targets.pop(conn, None)
        # Users who block `u` do not see them come and go (docs/design/core-blocking.md).
        for blocker in self._blocks.blockers_of(u.key):
            for conn in self._users[blocker].conns:
                targets.pop(conn, None)
        out.event(EventName.PRESENCE, {"user": u.name, "online": online, "ts": now}, tuple(targets))

    def _end_all_sessions(
        self, u: UserState, code: ErrorCode, reason: str, now: float, out: _Out
    ) -> int:
        conns = list(u.conns)
        for conn in conns:
            c = self._conns.get(conn)
            if c is not None:
                self._end_session(c, now, out)
            out.close.append((conn, code.value, reason))
        return len(conns)

    def _login_reply(
        self, request: LoginRequest | SignupRequest, u: UserState, truncated: bool = False
    ) -> Ok:
        rooms = sorted(self._rooms[rk].name for rk in u.rooms)
        data: dict[str, Any] = {"username": u.name, "role": u.role, "rooms": rooms}
        if truncated:
            data["truncated"] = True  # more to catch up: `sync` from what was received
        return Ok(request.id, data)

    def _push(
        self,
        u: UserState,
        fetch: Callable[[int, int], list[StoredMessage]],
        after: int,
        budget: _Budget,
        out: _Out,
        to: tuple[ConnId, ...],
        name: EventName,
        where: dict[str, str],
    ) -> bool:
        """Push the messages after `after` (read page by page with `fetch(after, limit)`)
        within `budget`, skipping blocked senders; True when there may be more than was
        pushed. A run of messages from blocked senders does not use the budget: the scan goes
        on to the next message that can be pushed (a client cursor cannot move over what it
        never receives, so a round that pushed nothing would be repeated for ever)."""
        blocked = self._blocks.blocked_by_user(u.key)
        while True:
            if budget.messages <= 0:
                return True
            limit = max(budget.messages + 1, _SCAN_PAGE)
            msgs = fetch(after, limit)
            for m in msgs:
                after = m.seq
                if blocked and user_key(m.sender) in blocked:
                    continue
                if not budget.take(m):
                    return True
                out.deliveries.append(Delivery(Event(name, record(m, **where)), to))
            if len(msgs) < limit:
                return False

    def _push_offline(
        self,
        u: UserState,
        cid: str,
        cursor: int,
        last: int,
        budget: _Budget,
        out: _Out,
        to: tuple[ConnId, ...],
    ) -> tuple[int, bool]:
        """Offline delivery of one conversation from the delivery cursor: the peer's DMs
        (not blocked ones) within `budget`. Returns the new cursor — past what was pushed,
        in order, and past own and blocked DMs, never past one not pushed — and whether
        the budget cut it short."""
        conv = self._convs.get(cid) or self._conv(*conv_members(cid))
        peer = self._users.get(conv.other(u.key))
        peer_name = peer.name if peer is not None else conv.other(u.key)
        blocked = self._blocks.blocked_by_user(u.key)
        while cursor < last:
            if budget.messages <= 0:
                return cursor, True
            limit = max(budget.messages + 1, _SCAN_PAGE)
            msgs = conv.log.after(cursor, limit)
            for m in msgs:
                sender = user_key(m.sender)
                if sender != u.key and sender not in blocked:
                    if not budget.take(m):
                        return cursor, True
                    out.event(EventName.DM, record(m, peer=peer_name), to)
                cursor = m.seq
            if len(msgs) < limit:
                break
        return max(cursor, last), False

    def _catch_up(self, c: Connection, u: UserState, resume: Resume | None, out: _Out) -> bool:
        """Push what `resume` asks for and the offline DMs (after the delivery cursor), in
        order per room/conversation. Returns True when the catch-up budget
        (`catch_up_messages` / `catch_up_bytes`) cut it short: the client asks again with
        `sync` from what it has seen, and undelivered DMs stay pending. A round that is cut
        short has always pushed at least one message, so repeated `sync` terminates."""
        budget = _Budget(self._cfg.catch_up_messages, self._cfg.catch_up_bytes)
        to = (c.id,)
        resumed_convs: set[str] = set()
        if resume is not None:
            for name, seq in resume.rooms.items():
                room = self._rooms.get(room_key(name))
                if room is None or u.key not in room.members:
                    continue
                if self._push(
                    u, room.log.after, seq, budget, out, to, EventName.MESSAGE, {"room": room.name}
                ):
                    return True
            for name, seq in resume.dms.items():
                peer = self._users.get(user_key(name))
                if peer is None or peer.key == u.key:
                    continue
                conv = self._conv(u.key, peer.key)
                resumed_convs.add(conv.conv)
                if self._push(
                    u, conv.log.after, seq, budget, out, to, EventName.DM, {"peer": peer.name}
                ):
                    return True
        for cid in sorted(u.convs):
            last = self._dm_last_seq(cid)
            cursor = self._cursors.get((u.key, cid), 0)
            if last <= cursor:
                continue
            truncated = False
            if cid not in resumed_convs:
                cursor, truncated = self._push_offline(u, cid, cursor, last, budget, out, to)
            else:
                cursor = last
            if cursor > self._cursors.get((u.key, cid), 0):
                self._cursors[(u.key, cid)] = cursor
                out.writes.append(SetDmCursor(u.name, cid, cursor))
            if truncated:
                return True
        return False

    # ================================================================== accounts

    def _hello(self, c: Connection, rq: HelloRequest, now: float) -> Outcome:
        if rq.version not in SUPPORTED_VERSIONS:
            supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
            raise _fail(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {rq.version} is not supported; this server speaks {supported}",
                supported=list(SUPPORTED_VERSIONS),
            )
        c.hello = True
        cfg = self._cfg
        limits = {
            "max_frame": cfg.max_frame,
            "max_text": cfg.max_message_length,
            "rate_per_second": cfg.rate_per_second,
            "rate_burst": cfg.rate_burst,
            "password_min_length": cfg.password_min_length,
            "max_page": cfg.max_page,
        }
        return Outcome(
            Ok(
                rq.id,
                {
                    "version": rq.version,
                    "server": cfg.server_name,
                    "limits": limits,
                    "heartbeat_s": cfg.heartbeat_s,
                },
            )
        )

    def _ping(self, c: Connection, rq: PingRequest, now: float) -> Outcome:
        return Outcome(Ok(rq.id, {"ts": now}))

    def _signup(self, c: Connection, rq: SignupRequest, now: float) -> Outcome:
        if c.user is not None:
            raise _fail(ErrorCode.ALREADY_AUTHENTICATED, "already logged in on this connection")
        problem = username_problem(rq.username)
        if problem is not None:
            raise _fail(ErrorCode.INVALID_FIELD, problem, field="username")
        key = user_key(rq.username)
        # Taken, or being signed up right now by another connection (its password is being
        # hashed): the same answer, and no hashing for this one.
        if key in self._users or self._signups.get(key, c.id) != c.id:
            raise _fail(ErrorCode.USERNAME_TAKEN, f"the name {rq.username!r} is taken")
        problem = password_problem(rq.password, self._cfg.password_min_length)
        if problem is not None:
            raise _fail(ErrorCode.WEAK_PASSWORD, problem, min_length=self._cfg.password_min_length)
        out = _Out()
        rec = UserRecord(rq.username, self._hasher.hash(rq.password), "member", now)
        out.writes.append(CreateUser(rec.name, rec.password_hash, rec.role, now))
        u = self._users[key] = UserState(rec, key)
        self._start_session(c, u, now, out)
        _log(logging.INFO, "signup", user=u.name, peer=c.peer, conn=c.id)
        return out.done(self._login_reply(rq, u))

    def _login(self, c: Connection, rq: LoginRequest, now: float) -> Outcome:
        if c.user is not None:
            raise _fail(ErrorCode.ALREADY_AUTHENTICATED, "already logged in on this connection")
        key = user_key(rq.username)
        wait = self._lockouts.locked_for(key, now)
        if wait > 0:
            raise self._locked(rq.username, wait, c)
        u = self._users.get(key)
        if u is None or not self._hasher.verify(u.password_hash, rq.password):
            locked = self._lockouts.failure(key, now)
            _log(logging.WARNING, "login failed", user=rq.username, peer=c.peer, conn=c.id)
            if locked:
                raise self._locked(rq.username, locked, c)
            raise _fail(ErrorCode.BAD_CREDENTIALS, "wrong user name or password")
        self._lockouts.success(key)
        ban = self._bans.active(key, now)
        if ban is not None:
            _log(logging.WARNING, "login refused: banned", user=u.name, peer=c.peer, conn=c.id)
            raise _fail(
                ErrorCode.BANNED,
                "you are banned "
                + ("permanently" if ban.until is None else f"until {_utc(ban.until)}")
                + (f": {ban.reason}" if ban.reason else ""),
                until=ban.until,
                reason=ban.reason,
            )
        if u.conns and self._cfg.duplicate_login == "reject":
            _log(
                logging.INFO,
                "login refused: already logged in",
                user=u.name,
                peer=c.peer,
                conn=c.id,
            )
            raise _fail(ErrorCode.ALREADY_LOGGED_IN, f"{u.name} is already logged in elsewhere")
        out = _Out()
        if self._hasher.needs_rehash(u.password_hash):
            u.password_hash = self._hasher.hash(rq.password)
            out.writes.append(SetPassword(u.name, u.password_hash))
        self._start_session(c, u, now, out)
        truncated = self._catch_up(c, u, rq.resume, out)
        _log(logging.INFO, "login", user=u.name, peer=c.peer, conn=c.id, truncated=truncated)
        return out.done(self._login_reply(rq, u, truncated))

    @staticmethod
    def _locked(name: str, wait: float, c: Connection) -> ProtocolError:
        retry = math.ceil(wait * 1000) / 1000
        _log(
            logging.WARNING, "locked out", user=name, peer=c.peer, conn=c.id, seconds=round(wait, 3)
        )
        return _fail(
            ErrorCode.LOCKED_OUT,
            f"too many failed logins; try again in {math.ceil(wait)} s",
            retry_after=retry,
        )

    def _logout(self, c: Connection, rq: LogoutRequest, now: float) -> Outcome:
        _log(logging.INFO, "logout", user=self._user(c).name, peer=c.peer, conn=c.id)
        out = _Out()
        self._end_session(c, now, out)
        return out.done(Ok(rq.id, {}))

    def _passwd(self, c: Connection, rq: PasswdRequest, now: float) -> Outcome:
        u = self._user(c)
        # the cheap check first: a refused change costs no Argon2 work
        problem = password_problem(rq.new_password, self._cfg.password_min_length)
        if problem is not None:
            raise _fail(ErrorCode.WEAK_PASSWORD, problem, min_length=self._cfg.password_min_length)
        if not self._hasher.verify(u.password_hash, rq.old_password):
            raise _fail(ErrorCode.BAD_CREDENTIALS, "the old password is wrong")
        u.password_hash = self._hasher.hash(rq.new_password)
        out = _Out()
        out.writes.append(SetPassword(u.name, u.password_hash))
        # the user's other sessions were opened with the old password: they end
        others = [conn for conn in u.conns if conn != c.id]
        for conn in others:
            other = self._conns.get(conn)
            if other is not None:
                self._end_session(other, now, out)
            out.close.append(
                (
                    conn,
                    ErrorCode.LOGGED_OUT.value,
                    "your password was changed on another connection; log in again",
                )
            )
        _log(logging.INFO, "password changed", user=u.name, peer=c.peer, ended_sessions=len(others))
        return out.done(Ok(rq.id, {}))

    # ================================================================== rooms

    def _rooms_list(self, c: Connection, rq: RoomsRequest, now: float) -> Outcome:
        u = self._user(c)
        rows = [
            {
                "name": r.name,
                "members": len(r.members),
                "online": len(r.online_users()),
                "joined": u.key in r.members,
            }
            for r in sorted(self._rooms.values(), key=lambda r: room_key(r.name))
        ]
        return Outcome(Ok(rq.id, {"rooms": rows}))

    def _room_create(self, c: Connection, rq: RoomCreateRequest, now: float) -> Outcome:
        u = self._admin(c)
        problem = username_problem(rq.room)
        if problem is not None:
            raise _fail(ErrorCode.INVALID_FIELD, problem, field="room")
        if room_key(rq.room) in self._rooms:
            raise _fail(ErrorCode.ROOM_EXISTS, f"room {rq.room!r} exists", room=rq.room)
        out = _Out()
        out.writes.append(CreateRoom(rq.room, u.name, now))
        self._add_room(RoomRecord(rq.room, now, u.name), 0, warm=False)
        self._audit_write(out, u.name, "room_create", rq.room, "", now)
        _log(logging.INFO, "room created", by=u.name, room=rq.room)
        out.event(
            EventName.ROOM_CREATED, {"room": rq.room, "by": u.name, "ts": now}, self._all_conns()
        )
        return out.done(Ok(rq.id, {"room": rq.room}))

    def _room_rename(self, c: Connection, rq: RoomRenameRequest, now: float) -> Outcome:
        u = self._admin(c)
        room = self._find_room(rq.room)
        problem = username_problem(rq.new_name)
        if problem is not None:
            raise _fail(ErrorCode.INVALID_FIELD, problem, field="new_name")
        old, new = room_key(room.name), room_key(rq.new_name)
        if new != old and new in self._rooms:
            raise _fail(ErrorCode.ROOM_EXISTS, f"room {rq.new_name!r} exists", room=rq.new_name)
        out = _Out()
        out.writes.append(RenameRoom(room.name, rq.new_name))
        old_name = room.name
        room.name = rq.new_name
        del self._rooms[old]
        self._rooms[new] = room
        if new != old:
            for mk in room.members:
                member = self._users[mk]
                member.rooms.discard(old)
                member.rooms.add(new)
        self._audit_write(out, u.name, "room_rename", old_name, f"renamed to {rq.new_name}", now)
        _log(logging.INFO, "room renamed", by=u.name, room=old_name, new_name=rq.new_name)
        out.event(
            EventName.ROOM_RENAMED,
            {"room": old_name, "new_name": rq.new_name, "by": u.name, "ts": now},
            self._all_conns(),
        )
        return out.done(Ok(rq.id, {"room": rq.new_name, "new_name": rq.new_name}))

    def _room_delete(self, c: Connection, rq: RoomDeleteRequest, now: float) -> Outcome:
        u = self._admin(c)
        room = self._find_room(rq.room)
        out = _Out()
        out.writes.append(DeleteRoom(room.name))
        rk = room_key(room.name)
        for mk in room.members:
            self._users[mk].rooms.discard(rk)
        del self._rooms[rk]
        self._audit_write(out, u.name, "room_delete", room.name, "", now)
        _log(logging.INFO, "room deleted", by=u.name, room=room.name)
        out.event(
            EventName.ROOM_DELETED, {"room": room.name, "by": u.name, "ts": now}, self._all_conns()
        )
        return out.done(Ok(rq.id, {"room": room.name}))

    def _join(self, c: Connection, rq: JoinRequest, now: float) -> Outcome:
        u = self._user(c)
        room = self._find_room(rq.room)
        out = _Out()
        if u.key not in room.members:
            # the other members' connections hear about it; the joiner has the reply
            out.event(
                EventName.JOINED, {"room": room.name, "user": u.name, "ts": now}, room.conns()
            )
            room.members.add(u.key)
            u.rooms.add(room_key(room.name))
            for conn in u.conns:
                room.add_conn(conn, u.key)
            out.writes.append(SetMembership(u.name, room.name, True))
            _log(logging.INFO, "join", user=u.name, room=room.name, conn=c.id)
        limit = min(rq.limit or self._cfg.join_history, self._cfg.max_page)
        msgs, _ = room.log.before(None, limit)
        # Bounded (a big room has thousands of members): at most `join_members` names,
        # online members first, each part in name order; `online` lists those of them online.
        # Users the joiner blocks are left out of the names (not of the room's totals).
        cap = self._cfg.join_members
        online_keys = room.online_users()
        users = self._users
        blocked = self._blocks.blocked_by_user(u.key)
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
        data = {
            "room": room.name,
            "members": online + away,
            "online": online,
            "members_total": len(room.members),
            "online_total": len(online_keys),
            "members_truncated": len(online) + len(away) < listable,
            "messages": [record(m, room=room.name) for m in self._visible(u.key, msgs)],
            "last_seq": room.log.last_seq,
        }
        return out.done(Ok(rq.id, data))

    def _leave(self, c: Connection, rq: LeaveRequest, now: float) -> Outcome:
        u = self._user(c)
        room = self._member_room(u, rq.room)
        out = _Out()
        room.members.discard(u.key)
        u.rooms.discard(room_key(room.name))
        for conn in u.conns:
            room.remove_conn(conn)
        out.writes.append(SetMembership(u.name, room.name, False))
        out.event(EventName.LEFT, {"room": room.name, "user": u.name, "ts": now}, room.conns())
        _log(logging.INFO, "leave", user=u.name, room=room.name, conn=c.id)
        return out.done(Ok(rq.id, {"room": room.name}))

    # ================================================================== room messages

    def _send(self, c: Connection, rq: SendRequest, now: float) -> Outcome:
        u = self._user(c)
        room = self._member_room(u, rq.room)
        self._check_text(rq.text)
        self._rate(c, now)
        dup = self._client_ids.get(room.uid, u.key, rq.client_id)
        if dup is not None:
            return Outcome(
                Ok(
                    rq.id,
                    {
                        "room": room.name,
                        "seq": dup[0],
                        "ts": dup[1],
                        "client_id": rq.client_id,
                        "duplicate": True,
                    },
                )
            )
        seq = room.log.last_seq + 1
        msg = StoredMessage(room.name, seq, now, u.name, rq.text, client_id=rq.client_id)
        room.log.append(msg)
        self._client_ids.put(room.uid, u.key, rq.client_id, seq, now)
        event = Event(EventName.MESSAGE, record(msg, room=room.name))
        _log(logging.DEBUG, "message", user=u.name, room=room.name, seq=seq, text=rq.text)
        return Outcome(
            Ok(
                rq.id,
                {
                    "room": room.name,
                    "seq": seq,
                    "ts": now,
                    "client_id": rq.client_id,
                    "duplicate": False,
                },
            ),
            (Delivery(event, self._room_targets(room, u.key)),),
            (AppendRoomMessage(room.name, seq, u.name, rq.text, now, rq.client_id),),
        )

    def _page_limit(self, limit: int | None) -> int:
        return min(limit or self._cfg.join_history, self._cfg.max_page)

    def _history(self, c: Connection, rq: HistoryRequest, now: float) -> Outcome:
        u = self._user(c)
        limit = self._page_limit(rq.limit)
        if rq.room is not None:
            room = self._member_room(u, rq.room)
            msgs, more = room.log.before(rq.before, limit)
            recs = [record(m, room=room.name) for m in self._visible(u.key, msgs)]
            where = {"room": room.name}
        else:
            assert rq.peer is not None
            peer = self._find_user(rq.peer)
            if peer.key == u.key:
                raise _fail(ErrorCode.SELF_MESSAGE, "there is no conversation with yourself")
            conv = self._conv(u.key, peer.key)
            msgs, more = conv.log.before(rq.before, limit)
            recs = [record(m, peer=peer.name) for m in self._visible(u.key, msgs)]
            where = {"peer": peer.name}
        return Outcome(Ok(rq.id, {**where, "messages": recs, "has_more": more}))

    def _since(self, c: Connection, rq: SinceRequest, now: float) -> Outcome:
        u = self._user(c)
        limit = min(rq.limit or self._cfg.max_page, self._cfg.max_page)
        if rq.rooms is None:
            rooms = [self._rooms[rk] for rk in sorted(u.rooms)]
        else:
            rooms = [self._member_room(u, name) for name in rq.rooms]
        by_key = {room_key(r.name): r for r in rooms}
        found: dict[tuple[int, int], tuple[Room, StoredMessage]] = {}
        if rooms:
            for m in self._store.messages_since([r.name for r in rooms], rq.ts, limit + 1):
                r = by_key.get(room_key(m.scope))
                if r is not None and m.seq < r.log.low:
                    found[(r.uid, m.seq)] = (r, r.log.fresh(m))
        for r in rooms:
            for m in r.log.recent():
                if m.ts >= rq.ts:
                    found[(r.uid, m.seq)] = (r, m)
        ordered = sorted(found.values(), key=lambda rm: (rm[1].ts, room_key(rm[0].name), rm[1].seq))
        more = len(ordered) > limit
        blocked = self._blocks.blocked_by_user(u.key)
        recs = [
            record(m, room=r.name) for r, m in ordered[:limit] if user_key(m.sender) not in blocked
        ]
        return Outcome(Ok(rq.id, {"messages": recs, "has_more": more}))

    def _target_message(
        self, u: UserState, rq: EditRequest | DeleteRequest
    ) -> tuple[MessageLog, StoredMessage, Room | None, UserState | None]:
        if rq.room is not None:
            if u.is_admin and isinstance(rq, DeleteRequest):
                room = self._find_room(rq.room)  # admins may delete anywhere
            else:
                room = self._member_room(u, rq.room)
            msglog, peer = room.log, None
        else:
            assert rq.peer is not None
            peer = self._find_user(rq.peer)
            if peer.key == u.key:
                raise _fail(ErrorCode.SELF_MESSAGE, "there is no conversation with yourself")
            room, msglog = None, self._conv(u.key, peer.key).log
        msg = msglog.get(rq.seq)
        if msg is None or msg.deleted:
            raise _fail(ErrorCode.MESSAGE_NOT_FOUND, f"no message {rq.seq} there", seq=rq.seq)
        return msglog, msg, room, peer

    def _edit(self, c: Connection, rq: EditRequest, now: float) -> Outcome:
        u = self._user(c)
        self._check_text(rq.text)
        msglog, msg, room, peer = self._target_message(u, rq)
        if user_key(msg.sender) != u.key:
            raise _fail(ErrorCode.FORBIDDEN, "you can only edit your own messages")
        self._rate(c, now)
        new = msglog.edited(msg, rq.text)
        out = _Out()
        if room is not None:
            out.writes.append(EditRoomMessage(room.name, msg.seq, rq.text))
            rec = record(new, room=room.name)
            out.event(EventName.MESSAGE_EDITED, rec, self._room_targets(room, u.key))
        else:
            assert peer is not None
            conv = self._conv(u.key, peer.key)
            out.writes.append(EditDm(conv.conv, msg.seq, rq.text))
            rec = self._dm_events(EventName.DM_EDITED, new, u, peer, out)
        return out.done(Ok(rq.id, {"message": rec}))

    def _delete(self, c: Connection, rq: DeleteRequest, now: float) -> Outcome:
        u = self._user(c)
        msglog, msg, room, peer = self._target_message(u, rq)
        own = user_key(msg.sender) == u.key
        if not own and not (room is not None and u.is_admin):
            raise _fail(ErrorCode.FORBIDDEN, "you can only delete your own messages")
        self._rate(c, now)
        new = msglog.edited(msg, None)
        out = _Out()
        if room is not None:
            out.writes.append(DeleteRoomMessage(room.name, msg.seq))
            rec = record(new, room=room.name)
            out.event(
                EventName.MESSAGE_DELETED, rec, self._room_targets(room, user_key(msg.sender))
            )
            if not own:
                self._audit_write(
                    out, u.name, "delete_message", msg.sender, f"{room.name}#{msg.seq}", now
                )
                _log(
                    logging.INFO, "message deleted by admin", by=u.name, room=room.name, seq=msg.seq
                )
        else:
            assert peer is not None
            conv = self._conv(u.key, peer.key)
            out.writes.append(DeleteDm(conv.conv, msg.seq))
            rec = self._dm_events(EventName.DM_DELETED, new, u, peer, out)
        return out.done(Ok(rq.id, {"message": rec}))

    # ================================================================== direct messages

    def _dm_events(
        self,
        name: EventName,
        msg: StoredMessage,
        sender: UserState,
        peer: UserState,
        out: _Out,
        *,
        to_peer: bool = True,
    ) -> dict[str, Any]:
        """Deliver a DM event to both sides (not to a recipient who blocks the sender, nor
        when `to_peer` is false); returns the record as the sender sees it."""
        mine = record(msg, peer=peer.name)
        out.event(name, mine, tuple(sender.conns))
        if to_peer and peer.conns and not self._blocks.blocks(peer.key, sender.key):
            out.event(name, record(msg, peer=sender.name), tuple(peer.conns))
        return mine

    def _dm_pending(self, user: str, conv: Conversation, seq: int) -> bool:
        """True if user key `user` has DMs from the peer before `seq` in `conv` that offline
        delivery has not pushed yet (the delivery cursor is behind them)."""
        cursor = self._cursors.get((user, conv.conv), 0)
        gap = seq - 1 - cursor
        if gap <= 0:
            return False
        if gap > _PENDING_SCAN:
            return True  # rare (own messages only, after a restart): catch-up will tell
        other = conv.other(user)
        return any(user_key(m.sender) == other for m in conv.log.after(cursor, gap))

    def _dm(self, c: Connection, rq: DmRequest, now: float) -> Outcome:
        u = self._user(c)
        peer = self._find_user(rq.to)
        if peer.key == u.key:
            raise _fail(ErrorCode.SELF_MESSAGE, "you cannot send a direct message to yourself")
        self._check_text(rq.text)
        self._rate(c, now)
        conv = self._conv(u.key, peer.key)
        dup = self._client_ids.get(conv.uid, u.key, rq.client_id)
        if dup is not None:
            return Outcome(
                Ok(
                    rq.id,
                    {
                        "peer": peer.name,
                        "seq": dup[0],
                        "ts": dup[1],
                        "client_id": rq.client_id,
                        "duplicate": True,
                    },
                )
            )
        seq = conv.log.last_seq + 1
        msg = StoredMessage(
            conv.conv, seq, now, u.name, rq.text, client_id=rq.client_id, recipient=peer.name
        )
        conv.log.append(msg)
        self._client_ids.put(conv.uid, u.key, rq.client_id, seq, now)
        u.convs.add(conv.conv)
        peer.convs.add(conv.conv)
        blocked = self._blocks.blocks(peer.key, u.key)
        # Delivered now, or deliberately never (blocked): either way the cursor moves on.
        # An online recipient with older offline DMs from this sender still pending (its
        # catch-up was cut short) gets this one after them, by offline delivery, in order:
        # the cursor only ever moves over DMs pushed in order.
        delivered = blocked or (peer.online and not self._dm_pending(peer.key, conv, seq))
        if delivered:
            self._cursors[(peer.key, conv.conv)] = seq
        own = (u.key, conv.conv)
        if self._cursors.get(own, 0) == seq - 1:
            # nothing to deliver to the sender before or at `seq` (memory only: after a
            # restart `_dm_pending` and the catch-up skip own messages)
            self._cursors[own] = seq
        _log(logging.DEBUG, "dm", user=u.name, to=peer.name, seq=seq, text=rq.text)
        out = _Out()
        out.writes.append(
            AppendDm(conv.conv, seq, u.name, peer.name, rq.text, now, rq.client_id, delivered)
        )
        self._dm_events(EventName.DM, msg, u, peer, out, to_peer=delivered)
        return out.done(
            Ok(
                rq.id,
                {
                    "peer": peer.name,
                    "seq": seq,
                    "ts": now,
                    "client_id": rq.client_id,
                    "duplicate": False,
                },
            )
        )

    def _broadcast(self, c: Connection, rq: BroadcastRequest, now: float) -> Outcome:
        u = self._admin(c)
        self._check_text(rq.text)
        self._rate(c, now)
        out = _Out()
        to = self._all_conns()
        out.event(EventName.BROADCAST, {"from": u.name, "text": rq.text, "ts": now}, to)
        self._audit_write(out, u.name, "broadcast", "*", rq.text[:200], now)
        _log(logging.INFO, "broadcast", by=u.name, sessions=len(to))
        _log(logging.DEBUG, "broadcast text", by=u.name, text=rq.text)
        return out.done(Ok(rq.id, {"delivered": len(to)}))

    # ================================================================== presence, blocking

    def _who(self, c: Connection, rq: WhoRequest, now: float) -> Outcome:
        u = self._user(c)
        # Users `u` blocks are left out (the blocked user still sees `u`: blocks are invisible
        # to the blocked user; docs/design/core-blocking.md).
        blocked = self._blocks.blocked_by_user(u.key)
        rooms_of = {rk: r.name for rk, r in self._rooms.items()}
        window = rq.since
        if window is None and rq.recent:
            window = self._cfg.presence_window
        if rq.room is not None:
            room = self._find_room(rq.room)
            pool: Iterable[UserState] = (self._users[k] for k in room.members)
        else:
            pool = self._users.values() if window is not None else self._online.values()
        if window is None:
            users = [x for x in pool if x.online and x.key not in blocked]
        else:
            horizon = now - window
            users = [
                x
                for x in pool
                if (x.online or (x.last_active is not None and x.last_active >= horizon))
                and x.key not in blocked
            ]
        data: dict[str, Any] = {"users": who_entries(users, rooms_of), "since": window}
        if rq.room is not None:
            data["room"] = self._find_room(rq.room).name
        return Outcome(Ok(rq.id, data))

    def _block(self, c: Connection, rq: BlockRequest, now: float) -> Outcome:
        u = self._user(c)
        other = self._find_user(rq.user)
        if other.key == u.key:
            raise _fail(ErrorCode.SELF_MESSAGE, "you cannot block yourself")
        writes: tuple[Write, ...] = ()
        if self._blocks.add(u.key, other.key):
            writes = (AddBlock(u.name, other.name),)
        return Outcome(Ok(rq.id, {"user": other.name}), writes=writes)

    def _unblock(self, c: Connection, rq: UnblockRequest, now: float) -> Outcome:
        u = self._user(c)
        other = self._find_user(rq.user)
        writes: tuple[Write, ...] = ()
        if self._blocks.remove(u.key, other.key):
            writes = (RemoveBlock(u.name, other.name),)
        return Outcome(Ok(rq.id, {"user": other.name}), writes=writes)

    def _blocks_list(self, c: Connection, rq: BlocksRequest, now: float) -> Outcome:
        u = self._user(c)
        names = sorted(self._users[k].name for k in self._blocks.blocked_by_user(u.key))
        return Outcome(Ok(rq.id, {"users": names}))

    # ================================================================== moderation

    def _kick(self, c: Connection, rq: KickRequest, now: float) -> Outcome:
        admin = self._admin(c)
        target = self._find_user(rq.user)
        if target.is_admin:
            raise _fail(ErrorCode.FORBIDDEN, "admins cannot be kicked")
        reason = rq.reason or ""
        out = _Out()
        if rq.room is not None:
            room = self._find_room(rq.room)
            if target.key not in room.members:
                raise _fail(
                    ErrorCode.NOT_MEMBER, f"{target.name} is not in {room.name}", room=room.name
                )
            out.event(
                EventName.KICKED,
                {"room": room.name, "by": admin.name, "reason": reason, "ts": now},
                tuple(target.conns),
            )
            out.event(
                EventName.LEFT, {"room": room.name, "user": target.name, "ts": now}, room.conns()
            )
            room.members.discard(target.key)
            target.rooms.discard(room_key(room.name))
            for conn in target.conns:
                room.remove_conn(conn)
            out.writes.append(SetMembership(target.name, room.name, False))
            sessions = len(target.conns)
            where = room.name
        else:
            out.event(
                EventName.KICKED,
                {"room": None, "by": admin.name, "reason": reason, "ts": now},
                tuple(target.conns),
            )
            sessions = self._end_all_sessions(
                target,
                ErrorCode.KICKED,
                f"kicked by {admin.name}" + (f": {reason}" if reason else ""),
                now,
                out,
            )
            where = None
        self._audit_write(
            out, admin.name, "kick" if where is None else f"kick:{where}", target.name, reason, now
        )
        _log(
            logging.INFO,
            "kick",
            by=admin.name,
            user=target.name,
            room=where,
            reason=reason,
            sessions=sessions,
        )
        return out.done(Ok(rq.id, {"user": target.name, "room": where, "sessions": sessions}))

    def _ban(self, c: Connection, rq: BanRequest, now: float) -> Outcome:
        admin = self._admin(c)
        target = self._find_user(rq.user)
        if target.is_admin:
            raise _fail(ErrorCode.FORBIDDEN, "admins cannot be banned")
        reason = rq.reason or ""
        until = None if rq.duration is None else now + rq.duration
        ban = BanRecord(target.name, until, reason, admin.name, now)
        self._bans.add(ban)
        out = _Out()
        out.writes.append(AddBan(target.name, until, reason, admin.name, now))
        out.event(
            EventName.BANNED,
            {"by": admin.name, "reason": reason, "until": until, "ts": now},
            tuple(target.conns),
        )
        self._end_all_sessions(
            target,
            ErrorCode.BANNED,
            "banned"
            + (f" until {_utc(until)}" if until is not None else "")
            + (f": {reason}" if reason else ""),
            now,
            out,
        )
        self._audit_write(
            out,
            admin.name,
            "ban",
            target.name,
            reason,
            now,
        )
        _log(
            logging.INFO,
            "ban",
            by=admin.name,
            user=target.name,
            until="permanent" if until is None else _utc(until),
            reason=reason,
        )
        return out.done(Ok(rq.id, {"user": target.name, "until": until, "reason": reason}))

    def _unban(self, c: Connection, rq: UnbanRequest, now: float) -> Outcome:
        admin = self._admin(c)
        target = self._find_user(rq.user)
        if self._bans.remove(target.key) is None:
            raise _fail(ErrorCode.NOT_BANNED, f"{target.name} is not banned", user=target.name)
        out = _Out()
        out.writes.append(RemoveBan(target.name))
        self._audit_write(out, admin.name, "unban", target.name, "", now)
        _log(logging.INFO, "unban", by=admin.name, user=target.name)
        return out.done(Ok(rq.id, {"user": target.name}))

    def _bans_list(self, c: Connection, rq: BansRequest, now: float) -> Outcome:
        self._admin(c)
        rows = [
            {"user": b.user, "until": b.until, "reason": b.reason, "by": b.by, "ts": b.ts}
            for b in self._bans.listing(now)
        ]
        return Outcome(Ok(rq.id, {"bans": rows}))

    def _audit_list(self, c: Connection, rq: AuditRequest, now: float) -> Outcome:
        self._admin(c)
        rows = [
            {
                "ts": e.ts,
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "reason": e.reason,
            }
            for e in self._audit.newest(min(rq.limit or 50, self._cfg.max_page))
        ]
        return Outcome(Ok(rq.id, {"entries": rows}))

    # ================================================================== resume

    def _sync(self, c: Connection, rq: SyncRequest, now: float) -> Outcome:
        u = self._user(c)
        out = _Out()
        if self._catch_up(c, u, rq.resume, out):
            return out.done(Ok(rq.id, {"truncated": True}))
        return out.done(Ok(rq.id, {}))
