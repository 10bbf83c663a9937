"""The transfer manager: the API the client library builds ``/send-file`` on.

One :class:`TransferManager` per client owns one UDP socket and runs any number of transfers
at once, in both directions, with the same or different peers (datagrams are told apart by
their transfer id). The chat server brokers each transfer (it forwards the offer and the
acceptance and hands both sides the transfer id, a fresh 32-byte key, the peer's candidate
endpoints and, optionally, a relay ticket); then the sender calls :meth:`send_file` and the
receiver :meth:`accept_file`. Both return a :class:`TransferHandle`: progress callbacks (bytes,
rate, ETA), ``cancel()``, and ``await handle.wait()`` for the final
:class:`TransferResult` (verified, or failed with a reason).

File reads and writes run in worker threads (one writer thread per received file, so writes
and hashing keep their order); how much is in flight is bounded by the protocol's read-ahead
and flow-control window.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .connection import Address, Connection, RelayInfo, Stats, TransferConfig
from .endpoint import Batch, UdpEndpoint
from .events import (
    Completed,
    Connected,
    Failed,
    PathChanged,
    ReadRequest,
    ReadyToVerify,
    Reason,
    RelayBound,
    RelayFallback,
    WriteData,
)
from .files import FileChanged, FileOffer, FileSink, FileSource
from .progress import Progress, RateMeter
from .receiver import ReceiverConnection
from .sender import SenderConnection
from .wire import Kind

__all__ = ["TransferHandle", "TransferManager", "TransferResult"]

ProgressCallback = Callable[[Progress], None]
_RESUMABLE_FAILURES = {Reason.HASH_MISMATCH, Reason.OFFER_MISMATCH}
_PROBED = int(Kind.PROBED)


@dataclass(frozen=True, slots=True)
class TransferResult:
    ok: bool
    reason: Reason | None  # None when ok
    message: str  # for the user: "verified" or why it failed
    by_peer: bool
    bytes: int  # bytes the receiver holds at the end
    seconds: float
    via_relay: bool
    resumed_bytes: int  # held by the receiver before this attempt started
    path: Path | None  # receiver: where the file now is
    stats: Stats


@dataclass(eq=False)
class TransferHandle:
    transfer_id: bytes
    direction: str
    size: int
    notices: list[str] = field(default_factory=list)  # "relay fallback", path changes...
    observed: Address | None = None  # this side as the relay saw it
    path: Address | None = None
    via_relay: bool = False
    progress: Progress | None = None
    relay_bound: asyncio.Event = field(default_factory=asyncio.Event)  # observed is known
    _future: asyncio.Future[TransferResult] | None = None
    _cancel: Callable[[], None] | None = None
    _add_peer: Callable[[Address], None] | None = None

    async def wait(self) -> TransferResult:
        assert self._future is not None
        return await asyncio.shield(self._future)

    @property
    def done(self) -> bool:
        return self._future is not None and self._future.done()

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel()

    def add_peer(self, address: Address) -> None:
        """Probe one more endpoint of the peer (one the server reports later)."""
        if self._add_peer is not None:
            self._add_peer(address)


class _Driver:
    """Runs one connection: feeds it, sends for it, keeps its timer, serves its file I/O."""

    def __init__(
        self,
        manager: TransferManager,
        conn: Connection,
        handle: TransferHandle,
        source: FileSource | None,
        sink: FileSink | None,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.manager = manager
        self.conn = conn
        self.handle = handle
        self.source = source
        self.sink = sink
        self.on_progress = on_progress
        self.loop = manager.loop
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="p2p-write") if sink else None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._meter = RateMeter()
        self._last_progress = -1.0
        self._started = self.loop.time()
        self._finished = False
        self._held_at_start = sink.held.total() if sink is not None else 0
        handle._future = self.loop.create_future()
        handle._cancel = self.cancel
        handle._add_peer = self.add_peer

    def cancel(self) -> None:
        self.conn.abort(Reason.CANCELLED, "", self.loop.time())
        self.flush()

    def add_peer(self, address: Address) -> None:
        self.conn.add_candidate(address, self.loop.time())
        self.flush()

    # ------------------------------------------------------------------ the loop side

    def flush(self, now: float | None = None) -> None:
        if self._finished:  # (a file I/O callback that outlived the transfer)
            return
        now = self.loop.time() if now is None else now
        conn = self.conn
        for _ in range(4):
            events = conn.events()
            for ev in events:
                self._event(ev, now)
            out = conn.datagrams_to_send(now)
            if out:
                self.manager.endpoint_send(out)
            if not events and not out:
                break
        self._progress(now)
        if conn.closed:
            self._cancel_timer()
            self.manager._forget(conn.transfer_id, self)
            self._finish()
            return
        when = conn.timer()
        if when != self._timer_at:
            self._cancel_timer()
            if when is not None:
                self._timer_at = when
                self._timer = self.loop.call_at(when, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.loop.time()
        self.conn.handle_timer(now)
        self.flush(now)

    def _event(self, ev: object, now: float) -> None:
        handle = self.handle
        if isinstance(ev, ReadRequest):
            self._read(ev.offset, ev.length)
        elif isinstance(ev, WriteData):
            self._write(ev.offset, ev.data)
        elif isinstance(ev, ReadyToVerify):
            self._verify()
        elif isinstance(ev, Connected | PathChanged):
            handle.path, handle.via_relay = ev.path, ev.via_relay
            if isinstance(ev, PathChanged):
                handle.notices.append(f"path changed to {ev.path[0]}:{ev.path[1]}")
            elif ev.via_relay:
                handle.notices.append("connected through the relay")
        elif isinstance(ev, RelayFallback):
            handle.notices.append("no direct path yet: trying the relay")
        elif isinstance(ev, RelayBound):
            handle.observed = ev.observed
            handle.relay_bound.set()
        elif isinstance(ev, Completed | Failed):
            self._result(ev, now)

    # ------------------------------------------------------------------ file I/O

    def _read(self, offset: int, length: int) -> None:
        source = self.source
        assert source is not None
        fut = self.loop.run_in_executor(self.manager.readers, source.read, offset, length)

        def done(f: asyncio.Future[bytes]) -> None:
            now = self.loop.time()
            conn = self.conn
            assert isinstance(conn, SenderConnection)
            exc = f.exception()
            if exc is None:
                conn.provide_data(offset, f.result(), now)
            elif isinstance(exc, FileChanged):
                conn.abort(Reason.FILE_CHANGED, str(exc), now)
            else:
                conn.abort(Reason.READ_FAILED, _os_reason(exc), now)
            self.flush(now)

        fut.add_done_callback(done)

    def _write(self, offset: int, data: bytes | bytearray) -> None:
        sink = self.sink
        assert sink is not None and self.writer is not None
        fut = self.loop.run_in_executor(self.writer, sink.write, offset, data)
        length = len(data)

        def done(f: asyncio.Future[None]) -> None:
            now = self.loop.time()
            conn = self.conn
            assert isinstance(conn, ReceiverConnection)
            exc = f.exception()
            if exc is None:
                if conn.result is None:
                    conn.data_written(offset, length, now)
            elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                conn.abort(Reason.DISK_FULL, _os_reason(exc), now)
            else:
                conn.abort(Reason.WRITE_FAILED, _os_reason(exc), now)
            self.flush(now)

        fut.add_done_callback(done)

    def _verify(self) -> None:
        sink = self.sink
        assert sink is not None and self.writer is not None
        fut = self.loop.run_in_executor(self.writer, sink.verify_and_place)

        def done(f: asyncio.Future[Path | None]) -> None:
            now = self.loop.time()
            conn = self.conn
            assert isinstance(conn, ReceiverConnection)
            exc = f.exception()
            if exc is not None:
                conn.abort(Reason.WRITE_FAILED, _os_reason(exc), now)
            elif f.result() is None:
                conn.abort(Reason.HASH_MISMATCH, "", now)
            else:
                conn.finish(now)
            self.flush(now)

        fut.add_done_callback(done)

    # ------------------------------------------------------------------ results

    def _done_bytes(self) -> int:
        conn = self.conn
        if isinstance(conn, SenderConnection):
            return conn.bytes_acked
        assert isinstance(conn, ReceiverConnection)
        return conn.bytes_written

    def _progress(self, now: float, *, final: bool = False) -> None:
        if self.on_progress is None and not final:
            return
        if not final and now - self._last_progress < self.manager.progress_interval:
            return
        self._last_progress = now
        done = self._done_bytes()
        rate = self._meter.update(now, done)
        total = self.conn.size
        report = Progress(
            self.conn.transfer_id,
            self.handle.direction,
            done,
            total,
            rate,
            RateMeter.eta(done, total, rate),
            self.conn.via_relay,
        )
        self.handle.progress = report
        if self.on_progress is not None:
            try:
                self.on_progress(report)
            except Exception:  # a broken callback must not break the transfer
                self.on_progress = None

    def _result(self, ev: Completed | Failed, now: float) -> None:
        conn = self.conn
        self._progress(now, final=True)
        sink, source = self.sink, self.source
        ok = isinstance(ev, Completed)
        resumed = conn.stats.extra.get("resumed_bytes", 0)
        if isinstance(conn, ReceiverConnection):
            resumed = self._held_at_start
        result = TransferResult(
            ok=ok,
            reason=None if isinstance(ev, Completed) else ev.reason,
            message="verified" if isinstance(ev, Completed) else ev.describe(),
            by_peer=False if isinstance(ev, Completed) else ev.by_peer,
            bytes=self._done_bytes(),
            seconds=now - self._started,
            via_relay=conn.via_relay,
            resumed_bytes=resumed,
            path=sink.final_path if sink is not None else None,
            stats=conn.stats,
        )
        if source is not None:
            source.close()
        fut = self.handle._future
        assert fut is not None

        def publish(_: object = None) -> None:
            if not fut.done():
                fut.set_result(result)

        if sink is not None and self.writer is not None and not ok:
            # The partial file is fsynced and its state recorded (or it is removed) before
            # the result is out, so a resume right after it finds what this attempt left.
            assert isinstance(conn, ReceiverConnection)
            held = conn.held
            keep = isinstance(ev, Failed) and ev.reason not in _RESUMABLE_FAILURES

            def cleanup() -> None:
                if keep:
                    sink.save_state(held)
                    sink.close()
                else:
                    sink.discard()

            self.loop.run_in_executor(self.writer, cleanup).add_done_callback(publish)
        else:
            publish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self.writer is not None:
            self.writer.shutdown(wait=False)
        fut = self.handle._future
        if fut is not None and not fut.done() and self.conn.result is None:
            fut.set_exception(RuntimeError("transfer ended without a result"))


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


class TransferManager:
    """All transfers of one client, over one UDP socket."""

    def __init__(
        self,
        *,
        config: TransferConfig | None = None,
        progress_interval: float = 0.25,
        max_transfers: int = 64,
        gso: bool = True,
        gro: bool = True,
    ) -> None:
        self.config = config or TransferConfig()
        self.progress_interval = progress_interval
        self.max_transfers = max_transfers
        self.unknown_datagrams = 0
        #: called with the datagrams that belong to no transfer and are not a transfer's
        #: (an endpoint probe's answer, ``wire.Kind.PROBED``); None: they are dropped
        self.on_control: Callable[[memoryview, Address], None] | None = None
        self._drivers: dict[bytes, _Driver] = {}
        self._endpoint: UdpEndpoint | None = None
        self._gso, self._gro = gso, gro
        self.readers = ThreadPoolExecutor(2, thread_name_prefix="p2p-read")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._all_closed: asyncio.Future[None] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the manager was started on."""
        if self._loop is None:
            raise RuntimeError("start() the manager first")
        return self._loop

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Address:
        """Bind the UDP socket; returns its address (to report to the server)."""
        self._loop = asyncio.get_running_loop()
        self._endpoint = await UdpEndpoint.open(
            host, port, self._on_batch, gso=self._gso, gro=self._gro
        )
        return self._endpoint.address

    @property
    def address(self) -> Address:
        assert self._endpoint is not None, "start() first"
        return self._endpoint.address

    @property
    def endpoint(self) -> UdpEndpoint:
        assert self._endpoint is not None, "start() first"
        return self._endpoint

    def endpoint_send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        if self._endpoint is not None:
            self._endpoint.send(datagrams)

    def active(self) -> list[TransferHandle]:
        return [d.handle for d in self._drivers.values()]

    def send_file(
        self,
        path: Path,
        offer: FileOffer,
        *,
        transfer_id: bytes,
        key: bytes,
        peers: list[Address],
        relay: RelayInfo | None = None,
        on_progress: ProgressCallback | None = None,
        config: TransferConfig | None = None,
    ) -> TransferHandle:
        """Start sending ``path`` (described by ``offer``) once the peer accepted."""
        self._admit(transfer_id)
        source = FileSource(path, offer.size)
        try:
            conn = SenderConnection(
                transfer_id=transfer_id,
                key=key,
                size=offer.size,
                sha256=offer.sha256,
                candidates=peers,
                relay=relay,
                config=config or self.config,
                now=self.loop.time(),
            )
        except BaseException:
            source.close()
            raise
        handle = TransferHandle(transfer_id, "send", offer.size)
        return self._run(conn, handle, source, None, on_progress)

    def accept_file(
        self,
        offer: FileOffer,
        dest_dir: Path,
        *,
        transfer_id: bytes,
        key: bytes,
        peers: list[Address],
        relay: RelayInfo | None = None,
        on_progress: ProgressCallback | None = None,
        resume: bool = True,
        config: TransferConfig | None = None,
    ) -> TransferHandle:
        """Receive ``offer`` into ``dest_dir`` (resuming what an earlier attempt left)."""
        self._admit(transfer_id)
        sink = FileSink(dest_dir, offer.name, offer.size, offer.sha256, resume=resume)
        try:
            conn = ReceiverConnection(
                transfer_id=transfer_id,
                key=key,
                size=offer.size,
                sha256=offer.sha256,
                candidates=peers,
                relay=relay,
                config=config or self.config,
                now=self.loop.time(),
            )
            conn.hold(sink.held)
        except BaseException:
            sink.close()
            raise
        handle = TransferHandle(transfer_id, "receive", offer.size)
        return self._run(conn, handle, None, sink, on_progress)

    def _admit(self, transfer_id: bytes) -> None:
        if self._endpoint is None:
            raise RuntimeError("start() the manager first")
        old = self._drivers.get(transfer_id)
        if old is not None:
            if not old.handle.done:
                raise ValueError("a transfer with this id is already running")
            # An earlier attempt that ended and only lingers to answer its peer: a new
            # attempt (a resume) replaces it.
            old._cancel_timer()
            old._finish()
            del self._drivers[transfer_id]
        if len(self._drivers) >= self.max_transfers:
            raise RuntimeError(f"at most {self.max_transfers} transfers at once")

    def _driver(
        self,
        conn: Connection,
        handle: TransferHandle,
        source: FileSource | None,
        sink: FileSink | None,
        on_progress: ProgressCallback | None,
    ) -> _Driver:
        driver = _Driver(self, conn, handle, source, sink, on_progress)
        self._drivers[conn.transfer_id] = driver
        return driver

    def _run(
        self,
        conn: Connection,
        handle: TransferHandle,
        source: FileSource | None,
        sink: FileSink | None,
        on_progress: ProgressCallback | None,
    ) -> TransferHandle:
        self._driver(conn, handle, source, sink, on_progress).flush()
        return handle

    def _forget(self, transfer_id: bytes, driver: _Driver) -> None:
        if self._drivers.get(transfer_id) is driver:
            del self._drivers[transfer_id]
        if not self._drivers and self._all_closed is not None and not self._all_closed.done():
            self._all_closed.set_result(None)

    def _on_batch(self, batch: Batch) -> None:
        now = self.loop.time()
        drivers = self._drivers
        dirty: dict[bytes, _Driver] = {}
        for data, addr in batch:
            tid = bytes(data[1:9])
            driver = drivers.get(tid)
            if driver is None:
                if data[0] == _PROBED and self.on_control is not None:
                    self.on_control(data, addr)
                    continue
                self.unknown_datagrams += 1
                continue
            driver.conn.receive_datagram(data, addr, now)
            dirty[tid] = driver
        for driver in dirty.values():
            driver.flush(now)

    async def close(self, timeout: float = 2.0) -> None:
        """Shut down gracefully: abort what still runs (SHUTDOWN, the peers are told), let
        every connection end its own way — a receiver's DONE acknowledged, a CLOSE sent —
        for at most ``timeout`` seconds, then close the socket."""
        if self._loop is None:  # never started
            self.readers.shutdown(wait=False)
            return
        now = self.loop.time()
        for driver in list(self._drivers.values()):
            if not driver.handle.done:
                driver.conn.abort(Reason.SHUTDOWN, "", now)
                driver.flush(now)
        if self._drivers:
            self._all_closed = self.loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._all_closed), timeout)
        for driver in list(self._drivers.values()):
            driver._cancel_timer()
            driver._finish()
        self._drivers.clear()
        if self._endpoint is not None:
            self._endpoint.close()
        self.readers.shutdown(wait=False)
