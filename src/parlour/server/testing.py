"""A real Parlour chat server for testing clients and bots: the real core over the memory
store, on 127.0.0.1 with an ephemeral port, with fault-injection hooks.

It is the server `parlour serve` runs (`parlour.server.app.ChatServer`: the same core,
endpoint, hub and TCP door), with the memory store, a fast stand-in for Argon2
(:class:`PlainHasher`, never for production) and the rate limit lifted unless asked for. Every
connection's wire records what the client sent and obeys the hooks used by the client's own
tests:

* :meth:`ChatTestServer.drop_reply` — handle the next request of a type (its effects are
  committed) but cut the connection instead of sending the reply (a lost acknowledgement);
* :meth:`ChatTestServer.disconnect_all` — cut every client connection;
* :meth:`ChatTestServer.delay` — hold back what clients send for a while (a slow server or
  network; order is kept);
* :meth:`ChatTestServer.stop` / :meth:`ChatTestServer.start` — the server goes away and comes
  back on the same port with everything it stored.

Out-of-band changes: :meth:`ChatTestServer.add_user` signs a user up over the protocol;
:meth:`ChatTestServer.post` stores room messages while the server is stopped (traffic a
client missed); :meth:`ChatTestServer.set_password` changes a password behind the client's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import weakref
from collections.abc import Callable
from typing import Any

from parlour.core.records import StoredMessage, conv_id, user_key
from parlour.core.writes import AppendRoomMessage, RevokeSessionTokens, SetPassword
from parlour.protocol import (
    DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
    Error,
    HelloRequest,
    LogoutRequest,
    NdjsonWire,
    ProtocolError,
    Reply,
    SignupRequest,
    Wire,
    WireInput,
    WireKind,
    encode,
    parse_reply,
)
from parlour.server.app import ChatServer
from parlour.server.config import Settings
from parlour.storage.memory import MemoryStore

__all__ = ["ChatTestServer", "PlainHasher"]


class PlainHasher:
    """A password "hasher" that stores the password in clear: instant, for tests only."""

    def hash(self, password: str) -> str:
        return "plain$" + password

    def verify(self, hash: str, password: str) -> bool:
        return hash == "plain$" + password

    def needs_rehash(self, hash: str) -> bool:
        return False


class _TestWire:
    """The NDJSON wire, recording requests and applying the server's hooks."""

    def __init__(self, server: ChatTestServer, transport: asyncio.BaseTransport) -> None:
        self._server = server
        self._inner = NdjsonWire(DEFAULT_MAX_FRAME)
        self._transport = transport
        self._types: dict[object, str] = {}
        self._held: list[bytes] = []
        self._replaying = False

    @property
    def kind(self) -> WireKind:
        return self._inner.kind

    def feed(self, data: bytes) -> list[WireInput]:
        server = self._server
        if not self._replaying and (server.delay_s > 0 or self._held):
            self._held.append(bytes(data))
            if len(self._held) == 1:
                asyncio.get_running_loop().call_later(server.delay_s, self._release)
            return []
        items = self._inner.feed(data)
        for item in items:
            if not isinstance(item, ProtocolError):
                server.received.append(item.to_wire())
                self._types[item.id] = item.TYPE
        if items:
            server.changed.set()
        return items

    def _release(self) -> None:
        held, self._held = self._held, []
        protocol = self._transport.get_protocol()
        self._replaying = True
        try:
            for data in held:
                if self._transport.is_closing():
                    break
                protocol.data_received(data)  # type: ignore[attr-defined]
        finally:
            self._replaying = False

    def encode_reply(self, reply: Reply) -> bytes:
        kind = self._types.pop(reply.id, None) if reply.id is not None else None
        if kind is not None and self._server.take_drop(kind):
            self._transport.abort()  # type: ignore[attr-defined]
            return b""
        return self._inner.encode_reply(reply)


