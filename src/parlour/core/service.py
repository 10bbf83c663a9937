"""`ChatService`: the pure, synchronous chat core behind every door.

Every call takes the current time (`now`, unix seconds) and returns an `Outcome`: the reply
for the calling connection, the events to deliver (each resolved to this node's connections,
with its logical address), the storage writes that must be durable before any of it is sent,
and the connections to close. The core does no I/O at all: it is built from a `StoreSnapshot`,
and when a request needs password work or history the store must read, the outcome lists
those *needs* instead; the adapter computes them and calls `handle` again with the answers
(`parlour.core.needs`, docs/design/chat-architecture.md).

The handlers live in `parlour.core.handlers`, one module per feature; this module keeps the
front class, the dispatch table and the connection life cycle.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from parlour.core.accounts import password_problem, username_problem
from parlour.core.config import CoreConfig
from parlour.core.context import Ctx, fail, log_event
from parlour.core.handlers import (
    accounts,
    broadcasts,
    catch_up,
    dms,
    files,
    messages,
    moderation,
    reading,
    rooms,
    social,
    uploads,
)
from parlour.core.handlers.sessions import end_session
from parlour.core.limits import TokenBucket
from parlour.core.needs import NO_ANSWERS, Answers, HashPassword, Need, NeedMore
from parlour.core.offers import Endpoint, Offers
from parlour.core.outcome import EMPTY, ConnId, Delivery, Outcome, RemoteEffect
from parlour.core.records import (
    FileRecord,
    RoomRecord,
    StoreSnapshot,
    UserRecord,
    room_key,
    user_key,
)
from parlour.core.replica import Replica
from parlour.core.router import Router
from parlour.core.sessions import Connection, Sessions
from parlour.core.state import ChatState, UserState
from parlour.core.throttles import LoginThrottle
from parlour.core.writes import Assigned, CreateRoom, CreateUser, RemoveBan, Write
from parlour.protocol import (
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
    ErrorCode,
    FileAcceptRequest,
    FileCancelRequest,
    FileDeclineRequest,
    FileDoneRequest,
    FileOfferRequest,
    FileProbeRequest,
    FileTokenRequest,
    HelloRequest,
    HistoryRequest,
    JoinRequest,
    KickRequest,
    LeaveRequest,
    LoginRequest,
    LogoutRequest,
    MarkReadRequest,
    Ok,
    PasswdRequest,
    PingRequest,
    ProtocolError,
    Request,
    RoomCreateRequest,
    RoomDeleteRequest,
    RoomRenameRequest,
    RoomsRequest,
    SendRequest,
    SignupRequest,
    SinceRequest,
    SyncReply,
    SyncRequest,
    UnbanRequest,
    UnblockRequest,
    UnreadRequest,
    WhoRequest,
)

__all__ = ["SUPPORTED_VERSIONS", "ChatService"]

log = logging.getLogger("parlour.core")

SUPPORTED_VERSIONS = accounts.SUPPORTED_VERSIONS

#: requests allowed before login (everything else needs an authenticated session)
_PUBLIC = (HelloRequest, SignupRequest, LoginRequest, PingRequest)

Handler = Callable[[Ctx, Connection, Any], Outcome]


def _sync(cx: Ctx, c: Connection, rq: SyncRequest) -> Outcome:
    u = cx.user(c)
    plan = catch_up.plan_catch_up(cx, u, rq.resume)
    out = cx.out()
    plan.apply(cx, c, u, out)
    return out.done(Ok(rq.id, SyncReply(truncated=True if plan.truncated else None)))


#: request class -> its handler
HANDLERS: dict[type[Any], Handler] = {
    HelloRequest: accounts.hello,
    PingRequest: accounts.ping,
    SignupRequest: accounts.signup,
    LoginRequest: accounts.login,
    LogoutRequest: accounts.logout,
    PasswdRequest: accounts.passwd,
    RoomsRequest: rooms.rooms_list,
    RoomCreateRequest: rooms.room_create,
    RoomRenameRequest: rooms.room_rename,
    RoomDeleteRequest: rooms.room_delete,
    JoinRequest: rooms.join,
    LeaveRequest: rooms.leave,
    SendRequest: messages.send,
    HistoryRequest: messages.history,
    SinceRequest: messages.since,
    EditRequest: messages.edit,
    DeleteRequest: messages.delete,
    DmRequest: dms.dm,
    BroadcastRequest: broadcasts.broadcast,
    MarkReadRequest: reading.mark_read,
    UnreadRequest: reading.unread,
    WhoRequest: social.who,
    BlockRequest: social.block,
    UnblockRequest: social.unblock,
    BlocksRequest: social.blocks_list,
    KickRequest: moderation.kick,
    BanRequest: moderation.ban,
    UnbanRequest: moderation.unban,
    BansRequest: moderation.bans_list,
    AuditRequest: moderation.audit_list,
    SyncRequest: _sync,
    FileProbeRequest: files.file_probe,
    FileOfferRequest: files.file_offer,
    FileAcceptRequest: files.file_accept,
    FileDeclineRequest: files.file_decline,
    FileCancelRequest: files.file_cancel,
    FileDoneRequest: files.file_done,
    FileTokenRequest: uploads.file_token,
}


class ChatService:
    """The chat domain as a state machine driven by connections, requests and time."""

    def __init__(
        self,
        snapshot: StoreSnapshot,
        config: CoreConfig,
        *,
        entropy: Callable[[int], bytes],
    ) -> None:
        """Build the hot state from `snapshot` (`Store.load` with `load_args(config)`);
        `entropy(n)` gives n random bytes (session tokens; tests pass a seeded source)."""
        self._cfg = config
        self.sessions = Sessions(
            LoginThrottle(
                config.lockout_threshold,
                config.lockout_seconds,
                address_threshold=config.address_lockout_threshold,
                address_window=config.address_lockout_window,
                account_threshold=config.account_lockout_threshold,
                account_window=config.account_lockout_window,
                capacity=config.max_tracked_failures,
            )
        )
        holder: list[Ctx] = []
        self.state = ChatState(
            snapshot,
            config,
            room_reader=lambda room: holder[0].room_reader(room),
            dm_reader=lambda cid: holder[0].dm_reader(cid),
        )
        self.router = Router(self.state, self.sessions, config.presence_room_limit)
        #: node-local file offers and observed UDP endpoints (never stored)
        self.offers = Offers()
        self._cx = Ctx(config, self.state, self.sessions, self.router, entropy, self.offers)
        holder.append(self._cx)
        #: bearer tokens of the files endpoints (checked by `parlour.files.http`)
        self.file_tokens = self._cx.file_tokens
        #: several nodes: the sequencer and the application of committed facts
        self.replica = Replica(self._cx)

    # ================================================================== files (HTTP side)

    def file_user(self, token: str, now: float) -> tuple[str, str] | None:
        """The user (key, display name) a file token stands for, when it is valid at `now`
        and the user still exists (a banned user is told 403 by `file_access`/`banned`)."""
        holder = self.file_tokens.check(token, now)
        if holder is None:
            return None
        u = self.state.users.get(holder.key)
        return (u.key, u.name) if u is not None else None

    def banned(self, user: str, now: float) -> bool:
        """Is user key `user` banned at `now` (no uploads, no downloads)?"""
        return self.state.bans.active(user, now) is not None

    def file_access(self, user: str, rec: FileRecord | None, now: float) -> int:
        """May user key `user` download file `rec`? 200, 403 or 404 (docs/design/files.md:
        room members not banned, the two DM participants, the uploader before it is
        attached; a deleted message's file is gone)."""
        return uploads.file_access(self.state, user, rec, now)

    @staticmethod
    def load_args(config: CoreConfig, now: float = 0.0) -> dict[str, Any]:
        """What to ask `Store.load` for, for this configuration, at `now`."""
        return {
            "recent": config.recent_window,
            "audit": config.audit_memory,
            "client_ids": config.client_id_memory,
            "client_ids_since": now - config.client_id_ttl,
            "tokens_valid_at": now,
        }

    # ================================================================== lifecycle

    def web_listening(self, url: str | None, port: int) -> None:
        """The web listener is up at `port` (and `url`, when known): `hello` says so."""
        self._cfg = dataclasses.replace(self._cfg, web_url=url, web_port=port)
        self._cx.cfg = self._cfg

    def needs_bootstrap(self) -> bool:
        """True on a first start (no users yet): call `bootstrap` before serving."""
        return not self.state.users

    def bootstrap(self, now: float, admin_password: str, answers: Answers = NO_ANSWERS) -> Outcome:
        """First start: create the admin account (with `admin_password`) and the default
        rooms. Needs the password's hash (`HashPassword`), like a sign-up; the writes of the
        outcome must be committed before serving. Does nothing once a user exists."""
        if self.state.users:
            return EMPTY
        name = self._cfg.admin_name
        problem = username_problem(name)
        if problem is not None:
            raise ValueError(f"admin name {name!r}: {problem}")
        problem = password_problem(admin_password, self._cfg.password_min_length)
        if problem is not None:
            raise ValueError(f"admin password: {problem}")
        cx = self._cx
        cx.now, cx.answers = now, answers
        try:
            password_hash: str = cx.need(HashPassword(admin_password))
        except NeedMore as more:
            return Outcome(needs=more.needs)
        finally:
            cx.answers = NO_ANSWERS
        writes: list[Write] = [CreateUser(name, password_hash, "admin", now)]
        rec = UserRecord(name, password_hash, "admin", now)
        self.state.users[user_key(name)] = UserState(rec, user_key(name))
        for room in self._cfg.default_rooms:
            if room_key(room) not in self.state.rooms and username_problem(room) is None:
                writes.append(CreateRoom(room, name, now))
                self.state.add_room(RoomRecord(room, now, name), 0)
        return Outcome(writes=tuple(writes))

    def connect(self, conn: ConnId, peer: str, now: float) -> Outcome:
        """A new connection `conn` from `peer` ("host:port"); it must send `hello` first."""
        cfg = self._cfg
        bucket = TokenBucket(cfg.rate_per_second, cfg.rate_burst, now)
        reads = TokenBucket(cfg.read_rate_per_second, cfg.read_burst, now)
        self.sessions.open(conn, peer, now, bucket, reads)
        return EMPTY

    def handle(
        self, conn: ConnId, request: Request, now: float, answers: Answers = NO_ANSWERS
    ) -> Outcome:
        """Turn one decoded protocol request of `conn` into an Outcome: complete (exactly one
        reply), or listing the needs to compute before calling again with `answers`."""
        c = self.sessions.conns.get(conn)
        if c is None:
            return Outcome(Error(request.id, ErrorCode.INTERNAL_ERROR.value, "unknown connection"))
        cx = self._cx
        cx.now = now
        cx.answers = answers
        c.last_request = now
        try:
            handler = HANDLERS.get(type(request))
            if handler is None:
                raise fail(ErrorCode.UNKNOWN_TYPE, f"unsupported request {type(request).__name__}")
            if not c.hello and not isinstance(request, HelloRequest | PingRequest):
                raise fail(ErrorCode.HELLO_REQUIRED, "send hello first")
            if c.user is None:
                if not isinstance(request, _PUBLIC):
                    raise fail(ErrorCode.NOT_AUTHENTICATED, "log in first")
            else:
                self.state.users[c.user].last_active = now
            outcome = handler(cx, c, request)
        except NeedMore as more:
            cx.others.clear()  # a round that ends in needs changed nothing
            return Outcome(needs=more.needs)
        except ProtocolError as exc:
            outcome = Outcome(Error(request.id, exc.code.value, exc.message, dict(exc.extra)))
        except Exception:  # a bug must cost one request, never the server
            log.exception("internal error handling %s", type(request).__name__)
            outcome = Outcome(Error(request.id, ErrorCode.INTERNAL_ERROR.value, "internal error"))
        finally:
            cx.answers = NO_ANSWERS
        if cx.others:
            return self._tell(outcome)
        return outcome

    def _tell(self, outcome: Outcome) -> Outcome:
        """`outcome` with what the other nodes must be told of (`Ctx.tell`)."""
        others = self._cx.others
        if not others:
            return outcome
        remote = (*outcome.remote, *others)
        others.clear()
        return dataclasses.replace(outcome, remote=remote)

    def abandon(self, conn: ConnId) -> None:
        """The adapter gave up on the needs of `conn`'s request in progress (it answered an
        error instead): let go of what that request was holding (a sign-up's name)."""
        holds = self.sessions.signups
        for key in [k for k, held in holds.items() if held == conn]:
            del holds[key]

    def disconnect(self, conn: ConnId, now: float, reason: str) -> Outcome:
        """`conn` is gone (closed by either side): end its session; co-members see the user go
        offline when it was their last session."""
        c = self.sessions.close(conn)
        if c is None or c.user is None:
            return EMPTY
        cx = self._cx
        cx.now = now
        out = cx.out()
        end_session(cx, c, out)
        return self._tell(out.done(None))

    def tick(self, now: float) -> Outcome:
        """Expire timed state (bans, login throttles, file offers); call about once a second."""
        self.sessions.throttle.expire(now)
        ended = EMPTY
        if self.offers.by_id:
            cx = self._cx
            cx.now = now
            out = cx.out()
            files.expire_offers(cx, out)
            ended = out.done(None)
        expired = self.state.bans.expired(now)
        if not expired:
            return ended
        for b in expired:
            log_event(
                logging.INFO,
                "ban expired",
                user=b.user,
                by=b.by,
                until=accounts.utc(b.until or now),
            )
        return Outcome(
            deliveries=ended.deliveries, writes=tuple(RemoveBan(b.user) for b in expired)
        )

    def udp_probe(self, token: bytes, address: Endpoint, now: float) -> bool:
        """A UDP probe carrying `token` arrived from `address` at this node's relay: record
        it as the observed endpoint of the connection the token was issued to (`file_probe`).
        False for a token nobody holds (or one already seen from another address)."""
        return self.offers.probed(token, address) is not None

    # ================================================================== several nodes

    @property
    def config(self) -> CoreConfig:
        return self._cfg

    def config_server_name(self, name: str) -> None:
        """Announce `name` in `hello` (a node of several says which it is)."""
        self._cfg = dataclasses.replace(self._cfg, server_name=name)
        self._cx.cfg = self._cfg

    def committed(
        self, outcome: Outcome, assigned: Sequence[Assigned], now: float
    ) -> tuple[Outcome, tuple[Write, ...]]:
        """This node's `outcome` is committed (`cluster`): the outcome to dispatch (the reply
        with the store's sequence number, the messages now in order delivered here) and the
        writes as committed, to publish for the other nodes (`parlour.core.replica`)."""
        done, facts = self.replica.committed(outcome, assigned, now)
        return self._tell(done), facts

    def remote(
        self,
        origin: str,
        facts: Sequence[Write],
        deliveries: Sequence[Delivery],
        effects: Sequence[RemoteEffect],
        now: float,
    ) -> Outcome:
        """Another node's committed outcome: apply it here; what to dispatch here."""
        return self._tell(self.replica.remote(origin, facts, deliveries, effects, now))

    def gaps(self, now: float) -> tuple[Need, ...]:
        """Store reads for sequence gaps the bus did not fill in time (answer with `filled`)."""
        return self.replica.gaps(now) if self.replica.held else ()

    def filled(self, need: Need, found: Sequence[object], now: float) -> Outcome:
        return self._tell(self.replica.filled(need, found, now))

    def refresh(self, snapshot: StoreSnapshot, now: float) -> Outcome:
        """The shared caches again from `snapshot` (after lost bus messages)."""
        return self._tell(self.replica.refresh(snapshot, now))

    def heads(
        self, rooms: Mapping[str, int], dms: Mapping[str, int], broadcast: int, now: float
    ) -> bool:
        """The store's last sequence numbers (see `Replica.heads`); False when a room is
        unknown here."""
        return self.replica.heads(rooms, dms, broadcast, now)

    def undo_login(self, conn: ConnId, created: str | None, now: float) -> None:
        """The login (or sign-up of `created`) on `conn` was not committed: undo it here."""
        self.replica.undo_login(conn, created, now)

    def node_gone(self, node: str, now: float) -> Outcome:
        return self._tell(self.replica.node_gone(node, now))

    def want_offers(self) -> Outcome:
        """What to publish so that the other nodes share their open file offers again."""
        return self._tell(self.replica.want_offers())

    def restore_logins(self, checks: Sequence[RemoteEffect], now: float) -> int:
        """Replay the deployment's recent login checks (oldest first, from the bus's journal)
        into this node's throttles, so a node that starts throttles as the others do; returns
        how many were login checks (anything else is ignored)."""
        return self.replica.restore_logins(checks, now)

    # ================================================================== introspection

    def online_users(self) -> list[str]:
        """Names of users with a live session (for metrics and the server console)."""
        users = self.state.users
        return sorted(users[k].name for k in self.sessions.by_user)

    def session_user(self, conn: ConnId) -> str | None:
        """The user name logged in on `conn`, if any."""
        c = self.sessions.conns.get(conn)
        return None if c is None or c.user is None else self.state.users[c.user].name
