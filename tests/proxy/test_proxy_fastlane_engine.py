"""End-to-end tests of the fast lane's epoll engine (src/parlour/proxy/_fastlane/engine.c).

Every test runs a real `ProxyRuntime` with the native engine on 127.0.0.1, in front of
raw asyncio backends that record every connection, byte and request they see (so the
tests can count upstream connections and bytes exactly). The module runs in the fast lane
only: the shared suite already runs both data planes; these tests are about what is
specific to the engine (pooling, escapes to the Python relay, pipelining, backpressure,
retries, timeouts, counters, fd hygiene). No sleeps: every wait is on an event, a future
or a read, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import socket
import struct
import termios
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy_helpers import ProxyFactory, epoll_events
from raw_backend import (
    TIMEOUT,
    Answer,
    RawBackend,
    RawBackendFactory,
    Req,
    client,
    fetch,
    get,
    ok,
    read_response,
    until_eof,
)

from parlour.proxy.config import ProxyConfig
from parlour.proxy.control import BackendSpec, ProxySettings
from parlour.proxy.fastlane import ENV_VAR, FastLane, native_module
from parlour.proxy.headers import BadRequest, validate_request
from parlour.proxy.runtime import ProxyRuntime

FAST_LANE_BUILT = native_module()[0] is not None
READ_SIZE = 65536  # engine.c: one read from a socket


@pytest.fixture(autouse=True)
def data_plane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Overrides the suite's data_plane fixture: this module tests the engine itself, so
    it runs in the fast lane only (conftest.FAST_LANE_ONLY)."""
    if not FAST_LANE_BUILT:
        pytest.skip("parlour.proxy._fastlane is not built")
    monkeypatch.setenv(ENV_VAR, "1")
    return "fast_lane"


# ====================================================================== escapes
@dataclass
class EscapeLog:
    """What the engine handed over to the Python relay (FastLane.escape)."""

    data: list[bytes] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
def escapes(monkeypatch: pytest.MonkeyPatch) -> EscapeLog:
    """Record escapes. The engine looks its handler's methods up when it starts, so this
    patches the class before the test starts a proxy."""
    got = EscapeLog()
    original = FastLane.escape

    def escape(self: FastLane, fd: int, data: bytes) -> None:
        got.data.append(data)
        got.event.set()
        original(self, fd, data)

    monkeypatch.setattr(FastLane, "escape", escape)
    return got


class Calls:
    """The calls the engine made to one FastLane callback, to wait on."""

    def __init__(self) -> None:
        self.args: list[tuple[Any, ...]] = []
        self._events: list[asyncio.Event] = []

    def _event(self, n: int) -> asyncio.Event:
        while len(self._events) < n:
            self._events.append(asyncio.Event())
        return self._events[n - 1]

    def record(self, args: tuple[Any, ...]) -> None:
        self.args.append(args)
        self._event(len(self.args)).set()

    async def wait(self, n: int) -> None:
        """Wait until the callback has been called `n` times in all."""
        await asyncio.wait_for(self._event(n).wait(), TIMEOUT)


Spy = Callable[[str], Calls]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    """spy("admit") records FastLane.admit's calls (patch before the proxy starts: the
    engine looks its handler's methods up once)."""

    def make(name: str) -> Calls:
        calls = Calls()
        original = getattr(FastLane, name)

        def wrapper(self: FastLane, *args: Any) -> Any:
            calls.record(args)
            return original(self, *args)

        monkeypatch.setattr(FastLane, name, wrapper)
        return calls

    return make


def engine_clients(rt: ProxyRuntime) -> int:
    assert rt.fast_lane is not None and rt.fast_lane.engine is not None
    return rt.fast_lane.engine.clients


def snapshot(rt: ProxyRuntime, b: RawBackend) -> Any:
    (snap,) = [s for s in rt.backends() if s.id == b.id]
    return snap


