"""Python relay fixes: every pipelined request line is checked, a slow-reading client is
not blamed on the backend, a half-closed client still gets its answers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy_helpers import BackendFactory, ProxyFactory, raw_exchange

from parlour.proxy.config import ProxyConfig
from parlour.proxy.control import BackendSpec
from parlour.proxy.headers import BadRequest, validate_request
from parlour.proxy.http_relay import HttpClient
from parlour.proxy.runtime import ProxyRuntime
from parlour.transports.testing import FakeTransport

H = b"Host: x\r\n"


def get(path: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\n" + H + extra + b"\r\n"


def post_length(path: bytes, body: bytes) -> bytes:
    return b"POST %b HTTP/1.1\r\n%bContent-Length: %d\r\n\r\n%b" % (path, H, len(body), body)


def post_chunked(
    path: bytes, chunks: list[bytes], *, ext: bool = False, trailer: bool = False
) -> bytes:
    framed = b"".join(b"%x%b\r\n%b\r\n" % (len(c), b";e=1" if ext else b"", c) for c in chunks if c)
    end = b"0\r\nX-Trailer: t\r\n\r\n" if trailer else b"0\r\n\r\n"
    return b"POST %b HTTP/1.1\r\n%bTransfer-Encoding: chunked\r\n\r\n%b%b" % (path, H, framed, end)


# request lines llhttp takes but the proxy refuses (as the first line of a read)
BAD_LINES: dict[str, bytes] = {
    "no version (HTTP/0.9 to llhttp)": b"GET /0HTTP/1.1\r\n" + H + b"\r\n",
    "two spaces": b"GET  /x HTTP/1.1\r\n" + H + b"\r\n",
    "control byte in target": b"GET /\x01x HTTP/1.1\r\n" + H + b"\r\n",
    "HTTP/2.0": b"GET /x HTTP/2.0\r\n" + H + b"\r\n",
    "HTTP/0.9 line": b"GET /x\r\n\r\n",
}

# ---------------------------------------------------------------- 1. pipelined lines


@pytest.mark.parametrize("name", sorted(BAD_LINES))
@pytest.mark.parametrize(
    "first",
    [
        get(b"/"),
        post_length(b"/echo", b"abc"),
        post_chunked(b"/echo", [b"ab", b"c"], ext=True, trailer=True),
    ],
    ids=["get", "length body", "chunked body"],
)
async def test_pipelined_bad_request_line_gets_400_and_never_reaches_backend(
    backends: BackendFactory, proxy: ProxyFactory, name: str, first: bytes
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    out = await raw_exchange(rt.listen_port or 0, first + BAD_LINES[name])
    assert out.count(b"HTTP/1.1 200 OK") == 1, out
    assert b"HTTP/1.1 400 Bad Request" in out and b"HTTP/0.9" not in out
    assert out.index(b"HTTP/1.1 200") < out.index(b"HTTP/1.1 400")
    assert [r.path for r in a.seen] == [first.split(b" ")[1].decode()]


async def test_pipelined_requests_after_bodies_all_reach_backend(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    data = (
        post_length(b"/echo", b"hello")
        + b"\r\n"  # (an empty line between messages is allowed)
        + post_chunked(b"/echo", [b"ab", b"GET / HTTP/1.1\r\n\r\n"], ext=True, trailer=True)
        + get(b"/one")
        + post_chunked(b"/echo", [])
        + get(b"/two", b"Connection: close\r\n")
    )
    out = await raw_exchange(rt.listen_port or 0, data)
    assert out.count(b"HTTP/1.1 200 OK") == 5 and b"400" not in out, out
    assert [r.path for r in a.seen] == ["/echo", "/echo", "/one", "/echo", "/two"]
    assert a.bodies == [b"hello", b"abGET / HTTP/1.1\r\n\r\n", b""]


def validate(version: str) -> None:
    validate_request("GET", b"/", version, [(b"Host", b"x")], upgrade=False)


@pytest.mark.python_relay  # (a unit test: no data plane)
def test_validate_request_refuses_versions_other_than_1_0_and_1_1() -> None:
    validate("1.1")
    validate("1.0")
    for version in ("0.9", "2.0", "1.2", "9.9", ""):
        with pytest.raises(BadRequest):
            validate(version)


_body = st.binary(max_size=40)
_message = st.one_of(
    st.builds(lambda p: get(b"/g%d" % p), st.integers(0, 99)),
    st.builds(lambda p, b: post_length(b"/l%d" % p, b), st.integers(0, 99), _body),
    st.builds(
        lambda p, c, e, t: post_chunked(b"/c%d" % p, c, ext=e, trailer=t),
        st.integers(0, 99),
        st.lists(_body, max_size=3),
        st.booleans(),
        st.booleans(),
    ),
)


@pytest.mark.python_relay  # (the relay's parsing side, in process)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(_message, min_size=1, max_size=4),
    bad=st.one_of(st.none(), st.sampled_from(sorted(BAD_LINES))),
    cuts=st.lists(st.integers(0, 2000), max_size=4),
)
def test_every_request_line_is_checked_wherever_reads_split_the_stream(
    messages: list[bytes], bad: str | None, cuts: list[int]
) -> None:
    """The relay's parsing side alone (nothing dispatched): whatever the read boundaries,
    every good message is queued in order and a bad request line after them is refused."""
    data = b"".join(messages) + (BAD_LINES[bad] + get(b"/after") if bad else b"")
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[i:j] for i, j in zip([0, *points], [*points, len(data)], strict=True)]

    async def run() -> list[tuple[bytes | None, str | None]]:
        conn = HttpClient(ProxyRuntime(ProxyConfig(admin_port=None)).upstreams)
        conn._pump = lambda: None  # type: ignore[method-assign]  # parse only
        conn.connection_made(FakeTransport(("127.0.0.1", 5555)))
        for piece in pieces:
            if piece:
                conn.data_received(piece)
        return [(r.head.url if r.head else None, r.error) for r in conn.queue]

    got = asyncio.run(run())
    want: list[tuple[bytes | None, str | None]] = [(m.split(b" ")[1], None) for m in messages]
    if bad is None:
        assert got == want
    else:
        assert got[: len(want)] == want and len(got) == len(want) + 1
        assert got[-1][0] is None and got[-1][1] is not None


# ------------------------------------------------------------ 2. slow-reading clients


class StreamBackend:
    """A raw backend: `/big?n=N` streams N bytes (Content-Length), `/hang` never answers.
    `cut` is set when the proxy drops a connection in the middle of a response."""

    def __init__(self) -> None:
        self.cut = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> StreamBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ")[1].decode()
                if path.startswith("/hang"):
                    await reader.read()  # until the proxy gives up
                    return
                n = int(path.partition("n=")[2] or "0")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                block = b"x" * 65536
                sent = 0
                try:
                    while sent < n:
                        piece = block[: min(len(block), n - sent)]
                        writer.write(piece)
                        sent += len(piece)
                        await writer.drain()
                except ConnectionError:
                    self.cut.set()
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # (between requests: health checks, pooled connections closing)
        finally:
            writer.close()


@pytest.fixture
async def stream_backend() -> AsyncIterator[StreamBackend]:
    b = await StreamBackend().start()
    yield b
    await b.stop()


@pytest.fixture
def proxy_paused(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set when the relay's output to a client goes over high water (the relay then stops
    reading that client's backend)."""
    event = asyncio.Event()
    original = HttpClient.pause_writing

    def pause_writing(self: HttpClient) -> None:
        original(self)
        event.set()

    monkeypatch.setattr(HttpClient, "pause_writing", pause_writing)
    return event


