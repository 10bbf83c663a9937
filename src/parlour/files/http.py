"""The files endpoints on the web listener (docs/design/files.md): tus 1.0 uploads at
``/files/uploads`` and downloads at ``/files/<id>`` (and ``/thumbnail``). A thin adapter:

* who is asking: the bearer token (`ChatService.file_user`, the core's node-local tokens);
* what may be done: the tus rules (`parlour.files.uploads`), the limits, the download
  authorisation (`ChatService.file_access` over the core's rooms, members and bans);
* where things are: upload records in the chat store (written through the store's writer,
  read through its `Reads`), bytes in `Partials` and the `BlobStore`.

Bytes are streamed, never held whole. An upload's body on a plain (non-TLS) connection with
at least `FAST_MIN` bytes still to come is read below aiohttp (`_Pipe`): the transport stops
reading, what aiohttp buffered is taken, and the rest is read from a duplicate of the socket
with ``recv_into`` preallocated buffers and written (``pwrite``) in one thread while another
hashes; the answer then closes the connection. Otherwise (TLS, chunked, small bodies) the body
is read through aiohttp as it arrives and handed in batches of at most `BATCH` bytes to worker
threads that write and hash them while the next batch arrives. Either way memory per upload
is bounded and every `DURABLE_EVERY` bytes the file is fsynced and its durable offset
recorded, so a ``kill -9`` loses at most that much. Downloads go out with ``sendfile`` (or
``pread`` and transport writes on uvloop).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from aiohttp import hdrs, web

from parlour.core.ports import Reads
from parlour.core.records import FileRecord, user_key
from parlour.core.service import ChatService
from parlour.core.writes import CompleteUpload, CreateUpload, RemoveFile, Write
from parlour.files import sniff
from parlour.files.blobs import FsBlobStore, Partials
from parlour.files.names import sanitise_name
from parlour.files.thumbnails import make_thumbnail
from parlour.files.uploads import (
    CHECKSUM_ALGORITHMS,
    EXTENSIONS,
    FILE_ID_BYTES,
    OFFSET_TYPE,
    TUS_VERSION,
    TusError,
    expires_header,
    file_id,
    is_file_id,
    parse_checksum,
    parse_length,
    parse_metadata,
    parse_offset,
    parse_range,
)
from parlour.transports.pipeline import StoreWriter

__all__ = ["DOWNLOAD_PREFIX", "UPLOAD_URL", "FileLimits", "FilesHttp"]

log = logging.getLogger("parlour.files")

UPLOAD_URL = "/files/uploads"
DOWNLOAD_PREFIX = "/files/"
#: bytes handed to the writer thread at once, and between two durable points
BATCH = 1 << 20
DURABLE_EVERY = 32 << 20
#: how long a request waits for another one on the same upload to let go (after its connection
#: was closed), and how long an upload's body may stall before its connection is closed
LOCK_WAIT = 10.0
BODY_IDLE = 60.0
#: a PATCH body on a plain (non-TLS) connection with at least this many bytes still to come is
#: read below aiohttp (`_Pipe`); the connection is then closed after the answer
FAST_MIN = 256 << 10
#: at most this many bodies are read that way at once (each: two threads and FAST_BUFFERS
#: buffers of BATCH bytes); more go the ordinary way
FAST_UPLOADS = 8
FAST_BUFFERS = 4
#: the request key that says the body was read below aiohttp (the answer closes the connection)
_BELOW = web.RequestKey("parlour.files.below", bool)
FILE_CSP = "sandbox; default-src 'none'"
_MAX_CLIENT_TYPE = 100


@dataclass(frozen=True, slots=True)
class FileLimits:
    max_file_size: int = 100 * 1024 * 1024
    user_quota: int = 1024 * 1024 * 1024
    max_concurrent_uploads: int = 4
    #: an unfinished upload untouched for this long, or a finished one no message uses, goes
    expiry: float = 86400.0
    #: seconds downloads may be cached by the browser
    cache_seconds: int = 3600


class _Closable(Protocol):
    def close(self) -> None: ...


class _Upload:
    """An upload this node is working on: its lock, the connection of the request holding it,
    and the SHA-256 of its bytes so far."""

    __slots__ = ("hashed", "hasher", "holder", "lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.hasher: Any = None
        self.hashed = -1
        self.holder: _Closable | None = None
        #: requests holding or waiting for the lock (the state is forgotten only at 0)
        self.users = 0

    async def take(self, upload: str) -> bool:
        """The lock, breaking it if a request holds it: a client that comes back (HEAD or
        PATCH) lost the request that is still writing — its link died without the server
        hearing of it — so that request's connection is closed (it keeps what it wrote, as
        any interrupted request does). False when it could not be had within `LOCK_WAIT`."""
        if self.lock.locked() and self.holder is not None:
            log.info("upload lock broken", extra={"fields": {"file": upload}})
            self.holder.close()
        self.users += 1
        try:
            await asyncio.wait_for(self.lock.acquire(), LOCK_WAIT)
        except TimeoutError:
            self.users -= 1
            return False
        except BaseException:
            self.users -= 1
            raise
        return True

    def give(self) -> None:
        """Let go of the lock `take` gave."""
        self.holder = None
        self.users -= 1
        self.lock.release()


class _Pipe:
    """The rest of one PATCH body read below aiohttp (plain TCP only): a reader thread takes
    the bytes from a duplicate of the connection's socket with ``recv_into`` a preallocated
    buffer and writes them (``os.pwrite``) at their offset; a hasher thread hashes each buffer
    once it is written (two cores: the recv + write of one buffer overlaps the hashing of the
    previous one); every `DURABLE_EVERY` bytes a third thread makes a checkpoint. Memory is
    `FAST_BUFFERS` buffers of `BATCH` bytes. The socket's flags are never changed: it is
    non-blocking, so the reader waits with ``poll`` (at most a second at a time, so that `stop`
    is seen even if the wake-up is lost)."""

    def __init__(
        self,
        sock: socket.socket,
        fd: int,
        head: bytes,
        start: int,
        left: int,
        hashers: tuple[Any, ...],
        checkpoint: Callable[[int], int] | None,
    ) -> None:
        self.sock = sock
        self.fd = fd
        self.head = head
        self.left = left
        self.hashers = hashers
        self.checkpoint = checkpoint
        self.received = len(head)  # bytes of the body taken (for the idle watchdog)
        self.written = start  # every byte before it is written
        self.hashed = start  # ... and hashed
        self.durable = start  # ... and durable
        self.cut: BaseException | None = None  # why the body ended early (None: it did not)
        self.stopped = False
        self._full: queue.SimpleQueue[tuple[memoryview, bytearray | None] | None] = (
            queue.SimpleQueue()
        )
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._saver: threading.Thread | None = None

    def stop(self) -> None:
        """From any thread: end the body now (lock broken, idle, server shutting down). The
        socket is shut down, which wakes the reader and tells the peer."""
        self.stopped = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def run(self) -> None:
        """The whole pipeline, in a worker thread: read and write here, hash in another."""
        hasher = threading.Thread(target=self._hash, name="parlour-upload-hash", daemon=True)
        hasher.start()
        try:
            self._read()
        except BaseException as exc:  # the disk or the socket failed
            self.cut = exc
        finally:
            self._full.put(None)
            hasher.join()
            if self._saver is not None:
                self._saver.join()

    def _read(self) -> None:
        pos = self.written
        if self.head:
            _pwrite_all(self.fd, memoryview(self.head), pos)
            pos += len(self.head)
            self.written = pos
            self._full.put((memoryview(self.head), None))
        for _ in range(FAST_BUFFERS):
            self._free.put(bytearray(BATCH))
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        left = self.left
        while left > 0:
            buf = self._free.get()
            view = memoryview(buf)
            want = min(len(buf), left)
            n = 0
            eof = False
            while n < want:
                if self.stopped:
                    raise ConnectionAbortedError("the upload was taken over or stopped")
                try:
                    got = self.sock.recv_into(view[n:want])
                except BlockingIOError:
                    if n:
                        break  # write what came; the next buffer waits for more
                    poller.poll(1000)
                    continue
                except InterruptedError:
                    continue
                if got == 0:
                    eof = True
                    break
                n += got
                self.received += got
            if n:
                _pwrite_all(self.fd, view[:n], pos)
                pos += n
                left -= n
                self.written = pos
                self._full.put((view[:n], buf))
            else:
                self._free.put(buf)
            self._maybe_checkpoint(pos)
            if eof:
                raise ConnectionResetError("the client closed the connection mid-body")
            if self.stopped:
                raise ConnectionAbortedError("the upload was taken over or stopped")

    def _maybe_checkpoint(self, pos: int) -> None:
        if self.checkpoint is None or pos - self.durable < DURABLE_EVERY:
            return
        if self._saver is not None:
            if self._saver.is_alive():
                return  # one at a time; the next one covers more
            self._saver.join()
        self._saver = threading.Thread(
            target=self._save, args=(pos,), name="parlour-upload-fsync", daemon=True
        )
        self._saver.start()

    def _save(self, pos: int) -> None:
        assert self.checkpoint is not None
        with contextlib.suppress(OSError):  # the final checkpoint reports disk errors
            self.durable = max(self.durable, self.checkpoint(pos))

    def _hash(self) -> None:
        failed = False
        while (item := self._full.get()) is not None:
            view, buf = item
            if not failed:
                try:
                    for h in self.hashers:
                        h.update(view)
                    self.hashed += len(view)
                except BaseException as exc:  # keep handing buffers back
                    failed, self.cut = True, exc
                    self.stop()
            view.release()
            if buf is not None:
                self._free.put(buf)


def _pwrite_all(fd: int, view: memoryview, pos: int) -> None:
    while view:
        n = os.pwrite(fd, view, pos)
        view = view[n:]
        pos += n


class _Stopper:
    """What lock breaking closes while a body is read below aiohttp: the reader thread is
    stopped (its socket shut down) and the connection closed."""

    __slots__ = ("pipe", "transport")

    def __init__(self, pipe: _Pipe, transport: asyncio.BaseTransport | None) -> None:
        self.pipe = pipe
        self.transport = transport

    def close(self) -> None:
        self.pipe.stop()
        if self.transport is not None:
            self.transport.close()


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _hash_prefix(path: Path, length: int) -> Any:
    """SHA-256 of the first `length` bytes of `path` (an upload resumed after a restart)."""
    h = hashlib.sha256()
    left = length
    with path.open("rb") as f:
        while left > 0:
            chunk = f.read(min(BATCH, left))
            if not chunk:
                raise OSError(f"{path} is shorter than {length} bytes")
            h.update(chunk)
            left -= len(chunk)
    return h


def _write_chunks(fd: int, chunks: list[bytes]) -> None:
    """In a worker thread: write one batch (`os.write` releases the GIL)."""
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            n = os.write(fd, view)
            view = view[n:]


def _hash_chunks(chunks: list[bytes], hashers: tuple[Any, ...]) -> None:
    """In another worker thread: hash one batch (hashlib releases the GIL)."""
    for chunk in chunks:
        for h in hashers:
            h.update(chunk)


def _write_batch(fd: int, chunks: list[bytes], hashers: tuple[Any, ...]) -> None:
    _write_chunks(fd, chunks)
    _hash_chunks(chunks, hashers)


def _start_batch(
    loop: asyncio.AbstractEventLoop, fd: int, chunks: list[bytes], hashers: tuple[Any, ...]
) -> asyncio.Future[Any]:
    """Write and hash one batch at the same time, in two threads (the loop goes on reading
    the next batch meanwhile): three cores' worth of work when the machine has them."""
    return asyncio.gather(
        loop.run_in_executor(None, _write_chunks, fd, chunks),
        loop.run_in_executor(None, _hash_chunks, chunks, hashers),
    )


