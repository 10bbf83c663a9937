"""Reproducers from a code review of the fast lane's engine (src/parlour/proxy/_fastlane/
engine.c). Each test drives a bare `Engine` with a minimal handler (no runtime, no event
loop): the engine's `poll` and `sweep` are called by hand, so every step is deterministic.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from proxy_helpers import epoll_events

from parlour.proxy.fastlane import native_module
from parlour.proxy.headers import error_response

MODULE, _ = native_module()
ENGINE = None if MODULE is None else MODULE.Engine


def skew_clock(seconds: float) -> None:
    """Move the engines' clock forward (timeouts run out without sleeping); engine_on_port
    puts it back."""
    MODULE._skew_clock(seconds)


pytestmark = pytest.mark.skipif(ENGINE is None, reason="parlour.proxy._fastlane is not built")


@pytest.fixture(autouse=True)
def data_plane() -> str:
    """Overrides the suite's data_plane fixture: these tests start no proxy."""
    return "fast_lane"


class Handler:
    """The engine's callbacks, recorded; `on_select` decides what `select` does."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.calls: list[tuple[Any, ...]] = []
        self.on_select: Callable[[int, bytes | None], int | bytes | None] = lambda t, k: None

    def admit(self, ip: str) -> bytes | None:
        self.calls.append(("admit", ip))
        return None

    def select(self, token: int, key: bytes | None) -> int | bytes | None:
        self.calls.append(("select", token))
        return self.on_select(token, key)

    def connect(self, token: int, backend: int) -> None:
        self.calls.append(("connect", token, backend))

    def release(self, backend: int, ok: bool) -> bool:
        self.calls.append(("release", backend, ok))
        return False

    def failure(self, backend: int, reason: str) -> None:
        self.calls.append(("failure", backend, reason))

    def escape(self, fd: int, data: bytes) -> None:
        self.calls.append(("escape", data))
        os.close(fd)

    def page(self, status: int, detail: str) -> bytes:
        return error_response(status, detail)

    def log(self, level: int, message: str) -> None:
        self.calls.append(("log", level, message))


@contextlib.contextmanager
def engine_on_port() -> Iterator[tuple[Any, Handler, int]]:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    lsock.setblocking(False)
    port = lsock.getsockname()[1]
    handler = Handler()
    engine = ENGINE(lsock.detach(), handler)
    handler.engine = engine
    try:
        yield engine, handler, port
    finally:
        engine.close()
        handler.engine = None
        MODULE._skew_clock(-MODULE._skew_clock(0.0))


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def poll_until(engine: Any, done: Callable[[], bool]) -> None:
    """Call engine.poll() while its epoll fd reports events, until `done()` (bounded: the
    events here are already pending when this is called)."""
    for _ in range(100):
        if done():
            return
        if select.select([engine.fileno()], [], [], 5.0)[0]:
            engine.poll()
    assert done()


# ====================================================================== fd exhaustion
def test_accept_at_the_fd_limit_does_not_keep_the_epoll_fd_ready() -> None:
    """accept4 failing with EMFILE leaves the connection in the backlog: the listener
    stays ready, so a level-triggered epoll set stays readable and uvloop calls poll()
    again and again (a busy loop at 100% CPU for as long as the process is at its fd
    limit). asyncio and libuv back off instead. The engine must stop watching the
    listener until its next sweep, then accept again."""
    with engine_on_port() as (engine, handler, port):
        conn = socket.create_connection(("127.0.0.1", port))  # (the kernel completes it)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowest_free = os.dup(0)
        os.close(lowest_free)
        try:
            # every fd number below the limit is in use: accept4 fails with EMFILE
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
            engine.poll()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        with conn:
            assert ("admit", "127.0.0.1") not in handler.calls
            assert not readable(engine.fileno()), "the listener keeps the epoll fd ready"
            engine.sweep()  # (the runtime's reaper, about once a second)
            poll_until(engine, lambda: ("admit", "127.0.0.1") in handler.calls)
            assert engine.clients == 1


# ====================================================================== re-entrancy
def test_handler_answering_from_inside_select_does_not_free_the_client_in_use() -> None:
    """A handler may call back into the engine from inside a callback (here `select`
    answers at once with `fail`: no handler in the project does so under Python 3.11, but
    with 3.12's eager tasks `select` spawning `_wait_and_connect` would, when the queue is
    full). The engine frees closed structs in `reap`, which `fail` (like attach, proceed,
    sweep...) ran: inside poll() that freed the client that client_consume and
    start_request were still using (a use after free: scripts/fastlane-sanitize.sh
    reports it; without ASan this test may pass)."""
    with engine_on_port() as (engine, handler, port):

        def answer_now(token: int, key: bytes | None) -> None:
            handler.engine.fail(token, error_response(503, "busy"))
            return None

        handler.on_select = answer_now
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
            conn.settimeout(5.0)
            poll_until(engine, lambda: any(c[0] == "select" for c in handler.calls))
            out = b""
            while chunk := conn.recv(65536):
                out += chunk
        assert out.startswith(b"HTTP/1.1 503 ")
        assert [c[0] for c in handler.calls].count("select") == 1
        poll_until(engine, lambda: engine.clients == 0)


# ====================================================================== timeouts


EPOLLIN = 0x001


def _drain(sock: socket.socket) -> int:
    n = 0
    with contextlib.suppress(BlockingIOError):
        while chunk := sock.recv(1 << 20):
            n += len(chunk)
    return n


def test_slow_reader_catching_up_is_not_a_backend_timeout() -> None:
    """The client stops reading, so the engine stops reading the backend (the wait is on
    the client: client_timeout_s). When the client takes its output again the engine
    reads the backend again: only from then on is the backend's silence timed. The engine
    went on timing it from the last backend read, so a client that paused for longer than
    server_timeout_s got its response cut and the backend was charged a "response
    timeout" (the Python relay resets the backend's timer in resume_writing)."""
    server_timeout = 0.3
    with engine_on_port() as (engine, handler, port):
        engine.configure(server_timeout_s=server_timeout, client_timeout_s=3600.0, buffer_size=1024)
        handler.on_select = lambda token, key: 0
        back_engine, back = socket.socketpair()
        back.setblocking(False)
        with socket.socket() as conn, back:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            conn.connect(("127.0.0.1", port))
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            poll_until(engine, lambda: any(c[0] == "connect" for c in handler.calls))
            (token,) = [c[1] for c in handler.calls if c[0] == "connect"]
            up_fd = back_engine.detach()
            engine.attach(token, up_fd, 0)
            back.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
            # the backend sends until the engine stops reading it (the client reads nothing)
            for _ in range(10000):
                if not epoll_events(engine.fileno(), up_fd) & EPOLLIN:
                    break
                with contextlib.suppress(BlockingIOError):
                    back.send(b"x" * 65536)
                engine.poll()
            assert not epoll_events(engine.fileno(), up_fd) & EPOLLIN
            # the client keeps the engine waiting for longer than server_timeout_s
            skew_clock(2 * server_timeout)
            # then catches up: the engine reads the backend again
            conn.setblocking(False)
            for _ in range(10000):
                if epoll_events(engine.fileno(), up_fd) & EPOLLIN:
                    break
                _drain(conn)
                select.select([engine.fileno()], [], [], 1.0)
                engine.poll()
            assert epoll_events(engine.fileno(), up_fd) & EPOLLIN
            engine.sweep()
            assert not [c for c in handler.calls if c[0] == "failure"]
            assert engine.clients == 1


