"""File transfers of a :class:`~parlour.client.Client`, independent of any user interface.

The chat server brokers (docs/protocol.md, file transfers); the bytes go straight between the
clients over UDP with :class:`parlour.p2p.TransferManager` (docs/p2p.md). This module joins the
two: it answers ``file_accepted`` by starting to send, tells the server ``file_done`` when a
file is verified, keeps the offers made to you (numbered, for a terminal's ``/accept 3``),
and hands the application one :class:`Transfer` per file with progress, notices and a final
:class:`FileResult`. The line-mode client and a full-screen one both sit on top of it.

What happens where:

* ``offer()``: hashes the file (a worker thread), starts the transfer manager (one UDP socket,
  on first use), asks the server for a probe token and sends it from that socket to the
  server's relay (the server learns the socket's public address), then ``file_offer`` with
  the endpoints this client believes it has. The returned transfer waits for an acceptance.
* an acceptance (``file_accepted``): starts sending with the transfer id, key, peers and relay
  ticket of that attempt; the library falls back to the relay after 3 s without a direct path
  (a notice says so). When it is verified: ``file_done``. When the attempt fails and the offer
  is still open, the receiver may accept again: the next attempt resumes.
* ``accept()``: the same probe, ``file_accept``, then receiving into the destination
  directory (by default ``<downloads>/<sender>/``, downloads being ``$PARLOUR_DOWNLOADS`` or
  ``~/Downloads/parlour``); the file keeps its (sanitised) name and never overwrites one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parlour.client.errors import ClientError, ServerError
from parlour.p2p import (
    FileOffer,
    Progress,
    Reason,
    RelayInfo,
    TransferConfig,
    TransferHandle,
    TransferManager,
    TransferResult,
    describe_file,
    safe_name,
)
from parlour.p2p.wire import parse_probed, probe
from parlour.protocol import (
    ErrorCode,
    Event,
    FileAcceptedEvent,
    FileAcceptRequest,
    FileCancelRequest,
    FileDeclineRequest,
    FileDoneRequest,
    FileEndedEvent,
    FileOfferEvent,
    FileOfferRequest,
    FileProbeRequest,
    Ok,
    ProtocolError,
    Reply,
    endpoints_from_wire,
)

if TYPE_CHECKING:
    from parlour.client.client import Client

__all__ = [
    "FILE_EVENTS",
    "FileResult",
    "FileTransfers",
    "IncomingOffer",
    "NoticeCallback",
    "ProgressCallback",
    "Transfer",
    "TransferOptions",
    "UnknownOffer",
    "default_downloads",
]

log = logging.getLogger("parlour.client.files")

Endpoint = tuple[str, int]
ProgressCallback = Callable[[Progress], None]
NoticeCallback = Callable[[str], None]

#: the events this module acts on (the client hands them over before queueing them)
FILE_EVENTS = (FileOfferEvent, FileAcceptedEvent, FileEndedEvent)
#: offers made to you that are remembered (the oldest are forgotten beyond this)
MAX_INCOMING = 256
#: failures of the sender's own file: accepting again cannot help, so the offer is withdrawn
_SENDER_FAULTS = frozenset({Reason.FILE_CHANGED, Reason.READ_FAILED, Reason.SHUTDOWN})


def default_downloads() -> Path:
    """Where received files go unless told otherwise: ``$PARLOUR_DOWNLOADS``, else
    ``~/Downloads/parlour``."""
    env = os.environ.get("PARLOUR_DOWNLOADS")
    return Path(env).expanduser() if env else Path.home() / "Downloads" / "parlour"


class UnknownOffer(ClientError):
    """No offer with that number or id is known to this client (never offered to it, or
    already over)."""


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """How a client takes part in file transfers."""

    #: address and port of the UDP socket (0.0.0.0: every IPv4 interface; 0: any free port)
    bind: str = "0.0.0.0"
    port: int = 0
    #: tell peers this machine's address on the network it reaches the chat server through
    #: (a peer on the same LAN then connects directly); False: only what the server observes
    report_local: bool = True
    #: more endpoints to report (e.g. a UDP port forwarded on the router)
    extra_endpoints: tuple[Endpoint, ...] = ()
    #: where received files go by default (None: :func:`default_downloads`), in a folder per
    #: sender
    downloads: Path | None = None
    #: how long to wait for the relay's answer to an endpoint probe before going on without
    probe_timeout: float = 2.0
    #: seconds between progress reports
    progress_interval: float = 0.25
    #: the transfers' tunables (timeouts, window: parlour.p2p.TransferConfig)
    config: TransferConfig | None = None
    #: makes the transfer manager (tests: one that filters datagrams)
    manager_factory: Callable[[], TransferManager] | None = None


@dataclass(frozen=True, slots=True)
class IncomingOffer:
    """An offer made to you (from a ``file_offer`` event)."""

    offer: str
    number: int
    sender: str
    filename: str
    size: int
    sha256: str
    expires: float


@dataclass(frozen=True, slots=True)
class FileResult:
    """How a transfer ended. ``reason``: None when verified; else the transfer's failure in
    lower case (``idle_timeout``, ``hash_mismatch``, ``cancelled``... parlour.p2p.Reason) or
    how the offer ended (``declined``, ``expired``, ``offline``, ``disconnected``)."""

    ok: bool
    message: str
    reason: str | None
    path: Path | None
    bytes: int
    seconds: float
    via_relay: bool
    resumed_bytes: int
    attempts: int


@dataclass(eq=False)
class Transfer:
    """One file, as the application follows it: an offer you made (``direction`` "send";
    it may take several attempts, each an acceptance by the receiver) or one acceptance of an
    offer made to you ("receive")."""

    direction: str
    number: int
    offer: str
    peer: str
    filename: str
    size: int
    sha256: str
    #: offered, accepted, transferring, verified, failed
    state: str = "offered"
    progress: Progress | None = None
    notices: list[str] = field(default_factory=list)
    attempts: int = 0
    via_relay: bool = False
    #: receiver: the file once verified
    path: Path | None = None
    created: float = field(default_factory=time.monotonic)
    #: when the first file byte was acknowledged (send) or written (receive)
    first_byte: float | None = None
    on_progress: ProgressCallback | None = field(default=None, repr=False)
    on_notice: NoticeCallback | None = field(default=None, repr=False)
    _result: asyncio.Future[FileResult] | None = field(default=None, repr=False)
    _handle: TransferHandle | None = field(default=None, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _seen_notices: int = field(default=0, repr=False)
    _source: Path | None = field(default=None, repr=False)
    _described: FileOffer | None = field(default=None, repr=False)
    _dest: Path | None = field(default=None, repr=False)
    _offer_over: str | None = field(default=None, repr=False)
    _stopping: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self._result = asyncio.get_running_loop().create_future()

    @property
    def done(self) -> bool:
        return self._result is not None and self._result.done()

    async def wait(self) -> FileResult:
        """The end of it: verified, or failed with a reason."""
        assert self._result is not None
        return await asyncio.shield(self._result)

    @property
    def result(self) -> FileResult | None:
        fut = self._result
        return fut.result() if fut is not None and fut.done() else None

    # ------------------------------------------------------------------ internal

    def _notice(self, text: str) -> None:
        self.notices.append(text)
        if self.on_notice is not None:
            try:
                self.on_notice(text)
            except Exception:  # an application's callback must not break the transfer
                log.exception("on_notice callback failed")

    def _progress(self, report: Progress) -> None:
        self.progress = report
        if report.done > 0 and self.first_byte is None:
            self.first_byte = time.monotonic()
        handle = self._handle
        if handle is not None:
            self.via_relay = report.via_relay
            while self._seen_notices < len(handle.notices):
                self._notice(handle.notices[self._seen_notices])
                self._seen_notices += 1
        if self.on_progress is not None:
            try:
                self.on_progress(report)
            except Exception:
                log.exception("on_progress callback failed")
                self.on_progress = None

    def _finish(
        self,
        ok: bool,
        message: str,
        reason: str | None,
        outcome: TransferResult | None = None,
    ) -> None:
        fut = self._result
        if fut is None or fut.done():
            return
        self.state = "verified" if ok else "failed"
        if outcome is not None and outcome.path is not None:
            self.path = outcome.path
        fut.set_result(
            FileResult(
                ok=ok,
                message=message,
                reason=reason,
                path=self.path,
                bytes=outcome.bytes if outcome is not None else 0,
                seconds=time.monotonic() - self.created,
                via_relay=outcome.via_relay if outcome is not None else False,
                resumed_bytes=outcome.resumed_bytes if outcome is not None else 0,
                attempts=self.attempts,
            )
        )


def _reason_name(result: TransferResult) -> str:
    return result.reason.name.lower() if result.reason is not None else "failed"


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FileTransfers:
    """The file-transfer side of one client (``client.files``)."""

    def __init__(self, client: Client, options: TransferOptions | None = None) -> None:
        self._client = client
        self.options = options or TransferOptions()
        #: offers made to you, by offer id (oldest first)
        self.incoming: OrderedDict[str, IncomingOffer] = OrderedDict()
        #: your transfers by offer id (the latest acceptance, for offers made to you)
        self.transfers: dict[str, Transfer] = {}
        self._numbers = itertools.count(1)
        self._by_number: OrderedDict[int, str] = OrderedDict()
        self._number_of: dict[str, int] = {}
        self._manager: TransferManager | None = None
        self._manager_lock = asyncio.Lock()
        self._probed_conn: object | None = None
        self._probe_lock = asyncio.Lock()
        self._probe_wait: tuple[bytes, asyncio.Future[Endpoint]] | None = None
        #: this client's UDP endpoint as the server's relay saw it (after a probe)
        self.observed: Endpoint | None = None
        self._relay_addr: Endpoint | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # ------------------------------------------------------------------ the UDP side

    async def manager(self) -> TransferManager:
        """The transfer manager, started on first use."""
        if self._closed:
            raise ClientError("the client is closed")
        async with self._manager_lock:
            if self._manager is None:
                opts = self.options
                if opts.manager_factory is not None:
                    manager = opts.manager_factory()
                else:
                    manager = TransferManager(
                        config=opts.config, progress_interval=opts.progress_interval
                    )
                await manager.start(opts.bind, opts.port)
                manager.on_control = self._on_control
                self._manager = manager
            return self._manager

    def _on_control(self, data: memoryview, addr: Endpoint) -> None:
        waiting = self._probe_wait
        if waiting is None or addr != self._relay_addr:
            return
        try:
            answer = parse_probed(data)
        except ValueError:
            return
        token, fut = waiting
        if answer.token == token and not fut.done():
            fut.set_result(answer.observed)

    async def _resolve(self, host: str, port: int) -> Endpoint:
        manager = await self.manager()
        family = socket.AF_INET6 if ":" in manager.address[0] else socket.AF_INET
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, family=family, type=socket.SOCK_DGRAM
        )
        if not infos:
            raise OSError(f"cannot resolve {host}")
        found = infos[0][4]
        return (str(found[0]), int(found[1]))

    async def probe(self) -> Endpoint | None:
        """Make sure the server knows this client's UDP endpoint on the current connection
        (``file_probe`` + a probe datagram to its relay); returns what the relay saw, or None
        (no relay, or no answer within ``probe_timeout``: transfers go on without it)."""
        manager = await self.manager()
        async with self._probe_lock:
            conn = self._client._conn
            if conn is not None and conn is self._probed_conn:
                return self.observed
            data = await self._client._call(lambda i: FileProbeRequest(id=i), retry=True)
            self._probed_conn = conn
            relay = data.get("relay")
            self.observed = None
            if not isinstance(relay, dict):
                self._relay_addr = None
                return None
            try:
                self._relay_addr = await self._resolve(
                    relay.get("host") or self._client.host, int(relay["port"])
                )
                token = _b64url(str(data["token"]))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("cannot reach the file-transfer relay: %s", exc)
                self._relay_addr = None
                return None
            fut: asyncio.Future[Endpoint] = asyncio.get_running_loop().create_future()
            self._probe_wait = (token, fut)
            datagram = probe(token)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.options.probe_timeout
            wait = 0.1
            try:
                while not fut.done() and loop.time() < deadline:
                    manager.endpoint_send([(datagram, self._relay_addr)])
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            asyncio.shield(fut), min(wait, max(0.0, deadline - loop.time()))
                        )
                    wait = min(wait * 2, 0.5)
            finally:
                self._probe_wait = None
            if fut.done():
                self.observed = fut.result()
            else:
                log.info("no answer from the relay to the endpoint probe")
            return self.observed

    def _reported(self, manager: TransferManager) -> list[Endpoint]:
        """The endpoints this client tells peers about (besides what the server observes)."""
        host, port = manager.address
        found: list[Endpoint] = []
        if self.options.report_local:
            if host in ("0.0.0.0", "::"):
                local = self._client._local_host()
                if local is not None and (":" in local) == (host == "::"):
                    found.append((local, port))
            else:
                found.append((host, port))
        for ep in self.options.extra_endpoints:
            if ep not in found:
                found.append(ep)
        try:  # only what the server accepts (an IP literal, a real port)
            return list(endpoints_from_wire(found))
        except ProtocolError:
            return [ep for ep in found if _valid(ep)]

    async def _relay_info(self, relay: Any) -> RelayInfo | None:
        if not isinstance(relay, dict) or not relay.get("ticket"):
            return None
        host = relay.get("host")
        try:
            if host is None and self._relay_addr is not None:
                address = self._relay_addr
            else:
                address = await self._resolve(host or self._client.host, int(relay["port"]))
            return RelayInfo(address, base64.b64decode(relay["ticket"]))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cannot use the relay: %s", exc)
            return None

    # ------------------------------------------------------------------ numbering

    def _number(self, offer_id: str) -> int:
        number = self._number_of.get(offer_id)
        if number is not None:
            return number
        number = next(self._numbers)
        self._by_number[number] = offer_id
        self._number_of[offer_id] = number
        if len(self._by_number) > 4 * MAX_INCOMING:  # forget the numbers of what is over
            for old, known in list(self._by_number.items())[:MAX_INCOMING]:
                t = self.transfers.get(known)
                if known not in self.incoming and (t is None or t.done):
                    del self._by_number[old]
                    self._number_of.pop(known, None)
                    self.transfers.pop(known, None)
        return number

    def resolve(self, ref: str | int) -> str:
        """An offer id from a number shown to the user (``3``) or the id itself."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit() and len(ref) < 9):
            found = self._by_number.get(int(ref))
            if found is None:
                raise UnknownOffer(f"no offer number {ref}")
            return found
        return ref

    def number_of(self, offer_id: str) -> int | None:
        return self._number_of.get(offer_id)

    # ------------------------------------------------------------------ sending

    async def offer(
        self,
        user: str,
        path: str | os.PathLike[str],
        *,
        on_progress: ProgressCallback | None = None,
        on_notice: NoticeCallback | None = None,
        filename: str | None = None,
    ) -> Transfer:
        """Offer the file at ``path`` to ``user`` (online); returns once the server has the
        offer. The transfer starts when they accept; ``await transfer.wait()`` for the end."""
        source = Path(path)
        described = await asyncio.to_thread(describe_file, source)
        name = filename or described.name
        described = FileOffer(name, described.size, described.sha256)
        manager = await self.manager()
        await self.probe()
        endpoints = tuple(self._reported(manager)) or None
        made: list[Transfer] = []

        def on_reply(reply: Reply) -> None:
            # registered before any later frame (its acceptance) is handed on
            if isinstance(reply, Ok):
                offer_id = str(reply.data["offer"])
                t = Transfer(
                    direction="send",
                    number=self._number(offer_id),
                    offer=offer_id,
                    peer=str(reply.data["to"]),
                    filename=name,
                    size=described.size,
                    sha256=described.sha256.hex(),
                    on_progress=on_progress,
                    on_notice=on_notice,
                )
                t._source, t._described = source, described
                self.transfers[offer_id] = t
                made.append(t)

        await self._client._call(
            lambda i: FileOfferRequest(
                id=i,
                to=user,
                filename=name,
                size=described.size,
                sha256=described.sha256.hex(),
                endpoints=endpoints,
            ),
            on_reply=on_reply,
        )
        return made[0]

    def _accepted(self, event: FileAcceptedEvent) -> None:
        t = self.transfers.get(event.offer)
        if t is None or t.direction != "send" or t.done:
            return
        t._notice(f"{event.by} accepted")
        t._task = self._spawn(self._send_attempt(t, event, t._task))

    async def _send_attempt(
        self, t: Transfer, grant: FileAcceptedEvent, old: asyncio.Task[None] | None
    ) -> None:
        if old is not None and not old.done():  # accepted again: the newest attempt wins
            t._stopping = True
            if t._handle is not None:
                t._handle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await old
            t._stopping = False
        manager = await self.manager()
        assert t._source is not None and t._described is not None
        try:
            peers = list(endpoints_from_wire(grant.peers))
            key = base64.b64decode(grant.key, validate=True)
            tid = bytes.fromhex(grant.transfer)
            relay = await self._relay_info(grant.relay)
            t.attempts += 1
            t.state = "transferring"
            handle = manager.send_file(
                t._source,
                t._described,
                transfer_id=tid,
                key=key,
                peers=peers,
                relay=relay,
                on_progress=t._progress,
            )
        except (ValueError, ProtocolError) as exc:
            t._notice(f"the server's grant is unusable: {exc}")
            return
        except OSError as exc:  # the file is gone: nobody can have it any more
            await self._withdraw(t)
            t._finish(False, f"cannot read the file: {exc.strerror or exc}", "read_failed")
            return
        except RuntimeError as exc:  # too many transfers at once
            t._notice(f"cannot start now: {exc}")
            return
        t._handle = handle
        result = await handle.wait()
        t._handle = None
        if t._stopping:
            return  # superseded by a newer acceptance
        if result.ok:
            t._finish(True, "verified", None, result)
            await self._tell_done(t.offer)
            return
        t._notice(f"attempt {t.attempts} failed: {result.message}")
        here = not result.by_peer  # this side ended it: its file, or its own cancel
        if here and (result.reason in _SENDER_FAULTS or result.reason is Reason.CANCELLED):
            await self._withdraw(t)
            t._finish(False, result.message, _reason_name(result), result)
        elif t._offer_over is not None:
            t._finish(False, result.message, _reason_name(result), result)
        else:
            t.state = "offered"
            t._notice(f"{t.peer} may accept again to resume")

    async def _withdraw(self, t: Transfer) -> None:
        if t._offer_over is None:
            t._offer_over = "cancelled"
            with contextlib.suppress(ClientError):
                await self._client._call(lambda i: FileCancelRequest(id=i, offer=t.offer))

    async def _tell_done(self, offer_id: str) -> None:
        with contextlib.suppress(ClientError):  # ended meanwhile, or the connection is gone
            await self._client._call(lambda i: FileDoneRequest(id=i, offer=offer_id))

    async def cancel(self, ref: str | int) -> None:
        """Withdraw an offer you made (stopping its transfer if one runs), or stop receiving
        one made to you (the same as :meth:`decline`)."""
        offer_id = self.resolve(ref)
        t = self.transfers.get(offer_id)
        if offer_id in self.incoming or (t is not None and t.direction == "receive"):
            await self.decline(offer_id)
            return
        if t is None:  # made on another session of yours: the server decides
            await self._client._call(lambda i: FileCancelRequest(id=i, offer=offer_id))
            return
        t._offer_over = "cancelled"
        if t._handle is not None:
            t._handle.cancel()
        try:
            await self._client._call(lambda i: FileCancelRequest(id=i, offer=offer_id))
        except ServerError as exc:
            if exc.code != ErrorCode.UNKNOWN_OFFER:
                raise
        if t._handle is None:
            t._finish(False, "you cancelled the offer", "cancelled")

    # ------------------------------------------------------------------ receiving

    def default_dir(self, sender: str) -> Path:
        """``<downloads>/<sender>``: where a file from ``sender`` goes by default."""
        return (self.options.downloads or default_downloads()) / safe_name(sender)

    async def accept(
        self,
        ref: str | int,
        dest_dir: str | os.PathLike[str] | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        on_notice: NoticeCallback | None = None,
        resume: bool = True,
    ) -> Transfer:
        """Accept an offer made to you (its number or id) and start receiving into
        ``dest_dir`` (default :meth:`default_dir`); accepting it again after a failed attempt
        resumes. ``await transfer.wait()`` for the verified file (``result.path``)."""
        offer_id = self.resolve(ref)
        incoming = self.incoming.get(offer_id)
        if incoming is None:
            raise UnknownOffer(f"no open offer {ref}")
        dest = Path(dest_dir) if dest_dir is not None else self.default_dir(incoming.sender)
        await asyncio.to_thread(dest.mkdir, mode=0o700, parents=True, exist_ok=True)
        old = self.transfers.get(offer_id)
        if old is not None and old._handle is not None:
            # accepted again while an attempt runs: stop it (its partial file is kept) first
            old._stopping = True
            old._handle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                if old._task is not None:
                    await old._task
            old._finish(False, "replaced by a new attempt", "cancelled")
        manager = await self.manager()
        await self.probe()
        endpoints = tuple(self._reported(manager)) or None
        t = Transfer(
            direction="receive",
            number=incoming.number,
            offer=offer_id,
            peer=incoming.sender,
            filename=incoming.filename,
            size=incoming.size,
            sha256=incoming.sha256,
            state="accepted",
            on_progress=on_progress,
            on_notice=on_notice,
            attempts=(old.attempts if old is not None else 0) + 1,
        )
        t._dest = dest
        self.transfers[offer_id] = t
        try:
            data = await self._client._call(
                lambda i: FileAcceptRequest(id=i, offer=offer_id, endpoints=endpoints)
            )
        except ClientError as exc:
            t._finish(False, f"not accepted: {exc}", "refused")
            if isinstance(exc, ServerError) and exc.code == ErrorCode.UNKNOWN_OFFER:
                self.incoming.pop(offer_id, None)
            raise
        try:
            peers = list(endpoints_from_wire(data["peers"]))
            key = base64.b64decode(str(data["key"]), validate=True)
            tid = bytes.fromhex(str(data["transfer"]))
        except (ValueError, KeyError, ProtocolError) as exc:
            t._finish(False, f"the server's grant is unusable: {exc}", "protocol")
            return t
        relay = await self._relay_info(data.get("relay"))
        described = FileOffer(incoming.filename, incoming.size, bytes.fromhex(incoming.sha256))
        try:
            handle = manager.accept_file(
                described,
                dest,
                transfer_id=tid,
                key=key,
                peers=peers,
                relay=relay,
                on_progress=t._progress,
                resume=resume,
            )
        except (OSError, RuntimeError, ValueError) as exc:
            t._finish(False, f"cannot receive: {exc}", "write_failed")
            return t
        t.state = "transferring"
        t._handle = handle
        t._task = self._spawn(self._receive(t, handle))
        return t

    async def _receive(self, t: Transfer, handle: TransferHandle) -> None:
        result = await handle.wait()
        t._handle = None
        if t._stopping:
            return
        if result.ok:
            t._finish(True, "verified", None, result)
            await self._tell_done(t.offer)
            self.incoming.pop(t.offer, None)
            return
        reason = _reason_name(result)
        message = result.message
        if t._offer_over is not None:
            message = f"{message} ({t._offer_over})"
        elif t.offer in self.incoming:
            message = f"{message}; /accept {t.number} again to resume"
        t._finish(False, message, reason, result)

    async def decline(self, ref: str | int) -> None:
        """Refuse an offer made to you (or give up on it while it is transferring)."""
        offer_id = self.resolve(ref)
        known = self.incoming.pop(offer_id, None) is not None
        t = self.transfers.get(offer_id)
        if t is not None and t.direction == "receive":
            known = True
            t._offer_over = "declined"
            if t._handle is not None:
                t._handle.cancel()
        try:
            await self._client._call(lambda i: FileDeclineRequest(id=i, offer=offer_id))
        except ServerError as exc:
            # (an offer this client knew that ended meanwhile: declined all the same)
            if exc.code != ErrorCode.UNKNOWN_OFFER or not known:
                raise

    # ------------------------------------------------------------------ events

    def on_event(self, event: Event) -> None:
        """A ``file_*`` event (called by the client before it queues the event)."""
        if isinstance(event, FileOfferEvent):
            number = self._number(event.offer)
            self.incoming[event.offer] = IncomingOffer(
                offer=event.offer,
                number=number,
                sender=event.sender,
                filename=event.filename,
                size=event.size,
                sha256=event.sha256,
                expires=event.expires,
            )
            while len(self.incoming) > MAX_INCOMING:
                self.incoming.popitem(last=False)
        elif isinstance(event, FileAcceptedEvent):
            self._accepted(event)
        elif isinstance(event, FileEndedEvent):
            self._ended(event)

    def _ended(self, event: FileEndedEvent) -> None:
        self.incoming.pop(event.offer, None)
        t = self.transfers.get(event.offer)
        if t is None or t.done:
            return
        reason, by = event.reason, event.by
        if t._offer_over is None:
            t._offer_over = reason
        if reason == "done":
            return  # each side finishes on its own verified result
        said = f"{reason} by {by}" if by else reason
        if t._handle is None:
            if (t.direction == "send" and t.state != "transferring") or (
                t.direction == "receive" and t.state == "accepted"
            ):
                t._finish(False, f"the offer was {said}", reason)
            return
        if reason in ("declined", "cancelled"):
            t._notice(f"the offer was {said}")
            t._handle.cancel()
        # expired, offline: a running transfer goes on (the clients talk directly)

    def connection_lost(self) -> None:
        """The chat connection dropped: the server ended the offers this client made on it
        (a running transfer goes on); offers made to it come again at the next login."""
        self._probed_conn = None
        self.incoming.clear()
        for t in self.transfers.values():
            if t.direction == "send" and not t.done:
                t._offer_over = "disconnected"
                if t._handle is None:
                    t._finish(
                        False,
                        "the connection to the server was lost: the offer is withdrawn",
                        "disconnected",
                    )

    # ------------------------------------------------------------------ plumbing

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("file transfer task failed", exc_info=task.exception())

    def active(self) -> list[Transfer]:
        return [t for t in self.transfers.values() if not t.done]

    async def close(self, timeout: float = 2.0) -> None:
        """Stop every transfer (peers are told) and close the UDP socket."""
        self._closed = True
        for t in self.transfers.values():
            if t._handle is not None:
                t._offer_over = t._offer_over or "closed"
        if self._manager is not None:
            await self._manager.close(timeout)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for t in self.transfers.values():
            t._finish(False, "the client closed", "closed")


def _valid(ep: Endpoint) -> bool:
    try:
        endpoints_from_wire([ep])
    except ProtocolError:
        return False
    return True