# ====================================================================== keep-alive
async def test_keep_alive_requests_reuse_pooled_upstream_connections(
    raw_backends: RawBackendFactory, proxy: ProxyFactory, escapes: EscapeLog
) -> None:
    a, b = await raw_backends("a"), await raw_backends("b")
    rt = await proxy([a.spec, b.spec])
    n = 10
    names = []
    async with client(rt.listen_port or 0) as (reader, writer):
        for i in range(n):
            writer.write(get(f"/{i}"))
            resp = await read_response(reader)
            assert resp.status == 200 and resp.headers.get(b"connection") != b"close"
            names.append(resp.body)
        assert engine_clients(rt) == 1
    # round robin alternates per request, each backend on a single pooled connection
    assert set(names) == {b"a", b"b"} and names == names[:2] * (n // 2)
    first = a if names[0] == b"a" else b
    assert [r.url for r in first.requests] == [f"/{i}".encode() for i in range(0, n, 2)]
    assert len(a.requests) == len(b.requests) == n // 2
    assert len(a.used_conns()) == len(b.used_conns()) == 1
    assert sum(c.nreq for c in a.used_conns() + b.used_conns()) == n
    for backend in (a, b):
        snap = snapshot(rt, backend)
        assert (snap.requests, snap.total_conns, snap.retries) == (n // 2, 1, 0)
    assert escapes.data == []  # all of them in the engine


async def test_pool_keeps_as_many_connections_as_were_busy_at_once(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    """max_idle_upstream is a floor, not a ceiling: after n requests were in flight on a
    backend at once, all n connections are kept (a second wave of n connects nothing),
    where a pool of max_idle_upstream=1 would close n-1 and connect them again."""
    held: list[Req] = []

    def answer(req: Req) -> bytes | None:
        held.append(req)
        return None  # answered by the test, all together

    a = await raw_backends("a", answer)
    rt = await proxy([a.spec], max_idle_upstream=1)
    n = 4
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(client(rt.listen_port or 0)) for _ in range(n)]
        for wave in range(2):
            held.clear()
            for i, (_, writer) in enumerate(clients):
                writer.write(get(f"/{wave}/{i}"))
            await a.until(lambda: len(held) == n)
            for req in held:
                req.conn.write(ok(b"x"))
            for reader, _ in clients:
                assert (await read_response(reader)).status == 200
            assert len(a.used_conns()) == n  # the second wave reused the first's
    assert snapshot(rt, a).total_conns == n


# ====================================================================== escapes
ESCAPES = {
    "post_with_body": (b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
    "http_1_0": (b"GET /e HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", b""),
    "upgrade": (b"GET /e HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", b""),
    "x_forwarded_for": (b"GET /e HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n", b""),
}


@pytest.mark.parametrize("kind", sorted(ESCAPES))
async def test_escaped_request_answered_by_python_relay_on_the_same_connection(
    raw_backends: RawBackendFactory, proxy: ProxyFactory, escapes: EscapeLog, kind: str
) -> None:
    request, body = ESCAPES[kind]
    a = await raw_backends("a")
    rt = await proxy([a.spec])
    async with client(rt.listen_port or 0) as (reader, writer):
        writer.write(get("/before"))
        assert (await read_response(reader)).body == b"a"
        assert engine_clients(rt) == 1 and escapes.data == [] and not rt.upstreams.conns
        writer.write(request)
        resp = await read_response(reader)
        assert (resp.status, resp.body) == (200, b"a")
        # handed over with exactly the bytes read: the engine forgot the connection
        assert escapes.data == [request]
        assert engine_clients(rt) == 0
        if kind == "upgrade":
            # the backend declined the upgrade: the Python relay ends the connection
            assert resp.headers.get(b"connection") == b"close"
            assert await until_eof(reader) == b""
            assert [r.url for r in a.requests] == [b"/before", b"/e"]
            return
        assert resp.headers.get(b"connection") != b"close" and len(rt.upstreams.conns) == 1
        for i in range(2):  # later simple requests keep working (in the Python relay)
            writer.write(get(f"/after{i}"))
            assert (await read_response(reader)).body == b"a"
    assert [r.url for r in a.requests] == [b"/before", b"/e", b"/after0", b"/after1"]
    escaped = a.requests[1]
    assert escaped.body == body
    if kind == "x_forwarded_for":
        xff = escaped.header(b"x-forwarded-for") or b""
        assert xff.endswith(b"127.0.0.1")
    assert len(escapes.data) == 1


async def test_head_split_across_writes_escapes_and_completes(
    raw_backends: RawBackendFactory, proxy: ProxyFactory, escapes: EscapeLog
) -> None:
    a = await raw_backends("a")
    rt = await proxy([a.spec])
    request = get("/split", b"Accept: */*\r\n")
    first, second = request[:20], request[20:]
    async with client(rt.listen_port or 0) as (reader, writer):
        writer.write(first)
        # the event: the engine read the incomplete head and handed it to Python
        await asyncio.wait_for(escapes.event.wait(), TIMEOUT)
        assert escapes.data == [first]
        assert engine_clients(rt) == 0 and len(rt.upstreams.conns) == 1
        assert a.requests == []
        writer.write(second)
        resp = await read_response(reader)
        assert (resp.status, resp.body) == (200, b"a")
        writer.write(get("/next"))
        assert (await read_response(reader)).body == b"a"
    assert [r.url for r in a.requests] == [b"/split", b"/next"]
    assert a.requests[0].header(b"accept") == b"*/*"


# ====================================================================== pipelining
PIPELINE_ANSWERS = {
    b"/len": ok(b"length-body"),
    b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4\r\nchun\r\n3;ext=1\r\nked\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"/head": b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n",
    b"/204": b"HTTP/1.1 204 No Content\r\n\r\n",
    b"/103": b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + ok(b"after"),
}


def pipeline_answer(req: Req) -> bytes | None:
    if req.url == b"/close":
        req.conn.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close")
        req.conn.close()
        return None
    return PIPELINE_ANSWERS[req.url]


async def test_pipelined_requests_answered_in_order_with_mixed_framings(
    raw_backends: RawBackendFactory, proxy: ProxyFactory, escapes: EscapeLog
) -> None:
    a = await raw_backends("a", pipeline_answer)
    rt = await proxy([a.spec])
    plan = [
        ("GET", "/len", 200, b"length-body", []),
        ("GET", "/chunked", 200, b"chunked", []),
        ("HEAD", "/head", 200, b"", []),
        ("GET", "/204", 204, b"", []),
        ("GET", "/103", 200, b"after", [103]),
        ("GET", "/len", 200, b"length-body", []),
        ("GET", "/close", 200, b"until-close", []),
    ]
    async with client(rt.listen_port or 0) as (reader, writer):
        writer.write(b"".join(get(path, method=method) for method, path, *_ in plan))
        for method, path, status, body, interim in plan:
            resp = await read_response(reader, method)
            assert (resp.status, resp.body, resp.interim) == (status, body, interim), path
            if path == "/head":
                assert resp.headers[b"content-length"] == b"11"
            if path == "/close":
                assert resp.headers.get(b"connection") == b"close"
            else:
                assert resp.headers.get(b"connection") != b"close"
        assert await until_eof(reader) == b""
    assert [(r.method, r.url.decode()) for r in a.requests] == [(m, p) for m, p, *_ in plan]
    assert escapes.data == []  # every one of them relayed by the engine
    # one upstream connection until the close-delimited response ended it
    assert len(a.used_conns()) == 1


async def test_pipelined_request_behind_simple_ones_escapes_after_their_answers(
    raw_backends: RawBackendFactory, proxy: ProxyFactory, escapes: EscapeLog
) -> None:
    a = await raw_backends("a", lambda req: ok(req.url + b":" + req.body))
    rt = await proxy([a.spec])
    post = b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
    async with client(rt.listen_port or 0) as (reader, writer):
        writer.write(get("/one") + post + get("/three"))
        for body in (b"/one:", b"/two:body", b"/three:"):
            resp = await read_response(reader)
            assert (resp.status, resp.body) == (200, body)
    # the engine answered the first, then handed over exactly the rest
    assert escapes.data == [post + get("/three")]
    assert [r.url for r in a.requests] == [b"/one", b"/two", b"/three"]


# ====================================================================== backpressure
def _ioctl_int(fd: int, request: int) -> int:
    return int(struct.unpack("i", fcntl.ioctl(fd, request, b"\0\0\0\0"))[0])


def _own_socket_fd(local: tuple[str, int], peer: tuple[str, int]) -> int:
    """The fd in this process of the TCP socket `local` <-> `peer` (the engine's side)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            s = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            continue
        with s:
            try:
                if s.getsockname()[:2] == local and s.getpeername()[:2] == peer:
                    return fd
            except OSError:
                continue
    raise AssertionError(f"no socket {local} <-> {peer} in this process")


def _sysctl_max(name: str) -> int:
    with open(f"/proc/sys/net/ipv4/{name}") as f:
        return int(f.read().split()[2])


async def test_large_response_to_a_slow_reader_is_bounded_then_delivered_intact(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    block = 65536
    # more than every kernel buffer between the backend and the client can hold, so the
    # backend cannot finish while the client does not read
    nblocks = (_sysctl_max("tcp_rmem") + 2 * _sysctl_max("tcp_wmem")) // block + 64
    total = nblocks * block

    def body() -> Iterator[bytes]:
        for i in range(nblocks):
            yield i.to_bytes(4, "big") * (block // 4)

    def answer(req: Req) -> None:
        req.conn.stream(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total, body())
        return None

    a = await raw_backends("a", answer, sndbuf=65536)
    buffer_size = 16384
    rt = await proxy([a.spec], buffer_size=buffer_size)
    fast = rt.fast_lane
    assert fast is not None and fast.engine is not None
    engine = fast.engine
    epfd = engine.fileno()
    loop = asyncio.get_running_loop()

    cl = socket.socket()
    cl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # fixed: no autotuning
    cl.setblocking(False)
    with cl:
        await loop.sock_connect(cl, ("127.0.0.1", rt.listen_port or 0))
        client_fd = _own_socket_fd(cl.getpeername()[:2], cl.getsockname()[:2])
        # The state to reach: the engine no longer asks epoll for the backend's data
        # while the backend's send is blocked (its transport paused: every buffer on the
        # way is full). Checked after every engine poll (the engine changes its epoll
        # set only then) and whenever the backend pauses. A proxy that keeps reading
        # never gets there; one that buffered everything lets the backend finish.
        quiet = asyncio.Event()
        up_fd: list[int] = []

        def check() -> None:
            conns = a.used_conns()
            if not conns or conns[0].transport is None:
                return
            if not up_fd:
                t = conns[0].transport
                up_fd.append(
                    _own_socket_fd(
                        t.get_extra_info("peername")[:2], t.get_extra_info("sockname")[:2]
                    )
                )
            if conns[0].paused and not epoll_events(epfd, up_fd[0]) & select.EPOLLIN:
                quiet.set()

        def poll() -> None:
            engine.poll()
            check()

        a.on_pause = check
        loop.remove_reader(epfd)
        loop.add_reader(epfd, poll)
        try:
            await loop.sock_sendall(cl, get("/big"))
            await asyncio.wait_for(quiet.wait(), TIMEOUT)
            assert a.used_conns()[0].producer is not None  # the backend has not finished
            # the engine holds at most buffer_size plus one read in user space: what it
            # read from the backend minus what the kernel holds for the client (SIOCOUTQ
            # counts sent-but-unacknowledged bytes the client may hold too: lenient)
            read_from_backend = snapshot(rt, a).bytes_in
            in_kernel = _ioctl_int(cl.fileno(), termios.FIONREAD) + _ioctl_int(
                client_fd, termios.TIOCOUTQ
            )
            held = read_from_backend - in_kernel
            assert held <= buffer_size + READ_SIZE, (read_from_backend, in_kernel)
            assert read_from_backend < total
        finally:
            loop.remove_reader(epfd)
            loop.add_reader(epfd, engine.poll)
        # now the client reads everything: intact, in order
        data = bytearray()
        while b"\r\n\r\n" not in data:
            data += await asyncio.wait_for(loop.sock_recv(cl, READ_SIZE), TIMEOUT)
        head, _, rest = bytes(data).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % total in head
        got = 0
        pending = bytearray(rest)
        while got < total:
            while len(pending) >= block:
                assert pending[:block] == (got // block).to_bytes(4, "big") * (block // 4)
                del pending[:block]
                got += block
            if got < total:
                chunk = await asyncio.wait_for(loop.sock_recv(cl, 1 << 20), TIMEOUT)
                assert chunk, "the proxy closed before the end of the body"
                pending += chunk
        assert not pending
    assert snapshot(rt, a).bytes_in == a.bytes_sent


# ====================================================================== retries
async def test_backend_closing_a_reused_connection_is_retried_on_a_fresh_one(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    """The backend closes its keep-alive connection just as the next request arrives on
    it (the stale-connection race, made deterministic): retried once, fresh, and
    answered; the passive health is not touched."""

    def answer(req: Req) -> bytes | None:
        if req.conn.nreq == 2:
            req.conn.close()  # as if the keep-alive timeout had just expired
            return None
        return ok(req.url)

    a = await raw_backends("a", answer)
    rt = await proxy([a.spec])
    async with client(rt.listen_port or 0) as (reader, writer):
        for path in ("/one", "/two"):
            writer.write(get(path))
            resp = await read_response(reader)
            assert (resp.status, resp.body) == (200, path.encode())
    assert [r.url for r in a.requests] == [b"/one", b"/two", b"/two"]
    assert [c.nreq for c in a.used_conns()] == [2, 1]
    snap = snapshot(rt, a)
    assert (snap.requests, snap.retries, snap.response_errors) == (3, 1, 0)
    assert rt.pool.get(a.id).health.passive_failures == 0


async def test_backend_closing_idle_pooled_connections_is_harmless(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    """A backend that closes every connection right after its (keep-alive) answer: the
    engine may or may not have seen the close before the next request; either way every
    request is answered, each on a fresh connection."""

    def answer(req: Req) -> None:
        req.conn.write(ok(req.url))
        req.conn.close()
        return None

    a = await raw_backends("a", answer)
    rt = await proxy([a.spec])
    n = 5
    async with client(rt.listen_port or 0) as (reader, writer):
        for i in range(n):
            writer.write(get(f"/{i}"))
            resp = await read_response(reader)
            assert (resp.status, resp.body) == (200, f"/{i}".encode())
    assert [c.nreq for c in a.used_conns()] == [1] * n
    snap = snapshot(rt, a)
    assert snap.requests == n + snap.retries and snap.response_errors == 0


# ====================================================================== bad responses
BAD_RESPONSES = {
    "garbage_status_line": (b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n", False),
    "not_http": (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", False),
    "length_and_chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        False,
    ),
    "two_lengths": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab", False),
    "bad_chunk_size": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
        True,
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_RESPONSES))
async def test_bad_response_gives_502_or_a_cut(
    raw_backends: RawBackendFactory, proxy: ProxyFactory, kind: str
) -> None:
    reply, started = BAD_RESPONSES[kind]
    a = await raw_backends("a", lambda req: reply if req.url == b"/bad" else ok(b"fine"))
    rt = await proxy([a.spec])
    async with client(rt.listen_port or 0) as (reader, writer):
        writer.write(get("/bad"))
        if started:
            out = await until_eof(reader)  # the head went out: the break is a close
            assert out.startswith(b"HTTP/1.1 200 ") and b"3\r\nabc\r\n" in out
            assert not out.endswith(b"0\r\n\r\n")
        else:
            resp = await read_response(reader)
            assert resp.status == 502 and resp.headers.get(b"connection") == b"close"
            assert await until_eof(reader) == b""
    snap = snapshot(rt, a)
    assert (snap.requests, snap.response_errors) == (1, 1)
    assert (await fetch(rt.listen_port or 0)).body == b"fine"  # the proxy goes on
    # the broken upstream connection was closed, not pooled
    await a.until(lambda: a.used_conns()[0].lost.done())


# ====================================================================== timeouts
async def test_response_timeout_gives_504_and_a_passive_failure(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    a = await raw_backends("a", lambda req: None)  # never answers
    rt = await proxy([a.spec], server_timeout_s=0.2)
    async with client(rt.listen_port or 0) as (reader, writer):
        writer.write(get("/slow"))
        resp = await read_response(reader)
        assert resp.status == 504 and resp.headers.get(b"connection") == b"close"
        assert await until_eof(reader) == b""
    assert rt.pool.get(a.id).health.passive_failures == 1
    assert rt.pool.get(a.id).health.last_reason == "response timeout"
    assert snapshot(rt, a).response_errors == 1
    await a.until(lambda: a.used_conns()[0].lost.done())  # the upstream is closed
    assert engine_clients(rt) == 0


async def test_idle_clients_are_closed_after_idle_timeout(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    a = await raw_backends("a")
    rt = await proxy([a.spec], idle_timeout_s=0.2)
    port = rt.listen_port or 0
    async with client(port) as (silent_r, _), client(port) as (reader, writer):
        writer.write(get())
        assert (await read_response(reader)).body == b"a"
        # the silent client connected first, so the engine accepted it before this one
        assert engine_clients(rt) == 2
        assert await until_eof(reader) == b""
        assert await until_eof(silent_r) == b""
    assert engine_clients(rt) == 0


# ====================================================================== statistics
async def test_statistics_are_exact(raw_backends: RawBackendFactory, proxy: ProxyFactory) -> None:
    def sized(name: bytes) -> Answer:
        return lambda req: ok(name * (1 + len(req.url)))

    a, b = await raw_backends("a", sized(b"a")), await raw_backends("b", sized(b"bb"))
    rt = await proxy([a.spec, b.spec])
    paths = [f"/{'p' * i}" for i in range(12)]
    port = rt.listen_port or 0
    for start in range(0, len(paths), 4):  # three client connections, four requests each
        async with client(port) as (reader, writer):
            for path in paths[start : start + 4]:
                writer.write(get(path))
                assert (await read_response(reader)).status == 200
    snaps = {s.id: s for s in rt.backends()}
    for backend in (a, b):
        snap = snaps[backend.id]
        assert snap.requests == len(backend.requests) == len(paths) // 2
        assert snap.bytes_out == backend.bytes_received  # proxy -> backend
        assert snap.bytes_in == backend.bytes_sent  # backend -> proxy
        assert (snap.retries, snap.response_errors, snap.connect_errors) == (0, 0, 0)
        assert len(rt.pool.get(backend.id).latencies_ms) == snap.requests
        assert snap.p50_ms is not None and snap.p99_ms is not None
    totals = rt.own_totals()
    assert totals.requests == len(paths) and totals.errors == 0
    assert totals.bytes_in == a.bytes_sent + b.bytes_sent
    assert totals.bytes_out == a.bytes_received + b.bytes_received
    again = rt.own_totals()  # a second harvest adds nothing
    assert (again.requests, again.bytes_in, again.bytes_out) == (
        totals.requests,
        totals.bytes_in,
        totals.bytes_out,
    )
    assert [s.requests for s in again.backends] == [s.requests for s in totals.backends]


# ====================================================================== admission, stop
async def test_max_connections_refuses_the_extra_client_with_503(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    a = await raw_backends("a")
    rt = await proxy([a.spec], max_connections=2)
    port = rt.listen_port or 0
    async with client(port) as (r1, w1), client(port) as (r2, w2):
        for r, w in ((r1, w1), (r2, w2)):
            w.write(get())
            assert (await read_response(r)).body == b"a"
        assert engine_clients(rt) == 2
        async with client(port) as (r3, _):
            resp = await read_response(r3)
            assert resp.status == 503 and await until_eof(r3) == b""
        assert rt.upstreams.counters.rejected == 1
        # one leaves (the proxy closes it), a newcomer is admitted again
        w1.write(get(extra=b"Connection: close\r\n"))
        assert (await read_response(r1)).body == b"a" and await until_eof(r1) == b""
        assert engine_clients(rt) == 1
        assert (await fetch(port)).body == b"a"
    assert rt.upstreams.counters.rejected == 1


async def test_stop_finishes_in_flight_request_with_close_and_closes_idle_clients(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    held: list[Req] = []

    def answer(req: Req) -> bytes | None:
        if req.url == b"/slow":
            held.append(req)
            return None
        return ok(b"fast")

    a = await raw_backends("a", answer)
    rt = await proxy([a.spec])
    port = rt.listen_port or 0
    async with client(port) as (idle_r, idle_w), client(port) as (busy_r, busy_w):
        idle_w.write(get())
        assert (await read_response(idle_r)).body == b"fast"
        busy_w.write(get("/slow"))
        await a.until(lambda: bool(held))
        stopping = asyncio.create_task(rt.stop(drain_timeout_s=TIMEOUT))
        assert await until_eof(idle_r) == b""  # idle: closed at once
        assert not stopping.done()
        held[0].conn.write(ok(b"late"))
        resp = await read_response(busy_r)
        assert (resp.status, resp.body) == (200, b"late")
        assert resp.headers.get(b"connection") == b"close"
        assert await until_eof(busy_r) == b""
        await asyncio.wait_for(stopping, TIMEOUT)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_request_waiting_in_the_queue_survives_the_client_closing_its_side(
    raw_backends: RawBackendFactory, proxy: ProxyFactory, spy: Spy
) -> None:
    """max_conns=1: a second request waits in the queue (select -> None, then the slot
    comes back through `proceed`); its client closes its side meanwhile. A FIN cannot tell
    a half-close (`nc -N`: "that was my request, now answer") from a client that left, so
    — as HAProxy without `abortonclose` — the request stays queued and is relayed when
    the slot frees; the engine then closes that connection and the slot is released, so
    the next client is served."""
    admits, selects = spy("admit"), spy("select")
    held: list[Req] = []

    def answer(req: Req) -> bytes | None:
        if req.url == b"/hold":
            held.append(req)
            return None
        return ok(req.url)

    a = await raw_backends("a", answer)
    rt = await proxy([BackendSpec("127.0.0.1", a.port, max_conns=1)], queue_timeout_s=TIMEOUT)
    port = rt.listen_port or 0
    async with client(port) as (hold_r, hold_w):
        hold_w.write(get("/hold"))
        await a.until(lambda: bool(held))
        async with client(port) as (_, gone_w):
            gone_w.write(get("/gone"))
            await selects.wait(2)  # the engine read it: it waits for a slot now
        async with client(port) as (next_r, next_w):
            await admits.wait(3)
            held[0].conn.write(ok(b"held"))
            assert (await read_response(hold_r)).body == b"held"
            next_w.write(get("/next"))
            assert (await read_response(next_r)).body == b"/next"
    assert [r.url for r in a.requests] == [b"/hold", b"/gone", b"/next"]
    assert rt.pool.get(a.id).active == 0
    snap = snapshot(rt, a)
    assert (snap.requests, snap.connect_errors, snap.response_errors) == (3, 0, 0)


async def test_removed_backend_loses_its_pooled_connections(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    a, b = await raw_backends("a"), await raw_backends("b")
    rt = await proxy([a.spec, b.spec])
    port = rt.listen_port or 0
    async with client(port) as (reader, writer):
        for _ in range(2):
            writer.write(get())
            assert (await read_response(reader)).status == 200
        assert len(a.used_conns()) == len(b.used_conns()) == 1  # both pooled now
        rt.remove_backend(b.id)
        await b.until(lambda: b.used_conns()[0].lost.done())  # closed by the engine
        for _ in range(3):
            writer.write(get())
            assert (await read_response(reader)).body == b"a"
    assert len(a.used_conns()) == 1 and len(b.requests) == 1


# ====================================================================== fd hygiene
def count_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_no_fd_leaks(raw_backends: RawBackendFactory, proxy: ProxyFactory) -> None:
    before = count_fds()

    def answer(req: Req) -> bytes | None:
        if req.url == b"/bad":
            return b"HTTP/1.1 999999 nope\r\n\r\n"
        if req.url == b"/drop":
            req.conn.close()
            return None
        return ok(b"ok")

    a = await raw_backends("a", answer)
    rt = await proxy([a.spec], max_connections=1000)
    port = rt.listen_port or 0
    statuses: list[int] = []
    for i in range(300):
        kind = (i + 1) % 6  # (the last one completes a request: see below)
        async with client(port) as (reader, writer):
            if kind == 0:  # keep-alive, then the client leaves
                for _ in range(2):
                    writer.write(get())
                    statuses.append((await read_response(reader)).status)
            elif kind == 1:  # the proxy closes
                writer.write(get(extra=b"Connection: close\r\n"))
                statuses.append((await read_response(reader)).status)
                assert await until_eof(reader) == b""
            elif kind == 2:  # escapes to the Python relay
                writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
                statuses.append((await read_response(reader)).status)
            elif kind == 3:  # bad response: 502
                writer.write(get("/bad"))
                statuses.append((await read_response(reader)).status)
                assert await until_eof(reader) == b""
            elif kind == 4:  # the backend drops the request: 502 (fresh connection)
                writer.write(get("/drop", b"Connection: close\r\n"))
                statuses.append((await read_response(reader)).status)
                assert await until_eof(reader) == b""
            else:  # half a head, then gone
                writer.write(b"GET / HT")
    assert statuses.count(200) == 50 * 2 + 50 + 50 and statuses.count(502) == 100
    await rt.stop(drain_timeout_s=TIMEOUT)
    await a.stop()
    assert not rt.upstreams.conns and engine_clients_after_stop(rt) == 0
    assert count_fds() == before


def engine_clients_after_stop(rt: ProxyRuntime) -> int:
    return 0 if rt.fast_lane is None else rt.fast_lane.clients


# ====================================================================== chaos
CHAOS_HEADERS = [
    b"Accept: */*",
    b"Connection: keep-alive",
    b"Connection: close",
    b"X-Forwarded-For: 198.51.100.7",
    b"Forwarded: for=198.51.100.7",
    b"Via: 1.1 elsewhere",
    b"Upgrade: h2c\r\nConnection: Upgrade",
    b"Keep-Alive: timeout=5",
    b"Proxy-Connection: keep-alive",
    b"TE: trailers",
    b"X-User: u1",
    b"Expect: 100-continue",
    b"Transfer-Encoding: chunked",
    b"Content-Length: 3",
    b"Host: y",
]


@st.composite
def chaos_request(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "GET", "GET", "OPTIONS", "DELETE", "POST", "PUT"]))
    path = draw(st.from_regex(r"/[a-z0-9/._~%-]{0,16}", fullmatch=True))
    version = draw(st.sampled_from(["1.1", "1.1", "1.1", "1.0"]))
    lines = [f"{method} {path} HTTP/{version}".encode()]
    if draw(st.integers(0, 9)):
        lines.append(b"Host: x")
    lines += draw(st.lists(st.sampled_from(CHAOS_HEADERS), max_size=3))
    body = b""
    if method in ("POST", "PUT"):
        payload = draw(st.binary(max_size=20))
        if draw(st.booleans()):
            lines.append(b"Content-Length: %d" % len(payload))
            body = payload
        else:
            lines.append(b"Transfer-Encoding: chunked")
            body = (b"%x\r\n%s\r\n" % (len(payload), payload) if payload else b"") + b"0\r\n\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "duplicate"]))
        i = draw(st.integers(0, len(data)))
        if op == "flip" and i < len(data):
            data[i] = draw(st.sampled_from([0, 9, 10, 13, 32, 58, 127, 255, ord("a")]))
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"\r\n", b"\n", b" ", b":", b"\r\n\r\n", b"\x00"]))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 4))]
        else:
            data[i:i] = data[max(0, i - 8) : i]
    return bytes(data)


SIMPLE_HEADERS = [
    b"Accept: */*",
    b"Connection: keep-alive",
    b"User-Agent: chaos/1.0",
    b"Cookie: a=b; c=d",
    b"X-User: u2",
    b"Accept-Encoding: gzip",
    b'If-None-Match: "x"',
]


@st.composite
def simple_request(draw: st.DrawFn) -> bytes:
    """What the engine relays itself: bodiless GET/OPTIONS, HTTP/1.1, plain fields."""
    method = draw(st.sampled_from(["GET", "GET", "OPTIONS"]))
    path = draw(st.from_regex(r"/[a-z0-9/._~%-]{0,16}", fullmatch=True))
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: x"]
    lines += draw(st.lists(st.sampled_from(SIMPLE_HEADERS), max_size=3))
    return b"\r\n".join(lines) + b"\r\n\r\n"


@st.composite
def chaos_stream(draw: st.DrawFn) -> tuple[list[bytes], bool, int | None]:
    """(pieces to send, half-close after them, how many 200 answers are due if known)."""
    simple = simple_request().map(lambda b: (True, b))
    other = st.one_of(
        chaos_request(),
        mutated(st.one_of(simple_request(), chaos_request())),
        st.binary(max_size=40),
    ).map(lambda b: (False, b))
    parts = draw(st.lists(st.one_of(simple, simple, simple, other), min_size=1, max_size=5))
    data = b"".join(b for _, b in parts)
    half_close = draw(st.booleans())
    expected = None
    if not half_close:  # end on a request that ends the connection (or a timeout does)
        data += get("/end", b"Connection: close\r\n")
        if all(is_simple for is_simple, _ in parts):
            expected = len(parts) + 1
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=2)))
    pieces = [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return [p for p in pieces if p], half_close, expected


def chaos_answer(req: Req) -> bytes:
    """Every response framing the engine relays, chosen by the target's length."""
    body = b"%d:%d" % (len(req.url), len(req.body))
    kind = len(req.url) % 4
    if kind == 1:
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"%x;ext=1\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (len(body), body)
        )
    if kind == 2:
        return b"HTTP/1.1 204 No Content\r\nX-Body: %s\r\n\r\n" % body
    if kind == 3:
        return b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n" + ok(body)
    return ok(body)


async def test_pipelined_versionless_request_line_is_rejected(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    a = await raw_backends("a")
    rt = await proxy([a.spec])
    first = get("/", b"X-Forwarded-For: 192.0.2.1\r\n")  # escapes: the relay reads both
    out = await raw_exchange_all(rt.listen_port or 0, first + b"GET /0HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 1 and b"HTTP/1.1 400 Bad Request" in out
    assert [r.url for r in a.requests] == [b"/"]


async def raw_exchange_all(port: int, data: bytes) -> bytes:
    """Send `data`, read until the proxy closes (bounded by TIMEOUT)."""
    async with client(port) as (reader, writer):
        writer.write(data)
        return await until_eof(reader)


class LiveProxy:
    """A fast-lane proxy and a recording backend on their own event loop thread, for
    the synchronous hypothesis test to talk to over blocking sockets."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.backend: RawBackend | None = None
        self.rt: ProxyRuntime | None = None
        self.port = 0

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def __enter__(self) -> LiveProxy:
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        self.backend = await RawBackend("chaos", chaos_answer).start()
        settings = ProxySettings(health_interval_s=60.0, client_timeout_s=1.0, idle_timeout_s=1.0)
        cfg = ProxyConfig(
            listen_port=0, admin_port=None, settings=settings, backends=(self.backend.spec,)
        )
        self.rt = ProxyRuntime(cfg)
        await self.rt.start()
        assert self.rt.fast_lane is not None, "not in the fast lane"
        self.port = self.rt.listen_port or 0

    async def _stop(self) -> None:
        if self.rt is not None:
            await self.rt.stop(drain_timeout_s=1.0)
        if self.backend is not None:
            await self.backend.stop()

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(TIMEOUT)
            self.loop.close()


def exchange(port: int, pieces: list[bytes], half_close: bool) -> bytes:
    out = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        try:
            for piece in pieces:
                s.sendall(piece)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the proxy closed already (a 400, a Connection: close)
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass  # a close too (with unread bytes from us)
        except TimeoutError:
            raise AssertionError(f"the proxy neither answered nor closed: {bytes(out)!r}") from None
    return bytes(out)


class ResponseStream:
    """httptools callbacks: the statuses of the complete responses."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:  # (interim 1xx responses come before the final one)
            self.statuses.append(status)


def check_responses(out: bytes) -> list[int]:
    """`out` must be a sequence of well-formed HTTP/1.x responses, the last possibly cut
    by a close; returns the statuses of the complete ones."""
    stream = ResponseStream()
    try:
        stream.parser.feed_data(out)
    except httptools.HttpParserError as exc:
        raise AssertionError(f"malformed response stream ({exc}): {out!r}") from None
    if out:
        assert out.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), out
    return stream.statuses


def check_backend(backend: RawBackend) -> None:
    assert backend.invalid == []
    for req in backend.requests:
        try:
            validate_request(req.method, req.url, req.version, req.headers, upgrade=req.upgrade)
        except BadRequest as exc:
            raise AssertionError(f"the backend received an invalid request: {req}") from exc
        xff = [v for k, v in req.headers if k.lower() == b"x-forwarded-for"]
        assert len(xff) == 1 and xff[0].endswith(b"127.0.0.1"), req.headers


def test_chaos_streams_get_well_formed_answers_and_backend_sees_valid_heads() -> None:
    with LiveProxy() as live:
        assert live.backend is not None

        @settings(
            max_examples=100,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(chaos_stream())
        def check(stream: tuple[list[bytes], bool, int | None]) -> None:
            pieces, half_close, expected = stream
            out = exchange(live.port, pieces, half_close)
            statuses = check_responses(out)
            if expected is not None:  # only valid simple requests: every one answered
                assert len(statuses) == expected and set(statuses) <= {200, 204}, out
            # the proxy is alive and well: a plain request still gets its answer
            sanity = exchange(live.port, [get("/ok0", b"Connection: close\r\n")], False)
            assert sanity.startswith(b"HTTP/1.1 200 OK\r\n") and sanity.endswith(b"4:0"), sanity
            assert live.backend is not None
            check_backend(live.backend)

        check()
        assert live.thread.is_alive()
        assert live.backend.requests  # (the streams did reach the backend)