def test_idle_timeout_counts_from_the_end_of_the_response() -> None:
    """idle_timeout_s is the wait *between* requests (nginx's keepalive_timeout, HAProxy's
    timeout http-keep-alive start when the response has gone). The engine counts it from
    the client's last byte: after a response that took longer than idle_timeout_s, the
    next sweep closes the keep-alive connection at once, racing the client's next
    request."""
    idle_timeout = 0.3
    with engine_on_port() as (engine, handler, port):
        engine.configure(idle_timeout_s=idle_timeout, server_timeout_s=3600.0)
        handler.on_select = lambda token, key: 0
        back_engine, back = socket.socketpair()
        with socket.create_connection(("127.0.0.1", port)) as conn, back:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            poll_until(engine, lambda: any(c[0] == "connect" for c in handler.calls))
            (token,) = [c[1] for c in handler.calls if c[0] == "connect"]
            engine.attach(token, back_engine.detach(), 0)
            # the backend takes longer than idle_timeout_s to answer
            skew_clock(2 * idle_timeout)
            back.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            poll_until(engine, lambda: any(c[0] == "release" for c in handler.calls))
            conn.settimeout(5.0)
            assert conn.recv(65536).endswith(b"\r\n\r\nok")
            engine.sweep()  # right after the answer: the client has not been idle
            assert engine.clients == 1
