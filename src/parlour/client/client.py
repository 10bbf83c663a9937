"""The asyncio client: one object per logical connection to a Parlour chat server.

* typed ``async`` methods, one per protocol request, returning typed data
  (:mod:`parlour.client.types`) or raising :class:`ServerError`;
* ``async for event in client.events()`` — server pushes, each message at most once;
* automatic reconnect with exponential backoff and jitter, re-login with the stored
  credentials and resume from the last seen sequence per room and DM peer;
* idempotent ``send``/``dm``: the client id is chosen once and reused when the request is
  retried after a reconnect, so a lost reply never duplicates a message;
* heartbeat pings when idle; a connection that does not answer is dropped and re-made;
* bounded catch-up followed to the end: when a ``login``/``sync`` reply says ``truncated``
  the client syncs again from what it has received until nothing is left, delivering the
  missed messages in order and once (:mod:`parlour.client.catchup`);
* file transfers straight to another client over UDP, brokered by the server
  (``offer_file``, ``accept``, ``decline``, ``cancel``: :mod:`parlour.client.files`);
* files in chat: ``upload`` to the server (tus, resumable) as a message's attachment, and
  ``download`` of an attachment, resumable and checked (:mod:`parlour.client.attachments`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl as _ssl
import uuid
from collections.abc import AsyncIterator, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from parlour import __version__
from parlour.client.attachments import ServerFiles, TransferProgress
from parlour.client.backoff import Backoff
from parlour.client.catchup import CatchUp
from parlour.client.cursors import Cursors
from parlour.client.errors import ClientClosed, ConnectionLost, ServerError
from parlour.client.files import (
    FILE_EVENTS,
    FileTransfers,
    NoticeCallback,
    ProgressCallback,
    Transfer,
    TransferOptions,
)
from parlour.client.pacing import READ_TYPES, ReadPacer
from parlour.client.types import (
    Ack,
    Attachment,
    AuditRecord,
    BanInfo,
    HistoryPage,
    JoinResult,
    KickResult,
    RoomInfo,
    Session,
    Unread,
    UserPresence,
    Welcome,
)
from parlour.protocol import (
    PROTOCOL_VERSION,
    AuditRequest,
    BanRequest,
    BansRequest,
    BlockRequest,
    BlocksRequest,
    BroadcastRequest,
    DeleteRequest,
    DisconnectEvent,
    DmRequest,
    EditRequest,
    Error,
    ErrorCode,
    Event,
    FrameDecoder,
    HelloRequest,
    HistoryRequest,
    JoinRequest,
    KickRequest,
    LeaveRequest,
    LoginRequest,
    LogoutRequest,
    MarkReadRequest,
    MessageRecord,
    Ok,
    PasswdRequest,
    PingRequest,
    ProtocolError,
    Reply,
    Request,
    RequestId,
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
    UnreadRequest,
    WhoRequest,
    encode,
    parse_server_frame,
)

__all__ = [
    "DEFAULT_PORT",
    "MAX_REPLY_FRAME",
    "Client",
    "ConnectionState",
    "StateCallback",
    "new_client_id",
]

log = logging.getLogger("parlour.client")

DEFAULT_PORT = 7878
#: the largest frame accepted *from* the server. Replies are not bound by the server's request
#: limit (``max_frame`` in ``hello``, 64 KiB by default): a ``join`` carries the newest
#: messages and every member, a ``history`` page up to ``max_page`` messages of up to
#: ``max_text`` characters each, so they can be megabytes.
MAX_REPLY_FRAME = 16 * 1024 * 1024
_READ_CHUNK = 64 * 1024
#: shortest wait for a ping reply before the connection is considered dead
_MIN_PING_WAIT = 2.0
#: disconnect codes after which reconnecting would be wrong (the server ended us on purpose)
_FINAL_CODES = frozenset(
    {ErrorCode.KICKED.value, ErrorCode.BANNED.value, ErrorCode.LOGGED_OUT.value}
)
#: login errors that will not go away by retrying
_FATAL_LOGIN = frozenset({ErrorCode.BAD_CREDENTIALS.value, ErrorCode.BANNED.value})
#: requests the library sends again by itself after `rate_limited` (reads: the server did
#: nothing, and nobody wants to see "slow down" for a history page); `server_busy` means
#: nothing was done for any request, so every request waits and tries again
_PATIENT_TYPES = frozenset(
    {"rooms", "join", "history", "since", "who", "blocks", "bans", "audit", "ping", "sync"}
)
#: errors after which the server did nothing, whatever the request: it is sent again (the same
#: client id for a message: a resend is recognised anyway)
_NOTHING_DONE = frozenset({ErrorCode.SERVER_BUSY.value, ErrorCode.UNAVAILABLE.value})
#: how often one request waits and tries again after `rate_limited` / `server_busy`, and the
#: longest wait it accepts
_PATIENT_TRIES = 8
_PATIENT_WAIT_MAX = 30.0

#: called with a reply as soon as it is read, before any frame that follows it
ReplyHook = Callable[[Reply], None]


def _patience(request: Request, reply: Reply) -> float | None:
    """How long to wait before sending `request` again after `reply`, or None: answer now.
    `server_busy` and `unavailable` (nothing was done) for any request, `rate_limited` for
    reads."""
    if not isinstance(reply, Error):
        return None
    if reply.code in _NOTHING_DONE or (
        reply.code == ErrorCode.RATE_LIMITED.value and request.TYPE in _PATIENT_TYPES
    ):
        wait = reply.extra.get("retry_after")
        if isinstance(wait, int | float) and 0 < wait <= _PATIENT_WAIT_MAX:
            return float(wait) * (1 + random.random() / 4)  # spread a crowd's retries
    return None


def new_client_id() -> str:
    """A fresh client message id (32 hex characters)."""
    return uuid.uuid4().hex


class ConnectionState(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


#: ``on_state(state, detail)`` is called on every connection state change.
StateCallback = Callable[[ConnectionState, str], None]


class _Lost(Exception):
    """Internal: the connection carrying a request went away."""


class _Connection:
    """One TCP/TLS connection: writes frames, routes replies to futures and events to a sink."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[Event], None],
        on_close: Callable[[_Connection], None],
        max_frame: int,
    ) -> None:
        self._reader = reader
        self._on_close = on_close
        self._writer = writer
        self._on_event = on_event
        self._decoder = FrameDecoder(max_frame)
        self._pending: dict[RequestId, asyncio.Future[Reply]] = {}
        self._hooks: dict[RequestId, ReplyHook] = {}
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.last_sent = loop.time()
        self.final = False  # the server ended this session on purpose (kick, ban, ...)
        #: the server's frame limit (from ``hello``): a bigger request would cost the
        #: connection, and a retried one would be resent after every reconnect, forever
        self.server_max_frame: int | None = None
        self.disconnect_reason: str | None = None
        self._task = asyncio.create_task(self._read_loop(), name="parlour-client-reader")

    @property
    def is_closed(self) -> bool:
        return self.closed.done()

    @property
    def local_host(self) -> str | None:
        """This end's address of the connection (the interface that reaches the server)."""
        name = self._writer.get_extra_info("sockname")
        return str(name[0]) if isinstance(name, tuple) and name else None

    async def request(
        self, request: Request, timeout: float | None, on_reply: ReplyHook | None = None
    ) -> Reply:
        """Send ``request`` and wait for its reply. ``on_reply`` sees the reply in wire order:
        before the events that follow it are handed on (the waiter resumes later)."""
        if self.is_closed:
            raise _Lost(self.closed.result())
        frame = encode(request.to_wire())
        if self.server_max_frame is not None and len(frame) - 1 > self.server_max_frame:
            raise ServerError(
                ErrorCode.FRAME_TOO_LARGE.value,
                f"request of {len(frame) - 1} bytes exceeds the server's limit of "
                f"{self.server_max_frame} bytes; not sent",
                {"max_frame": self.server_max_frame},
            )
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = fut
        if on_reply is not None:
            self._hooks[request.id] = on_reply
        try:
            self._writer.write(frame)
            self.last_sent = asyncio.get_running_loop().time()
            await self._writer.drain()
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            self.abort("no reply from the server")
            raise _Lost("no reply from the server") from None
        except (OSError, RuntimeError) as exc:
            self.abort(f"write failed: {exc}")
            raise _Lost(str(exc)) from None
        finally:
            self._pending.pop(request.id, None)
            self._hooks.pop(request.id, None)

    async def _read_loop(self) -> None:
        reason = "connection closed by the server"
        try:
            while True:
                data = await self._reader.read(_READ_CHUNK)
                if not data:
                    break
                for frame in self._decoder.feed(data):
                    self._dispatch(frame)
        except (OSError, asyncio.IncompleteReadError) as exc:
            reason = f"connection lost: {exc}"
        except asyncio.CancelledError:
            reason = "connection closed"
        finally:
            self._finish(self.disconnect_reason or reason)

    def _dispatch(self, frame: dict[str, Any] | ProtocolError) -> None:
        if isinstance(frame, ProtocolError):
            log.warning("undecodable frame from server: %s", frame)
            return
        try:
            msg = parse_server_frame(frame)
        except ProtocolError as exc:
            log.warning("malformed frame from server: %s", exc)
            return
        if isinstance(msg, Event):
            if isinstance(msg, DisconnectEvent):
                code = msg.code
                self.disconnect_reason = f"{msg.reason or code} ({code})"
                self.final = code in _FINAL_CODES
            self._on_event(msg)
            return
        fut = self._pending.get(msg.id) if msg.id is not None else None
        if fut is not None and not fut.done():
            hook = self._hooks.pop(msg.id) if msg.id in self._hooks else None
            if hook is not None:
                hook(msg)
            fut.set_result(msg)
        elif isinstance(msg, Error):
            log.warning("server error without a request: %s %s", msg.code, msg.message)

    def _finish(self, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
            self._on_close(self)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(_Lost(reason))
                # its waiter may be gone already (timed out, or still writing on a dying
                # connection): mark it retrieved so asyncio does not log it as lost
                fut.exception()
        self._pending.clear()
        self._writer.close()

    def abort(self, reason: str) -> None:
        """Drop the connection now (the reader ends and reports ``reason``)."""
        if self.disconnect_reason is None:
            self.disconnect_reason = reason
        transport = self._writer.transport
        transport.abort()
        self._task.cancel()

    async def wait_closed(self) -> str:
        reason = await asyncio.shield(self.closed)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(OSError, _ssl.SSLError):
            await self._writer.wait_closed()
        return reason


class Client:
    """An asyncio Parlour client. Use as ``async with Client(host, port) as client: ...``.

    ``connect()`` opens the connection and negotiates the protocol; ``login()`` or ``signup()``
    stores the credentials so that a reconnect logs in again and resumes where it stopped.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        request_timeout: float | None = 30.0,
        connect_timeout: float = 10.0,
        heartbeat_s: float | None = None,
        max_events: int = 10_000,
        max_frame: int = MAX_REPLY_FRAME,
        client_name: str = f"parlour-client/{__version__}",
        on_state: StateCallback | None = None,
        local_addr: tuple[str, int] | None = None,
        transfers: TransferOptions | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        files_url: str | None = None,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.host = host
        self.port = port
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._reconnect = reconnect
        self._backoff = backoff or Backoff()
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._heartbeat_override = heartbeat_s
        self._max_frame = max_frame
        self._client_name = client_name
        self._on_state = on_state
        self._local_addr = local_addr
        self._transfer_options = transfers
        self._files: FileTransfers | None = None
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._files_url = files_url
        #: the server's read allowance, spent here first (parlour.client.pacing)
        self._reads = ReadPacer()
        self._server_files: ServerFiles | None = None
        self._events: asyncio.Queue[Event | None] = asyncio.Queue(max_events)
        self._cursors = Cursors()
        self._catchup = CatchUp(self._cursors)
        self._catchup_task: asyncio.Task[None] | None = None
        self._room_waiter: asyncio.Future[None] | None = None
        #: set while a catch-up waits for the application to read events (the queue is over
        #: half full); cleared when it goes on
        self.catch_up_paused = asyncio.Event()
        self._baseline_task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._caught_up.set()
        self._conn: _Connection | None = None
        self._ready = asyncio.Event()
        self._closed_reason: str | None = None
        #: (user name, password or None, session token or None), for logging in again
        self._credentials: tuple[str, str | None, str | None] | None = None
        self._next_id = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.welcome: Welcome | None = None
        self.session: Session | None = None
        #: events dropped because nobody consumed :meth:`events` fast enough
        self.dropped_events = 0
        #: number of successful reconnects so far
        self.reconnects = 0
        #: ``sync`` rounds sent to continue truncated catch-ups so far
        self.catch_up_rounds = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._ready.is_set() and self._closed_reason is None

    @property
    def closed_reason(self) -> str | None:
        """Why the client stopped for good (``None`` while usable)."""
        return self._closed_reason

    @property
    def catching_up(self) -> bool:
        """True while a truncated ``login``/``sync`` catch-up is still being continued."""
        return not self._caught_up.is_set()

    @property
    def held_back(self) -> int:
        """Messages not delivered when they first came during a catch-up because something
        before them was still missing; each was pushed again, in order, by a later ``sync``."""
        return self._catchup.held_back

    async def wait_caught_up(self) -> None:
        """Wait until no catch-up is in progress (returns at once if none is).

        A catch-up waits for room in the event queue before each further ``sync``: keep
        consuming :meth:`events` meanwhile, or this may wait for ever."""
        await self._caught_up.wait()
        if self._closed_reason is not None:
            raise ClientClosed(self._closed_reason)

    @property
    def tls(self) -> bool:
        """Whether the chat connection is over TLS."""
        return self._ssl is not None

    @property
    def ssl_context(self) -> _ssl.SSLContext | None:
        """The TLS context of the chat connection (also used for the files' HTTPS)."""
        return self._ssl

    @property
    def cursors(self) -> Cursors:
        """Last seen sequence per room / DM peer (what the next resume will ask for)."""
        return self._cursors

    async def connect(self) -> Welcome:
        """Open the connection and say ``hello``; raises ``OSError`` if the server is not there."""
        if self._closed_reason is not None:
            raise ClientClosed(self._closed_reason)
        if self._conn is not None and not self._conn.is_closed:
            assert self.welcome is not None
            return self.welcome
        conn = await self._open()
        self._install(conn)
        self._supervisor = asyncio.create_task(self._supervise(), name="parlour-client")
        assert self.welcome is not None
        return self.welcome

    async def close(self) -> None:
        """Close the connection and stop reconnecting; ``events()`` ends. Running file
        transfers are stopped (their peers are told). Idempotent."""
        if self._files is not None:
            await self._files.close()
        if self._server_files is not None:
            await self._server_files.close()
        if self._closed_reason is None:
            self._shutdown("closed by the client")
        for name in ("_supervisor", "_heartbeat_task", "_catchup_task", "_baseline_task"):
            task: asyncio.Task[None] | None = getattr(self, name)
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._conn is not None:
            self._conn.abort("closed by the client")
            await self._conn.wait_closed()

    async def wait_closed(self) -> str:
        """Wait until the client stops for good (server ended the session, gave up
        reconnecting, or :meth:`close`); return the reason."""
        if self._supervisor is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._supervisor)
        return self._closed_reason or "closed"

    def _shutdown(self, reason: str) -> None:
        self._closed_reason = reason
        self._ready.set()  # wake waiters so they see the closed state
        self._caught_up.set()
        self._push(None)
        self._notify(ConnectionState.CLOSED, reason)

    async def _open(self) -> _Connection:
        async def attempt() -> _Connection:
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self._server_hostname if self._ssl else None,
                local_addr=self._local_addr,
            )
            conn = _Connection(
                reader, writer, self._on_event, self._on_conn_closed, self._max_frame
            )
            try:
                reply = await conn.request(
                    HelloRequest(
                        id=self._new_id(), version=PROTOCOL_VERSION, client=self._client_name
                    ),
                    self._connect_timeout,
                )
                self.welcome = Welcome.from_data(_data(reply))
                limits = self.welcome.limits
                rate, burst = limits.get("read_rate_per_second"), limits.get("read_burst")
                if isinstance(rate, int | float) and isinstance(burst, int | float):
                    self._reads.configure(float(rate), float(burst))
                max_frame = self.welcome.limits.get("max_frame")
                if isinstance(max_frame, int) and max_frame > 0:
                    conn.server_max_frame = max_frame
            except BaseException:
                conn.abort("hello failed")
                raise
            return conn

        try:
            return await asyncio.wait_for(attempt(), self._connect_timeout)
        except _Lost as exc:
            raise ConnectionError(f"server closed the connection during hello: {exc}") from None

    def _install(self, conn: _Connection) -> None:
        if self._closed_reason is not None:  # closed while this connection was being made
            conn.abort("closed by the client")
            return
        self._conn = conn
        self._ready.set()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        self._heartbeat_task = asyncio.create_task(self._heartbeat(conn), name="parlour-ping")
        self._notify(ConnectionState.CONNECTED, f"{self.host}:{self.port}")

    async def _supervise(self) -> None:
        """Watch the live connection; on loss, reconnect with backoff, log in, resume."""
        try:
            while self._closed_reason is None:
                conn = self._conn
                assert conn is not None
                reason = await conn.wait_closed()
                if self._files is not None:
                    self._files.connection_lost()
                if self._closed_reason is not None:
                    return
                self._ready.clear()
                self._notify(ConnectionState.DISCONNECTED, reason)
                if conn.final or not self._reconnect:
                    self._shutdown(reason)
                    return
                await self._reconnect_loop()
        except asyncio.CancelledError:
            pass

    async def _reconnect_loop(self) -> None:
        attempt = 0
        while self._closed_reason is None:
            if self._backoff.gives_up(attempt):
                self._shutdown(f"gave up reconnecting after {attempt} attempts")
                return
            delay = self._backoff.delay(attempt)
            self._notify(ConnectionState.RECONNECTING, f"attempt {attempt + 1} in {delay:.1f}s")
            await asyncio.sleep(delay)
            attempt += 1
            try:
                conn = await self._open()
            except (OSError, TimeoutError, ServerError) as exc:
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                continue
            if self._credentials is not None:
                try:
                    await self._relogin(conn)
                except ServerError as exc:
                    conn.abort("login failed")
                    if exc.code in _FATAL_LOGIN:
                        self._shutdown(f"cannot log in again: {exc.message}")
                        return
                    # busy, locked out, ...: retry later, not before the server says
                    retry_after = exc.extra.get("retry_after")
                    if isinstance(retry_after, int | float) and retry_after > 0:
                        wait = min(float(retry_after), _PATIENT_WAIT_MAX)
                        self._notify(
                            ConnectionState.RECONNECTING, f"{exc.code}: retry in {wait:g}s"
                        )
                        await asyncio.sleep(wait * (1 + random.random() / 4))
                    continue
                except _Lost:
                    continue
            self.reconnects += 1
            self._install(conn)
            self._follow_catch_up()
            if self.session is not None and self._credentials is not None:
                self._baseline_task = asyncio.create_task(
                    self._baseline_rooms(self.session), name="parlour-baseline"
                )
            return

    async def _relogin(self, conn: _Connection) -> None:
        """Log in again on a new connection: with the session token when there is one (no
        password work for the server: cheap after a restart), else (or when the token is no
        longer valid) with the password."""
        assert self._credentials is not None
        username, password, token = self._credentials
        if token is not None:
            try:
                data = await self._login_on(conn, username, None, token)
            except ServerError as exc:
                if not (exc.code is ErrorCode.BAD_CREDENTIALS and exc.extra.get("token")):
                    raise
                self._credentials = (username, password, None)
                if password is None:
                    raise
                data = await self._login_on(conn, username, password, None)
        else:
            data = await self._login_on(conn, username, password, None)
        self._logged_in(username, password, data)

    async def _login_on(
        self, conn: _Connection, username: str, password: str | None, token: str | None
    ) -> dict[str, Any]:
        request = LoginRequest(
            id=self._new_id(),
            username=username,
            password=password,
            token=token,
            resume=self._cursors.resume(),
        )
        return _data(await conn.request(request, self._connect_timeout, self._on_catch_up_reply))

    # ------------------------------------------------------------------ catch-up

    def _on_catch_up_reply(self, reply: Reply) -> None:
        """A ``login``/``sync`` reply, seen before the events that follow it."""
        if isinstance(reply, Ok):
            truncated = bool(reply.data.get("truncated"))
            self._catchup.replied(truncated)
            if truncated:
                self._caught_up.clear()
            elif self._catchup_task is None or self._catchup_task.done():
                self._caught_up.set()

    def _follow_catch_up(self) -> None:
        """After a reply: if it was truncated, continue the catch-up in the background."""
        if not self._catchup.incomplete or self._closed_reason is not None:
            return
        if self._catchup_task is not None and not self._catchup_task.done():
            return  # the running one syncs again from the newest cursors anyway
        self._catchup_task = asyncio.create_task(self._continue_catch_up(), name="parlour-catch-up")

    async def _continue_catch_up(self) -> None:
        """``sync`` from what has been received until a reply is not truncated.

        Before each round: wait for room in the event queue (a slow consumer pauses the
        catch-up instead of losing the oldest events), then a ``ping`` — its reply comes after
        the previous batch, so the cursors sent next include all of it. If the connection
        drops, the re-login resumes from the cursors and says whether to go on."""
        try:
            while self._catchup.incomplete:
                await self._events_room()
                conn = await self._wait_ready()
                try:
                    await conn.request(PingRequest(id=self._new_id()), self._request_timeout)
                    if not self._catchup.incomplete:
                        break  # a complete reply (e.g. the application's own sync) came first
                    if self._catchup.batch_empty:
                        # truncated, yet nothing was pushed: syncing again would loop for ever
                        log.warning("the server cut a catch-up short without pushing anything")
                        self._catchup.abandon()
                        break
                    self.catch_up_rounds += 1
                    resume = self._cursors.resume() or Resume()
                    reply = await conn.request(
                        SyncRequest(id=self._new_id(), resume=resume),
                        self._request_timeout,
                        self._on_catch_up_reply,
                    )
                    if isinstance(reply, Error):  # e.g. logged out meanwhile
                        log.warning("catch-up stopped: %s %s", reply.code, reply.message)
                        self._catchup.abandon()
                        break
                except _Lost:
                    continue  # the re-login replies before the connection is ready again
        except ClientClosed:
            return
        finally:
            if not self._catchup.incomplete or self._closed_reason is not None:
                self._caught_up.set()

    async def _baseline_rooms(self, session: Session) -> None:
        """Give every room of the session without a cursor one: its newest sequence now.

        Everything newer is pushed live (the session is logged in), so from here on a resume
        asks for that room too; without a cursor, what was said there while the client was
        disconnected would not be caught up."""
        rooms = [r for r in session.rooms if r not in self._cursors.rooms]
        if not rooms:
            return
        pages = await asyncio.gather(
            *(self.history(room, limit=1) for room in rooms), return_exceptions=True
        )
        for room, page in zip(rooms, pages, strict=True):
            if isinstance(page, HistoryPage):
                self._cursors.seen_room(room, page.messages[-1].seq if page.messages else 0)
            elif isinstance(page, BaseException) and not isinstance(page, Exception):
                raise page  # cancelled
            else:
                log.info("no resume cursor for room %s: %s", room, page)

    async def _events_room(self) -> None:
        """Wait until the event queue is at most half full."""
        limit = self._events.maxsize // 2
        while self._events.qsize() > limit and self._closed_reason is None:
            self._room_waiter = asyncio.get_running_loop().create_future()
            self.catch_up_paused.set()
            try:
                await self._room_waiter
            finally:
                self._room_waiter = None
                self.catch_up_paused.clear()

    async def _heartbeat(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(asyncio.CancelledError, _Lost):
            while not conn.is_closed and self._closed_reason is None:
                interval = self._heartbeat_override or (
                    self.welcome.heartbeat_s if self.welcome else 30.0
                )
                idle = loop.time() - conn.last_sent
                if idle < interval:
                    await asyncio.sleep(interval - idle)
                    continue
                await conn.request(PingRequest(id=self._new_id()), max(interval, _MIN_PING_WAIT))

    # ------------------------------------------------------------------ plumbing

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _notify(self, state: ConnectionState, detail: str) -> None:
        if self._on_state is not None:
            try:
                self._on_state(state, detail)
            except Exception:  # a callback bug must not kill the connection
                log.exception("on_state callback failed")

    def _on_conn_closed(self, conn: _Connection) -> None:
        if conn is self._conn and self._closed_reason is None:
            self._ready.clear()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, FILE_EVENTS):
            self.files.on_event(event)
        if self._catchup.accept(event):
            self._push(event)

    def _local_host(self) -> str | None:
        conn = self._conn
        return conn.local_host if conn is not None and not conn.is_closed else None

    def _push(self, item: Event | None) -> None:
        while True:
            try:
                self._events.put_nowait(item)
                return
            except asyncio.QueueFull:
                self._events.get_nowait()
                self.dropped_events += 1

    def _took_event(self) -> None:
        waiter = self._room_waiter
        if (
            waiter is not None
            and not waiter.done()
            and self._events.qsize() <= self._events.maxsize // 2
        ):
            waiter.set_result(None)

    async def events(self) -> AsyncIterator[Event]:
        """Server pushes, in arrival order; ends when the client is closed for good."""
        while True:
            item = await self._events.get()
            self._took_event()
            if item is None:
                self._events.put_nowait(None)  # let other iterators end too
                return
            yield item

    def next_event_nowait(self) -> Event | None:
        """The next queued event, or ``None`` if none is waiting."""
        try:
            item = self._events.get_nowait()
        except asyncio.QueueEmpty:
            return None
        self._took_event()
        if item is None:
            self._events.put_nowait(None)
        return item

    async def _wait_ready(self) -> _Connection:
        while True:
            if self._closed_reason is not None:
                raise ClientClosed(self._closed_reason)
            conn = self._conn
            if self._ready.is_set() and conn is not None and not conn.is_closed:
                return conn
            if conn is None:
                raise ClientClosed("not connected: call connect() first")
            await self._ready.wait()

    async def _call(
        self,
        build: Callable[[int], Request],
        *,
        retry: bool = False,
        on_reply: ReplyHook | None = None,
    ) -> dict[str, Any]:
        """Send a request and return its ``ok`` data. With ``retry`` the same request (same
        client id) is sent again after a reconnect if the connection dropped before the reply."""
        tries = 0
        while True:
            conn = await self._wait_ready()
            request = build(self._new_id())
            if request.TYPE in READ_TYPES:  # held back rather than refused (client/pacing.py)
                delay = self._reads.wait(asyncio.get_running_loop().time())
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                reply = await conn.request(request, self._request_timeout, on_reply)
            except _Lost as exc:
                if retry and self._reconnect and not conn.final and self._closed_reason is None:
                    continue
                raise ConnectionLost(str(exc)) from None
            wait = _patience(request, reply)
            if wait is not None and tries < _PATIENT_TRIES:
                tries += 1
                await asyncio.sleep(wait)
                continue
            if on_reply is not None:
                self._follow_catch_up()
            return _data(reply)

    async def request(self, type: str, retry: bool = False, **fields: Any) -> dict[str, Any]:
        """Escape hatch: send any request by its wire ``type`` and fields; returns ``data``."""
        from parlour.protocol import REQUEST_TYPES

        cls: Any = REQUEST_TYPES.get(type)
        if cls is None:
            raise ValueError(f"unknown request type {type!r}")
        return await self._call(lambda rid: cls(id=rid, **fields), retry=retry)

    # ------------------------------------------------------------------ accounts

    async def signup(self, username: str, password: str) -> Session:
        """Create an account and log in (credentials are kept for re-login)."""
        data = await self._call(lambda i: SignupRequest(id=i, username=username, password=password))
        return self._logged_in(username, password, data)

    async def login(
        self, username: str, password: str | None = None, *, token: str | None = None
    ) -> Session:
        """Log in with a password, or with a session token from an earlier session
        (``Session.token``; e.g. kept by an application between runs). The credentials and
        the session token are kept for logging in again after a dropped connection; the
        server then pushes what was missed."""
        if (password is None) == (token is None):
            raise ValueError("give exactly one of password or token")
        data = await self._call(
            lambda i: LoginRequest(
                id=i,
                username=username,
                password=password,
                token=token,
                resume=self._cursors.resume(),
            ),
            on_reply=self._on_catch_up_reply,
        )
        session = self._logged_in(username, password, data)
        await self._baseline_rooms(session)
        return session

    def _logged_in(self, username: str, password: str | None, data: dict[str, Any]) -> Session:
        self.session = Session.from_data(data)
        self._credentials = (username, password, self.session.token)
        return self.session

    async def logout(self) -> None:
        """End the session (the server revokes its token)."""
        await self._call(lambda i: LogoutRequest(id=i))
        self._credentials = None
        self.session = None
        self._catchup.abandon()  # nothing more to catch up for this session

    async def passwd(self, old_password: str, new_password: str) -> None:
        """Change the password; the server revokes every earlier session token and hands
        this session a new one."""
        data = await self._call(
            lambda i: PasswdRequest(id=i, old_password=old_password, new_password=new_password)
        )
        if self._credentials is not None:
            token = data.get("token")
            self._credentials = (
                self._credentials[0],
                new_password,
                token if isinstance(token, str) else None,
            )

    # ------------------------------------------------------------------ rooms

    async def rooms(self) -> list[RoomInfo]:
        data = await self._call(lambda i: RoomsRequest(id=i), retry=True)
        return [RoomInfo.from_data(r) for r in data["rooms"]]

    async def room_create(self, room: str) -> str:
        return str((await self._call(lambda i: RoomCreateRequest(id=i, room=room)))["room"])

    async def room_rename(self, room: str, new_name: str) -> str:
        data = await self._call(lambda i: RoomRenameRequest(id=i, room=room, new_name=new_name))
        return str(data["new_name"])

    async def room_delete(self, room: str) -> None:
        await self._call(lambda i: RoomDeleteRequest(id=i, room=room))

    async def join(self, room: str, limit: int | None = None) -> JoinResult:
        data = await self._call(lambda i: JoinRequest(id=i, room=room, limit=limit), retry=True)
        result = JoinResult.from_data(data)
        if not (self._catchup.incomplete and result.room in self._cursors.rooms):
            # (joining a room again while it is still being caught up must not skip the rest)
            self._cursors.seen_room(result.room, result.last_seq)
        return result

    async def leave(self, room: str) -> None:
        await self._call(lambda i: LeaveRequest(id=i, room=room))
        self._cursors.forget_room(room)

    # ------------------------------------------------------------------ messages

    async def send(
        self,
        room: str,
        text: str,
        client_id: str | None = None,
        *,
        attachment: str | None = None,
    ) -> Ack:
        """Post to a room. Retried with the same client id across reconnects (never doubled).
        ``attachment``: the id of a completed upload of yours (see :meth:`upload`)."""
        cid = client_id or new_client_id()
        data = await self._call(
            lambda i: SendRequest(id=i, room=room, text=text, client_id=cid, attachment=attachment),
            retry=True,
        )
        return Ack.from_data(data)

    async def dm(
        self,
        to: str,
        text: str,
        client_id: str | None = None,
        *,
        attachment: str | None = None,
    ) -> Ack:
        """Direct message. Retried with the same client id across reconnects."""
        cid = client_id or new_client_id()
        data = await self._call(
            lambda i: DmRequest(id=i, to=to, text=text, client_id=cid, attachment=attachment),
            retry=True,
        )
        return Ack.from_data(data)

    async def history(
        self,
        room: str | None = None,
        *,
        peer: str | None = None,
        before: int | None = None,
        limit: int | None = None,
    ) -> HistoryPage:
        data = await self._call(
            lambda i: HistoryRequest(id=i, room=room, peer=peer, before=before, limit=limit),
            retry=True,
        )
        return HistoryPage.from_data(data)

    async def since(
        self, ts: float, rooms: list[str] | None = None, limit: int | None = None
    ) -> HistoryPage:
        names = tuple(rooms) if rooms is not None else None
        data = await self._call(
            lambda i: SinceRequest(id=i, ts=ts, rooms=names, limit=limit), retry=True
        )
        return HistoryPage.from_data(data)

    async def edit(
        self, seq: int, text: str, *, room: str | None = None, peer: str | None = None
    ) -> MessageRecord:
        data = await self._call(
            lambda i: EditRequest(id=i, room=room, peer=peer, seq=seq, text=text)
        )
        return MessageRecord.from_wire(data["message"])

    async def delete(
        self, seq: int, *, room: str | None = None, peer: str | None = None
    ) -> MessageRecord:
        data = await self._call(lambda i: DeleteRequest(id=i, room=room, peer=peer, seq=seq))
        return MessageRecord.from_wire(data["message"])

    async def broadcast(self, text: str) -> int:
        data = await self._call(lambda i: BroadcastRequest(id=i, text=text))
        return int(data["delivered"])

    # ------------------------------------------------------------------ read positions

    async def mark_read(self, seq: int, room: str | None = None, *, peer: str | None = None) -> int:
        """Move your read marker in ``room`` (or the DM with ``peer``) up to ``seq``; returns
        where it is now (it never moves back). Your other sessions get a ``read_marker``."""
        data = await self._call(
            lambda i: MarkReadRequest(id=i, room=room, peer=peer, seq=seq), retry=True
        )
        return int(data["seq"])

    async def unread(self) -> list[Unread]:
        """Read position, unread and mention counts per room you are in and per DM."""
        data = await self._call(lambda i: UnreadRequest(id=i), retry=True)
        return [Unread.from_data(row) for row in (*data["rooms"], *data["dms"])]

    # ------------------------------------------------------------------ presence, blocks

    async def who(self, room: str | None = None, since: float | None = None) -> list[UserPresence]:
        data = await self._call(lambda i: WhoRequest(id=i, room=room, since=since), retry=True)
        return [UserPresence.from_data(u) for u in data["users"]]

    async def block(self, user: str) -> None:
        await self._call(lambda i: BlockRequest(id=i, user=user))

    async def unblock(self, user: str) -> None:
        await self._call(lambda i: UnblockRequest(id=i, user=user))

    async def blocks(self) -> list[str]:
        data = await self._call(lambda i: BlocksRequest(id=i), retry=True)
        return [str(u) for u in data["users"]]

    # ------------------------------------------------------------------ moderation

    async def kick(
        self, user: str, room: str | None = None, reason: str | None = None
    ) -> KickResult:
        data = await self._call(lambda i: KickRequest(id=i, user=user, room=room, reason=reason))
        return KickResult.from_data(data)

    async def ban(
        self, user: str, duration: float | None = None, reason: str | None = None
    ) -> BanInfo:
        data = await self._call(
            lambda i: BanRequest(id=i, user=user, duration=duration, reason=reason)
        )
        return BanInfo.from_data(data)

    async def unban(self, user: str) -> None:
        await self._call(lambda i: UnbanRequest(id=i, user=user))

    async def bans(self) -> list[BanInfo]:
        data = await self._call(lambda i: BansRequest(id=i), retry=True)
        return [BanInfo.from_data(b) for b in data["bans"]]

    async def audit(self, limit: int | None = None) -> list[AuditRecord]:
        data = await self._call(lambda i: AuditRequest(id=i, limit=limit), retry=True)
        return [AuditRecord.from_data(e) for e in data["entries"]]

    # ------------------------------------------------------------------ misc

    async def sync(self, resume: Resume | None = None) -> None:
        """Ask for everything after ``resume`` (default: the client's own cursors).

        If the server cuts it short (``truncated``), the client goes on syncing from its own
        cursors in the background; :meth:`wait_caught_up` waits for the end."""
        cursors = resume or self._cursors.resume() or Resume()
        await self._call(
            lambda i: SyncRequest(id=i, resume=cursors),
            retry=True,
            on_reply=self._on_catch_up_reply,
        )

    async def ping(self) -> float:
        """Round trip to the server; returns the server's clock."""
        data = await self._call(lambda i: PingRequest(id=i), retry=True)
        return float(data.get("ts", 0.0))

    # ------------------------------------------------------------------ file transfers

    @property
    def files(self) -> FileTransfers:
        """The file-transfer side of this client: offers made to you (``incoming``), your
        transfers, the UDP transfer manager (started on first use)."""
        if self._files is None:
            self._files = FileTransfers(self, self._transfer_options)
        return self._files

    async def offer_file(
        self,
        user: str,
        path: str | os.PathLike[str],
        *,
        on_progress: ProgressCallback | None = None,
        on_notice: NoticeCallback | None = None,
        filename: str | None = None,
    ) -> Transfer:
        """Offer a file to an online user; returns the :class:`~parlour.client.files.Transfer`
        once the server has the offer. It is sent, straight to them over UDP, when they
        accept; ``await transfer.wait()`` for the verified (or failed) end."""
        return await self.files.offer(
            user, path, on_progress=on_progress, on_notice=on_notice, filename=filename
        )

    async def accept(
        self,
        offer: str | int,
        dest_dir: str | os.PathLike[str] | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        on_notice: NoticeCallback | None = None,
        resume: bool = True,
    ) -> Transfer:
        """Accept an offer made to you (its id, or the number ``client.files`` gave it) and
        receive the file into ``dest_dir`` (default ``<downloads>/<sender>/``). Accepting an
        offer again after a failed attempt resumes it."""
        return await self.files.accept(
            offer, dest_dir, on_progress=on_progress, on_notice=on_notice, resume=resume
        )

    async def decline(self, offer: str | int) -> None:
        """Refuse an offer made to you (or stop receiving it)."""
        await self.files.decline(offer)

    async def cancel(self, offer: str | int) -> None:
        """Withdraw an offer you made (its transfer stops; the receiver is told)."""
        await self.files.cancel(offer)

    # ------------------------------------------------------------------ files in chat

    @property
    def server_files(self) -> ServerFiles:
        """Uploads to and downloads from the server (:mod:`parlour.client.attachments`)."""
        if self._server_files is None:
            self._server_files = ServerFiles(
                self, state_dir=self._state_dir, files_url=self._files_url
            )
        return self._server_files

    async def upload(
        self,
        path: str | os.PathLike[str],
        *,
        room: str | None = None,
        to: str | None = None,
        caption: str | None = None,
        progress: TransferProgress | None = None,
    ) -> MessageRecord:
        """Upload a file to the server and post it to ``room`` (or as a direct message
        ``to`` a user) with an optional ``caption``; returns the message record.

        The server's limits are asked first (raises :class:`~parlour.client.FileTooLarge`,
        :class:`~parlour.client.QuotaExceeded`, :class:`~parlour.client.TooManyUploads`
        before any byte is sent). ``progress(sent, total)`` is called as bytes go out. An
        interrupted upload (dropped connection, cancelled task, ended process) resumes when
        the same file is uploaded again to the same server."""
        record: MessageRecord = await self.server_files.upload(
            path, room=room, to=to, caption=caption, progress=progress
        )
        return record

    async def download(
        self,
        file: str | Attachment,
        directory: str | os.PathLike[str],
        *,
        progress: TransferProgress | None = None,
    ) -> Path:
        """Download an attachment (its id, or the :class:`~parlour.client.Attachment`) into
        ``directory``; returns the saved file's path. Resumes a partial download, checks the
        SHA-256, never overwrites a file (``name (1).ext``)."""
        return await self.server_files.download(file, directory, progress=progress)

    async def _post_attachment(
        self, file_id: str, *, room: str | None, to: str | None, text: str, client_id: str
    ) -> MessageRecord:
        """Send the message carrying a finished upload; returns its record."""
        if room is not None:
            ack = await self.send(room, text, client_id, attachment=file_id)
            page = await self.history(ack.room or room, before=ack.seq + 1, limit=1)
        else:
            assert to is not None
            ack = await self.dm(to, text, client_id, attachment=file_id)
            page = await self.history(peer=ack.peer or to, before=ack.seq + 1, limit=1)
        for record in page.messages:
            if record.seq == ack.seq:
                return record
        return MessageRecord(
            room=ack.room if room is not None else None,
            peer=(ack.peer or to) if room is None else None,
            seq=ack.seq,
            ts=ack.ts,
            sender=self.session.username if self.session is not None else "",
            text=text,
            client_id=ack.client_id,
        )


def _data(reply: Reply) -> dict[str, Any]:
    if isinstance(reply, Ok):
        return dict(reply.data)
    raise ServerError(reply.code, reply.message, reply.extra)
