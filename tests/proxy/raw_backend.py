"""Raw HTTP/1.1 backends and clients for the proxy tests: an origin on a bare asyncio server
that records every connection, byte and request it sees (so tests can count upstream
connections exactly and script misbehaving answers), and a client that reads responses
framed as a client would. Shared by the fast lane engine tests and the tests that run in
both data planes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import httptools
import pytest

from parlour.proxy.control import BackendSpec

__all__ = [
    "TIMEOUT",
    "Answer",
    "BackendConn",
    "RawBackend",
    "RawBackendFactory",
    "Req",
    "Resp",
    "client",
    "fetch",
    "get",
    "ok",
    "raw_backends",
    "read_response",
    "until_eof",
]

TIMEOUT = 10.0  # bound on every wait (a hang fails the test instead of blocking it)


# ====================================================================== raw backends
@dataclass
class Req:
    conn: BackendConn
    method: str
    url: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    upgrade: bool = False

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


Answer = Callable[[Req], bytes | None]


class BackendConn(asyncio.Protocol):
    """One connection accepted by a `RawBackend`; parses requests with httptools."""

    def __init__(self, backend: RawBackend) -> None:
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.raw = bytearray()  # the first bytes received (for failure messages)
        self.sent = 0
        self.nreq = 0
        self.upgraded = False
        self.paused = False
        self.producer: Iterator[bytes] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()

    # --- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.backend.sndbuf:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.backend.sndbuf)
        self.backend.conns.append(self)
        self.backend.notify()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.upgraded:
            return
        if len(self.raw) < 4096:
            self.raw += data[: 4096 - len(self.raw)]
        self.backend.bytes_received += len(data)
        self._feed(data)
        self.backend.notify()

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # an upgrade request: llhttp ends it at its head and what follows belongs to
            # the new protocol; this backend declined (answered in on_message_complete)
            # and ends the connection, as a server built on llhttp does
            self.upgraded = True
            self.close()
        except httptools.HttpParserError as exc:
            self.backend.invalid.append(f"{exc!r} in {data[:200]!r} (received {self.raw!r})")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.backend.notify()

    def pause_writing(self) -> None:
        self.paused = True
        if self.backend.on_pause is not None:
            self.backend.on_pause()

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()

    # --- httptools
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = bytearray()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.nreq += 1
        req = Req(
            self,
            self.parser.get_method().decode("latin-1"),
            self._url,
            self.parser.get_http_version(),
            self._headers,
            bytes(self._body),
            self.parser.should_upgrade(),
        )
        self.backend.requests.append(req)
        reply = self.backend.answer(req)
        if reply is not None:
            self.write(reply)
        self.backend.notify()

    # --- helpers
    @property
    def closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.closed:
            assert self.transport is not None
            self.transport.write(data)
            self.sent += len(data)
            self.backend.bytes_sent += len(data)

    def stream(self, head: bytes, body: Iterator[bytes]) -> None:
        """Write `head`, then `body` as fast as the transport takes it (pause_writing)."""
        self.write(head)
        self.producer = body
        self.pump()

    def pump(self) -> None:
        while self.producer is not None and not self.paused and not self.closed:
            piece = next(self.producer, None)
            if piece is None:
                self.producer = None
                break
            self.write(piece)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RawBackend:
    """An HTTP/1.1 origin on a raw asyncio server: records connections, bytes, requests."""

    def __init__(self, name: str, answer: Answer | None = None, sndbuf: int = 0) -> None:
        self.name = name
        self.answer: Answer = answer or self.default_answer
        self.sndbuf = sndbuf
        self.conns: list[BackendConn] = []
        self.requests: list[Req] = []
        self.invalid: list[str] = []
        self.bytes_received = 0
        self.bytes_sent = 0
        self.on_pause: Callable[[], None] | None = None
        self.server: asyncio.Server | None = None
        self.port = 0
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def default_answer(self, req: Req) -> bytes:
        return ok(self.name.encode())

    @property
    def spec(self) -> BackendSpec:
        return BackendSpec("127.0.0.1", self.port)

    @property
    def id(self) -> str:
        return self.spec.id

    def used_conns(self) -> list[BackendConn]:
        """Connections that carried a request (not the TCP health checks' connects)."""
        return [c for c in self.conns if c.received]

    def notify(self) -> None:
        for pred, fut in list(self._waiters):
            if not fut.done() and pred():
                fut.set_result(None)

    async def until(self, pred: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Wait until `pred()` holds, re-checked whenever this backend sees something."""
        if pred():
            return
        waiter = (pred, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter[1], timeout)
        finally:
            self._waiters.remove(waiter)

    async def start(self) -> RawBackend:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: BackendConn(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for c in self.conns:
            c.close()
        await asyncio.wait_for(asyncio.gather(*(c.lost for c in self.conns)), TIMEOUT)
        if self.server is not None:
            await asyncio.wait_for(self.server.wait_closed(), TIMEOUT)


RawBackendFactory = Callable[..., Awaitable[RawBackend]]


@pytest.fixture
async def raw_backends() -> AsyncIterator[RawBackendFactory]:
    started: list[RawBackend] = []

    async def make(name: str, answer: Answer | None = None, sndbuf: int = 0) -> RawBackend:
        b = await RawBackend(name, answer, sndbuf).start()
        started.append(b)
        return b

    yield make
    for b in started:
        with contextlib.suppress(Exception):
            await b.stop()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


# ====================================================================== clients
@dataclass
class Resp:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    interim: list[int]


async def read_response(
    reader: asyncio.StreamReader, method: str = "GET", timeout: float = TIMEOUT
) -> Resp:
    """One response (interim 1xx heads collected), framed as a client would."""

    async def read() -> Resp:
        interim: list[int] = []
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head[:-4].split(b"\r\n")
            version, code = lines[0].split(b" ", 2)[:2]
            assert version in (b"HTTP/1.1", b"HTTP/1.0"), lines[0]
            status = int(code)
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= status < 200:
                interim.append(status)
                continue
            break
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    assert await reader.readuntil(b"\r\n") == b"\r\n"  # (no trailers here)
                    break
                parts.append(await reader.readexactly(size))
                assert await reader.readexactly(2) == b"\r\n"
            body = b"".join(parts)
        elif b"content-length" in headers:
            body = await reader.readexactly(int(headers[b"content-length"]))
        else:
            body = await reader.read()  # close-delimited
        return Resp(status, headers, body, interim)

    return await asyncio.wait_for(read(), timeout)


def get(path: str = "/", extra: bytes = b"", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n"


@contextlib.asynccontextmanager
async def client(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def until_eof(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), TIMEOUT)


async def fetch(port: int, path: str = "/") -> Resp:
    async with client(port) as (r, w):
        w.write(get(path, b"Connection: close\r\n"))
        resp = await read_response(r)
        assert await until_eof(r) == b""
        return resp