class ChatTestServer:
    """``async with ChatTestServer() as server: Client("127.0.0.1", server.port)``."""

    def __init__(
        self,
        *,
        rooms: tuple[str, ...] = ("general", "random"),
        heartbeat_s: float = 30.0,
        admin_password: str = "admin-password",
        catch_up_messages: int | None = None,
        rate: float = 1000.0,
        burst: int = 1000,
        **settings: Any,
    ) -> None:
        self.store = MemoryStore()
        self.port = 0
        self.admin_password = admin_password
        self._settings = Settings(
            host="127.0.0.1",
            port=0,
            store="memory",
            admin_password=admin_password,
            default_rooms=rooms,
            web=False,  # a TCP server for client tests; restarts reuse the port, not port + 1
            heartbeat=heartbeat_s,
            rate=rate,
            burst=burst,
            log_level="WARNING",
        )
        if settings:
            self._settings = dataclasses.replace(self._settings, **settings)
        self._core: dict[str, Any] = {}
        if catch_up_messages is not None:
            self._core["catch_up_messages"] = catch_up_messages
        self.server: ChatServer | None = None
        #: every request received, in order, as the client sent it (passwords included:
        #: test use only)
        self.received: list[dict[str, Any]] = []
        #: set whenever a request arrives (see :meth:`wait_for`)
        self.changed = asyncio.Event()
        #: seconds every connection's input is held back for (see :meth:`delay`)
        self.delay_s = 0.0
        self._drop: dict[str, int] = {}
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._users = 0
        self.clock: Callable[[], float] = time.time

    # ------------------------------------------------------------------ life cycle

    async def __aenter__(self) -> ChatTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (again) on 127.0.0.1; the first start picks a free port, later ones reuse it.
        Everything stored before is still there."""
        settings = dataclasses.replace(self._settings, port=self.port)
        self.server = await ChatServer.start(
            settings,
            clock=lambda: self.clock(),
            password_hasher=PlainHasher(),
            store=self.store,
            core_overrides=self._core,
            wire_factory=self._wire,
            tick_interval=0.2,
        )
        self.port = self.server.port

    async def stop(self, grace: float = 2.0) -> None:
        """Stop listening and close every connection (the clients see the server go)."""
        if self.server is not None:
            server, self.server = self.server, None
            self.disconnect_all()
            await server.stop(grace=grace)

    def _wire(self, transport: asyncio.BaseTransport) -> Wire:
        self._transports.add(transport)
        return _TestWire(self, transport)

    # ------------------------------------------------------------------ faults

    def drop_reply(self, request_type: str, times: int = 1) -> None:
        """Handle the next ``times`` requests of ``request_type`` but cut the connection
        instead of replying."""
        self._drop[request_type] = self._drop.get(request_type, 0) + times

    def take_drop(self, request_type: str) -> bool:
        left = self._drop.get(request_type, 0)
        if left <= 0:
            return False
        self._drop[request_type] = left - 1
        return True

    def disconnect_all(self) -> None:
        """Cut every client connection (no goodbye)."""
        for transport in list(self._transports):
            if not transport.is_closing():
                transport.abort()  # type: ignore[attr-defined]

    def delay(self, seconds: float) -> None:
        """Hold back what every connection sends for ``seconds`` before the server handles
        it (0: handle at once again). Order is kept."""
        self.delay_s = max(0.0, seconds)

    # ------------------------------------------------------------------ out of band

    async def add_user(self, name: str, password: str) -> None:
        """Sign ``name`` up over the protocol (then log out)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            for request in (
                HelloRequest(id=1, version=PROTOCOL_VERSION),
                SignupRequest(id=2, username=name, password=password),
                LogoutRequest(id=3),
            ):
                writer.write(encode(request.to_wire()))
                line = await asyncio.wait_for(reader.readline(), 10)
                reply = parse_reply(json.loads(line))
                if isinstance(reply, Error):
                    raise RuntimeError(f"cannot add user {name!r}: {reply.code} {reply.message}")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def post(self, room: str, sender: str, text: str) -> int:
        """Store a message in ``room`` from ``sender`` as if it had been sent while the server
        was stopped (clients catch up on it when it is back); returns its seq."""
        if self.server is not None:
            raise RuntimeError("post() stores messages while the server is stopped")
        last = self.store.room_messages(room, before=None, after=None, limit=1)
        seq = last[-1].seq + 1 if last else 1
        self.store.apply([AppendRoomMessage(room, seq, sender, text, self.clock(), None)])
        return seq

    def set_password(self, name: str, password: str) -> None:
        """Change ``name``'s password behind the clients' backs (an administrator's reset:
        every session token of the user is revoked too)."""
        new_hash = PlainHasher().hash(password)
        self.store.apply([SetPassword(name, new_hash)])
        if self.server is not None:
            self.server.service.state.users[user_key(name)].password_hash = new_hash
        self.revoke_tokens(name)

    def revoke_tokens(self, name: str) -> None:
        """Revoke every session token of ``name`` behind the clients' backs."""
        self.store.apply([RevokeSessionTokens(name)])
        if self.server is not None:
            self.server.service.state.tokens.revoke(user_key(name))

    # ------------------------------------------------------------------ observing

    def room_messages(self, room: str) -> list[StoredMessage]:
        """Every committed message of ``room``, oldest first."""
        return self.store.room_messages(room, before=None, after=None, limit=1 << 30)

    def dm_messages(self, a: str, b: str) -> list[StoredMessage]:
        """Every committed DM between users ``a`` and ``b``, oldest first."""
        return self.store.dm_messages(conv_id(a, b), before=None, after=None, limit=1 << 30)

    def online(self) -> set[str]:
        return set() if self.server is None else set(self.server.service.online_users())

    def requests_of(self, request_type: str) -> list[dict[str, Any]]:
        return [r for r in self.received if r.get("type") == request_type]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (checked whenever a request arrives)."""

        async def until() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(until(), timeout)
