"""A small in-memory fake Parlour server for testing clients and bots without the real server.

It speaks the real protocol (``parlour.protocol`` codec and schemas) over TCP on 127.0.0.1 with
an ephemeral port, with simplified semantics: accounts, rooms, sequence numbers, idempotent
``send``/``dm`` by client id, offline DMs, resume, history, edit/delete, blocks and the admin
requests. It also has fault-injection hooks used by the client's own tests:

* :meth:`FakeServer.drop_reply` — process the next request of a type but close the connection
  instead of replying (a lost acknowledgement);
* :meth:`FakeServer.disconnect_all` — cut every client connection;
* :meth:`FakeServer.stop` / :meth:`FakeServer.start` — the server goes away and comes back on
  the same port.

It is not the real chat core (no durability, no rate limits, no lockouts); do not use it to
test server behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from parlour.protocol import (
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
    Event,
    EventName,
    FrameDecoder,
    HelloRequest,
    HistoryRequest,
    JoinRequest,
    KickRequest,
    LeaveRequest,
    LoginRequest,
    LogoutRequest,
    MessageRecord,
    Ok,
    PasswdRequest,
    PingRequest,
    ProtocolError,
    Request,
    Resume,
    RoomsRequest,
    SendRequest,
    SignupRequest,
    SinceRequest,
    SyncRequest,
    UnbanRequest,
    UnblockRequest,
    WhoRequest,
    encode,
    parse_request,
)

__all__ = ["FakeServer"]


class _Fail(Exception):
    def __init__(self, code: ErrorCode, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


@dataclass
class _Msg:
    seq: int
    ts: float
    sender: str
    text: str | None
    client_id: str | None
    edited: bool = False
    deleted: bool = False

    def record(self, *, room: str | None = None, peer: str | None = None) -> MessageRecord:
        return MessageRecord(
            room=room,
            peer=peer,
            seq=self.seq,
            ts=self.ts,
            sender=self.sender,
            text=self.text,
            edited=self.edited,
            deleted=self.deleted,
            client_id=self.client_id,
        )


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    hello: bool = False
    user: str | None = None


@dataclass
class _User:
    password: str
    role: str = "member"
    rooms: list[str] = field(default_factory=list)
    blocks: set[str] = field(default_factory=set)
    #: per peer: highest DM seq delivered
    delivered: dict[str, int] = field(default_factory=dict)
    login_ts: float | None = None


class FakeServer:
    """``async with FakeServer() as server: Client("127.0.0.1", server.port)``."""

    def __init__(
        self,
        *,
        rooms: tuple[str, ...] = ("general", "random"),
        heartbeat_s: float = 30.0,
        admin_password: str = "admin-password",
        catch_up_messages: int | None = None,
    ) -> None:
        self.heartbeat_s = heartbeat_s
        #: like the real server's bound: at most this many messages pushed per login/sync,
        #: then the reply says ``truncated`` (None: no bound)
        self.catch_up_messages = catch_up_messages
        self.port = 0
        self.users: dict[str, _User] = {"admin": _User(admin_password, role="admin")}
        self.rooms: dict[str, list[_Msg]] = {name: [] for name in rooms}
        self.dms: dict[frozenset[str], list[_Msg]] = {}
        self.bans: dict[str, tuple[float | None, str]] = {}
        self.audit: list[dict[str, Any]] = []
        #: every request frame received, in order (passwords included: test use only)
        self.received: list[dict[str, Any]] = []
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        self._drop: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self.clock: Callable[[], float] = time.time

    # ------------------------------------------------------------------ control

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (again) on 127.0.0.1; the first start picks a free port, later ones reuse it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every connection."""
        if self._server is not None:
            self._server.close()
            self.disconnect_all()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def disconnect_all(self) -> None:
        for conn in list(self._conns):
            conn.writer.transport.abort()

    def drop_reply(self, request_type: str, times: int = 1) -> None:
        """Handle the next ``times`` requests of ``request_type`` but close the connection
        instead of replying."""
        self._drop[request_type] = self._drop.get(request_type, 0) + times

    def post(self, room: str, sender: str, text: str) -> int:
        """Store a message in ``room`` from ``sender`` as if sent, pushing it to the members
        online; returns its seq. Works while stopped (traffic while a client is away)."""
        msgs = self._room(room)
        msg = _Msg(len(msgs) + 1, self.clock(), sender, text, None)
        msgs.append(msg)
        event = Event(EventName.MESSAGE, msg.record(room=room).to_wire())
        readers = {n for n in self._members(room) if sender not in self.users[n].blocks}
        self._push(readers, event)
        return msg.seq

    def add_user(self, name: str, password: str, role: str = "member") -> None:
        self.users[name] = _User(password, role=role)

    def online(self) -> set[str]:
        return {c.user for c in self._conns if c.user is not None}

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (checked after every request and connection)."""

        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(until(), timeout)

    def requests_of(self, request_type: str) -> list[dict[str, Any]]:
        return [r for r in self.received if r.get("type") == request_type]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Conn(writer)
        self._conns.add(conn)
        decoder = FrameDecoder()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for frame in decoder.feed(data):
                    if isinstance(frame, ProtocolError):
                        self._write(conn, Error.from_exception(frame).to_wire())
                        if frame.fatal:
                            return
                        continue
                    self.received.append(frame)
                    if not await self._handle(conn, frame):
                        return
                    await self._notify()
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(conn)
            self._tasks.discard(task)
            writer.transport.abort()
            with contextlib.suppress(Exception):
                await self._notify()

    def _write(self, conn: _Conn, obj: dict[str, Any]) -> None:
        if not conn.writer.transport.is_closing():
            conn.writer.write(encode(obj))

    def _push(self, users: set[str], event: Event, *, skip: _Conn | None = None) -> None:
        data = encode(event.to_wire())
        for conn in list(self._conns):
            if conn.user in users and conn is not skip and not conn.writer.transport.is_closing():
                conn.writer.write(data)

    async def _handle(self, conn: _Conn, frame: dict[str, Any]) -> bool:
        try:
            request = parse_request(frame)
        except ProtocolError as exc:
            self._write(conn, Error.from_exception(exc).to_wire())
            return True
        after: list[Callable[[], None]] = []
        try:
            data = self._dispatch(conn, request, after)
            reply: Ok | Error = Ok(request.id, data)
        except _Fail as fail:
            reply = Error(request.id, fail.code.value, fail.message, fail.extra)
        if self._drop.get(request.TYPE, 0) > 0:
            self._drop[request.TYPE] -= 1
            conn.writer.transport.abort()
            for action in after:
                action()
            return False
        self._write(conn, reply.to_wire())
        for action in after:
            action()
        return True

    # ------------------------------------------------------------------ semantics

    def _dispatch(
        self, conn: _Conn, req: Request, after: list[Callable[[], None]]
    ) -> dict[str, Any]:
        now = self.clock()
        if isinstance(req, HelloRequest):
            if req.version != 1:
                raise _Fail(ErrorCode.UNSUPPORTED_VERSION, "only version 1", supported=[1])
            conn.hello = True
            return {
                "version": 1,
                "server": "parlour-fake/0",
                "limits": {"max_frame": 65536, "max_text": 4000},
                "heartbeat_s": self.heartbeat_s,
            }
        if not conn.hello:
            raise _Fail(ErrorCode.HELLO_REQUIRED, "send hello first")
        if isinstance(req, PingRequest):
            return {"ts": now}
        if isinstance(req, SignupRequest | LoginRequest):
            return self._login(conn, req, now, after)
        if conn.user is None:
            raise _Fail(ErrorCode.NOT_AUTHENTICATED, "log in first")
        me = conn.user
        user = self.users[me]
        if isinstance(req, LogoutRequest):
            conn.user = None
            return {}
        if isinstance(req, PasswdRequest):
            if req.old_password != user.password:
                raise _Fail(ErrorCode.BAD_CREDENTIALS, "wrong password")
            user.password = req.new_password
            return {}
        if isinstance(req, RoomsRequest):
            online = self.online()
            return {
                "rooms": [
                    {
                        "name": name,
                        "members": sum(name in u.rooms for u in self.users.values()),
                        "online": sum(name in self.users[n].rooms for n in online),
                        "joined": name in user.rooms,
                    }
                    for name in self.rooms
                ]
            }
        if isinstance(req, JoinRequest):
            msgs = self._room(req.room)
            if req.room not in user.rooms:
                user.rooms.append(req.room)
                event = Event(EventName.JOINED, {"room": req.room, "user": me, "ts": now})
                after.append(lambda: self._push(self._members(req.room) - {me}, event))
            limit = req.limit or 50
            everyone = self._members(req.room)
            members = everyone - user.blocks  # like the server: names without blocked users
            online = members & self.online()
            return {
                "room": req.room,
                "members": sorted(members),
                "online": sorted(online),
                "members_total": len(everyone),
                "online_total": len(everyone & self.online()),
                "members_truncated": False,
                "messages": [m.record(room=req.room).to_wire() for m in msgs[-limit:]],
                "last_seq": len(msgs),
            }
        if isinstance(req, LeaveRequest):
            self._member(user, req.room)
            user.rooms.remove(req.room)
            event = Event(EventName.LEFT, {"room": req.room, "user": me, "ts": now})
            after.append(lambda: self._push(self._members(req.room), event))
            return {"room": req.room}
        if isinstance(req, SendRequest):
            msgs = self._room(req.room)
            self._member(user, req.room)
            for m in msgs:
                if m.sender == me and m.client_id == req.client_id:
                    return self._ack("room", req.room, m, duplicate=True)
            msg = _Msg(len(msgs) + 1, now, me, req.text, req.client_id)
            msgs.append(msg)
            event = Event(EventName.MESSAGE, msg.record(room=req.room).to_wire())
            readers = {n for n in self._members(req.room) if me not in self.users[n].blocks}
            after.append(lambda: self._push(readers, event))
            return self._ack("room", req.room, msg, duplicate=False)
        if isinstance(req, DmRequest):
            if req.to == me:
                raise _Fail(ErrorCode.SELF_MESSAGE, "you cannot message yourself")
            peer = self._user(req.to)
            conv = self.dms.setdefault(frozenset({me, req.to}), [])
            for m in conv:
                if m.sender == me and m.client_id == req.client_id:
                    return self._ack("peer", req.to, m, duplicate=True)
            msg = _Msg(len(conv) + 1, now, me, req.text, req.client_id)
            conv.append(msg)
            if me not in peer.blocks:
                after.append(lambda: self._deliver_dm(req.to, me, msg))
            own = Event(EventName.DM, msg.record(peer=req.to).to_wire())
            after.append(lambda: self._push({me}, own, skip=conn))
            return self._ack("peer", req.to, msg, duplicate=False)
        if isinstance(req, HistoryRequest):
            if req.room is not None:
                self._member(user, req.room)
                msgs, kw = self._room(req.room), {"room": req.room}
            else:
                assert req.peer is not None
                self._user(req.peer)
                msgs, kw = self.dms.get(frozenset({me, req.peer}), []), {"peer": req.peer}
            before = req.before or len(msgs) + 1
            older = [m for m in msgs if m.seq < before]
            page = older[-(req.limit or 50) :]
            return {
                **kw,
                "messages": [m.record(**kw).to_wire() for m in page],
                "has_more": len(older) > len(page),
            }
        if isinstance(req, SinceRequest):
            names = req.rooms or tuple(user.rooms)
            found = [
                m.record(room=r).to_wire()
                for r in names
                for m in self._room(r)
                if m.ts >= req.ts and m.sender not in user.blocks
            ]
            found.sort(key=lambda rec: (rec["ts"], rec["room"], rec["seq"]))
            return {"messages": found, "has_more": False}
        if isinstance(req, EditRequest | DeleteRequest):
            return self._edit_or_delete(me, user, req, now, after)
        if isinstance(req, BroadcastRequest):
            self._admin(user)
            event = Event(EventName.BROADCAST, {"from": me, "text": req.text, "ts": now})
            targets = self.online()
            after.append(lambda: self._push(targets, event))
            return {"delivered": sum(c.user is not None for c in self._conns)}
        if isinstance(req, WhoRequest):
            online = self.online()
            people = (self._members(req.room) if req.room else set(self.users)) - user.blocks
            return {
                "users": [
                    {
                        "username": n,
                        "role": self.users[n].role,
                        "online": n in online,
                        "login_ts": self.users[n].login_ts,
                        "last_active": self.users[n].login_ts,
                    }
                    for n in sorted(people)
                    if n in online
                    or (req.since is not None and (self.users[n].login_ts or 0) >= now - req.since)
                ]
            }
        if isinstance(req, BlockRequest):
            self._user(req.user)
            if req.user == me:
                raise _Fail(ErrorCode.SELF_MESSAGE, "you cannot block yourself")
            user.blocks.add(req.user)
            return {"user": req.user}
        if isinstance(req, UnblockRequest):
            user.blocks.discard(req.user)
            return {"user": req.user}
        if isinstance(req, BlocksRequest):
            return {"users": sorted(user.blocks)}
        if isinstance(req, KickRequest | BanRequest | UnbanRequest | BansRequest):
            return self._moderate(me, user, req, now, after)
        if isinstance(req, SyncRequest):
            frames, truncated = self._catch_up(me, req.resume)
            after.append(lambda: self._write_all(conn, frames))
            return {"truncated": True} if truncated else {}
        raise _Fail(ErrorCode.FORBIDDEN, f"the fake server does not implement {req.TYPE}")

    def _login(
        self,
        conn: _Conn,
        req: SignupRequest | LoginRequest,
        now: float,
        after: list[Callable[[], None]],
    ) -> dict[str, Any]:
        if conn.user is not None:
            raise _Fail(ErrorCode.ALREADY_AUTHENTICATED, "already logged in")
        if isinstance(req, SignupRequest):
            if req.username in self.users:
                raise _Fail(ErrorCode.USERNAME_TAKEN, f"the name {req.username!r} is taken")
            if len(req.password) < 8:
                raise _Fail(ErrorCode.WEAK_PASSWORD, "passwords need 8 characters", min_length=8)
            self.users[req.username] = _User(req.password)
        user = self.users.get(req.username)
        if user is None or user.password != req.password:
            raise _Fail(ErrorCode.BAD_CREDENTIALS, "wrong user name or password")
        ban = self.bans.get(req.username)
        if ban is not None and (ban[0] is None or ban[0] > now):
            raise _Fail(ErrorCode.BANNED, f"you are banned: {ban[1]}", until=ban[0], reason=ban[1])
        conn.user = req.username
        user.login_ts = now
        resume = req.resume if isinstance(req, LoginRequest) else None
        frames, truncated = self._catch_up(req.username, resume)
        after.append(lambda: self._write_all(conn, frames))
        data: dict[str, Any] = {
            "username": req.username,
            "role": user.role,
            "rooms": list(user.rooms),
        }
        if truncated:
            data["truncated"] = True
        return data

    def _write_all(self, conn: _Conn, frames: list[dict[str, Any]]) -> None:
        for frame in frames:
            self._write(conn, frame)

    def _catch_up(self, me: str, resume: Resume | None) -> tuple[list[dict[str, Any]], bool]:
        """What a login/sync pushes, in the real server's order: the resumed rooms, the
        resumed conversations, then offline DMs of the others; at most ``catch_up_messages``
        (then True: truncated; undelivered offline DMs stay pending)."""
        user = self.users[me]
        budget = self.catch_up_messages
        out: list[dict[str, Any]] = []

        def take(name: EventName, rec: MessageRecord) -> bool:
            if budget is not None and len(out) >= budget:
                return False
            out.append(Event(name, rec.to_wire()).to_wire())
            return True

        resumed: set[str] = set()
        if resume is not None:
            for room, last in resume.rooms.items():
                if room in self.rooms and room in user.rooms:
                    for m in self.rooms[room][last:]:
                        if m.sender not in user.blocks and not take(
                            EventName.MESSAGE, m.record(room=room)
                        ):
                            return out, True
            for peer, last in resume.dms.items():
                resumed.add(peer)
                conv = self.dms.get(frozenset({me, peer}), [])
                for m in conv[last:]:
                    if m.sender not in user.blocks and not take(EventName.DM, m.record(peer=peer)):
                        return out, True
                user.delivered[peer] = len(conv)
        for pair, conv in sorted(self.dms.items(), key=lambda item: sorted(item[0])):
            if me not in pair or len(pair) != 2:
                continue
            (peer,) = pair - {me}
            if peer in user.blocks or peer in resumed:
                continue
            for m in conv[user.delivered.get(peer, 0) :]:
                if m.sender != me and not take(EventName.DM, m.record(peer=peer)):
                    return out, True
                user.delivered[peer] = m.seq
        return out, False

    def _deliver_dm(self, to: str, sender: str, msg: _Msg) -> None:
        targets = [c for c in self._conns if c.user == to]
        if targets:
            event = Event(EventName.DM, msg.record(peer=sender).to_wire())
            self._push({to}, event)
            self.users[to].delivered[sender] = msg.seq

    def _edit_or_delete(
        self,
        me: str,
        user: _User,
        req: EditRequest | DeleteRequest,
        now: float,
        after: list[Callable[[], None]],
    ) -> dict[str, Any]:
        if req.room is not None:
            self._member(user, req.room)
            msgs, kw = self._room(req.room), {"room": req.room}
            audience = self._members(req.room)
        else:
            assert req.peer is not None
            msgs, kw = self.dms.get(frozenset({me, req.peer}), []), {"peer": req.peer}
            audience = {me, req.peer}
        if not 1 <= req.seq <= len(msgs) or msgs[req.seq - 1].deleted:
            raise _Fail(ErrorCode.MESSAGE_NOT_FOUND, f"no message {req.seq}")
        msg = msgs[req.seq - 1]
        is_admin_delete = isinstance(req, DeleteRequest) and user.role == "admin" and req.room
        if msg.sender != me and not is_admin_delete:
            raise _Fail(ErrorCode.FORBIDDEN, "you can only change your own messages")
        if isinstance(req, EditRequest):
            msg.text, msg.edited = req.text, True
            name = EventName.MESSAGE_EDITED if req.room else EventName.DM_EDITED
        else:
            msg.text, msg.deleted = None, True
            name = EventName.MESSAGE_DELETED if req.room else EventName.DM_DELETED
        if req.room is not None:
            event = Event(name, msg.record(room=req.room).to_wire())
            after.append(lambda: self._push(audience, event))
        else:
            assert req.peer is not None
            peer = req.peer
            mine = Event(name, msg.record(peer=peer).to_wire())
            theirs = Event(name, msg.record(peer=me).to_wire())
            after.append(lambda: self._push({me}, mine))
            after.append(lambda: self._push({peer}, theirs))
        return {"message": msg.record(**kw).to_wire()}

    def _moderate(
        self,
        me: str,
        user: _User,
        req: KickRequest | BanRequest | UnbanRequest | BansRequest,
        now: float,
        after: list[Callable[[], None]],
    ) -> dict[str, Any]:
        self._admin(user)
        if isinstance(req, BansRequest):
            return {
                "bans": [
                    {"user": u, "by": "admin", "ts": now, "until": until, "reason": reason}
                    for u, (until, reason) in self.bans.items()
                ]
            }
        self._user(req.user)
        if isinstance(req, UnbanRequest):
            if self.bans.pop(req.user, None) is None:
                raise _Fail(ErrorCode.NOT_BANNED, f"{req.user} is not banned", user=req.user)
            self.audit.append({"ts": now, "actor": me, "action": "unban", "target": req.user})
            return {"user": req.user}
        victims = [c for c in self._conns if c.user == req.user]
        if isinstance(req, KickRequest):
            reason = req.reason or ""
            event = Event(
                EventName.KICKED, {"room": req.room, "by": me, "reason": reason, "ts": now}
            )
            self.audit.append({"ts": now, "actor": me, "action": "kick", "target": req.user})
            after.append(lambda: self._end(victims, event, "kicked", reason))
            return {"user": req.user, "room": req.room, "sessions": len(victims)}
        until = now + req.duration if req.duration else None
        self.bans[req.user] = (until, req.reason or "")
        self.audit.append({"ts": now, "actor": me, "action": "ban", "target": req.user})
        event = Event(
            EventName.BANNED, {"by": me, "reason": req.reason or "", "until": until, "ts": now}
        )
        after.append(lambda: self._end(victims, event, "banned", req.reason or ""))
        return {"user": req.user, "until": until, "reason": req.reason}

    def _end(self, victims: list[_Conn], event: Event, code: str, reason: str) -> None:
        bye = Event(EventName.DISCONNECT, {"code": code, "reason": reason or code})
        for conn in victims:
            self._write(conn, event.to_wire())
            self._write(conn, bye.to_wire())
            conn.writer.close()

    def _ack(self, key: str, name: str, m: _Msg, *, duplicate: bool) -> dict[str, Any]:
        return {
            key: name,
            "seq": m.seq,
            "ts": m.ts,
            "client_id": m.client_id,
            "duplicate": duplicate,
        }

    def _room(self, name: str) -> list[_Msg]:
        try:
            return self.rooms[name]
        except KeyError:
            raise _Fail(ErrorCode.UNKNOWN_ROOM, f"no room named {name!r}") from None

    def _user(self, name: str) -> _User:
        try:
            return self.users[name]
        except KeyError:
            raise _Fail(ErrorCode.UNKNOWN_USER, f"no user named {name!r}") from None

    def _member(self, user: _User, room: str) -> None:
        self._room(room)
        if room not in user.rooms:
            raise _Fail(ErrorCode.NOT_MEMBER, f"you are not in {room!r}")

    def _members(self, room: str | None) -> set[str]:
        return {n for n, u in self.users.items() if room in u.rooms}

    @staticmethod
    def _admin(user: _User) -> None:
        if user.role != "admin":
            raise _Fail(ErrorCode.FORBIDDEN, "admins only")