async def slow_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection with a small receive buffer, so a client that does not read backs the
    proxy up soon."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Head and body (by Content-Length, or up to EOF if it is cut short)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = bytearray()
    while len(body) < length:
        piece = await asyncio.wait_for(reader.read(1 << 20), 10)
        if not piece:
            break
        body += piece
    return head, bytes(body)


BIG = 64 << 20  # more than loopback socket buffers hold, so the chain backs up


@pytest.mark.python_relay  # (the signal is the relay's; see the report for the fast lane)
async def test_client_slower_than_server_timeout_gets_whole_body_and_backend_is_not_blamed(
    stream_backend: StreamBackend, proxy: ProxyFactory, proxy_paused: asyncio.Event
) -> None:
    spec = BackendSpec("127.0.0.1", stream_backend.port)
    rt = await proxy([spec], server_timeout_s=0.3, client_timeout_s=60.0, buffer_size=16384)
    port = rt.listen_port or 0
    reader, writer = await slow_client(port)
    writer.write(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % BIG)
    await asyncio.wait_for(proxy_paused.wait(), 20)  # the proxy stopped reading the backend
    # a request to a backend that never answers, sent after that, gets its 504 only once
    # the proxy's timeout pass has run past server_timeout_s for the stalled response too
    control = await raw_exchange(port, b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n", timeout=20)
    assert control.startswith(b"HTTP/1.1 504"), control
    head, body = await read_response(reader)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200") and len(body) == BIG
    b = rt.pool.get(spec.id)
    assert b.response_errors == 1  # the /hang request only


@pytest.mark.python_relay
async def test_client_that_never_reads_is_closed_after_client_timeout(
    stream_backend: StreamBackend, proxy: ProxyFactory, proxy_paused: asyncio.Event
) -> None:
    spec = BackendSpec("127.0.0.1", stream_backend.port)
    rt = await proxy([spec], server_timeout_s=60.0, client_timeout_s=0.5, buffer_size=16384)
    reader, writer = await slow_client(rt.listen_port or 0)
    writer.write(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % BIG)
    await asyncio.wait_for(proxy_paused.wait(), 20)
    await asyncio.wait_for(stream_backend.cut.wait(), 20)  # the proxy gave up on the client
    head, body = await read_response(reader)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200") and len(body) < BIG  # cut, no error page
    assert b"HTTP/1.1 5" not in body
    b = rt.pool.get(spec.id)
    assert b.response_errors == 0 and b.health.passive_failures == 0


# ---------------------------------------------------------------- 3. half-close


async def half_closed_exchange(port: int, data: bytes) -> bytes:
    """Send `data`, shut the sending side (like `nc -N`), read until the proxy closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def test_half_closed_client_gets_its_answer(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    out = await half_closed_exchange(rt.listen_port or 0, get(b"/"))
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"\r\n\r\na"), out
    assert [r.path for r in a.seen] == ["/"]


async def test_half_closed_client_gets_every_pipelined_answer_in_order(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    data = get(b"/1") + post_length(b"/echo", b"second") + get(b"/3")
    out = await half_closed_exchange(rt.listen_port or 0, data)
    assert out.count(b"HTTP/1.1 200 OK") == 3, out
    assert b"second" in out.split(b"HTTP/1.1 200 OK")[2]  # the echo is the second answer
    assert out.endswith(b"\r\n\r\na")  # the third answer is whole
    assert [r.path for r in a.seen] == ["/1", "/echo", "/3"]


async def test_half_close_after_partial_request_answers_only_complete_ones(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    port = rt.listen_port or 0
    assert await half_closed_exchange(port, b"GET / HTTP/1.1\r\nHo") == b""
    assert await half_closed_exchange(port, b"POST /echo HTTP/1.1\r\n" + H) == b""
    out = await half_closed_exchange(port, get(b"/1") + b"POST /echo HTTP/1.1\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 1 and out.endswith(b"\r\n\r\na"), out
    out = await half_closed_exchange(port, get(b"/2") + post_length(b"/echo", b"abc")[:-1])
    assert out.count(b"HTTP/1.1 200 OK") == 1 and out.endswith(b"\r\n\r\na"), out
    assert [r.path for r in a.seen] == ["/1", "/2"]


class _ShiftedLoop:
    """The running loop with time() moved forward by `shift` (the relay reads its clock
    through `HttpClient.loop.time()`): a timeout runs out without sleeping."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.shift = 0.0

    def time(self) -> float:
        return self.loop.time() + self.shift


@pytest.mark.python_relay  # (reaches into the relay's HttpClient; the fast lane's own
# test is tests/proxy/test_proxy_fastlane_review.py)
async def test_idle_timeout_counts_from_the_end_of_the_answer(proxy: ProxyFactory) -> None:
    """idle_timeout_s is the wait between requests: after an answer that took longer than
    idle_timeout_s, the keep-alive connection is not closed at the next timeout check."""
    got_request = asyncio.Event()
    answer = asyncio.Event()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await r.readuntil(b"\r\n\r\n")
                got_request.set()
                await answer.wait()
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    idle = 5.0
    rt = await proxy(
        [BackendSpec("127.0.0.1", port)],
        idle_timeout_s=idle,
        server_timeout_s=3600.0,
        health_kind="tcp",
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
    try:
        writer.write(get(b"/first"))
        await asyncio.wait_for(got_request.wait(), 5)
        (client,) = [c for c in rt.upstreams.conns if isinstance(c, HttpClient)]
        clock = _ShiftedLoop(client.loop)
        client.loop = clock  # type: ignore[assignment]
        clock.shift = 2 * idle  # the answer comes "later" than idle_timeout_s
        answer.set()
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\nok"), 5)
        client.check_timeouts(clock.time())
        assert not client.closed
    finally:
        writer.close()
        server.close()