def _text(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=reason + "\n", headers=headers)


class FilesHttp:
    """The routes; `add_routes(app)` puts them on the web listener's application."""

    def __init__(
        self,
        service: ChatService,
        reads: Reads,
        writer: StoreWriter,
        root: Path,
        limits: FileLimits,
        *,
        clock: Callable[[], float] = time.time,
        entropy: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.service = service
        self.reads = reads
        self.writer = writer
        self.blobs = FsBlobStore(root)
        self.partials = Partials(root)
        self.limits = limits
        self.clock = clock
        self.entropy = entropy
        self._uploads: dict[str, _Upload] = {}
        self._sweeper: asyncio.Task[None] | None = None
        #: bodies being read below aiohttp now, and the least still to come for that path
        self._below = 0
        self.fast_min = FAST_MIN
        self.stats = {
            "uploads_created": 0,
            "uploads_completed": 0,
            "interrupted": 0,
            "swept": 0,
            "refused": 0,
            "read_below": 0,
        }
        #: called with (what, file id) when a request starts "writing" an upload, when its
        #: body is read "below" aiohttp, when one is "interrupted" (its durable offset
        #: recorded) or "complete": for tests and metrics
        self.observer: Callable[[str, str], None] | None = None

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_route("OPTIONS", UPLOAD_URL, self.options)
        r.add_post(UPLOAD_URL, self.create)
        r.add_route("HEAD", UPLOAD_URL + "/{id}", self.head)
        r.add_route("PATCH", UPLOAD_URL + "/{id}", self.patch)
        r.add_route("DELETE", UPLOAD_URL + "/{id}", self.terminate)
        r.add_get(DOWNLOAD_PREFIX + "{id}", self.download)  # GET and HEAD
        r.add_get(DOWNLOAD_PREFIX + "{id}/thumbnail", self.thumbnail)

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Sweep expired uploads periodically (every tenth of the expiry, at most 10 min)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        interval = min(600.0, max(1.0, self.limits.expiry / 10))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:  # keep sweeping; the next round tries again
                log.exception("file sweep failed")

    # ------------------------------------------------------------------ helpers

    def _tus(self, headers: dict[str, str] | None = None) -> dict[str, str]:
        out = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}
        if headers:
            out.update(headers)
        return out

    def _refuse(
        self, status: int, reason: str, extra: dict[str, str] | None = None
    ) -> web.Response:
        self.stats["refused"] += 1
        headers = self._tus(extra)
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="parlour files"'
        return _text(status, reason, headers)

    def _bearer(self, request: web.Request, *, query: bool) -> str | None:
        auth = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        if query:
            return request.query.get("access_token")
        return None

    def _user(self, request: web.Request, *, query: bool = False) -> tuple[str, str] | None:
        token = self._bearer(request, query=query)
        if token is None:
            return None
        return self.service.file_user(token, self.clock())

    def _uploader(self, request: web.Request) -> tuple[str, str] | web.Response:
        """Who may upload: a valid token of a user who is not banned."""
        who = self._user(request)
        if who is None:
            return self._refuse(401, "a valid file token is required (ask with file_token)")
        if self.service.banned(who[0], self.clock()):
            return self._refuse(403, "you are banned")
        return who

    def _upload(self, upload: str) -> _Upload:
        state = self._uploads.get(upload)
        if state is None:
            state = self._uploads[upload] = _Upload()
        return state

    def _forget(self, upload: str) -> None:
        state = self._uploads.get(upload)
        if state is not None and state.users == 0:
            del self._uploads[upload]

    async def _commit(self, *writes: Write) -> None:
        await self.writer.submit(writes)

    def _interrupted(self, upload: str, durable: int, why: BaseException) -> None:
        """A body was cut off (the client went away, the disk failed, shutdown): said once."""
        log.info(
            "upload interrupted",
            extra={"fields": {"file": upload, "offset": durable, "why": repr(why)}},
        )
        self.stats["interrupted"] += 1
        self._observe("interrupted", upload)

    def _observe(self, what: str, upload: str) -> None:
        if self.observer is not None:
            self.observer(what, upload)

    def _expires(self, touched: float | None) -> dict[str, str]:
        if touched is None:
            return {}
        return {"Upload-Expires": expires_header(touched + self.limits.expiry)}

    async def _own(self, upload: str, user: str) -> FileRecord | None:
        """The upload record when it is `user`'s (anybody else learns nothing of it)."""
        if not is_file_id(upload):
            return None
        rec = await self.reads.file(upload)
        if rec is None or user_key(rec.owner) != user:
            return None
        return rec

    # ------------------------------------------------------------------ tus

    async def options(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=204,
            headers=self._tus(
                {
                    "Tus-Version": TUS_VERSION,
                    "Tus-Extension": EXTENSIONS,
                    "Tus-Max-Size": str(self.limits.max_file_size),
                    "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
                }
            ),
        )

    def _tus_user(self, request: web.Request) -> tuple[str, str] | web.Response:
        """The uploader of a tus request (its version checked), or the refusal."""
        problem = self._version_problem(request)
        return problem if problem is not None else self._uploader(request)

    async def _owned(self, request: web.Request, user: str) -> FileRecord | web.Response:
        """The upload the request's path names, when it is `user`'s, or a 404."""
        rec = await self._own(request.match_info["id"], user)
        return rec if rec is not None else web.Response(status=404, headers=self._tus())

    def _version_problem(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Tus-Resumable") != TUS_VERSION:
            return self._refuse(
                412, f"Tus-Resumable must be {TUS_VERSION}", {"Tus-Version": TUS_VERSION}
            )
        return None

    async def create(self, request: web.Request) -> web.StreamResponse:
        return _closing(request, await self._create(request))

    async def _create(self, request: web.Request) -> web.StreamResponse:
        who = self._tus_user(request)
        if isinstance(who, web.Response):
            return who
        name = who[1]
        try:
            length = parse_length(request.headers.get("Upload-Length"))
            meta = parse_metadata(request.headers.get("Upload-Metadata"))
        except TusError as exc:
            return self._refuse(exc.status, exc.reason)
        limits = self.limits
        if length > limits.max_file_size:
            return self._refuse(
                413, f"the file is larger than this server takes ({limits.max_file_size} bytes)"
            )
        usage = await self.reads.file_usage(name)
        if usage.bytes + length > limits.user_quota:
            return self._refuse(
                403,
                f"quota_exceeded: the file would take you over your quota ({usage.bytes} of "
                f"{limits.user_quota} bytes used)",
            )
        if usage.unfinished >= limits.max_concurrent_uploads:
            return self._refuse(
                403,
                f"too_many_uploads: you already have {usage.unfinished} unfinished uploads "
                f"(at most {limits.max_concurrent_uploads})",
            )
        with_body = request.headers.get(hdrs.CONTENT_TYPE) == OFFSET_TYPE
        if with_body:
            try:  # creation-with-upload: refuse a bad checksum header before creating
                parse_checksum(request.headers.get("Upload-Checksum"))
            except TusError as exc:
                return self._refuse(exc.status, exc.reason)
        upload = file_id(self.entropy(FILE_ID_BYTES))
        filename = sanitise_name(meta.get("filename") or "")
        client_type = (meta.get("filetype") or meta.get("type") or "")[:_MAX_CLIENT_TYPE]
        await asyncio.to_thread(self.partials.create, upload)
        try:
            await self._commit(
                CreateUpload(upload, name, length, filename, client_type, self.clock())
            )
        except BaseException:
            await asyncio.to_thread(self.partials.remove, upload)
            raise
        self.stats["uploads_created"] += 1
        log.info(
            "upload created",
            extra={"fields": {"user": name, "file": upload, "length": length}},
        )
        headers = self._tus({hdrs.LOCATION: f"{UPLOAD_URL}/{upload}"})
        headers.update(self._expires(self.clock()))
        rec = FileRecord(upload, name, length, filename, client_type, self.clock())
        if length == 0 and not with_body:  # nothing to send: complete at once (as tuspy expects)
            state = self._upload(upload)
            if await state.take(upload):
                try:
                    await self._finish(rec, state)
                finally:
                    state.give()
                self._forget(upload)
            headers["Upload-Offset"] = "0"
            return web.Response(status=201, headers=headers)
        if not with_body:
            return web.Response(status=201, headers=headers)
        status, reason, offset = await self._receive(request, rec, 0)
        if status != 204:  # the upload exists; its first bytes were refused
            headers["Upload-Offset"] = "0"
            return _text(201, reason, headers) if status == 460 else _text(201, "", headers)
        headers["Upload-Offset"] = str(offset)
        return web.Response(status=201, headers=headers)

    async def head(self, request: web.Request) -> web.StreamResponse:
        who = self._tus_user(request)
        if isinstance(who, web.Response):
            return who
        rec = await self._owned(request, who[0])
        if isinstance(rec, web.Response):
            return rec
        upload = rec.id
        headers = {"Upload-Length": str(rec.length)}
        if rec.complete:
            headers["Upload-Offset"] = str(rec.length)
            return web.Response(status=200, headers=self._tus(headers))
        state = self._upload(upload)
        if not await state.take(upload):
            return self._refuse(423, "another request is writing this upload; try again")
        try:
            offset = await asyncio.to_thread(self.partials.offset, upload)
            if offset is None:
                return web.Response(status=404, headers=self._tus())
            if offset == rec.length:  # every byte was durable, the completion was not
                await self._finish(rec, state)
        finally:
            state.give()
        headers["Upload-Offset"] = str(offset)
        headers.update(self._expires(await asyncio.to_thread(self.partials.touched, upload)))
        return web.Response(status=200, headers=self._tus(headers))

    async def patch(self, request: web.Request) -> web.StreamResponse:
        return _closing(request, await self._patch(request))

    async def _patch(self, request: web.Request) -> web.StreamResponse:
        who = self._tus_user(request)
        if isinstance(who, web.Response):
            return who
        if request.headers.get(hdrs.CONTENT_TYPE) != OFFSET_TYPE:
            return self._refuse(415, f"Content-Type must be {OFFSET_TYPE}")
        try:
            offset = parse_offset(request.headers.get("Upload-Offset"))
            parse_checksum(request.headers.get("Upload-Checksum"))
        except TusError as exc:
            return self._refuse(exc.status, exc.reason)
        rec = await self._owned(request, who[0])
        if isinstance(rec, web.Response):
            return rec
        if rec.complete:
            return self._refuse(409, "the upload is complete", {"Upload-Offset": str(rec.length)})
        status, reason, now_at = await self._receive(request, rec, offset)
        headers = {"Upload-Offset": str(now_at)}
        if status == 204:
            headers.update(self._expires(self.clock()))
            return web.Response(status=204, headers=self._tus(headers))
        return self._refuse(status, reason, headers)

    async def _receive(
        self, request: web.Request, rec: FileRecord, offset: int
    ) -> tuple[int, str, int]:
        """Take the body of a PATCH (or a creation-with-upload) at `offset`: (status, reason,
        the durable offset after it)."""
        upload = rec.id
        state = self._upload(upload)
        if not await state.take(upload):
            return 409, "another request is writing this upload", offset
        state.holder = request.transport
        self._observe("writing", upload)
        try:
            durable = await asyncio.to_thread(self.partials.offset, upload)
            if durable is None:
                return 404, "no such upload", 0
            if durable != offset:
                return 409, f"Upload-Offset is {durable}, not {offset}", durable
            size = request.content_length
            if size is not None and offset + size > rec.length:
                return 413, "the body goes past Upload-Length", durable
            checksum = parse_checksum(request.headers.get("Upload-Checksum"))
            return await self._stream(request, rec, state, offset, checksum)
        finally:
            state.give()
            if state.hashed < 0:  # nothing worth keeping (done, or nothing hashed)
                self._forget(upload)

    async def _stream(
        self, request: web.Request, rec: FileRecord, state: _Upload, offset: int, checksum: Any
    ) -> tuple[int, str, int]:
        """Write the body at `offset`. The loop reads; one batch at a time is written and
        hashed in worker threads while the next arrives; every `DURABLE_EVERY` bytes a
        checkpoint (fsync, then the durable offset recorded) runs in the background, so the
        transfer does not wait for the disk. A chunk with a checksum is all or nothing."""
        upload = rec.id
        path = self.partials.data(upload)
        if state.hasher is None or state.hashed != offset:
            state.hasher = await asyncio.to_thread(_hash_prefix, path, offset)
            state.hashed = offset
        whole = state.hasher
        part = hashlib.new(checksum.algorithm) if checksum is not None else None
        hashers = (whole,) if part is None else (whole, part)
        fd = await asyncio.to_thread(os.open, path, os.O_WRONLY)
        try:
            taken = self._take_body(request)
        except BaseException:
            os.close(fd)
            raise
        if taken is not None:
            try:
                status, reason, durable = await self._stream_below(
                    request, rec, state, offset, checksum, part, hashers, fd, *taken
                )
            finally:
                os.close(fd)
            if status == 204 and durable == rec.length:
                await self._finish(rec, state)
            return status, reason, durable
        loop = asyncio.get_running_loop()
        written = durable = offset  # `written`: bytes handed to a batch (written once awaited)
        pending: asyncio.Future[Any] | None = None
        checkpoint: asyncio.Future[int] | None = None
        batch: list[bytes] = []
        batched = 0
        too_long = False
        interrupted: BaseException | None = None

        async def settle() -> None:
            """Wait for the batch and the checkpoint in flight."""
            nonlocal pending, checkpoint, durable
            if pending is not None:
                await pending
                pending = None
            if checkpoint is not None:
                durable = max(durable, await checkpoint)
                checkpoint = None

        received = [0]  # bytes read so far, for the watchdog
        timer: list[asyncio.TimerHandle] = []
        timer.append(loop.call_later(BODY_IDLE, self._watch, request, received, -1, timer))
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            try:
                async for chunk in request.content.iter_any():
                    received[0] += len(chunk)
                    if written + batched + len(chunk) > rec.length:
                        too_long = True
                        break
                    batch.append(chunk)
                    batched += len(chunk)
                    if batched < BATCH:
                        continue
                    if pending is not None:
                        await pending  # every byte counted in `written` is written now
                        pending = None
                    if checkpoint is not None and checkpoint.done():
                        durable = max(durable, checkpoint.result())
                        checkpoint = None
                    if part is None and checkpoint is None and written - durable >= DURABLE_EVERY:
                        checkpoint = loop.run_in_executor(
                            None, self._checkpoint, fd, upload, written
                        )
                    pending = _start_batch(loop, fd, batch, hashers)
                    written += batched
                    batch, batched = [], 0
            except (ConnectionError, asyncio.CancelledError, Exception) as exc:
                interrupted = exc  # the client went away mid-body (or the disk failed)
            with contextlib.suppress(Exception):
                await settle()
            if batch and not too_long and (interrupted is None or part is None):
                await asyncio.to_thread(_write_batch, fd, batch, hashers)
                written += batched
            if interrupted is not None:
                if part is None:  # keep what arrived
                    await asyncio.to_thread(self._checkpoint, fd, upload, written)
                    state.hashed = durable = written
                else:  # a checksummed chunk is all or nothing
                    state.hasher, state.hashed = None, -1
                    await asyncio.to_thread(self._truncate, fd, upload, offset)
                    durable = offset
                self._interrupted(upload, durable, interrupted)
                if isinstance(interrupted, asyncio.CancelledError):
                    raise interrupted
                return 400, "the request body was cut off", durable
            if too_long or (part is not None and part.digest() != checksum.digest):
                back = offset if part is not None else durable
                state.hasher, state.hashed = None, -1
                await asyncio.to_thread(self._truncate, fd, upload, back)
                if too_long:
                    return 413, "the body goes past Upload-Length", back
                log.info("checksum mismatch", extra={"fields": {"file": upload}})
                return 460, "Checksum Mismatch: the chunk was discarded", back
            await asyncio.to_thread(self._checkpoint, fd, upload, written)
            state.hashed = durable = written
        finally:
            timer[0].cancel()
            with contextlib.suppress(Exception):
                await settle()
            os.close(fd)
        if written == rec.length:
            await self._finish(rec, state)
        return 204, "", durable

    def _take_body(self, request: web.Request) -> tuple[socket.socket, bytes, int] | None:
        """Take the rest of the body from aiohttp, to read it below it: (a duplicate of the
        connection's socket, what aiohttp has buffered of the body, how many bytes are still
        to come). The transport stops reading (aiohttp sees nothing more of this connection,
        which is closed after the answer). None — the ordinary path — for TLS, a chunked or
        encoded body, less than `fast_min` bytes to come, or `FAST_UPLOADS` bodies read so
        already."""
        transport = request.transport
        size = request.content_length
        content = request.content
        if (
            transport is None
            or transport.is_closing()
            or size is None
            or self._below >= FAST_UPLOADS
            or hdrs.CONTENT_ENCODING in request.headers
            or hdrs.TRANSFER_ENCODING in request.headers
            or transport.get_extra_info("sslcontext") is not None
            or transport.get_extra_info("ssl_object") is not None
            or content.exception() is not None
            or content.is_eof()
            or size - content.total_bytes < self.fast_min
        ):
            return None
        raw = transport.get_extra_info("socket")
        if raw is None:
            return None
        try:
            sock = socket.socket(fileno=os.dup(raw.fileno()))
        except OSError:
            return None
        if sock.type != socket.SOCK_STREAM:
            sock.close()
            return None
        arrived = content.total_bytes
        # no await from here on: nothing can arrive in between
        head = content.read_nowait()  # (may resume the transport: paused after it)
        transport.pause_reading()
        request[_BELOW] = True
        if len(head) != arrived:  # someone read part of the body before: not ours to take
            sock.close()
            transport.close()
            raise ConnectionAbortedError("the body was partly read before it was taken")
        return sock, head, size - arrived

    async def _stream_below(
        self,
        request: web.Request,
        rec: FileRecord,
        state: _Upload,
        offset: int,
        checksum: Any,
        part: Any,
        hashers: tuple[Any, ...],
        fd: int,
        sock: socket.socket,
        head: bytes,
        left: int,
    ) -> tuple[int, str, int]:
        """`_stream` for a body taken by `_take_body`: `_Pipe` reads, writes, hashes and
        checkpoints it in threads; the loop watches (idle body, closed connection, lock
        broken, cancellation) and records the outcome. The same guarantees as `_stream`."""
        upload = rec.id
        loop = asyncio.get_running_loop()
        transport = request.transport
        saver = None if part is not None else functools.partial(self._checkpoint, fd, upload)
        pipe = _Pipe(sock, fd, head, offset, left, hashers, saver)
        state.holder = _Stopper(pipe, transport)
        self.stats["read_below"] += 1
        self._observe("below", upload)
        done: asyncio.Future[None] = loop.create_future()

        def run() -> None:
            try:
                pipe.run()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone
                    loop.call_soon_threadsafe(_set_done, done)

        cancelled: asyncio.CancelledError | None = None
        self._below += 1
        try:
            threading.Thread(target=run, name="parlour-upload-read", daemon=True).start()
            seen, idle_at = -1, 0.0
            while not done.done():
                try:
                    await asyncio.wait((done,), timeout=min(1.0, BODY_IDLE))
                except asyncio.CancelledError as exc:  # server shutdown: keep what came
                    cancelled = exc
                    pipe.stop()
                    break
                now = loop.time()
                ended = request.content.exception()  # aiohttp's shutdown cancels the request
                if isinstance(ended, asyncio.CancelledError):
                    cancelled = ended
                    pipe.stop()
                elif ended is not None or transport is None or transport.is_closing():
                    pipe.stop()
                elif pipe.received != seen:
                    seen, idle_at = pipe.received, now + BODY_IDLE
                elif now >= idle_at:
                    log.info(
                        "upload body idle: closing", extra={"fields": {"peer": request.remote}}
                    )
                    pipe.stop()
                    transport.close()
            while not done.done():  # stopped: the threads end within a second (or a fsync)
                try:
                    await asyncio.shield(done)
                except asyncio.CancelledError as exc:
                    cancelled = exc
        finally:
            self._below -= 1
            sock.close()
            request.content.feed_eof()  # aiohttp must not wait for the body it never saw
        written = pipe.written
        whole = pipe.hashed == written  # the upload's hash covers every written byte
        interrupted: BaseException | None = cancelled or pipe.cut
        if interrupted is not None:
            if transport is not None:
                transport.close()
            if part is None:  # keep what arrived
                await asyncio.to_thread(self._checkpoint, fd, upload, written)
                durable = written
                if whole:
                    state.hashed = written
                else:
                    state.hasher, state.hashed = None, -1
            else:  # a checksummed chunk is all or nothing
                state.hasher, state.hashed = None, -1
                await asyncio.to_thread(self._truncate, fd, upload, offset)
                durable = offset
            self._interrupted(upload, durable, interrupted)
            if cancelled is not None:
                raise cancelled
            return 400, "the request body was cut off", durable
        if part is not None and part.digest() != checksum.digest:
            state.hasher, state.hashed = None, -1
            await asyncio.to_thread(self._truncate, fd, upload, offset)
            log.info("checksum mismatch", extra={"fields": {"file": upload}})
            return 460, "Checksum Mismatch: the chunk was discarded", offset
        await asyncio.to_thread(self._checkpoint, fd, upload, written)
        if whole:
            state.hashed = written
        else:
            state.hasher, state.hashed = None, -1
        return 204, "", written

    def _watch(
        self,
        request: web.Request,
        received: list[int],
        seen: int,
        timer: list[asyncio.TimerHandle],
    ) -> None:
        """Close a connection whose body stopped arriving for `BODY_IDLE` seconds (a link
        that died without a word): its request then ends as interrupted, keeping what came.
        (`timer[0]` is the pending check, cancelled when the request ends.)"""
        if received[0] == seen:
            log.info("upload body idle: closing", extra={"fields": {"peer": request.remote}})
            if request.transport is not None:
                request.transport.close()
            return
        timer[0] = asyncio.get_running_loop().call_later(
            BODY_IDLE, self._watch, request, received, received[0], timer
        )

    def _checkpoint(self, fd: int, upload: str, offset: int) -> int:
        """In a thread: make the first `offset` bytes durable, then record that."""
        os.fsync(fd)
        self.partials.set_offset(upload, offset)
        return offset

    def _truncate(self, fd: int, upload: str, offset: int) -> None:
        """In a thread: back to `offset` (which must not be past the durable offset)."""
        os.ftruncate(fd, offset)
        os.fsync(fd)
        self.partials.set_offset(upload, offset)

    async def _finish(self, rec: FileRecord, state: _Upload) -> None:
        """Every byte is durable: hash, into the blob store, sniff, thumbnail, record it
        complete, and only then drop the partial upload (so a crash in between finishes it
        again on the next HEAD or PATCH)."""
        upload = rec.id
        path = self.partials.data(upload)
        if state.hasher is None or state.hashed != rec.length:
            state.hasher = await asyncio.to_thread(_hash_prefix, path, rec.length)
        sha = state.hasher.hexdigest()
        await asyncio.to_thread(self.blobs.adopt, path, sha)
        blob = self.blobs.path(sha)
        head = await asyncio.to_thread(_read_head, blob)
        kind = sniff.sniff(head)
        thumb = False
        if sniff.thumbnailable(kind):
            target = self.blobs.thumbnail_path(sha)
            thumb = target.is_file() or await asyncio.to_thread(make_thumbnail, blob, target)
        await self._commit(
            CompleteUpload(upload, sha, kind, sniff.inline(kind), thumb, self.clock())
        )
        await asyncio.to_thread(self.partials.remove, upload)
        state.hasher, state.hashed = None, -1
        self.stats["uploads_completed"] += 1
        self._observe("complete", upload)
        log.info(
            "upload complete",
            extra={"fields": {"file": upload, "sha256": sha, "type": kind, "size": rec.length}},
        )

    async def terminate(self, request: web.Request) -> web.StreamResponse:
        who = self._tus_user(request)
        if isinstance(who, web.Response):
            return who
        rec = await self._owned(request, who[0])
        if isinstance(rec, web.Response):
            return rec
        upload = rec.id
        if rec.attached:
            return self._refuse(409, "the file is attached to a message: delete the message")
        state = self._upload(upload)
        if not await state.take(upload):
            return self._refuse(423, "another request is writing this upload; try again")
        try:
            await self._remove(rec)
        finally:
            state.give()
        self._forget(upload)
        return web.Response(status=204, headers=self._tus())

    async def _remove(self, rec: FileRecord) -> None:
        await asyncio.to_thread(self.partials.remove, rec.id)
        await self._commit(RemoveFile(rec.id))
        if rec.sha256 is not None and await self.reads.blob_refs(rec.sha256) == 0:
            await asyncio.to_thread(self.blobs.remove, rec.sha256)

    async def sweep(self, now: float | None = None, limit: int = 256) -> int:
        """Remove expired uploads: unfinished ones untouched for `expiry`, finished ones no
        message used within `expiry`, and the files of deleted messages (their blob when
        nothing else has the same bytes). Returns how many went."""
        now = self.clock() if now is None else now
        before = now - self.limits.expiry
        gone = 0
        for rec in await self.reads.files_to_sweep(before, limit):
            state = self._uploads.get(rec.id)
            if state is not None and state.users > 0:
                continue  # being written right now
            if not rec.complete:
                touched = await asyncio.to_thread(self.partials.touched, rec.id)
                if touched is not None and touched >= before:
                    continue
            await self._remove(rec)
            self._forget(rec.id)
            gone += 1
        if gone:
            self.stats["swept"] += gone
            log.info("files swept", extra={"fields": {"removed": gone}})
        return gone

    # ------------------------------------------------------------------ downloads

    async def _authorised(self, request: web.Request) -> FileRecord | web.Response:
        who = self._user(request, query=True)
        if who is None:
            return _text(401, "a valid file token is required", self._download_headers(401))
        upload = request.match_info["id"]
        rec = await self.reads.file(upload) if is_file_id(upload) else None
        status = self.service.file_access(who[0], rec, self.clock())
        if status != 200 or rec is None:
            reason = "no such file" if status == 404 else "you may not read this file"
            return _text(status, reason, self._download_headers(status))
        return rec

    def _download_headers(self, status: int) -> dict[str, str]:
        headers = {
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": FILE_CSP,
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="parlour files"'
        return headers

    async def download(self, request: web.Request) -> web.StreamResponse:
        rec = await self._authorised(request)
        if isinstance(rec, web.Response):
            return rec
        assert rec.sha256 is not None and rec.type is not None
        path = self.blobs.path(rec.sha256)
        shown_inline = rec.inline and request.query.get("download") not in ("1", "true")
        disposition = "inline" if shown_inline else "attachment"
        headers = self._download_headers(200)
        headers.update(
            {
                hdrs.CONTENT_TYPE: sniff.served_type(rec.type),
                hdrs.ETAG: f'"{rec.sha256}"',
                hdrs.ACCEPT_RANGES: "bytes",
                hdrs.CONTENT_DISPOSITION: content_disposition(disposition, rec.name),
                hdrs.CACHE_CONTROL: f"private, max-age={self.limits.cache_seconds}",
            }
        )
        return await self._send_file(request, path, rec.length, headers, rec.sha256)

    async def thumbnail(self, request: web.Request) -> web.StreamResponse:
        rec = await self._authorised(request)
        if isinstance(rec, web.Response):
            return rec
        assert rec.sha256 is not None
        path = self.blobs.thumbnail_path(rec.sha256)
        if not rec.thumbnail or not path.is_file():
            return _text(404, "no thumbnail", self._download_headers(404))
        size = path.stat().st_size
        headers = self._download_headers(200)
        headers.update(
            {
                hdrs.CONTENT_TYPE: "image/png",
                hdrs.ETAG: f'"{rec.sha256}-thumb"',
                hdrs.CONTENT_DISPOSITION: content_disposition("inline", rec.name + ".png"),
                hdrs.CACHE_CONTROL: f"private, max-age={self.limits.cache_seconds}",
            }
        )
        return await self._send_file(request, path, size, headers, rec.sha256 + "-thumb")

    async def _send_file(
        self, request: web.Request, path: Path, size: int, headers: dict[str, str], etag: str
    ) -> web.StreamResponse:
        if request.headers.get(hdrs.IF_NONE_MATCH) in (f'"{etag}"', "*"):
            return web.Response(status=304, headers=headers)
        status, start, count = 200, 0, size
        if_range = request.headers.get(hdrs.IF_RANGE)
        if if_range is None or if_range == f'"{etag}"':
            try:
                wanted = parse_range(request.headers.get(hdrs.RANGE), size)
            except TusError:
                headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
                return _text(416, "range not satisfiable", headers)
            if wanted is not None:
                status, start, count = 206, wanted.start, wanted.length
                headers[hdrs.CONTENT_RANGE] = f"bytes {wanted.start}-{wanted.end}/{size}"
        try:
            f = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            return _text(404, "no such file", self._download_headers(404))
        try:
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = count
            await resp.prepare(request)
            if request.method == "HEAD" or count == 0:
                await resp.write_eof()
                return resp
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("connection lost")
            try:
                await asyncio.get_running_loop().sendfile(transport, f, start, count)
            except NotImplementedError:  # uvloop, TLS without kernel support: copy
                await _copy(resp, f, start, count)
            await resp.write_eof()
            return resp
        finally:
            f.close()


def _closing(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """The answer to a request whose body was read below aiohttp closes the connection:
    aiohttp's parser still expects that body, so the connection cannot carry another request."""
    if request.get(_BELOW):
        resp.force_close()
    return resp


async def _copy(resp: web.StreamResponse, f: Any, start: int, count: int) -> None:
    """Send `count` bytes of file `f` from `start`: read in a thread, a chunk at a time,
    written as the peer takes them (aiohttp's `write` waits for the transport to drain)."""
    fd = f.fileno()
    offset, left = start, count
    while left > 0:
        chunk = await asyncio.to_thread(os.pread, fd, min(BATCH, left), offset)
        if not chunk:
            raise OSError("the file is shorter than its record says")
        await resp.write(chunk)
        offset += len(chunk)
        left -= len(chunk)


def _read_head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(sniff.SNIFF_BYTES)


def content_disposition(kind: str, name: str) -> str:
    """``inline`` or ``attachment`` with the name: an ASCII fallback and RFC 5987
    ``filename*`` (UTF-8, percent-encoded: no quote, control character or separator gets
    through)."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\%;' else "_" for ch in name)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
