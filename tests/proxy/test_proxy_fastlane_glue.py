"""The fast lane's Python side (`parlour.proxy.fastlane.FastLane`): the handler calls of
the engine contract, run against a `ProxyRuntime` (not started) and a recording engine.

The recording engine only notes what the handler asks of it (attach, fail, configure,
drop_backend) and hands back the counters a test gives it; the relaying itself is the
real engine's, exercised by the whole proxy suite in fast-lane mode (conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from proxy_helpers import BackendFactory, ProxyFactory

from parlour.proxy.config import ProxyConfig, load_config
from parlour.proxy.control import BackendSpec, ProxySettings
from parlour.proxy.fastlane import FastLane, Harvest, engine_class, native_module
from parlour.proxy.headers import error_response
from parlour.proxy.pool import Backend
from parlour.proxy.runtime import ProxyRuntime


@dataclass
class RecordingEngine:
    clients: int = 0
    busy: bool = False
    configured: list[dict[str, object]] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    failed: list[tuple[int, bytes]] = field(default_factory=list)
    # (token, backend index, peer port of the fd, non-blocking, TCP_NODELAY)
    attached: list[tuple[int, int, int, bool, bool]] = field(default_factory=list)
    pending: list[Harvest] = field(default_factory=list)
    proceeded: list[tuple[int, int]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def configure(self, **settings: object) -> None:
        self.configured.append(settings)

    def drop_backend(self, backend: int) -> None:
        self.dropped.append(backend)

    def fail(self, token: int, page: bytes) -> None:
        self.failed.append((token, page))
        self.done.set()

    def proceed(self, token: int, backend: int) -> None:
        self.proceeded.append((token, backend))
        self.done.set()

    def attach(self, token: int, fd: int, backend: int) -> None:
        nonblocking = not os.get_blocking(fd)
        with socket.socket(fileno=fd) as sock:
            port = sock.getpeername()[1]
            nodelay = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            self.attached.append((token, backend, port, nonblocking, nodelay))
        self.done.set()

    def harvest(self) -> Harvest:
        return self.pending.pop(0) if self.pending else (0, 0, [])


def make_runtime(*specs: BackendSpec, **settings: object) -> ProxyRuntime:
    cfg = ProxyConfig(
        listen_port=0,
        admin_port=None,
        settings=ProxySettings(**settings),  # type: ignore[arg-type]
        backends=specs,
    )
    rt = ProxyRuntime(cfg, admin=False, persist=False)
    rt._load_initial_state()
    return rt


def lane_for(rt: ProxyRuntime) -> tuple[FastLane, RecordingEngine]:
    lane = FastLane(rt.upstreams)
    engine = RecordingEngine()
    lane.engine = engine  # type: ignore[assignment]
    rt.fast_lane = lane
    return lane, engine


@contextlib.asynccontextmanager
async def listening() -> AsyncIterator[int]:
    """The port of a TCP listener on 127.0.0.1 (it closes what connects)."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # (nothing listens there now: connecting is refused)


def test_engine_choice_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARLOUR_PROXY_FAST_LANE", raising=False)
    assert engine_class("tcp", True) == (None, "tcp mode")
    assert engine_class("http", False) == (None, "fast_lane = false")
    monkeypatch.setenv("PARLOUR_PROXY_FAST_LANE", "0")
    assert engine_class("http", True) == (None, "PARLOUR_PROXY_FAST_LANE=0")


def test_fast_lane_setting_from_file_and_flags(tmp_path: object) -> None:
    from pathlib import Path

    cfg = Path(str(tmp_path)) / "p.toml"
    cfg.write_text("[proxy]\nfast_lane = false\n")
    assert load_config(cfg).fast_lane is False
    assert load_config(cfg, fast_lane=True).fast_lane is True
    assert load_config(None).fast_lane is True
    cfg.write_text('[proxy]\nfast_lane = "no"\n')
    with pytest.raises(Exception, match="fast_lane must be true or false"):
        load_config(cfg)


async def test_admit_counts_python_and_engine_clients() -> None:
    rt = make_runtime(BackendSpec("127.0.0.1", 1), max_connections=3)
    lane, engine = lane_for(rt)
    assert lane.admit("10.0.0.1") is None
    assert rt.upstreams.counters.total_conns == 1
    engine.clients = 2
    rt.upstreams.conns.add(object())  # type: ignore[arg-type]  (a Python relay connection)
    assert lane.admit("10.0.0.1") == error_response(
        503, "The proxy is at its connection limit.", retry_after=1
    )
    assert (rt.upstreams.counters.total_conns, rt.upstreams.counters.rejected) == (1, 1)
    engine.clients = 1
    assert lane.admit("10.0.0.1") is None
    rt.upstreams.stopping = True
    assert lane.admit("10.0.0.1") is not None
    assert (rt.upstreams.counters.total_conns, rt.upstreams.counters.rejected) == (2, 2)
    assert rt.own_totals().active_conns == 2  # 1 Python + 1 engine client


async def test_indices_are_stable_and_never_reused() -> None:
    a, b = BackendSpec("127.0.0.1", 1), BackendSpec("127.0.0.1", 2)
    rt = make_runtime(a, b)
    lane, engine = lane_for(rt)
    picks = [lane.select(1, None) for _ in range(4)]
    assert sorted(picks) == [0, 0, 1, 1]  # (round robin over both)
    assert {lane._backends[i].id for i in (0, 1)} == {a.id, b.id}
    old = rt.pool.get(a.id)
    old_index = lane.index(old)
    assert old.active == 2
    rt.remove_backend(a.id)
    assert engine.dropped == [old_index]
    rt.pool.add(a, 0.0)  # (up at once: what this checks is the index, not live-add health)
    new = rt.pool.get(a.id)
    got = {lane.select(1, None) for _ in range(4)}
    assert got == {1 - old_index, 2}  # the re-added backend has a new index
    assert lane._backends[2] is new
    # a late release of the removed backend's slot goes to the old object
    assert lane.release(old_index, True) is False  # removed: not parked
    assert old.active == 1 and new.active == 2


async def test_release_says_whether_to_park() -> None:
    rt = make_runtime(BackendSpec("127.0.0.1", 1))
    lane, engine = lane_for(rt)
    b = rt.pool.all()[0]

    def take() -> int:
        i = lane.select(7, None)
        assert isinstance(i, int)
        return i

    assert lane.release(take(), True) is True
    rt.drain_backend(b.id)
    assert engine.dropped == [0]
    rt.enable_backend(b.id)
    i = take()
    rt.upstreams.stopping = True  # (responses close their connection from now on)
    assert lane.release(i, True) is False
    rt.upstreams.stopping = False
    # a failure, then a good response: the passive failure count is reset
    lane.failure(take(), "response timeout")
    assert b.health.passive_failures == 1
    assert lane.release(0, True) is True and b.health.passive_failures == 0
    i = take()
    for _ in range(rt.settings().health_fall):
        lane.failure(i, "connection lost mid-request")
    assert b.state == "down"
    assert lane.release(i, False) is False
    assert lane.select(7, None) == error_response(
        503, "No backend server is available right now. Please retry shortly.", retry_after=2
    )  # (retry at the next health check: health_interval_s is 2 s)
    assert b.active == 0


async def test_harvest_adds_counters() -> None:
    rt = make_runtime(BackendSpec("127.0.0.1", 1), BackendSpec("127.0.0.1", 2))
    lane, engine = lane_for(rt)
    i = lane.select(1, None)
    assert isinstance(i, int)
    lane.release(i, True)
    b: Backend = lane._backends[i]
    b.requests = 5  # (what the Python relay counted)
    engine.pending.append((3, 1, [(i, 2, 100, 40, 1, 1, [1.5, 2.5])]))
    (snap,) = [s for s in rt.own_backends() if s.id == b.id]
    assert (snap.requests, snap.bytes_in, snap.bytes_out) == (7, 100, 40)
    assert (snap.response_errors, snap.retries) == (1, 1)
    assert list(b.latencies_ms) == [1.5, 2.5]
    engine.pending.append((2, 0, [(i, 1, 10, 4, 0, 0, [])]))
    totals = rt.own_totals()
    assert (totals.requests, totals.errors) == (5, 1)
    assert (totals.bytes_in, totals.bytes_out) == (110, 44)


async def test_settings_changes_reach_the_engine() -> None:
    rt = make_runtime(BackendSpec("127.0.0.1", 1))
    lane, engine = lane_for(rt)
    lane.configure()
    assert engine.configured[-1] == {
        "max_header_bytes": rt.config.max_header_bytes,
        "buffer_size": 65536,
        "max_idle_upstream": rt.config.max_idle_upstream,
        "idle_timeout_s": 60.0,
        "server_timeout_s": 30.0,
        "client_timeout_s": 30.0,
        "hash_mode": 0,
        "hash_header": b"X-User",
        "stopping": False,
        "retry_limit": 2,
        "hide_server": False,
    }
    rt.update_settings(hide_server_header=True)
    assert engine.configured[-1]["hide_server"] is True
    for algorithm, mode in (("ip_hash", 1), ("uri_hash", 2), ("header_hash", 3), ("p2c", 0)):
        rt.update_settings(algorithm=algorithm, hash_header="X-Tenant", server_timeout_s=4)
        last = engine.configured[-1]
        assert (last["hash_mode"], last["hash_header"], last["server_timeout_s"]) == (
            mode,
            b"X-Tenant",
            4.0,
        )


async def test_connect_attaches_a_connected_socket() -> None:
    async with listening() as port:
        rt = make_runtime(BackendSpec("127.0.0.1", port))
        lane, engine = lane_for(rt)
        i = lane.select(5 << 32 | 3, None)
        assert isinstance(i, int)
        lane.connect(5 << 32 | 3, i)
        await asyncio.wait_for(engine.done.wait(), 5)
    assert engine.attached == [(5 << 32 | 3, i, port, True, True)]
    b = rt.pool.all()[0]
    assert (b.total_conns, b.active) == (1, 1)  # the slot goes to the engine with the fd


async def test_connect_failure_retries_then_fails_the_request() -> None:
    dead = BackendSpec("127.0.0.1", closed_port())
    async with listening() as port:
        live = BackendSpec("127.0.0.1", port)
        rt = make_runtime(dead, live, algorithm="uri_hash")
        lane, engine = lane_for(rt)
        dead_b = rt.pool.get(dead.id)
        # a key the ring maps to the dead backend: the retry picks the other one by it
        key = next(k for n in range(1000) if rt.pool.choose(0.0, k := b"/%d" % n) is dead_b)
        i = lane.select(9, key)
        assert isinstance(i, int) and lane._backends[i] is dead_b
        lane.connect(9, i)
        await asyncio.wait_for(engine.done.wait(), 5)
    ((token, index, peer_port, _, _),) = engine.attached
    assert (token, peer_port) == (9, port) and lane._backends[index].id == live.id
    assert (dead_b.connect_errors, dead_b.retries, dead_b.active) == (1, 1, 0)

    # nothing to retry on: the request gets the Python relay's 502 page
    rt = make_runtime(dead, retry_limit=0)
    lane, engine = lane_for(rt)
    i = lane.select(11, None)
    assert isinstance(i, int)
    lane.connect(11, i)
    await asyncio.wait_for(engine.done.wait(), 5)
    assert engine.failed == [(11, error_response(502, "Could not connect to a backend server."))]
    assert rt.pool.all()[0].active == 0


async def test_full_backends_wait_in_the_queue() -> None:
    async with listening() as port:
        rt = make_runtime(BackendSpec("127.0.0.1", port, max_conns=1), queue_timeout_s=5)
        lane, engine = lane_for(rt)
        queued = asyncio.Event()
        real_push = rt.upstreams.waiters.push

        def push(item: asyncio.Future[None], now: float, timeout_s: float) -> bool:
            queued.set()
            return real_push(item, now, timeout_s)

        rt.upstreams.waiters.push = push  # type: ignore[method-assign]
        first = lane.select(1, None)
        assert first == 0
        assert lane.select(2, None) is None  # full: Python took the request over
        await asyncio.wait_for(queued.wait(), 5)
        assert not engine.proceeded and len(rt.upstreams.waiters) == 1
        assert lane.release(0, True) is True  # the slot passes to the waiting request
        await asyncio.wait_for(engine.done.wait(), 5)
    # the engine gets the slot back (and uses its pool or asks to connect)
    assert engine.proceeded == [(2, 0)] and not engine.attached
    assert rt.pool.all()[0].active == 1

    rt = make_runtime(BackendSpec("127.0.0.1", 1, max_conns=1), queue_timeout_s=0.05)
    lane, engine = lane_for(rt)
    assert lane.select(1, None) == 0
    assert lane.select(2, None) is None
    await asyncio.wait_for(engine.done.wait(), 5)
    assert engine.failed == [
        (2, error_response(503, "All backend servers are busy. Please retry shortly.", 1))
    ]


@pytest.mark.skipif(native_module()[0] is None, reason="parlour.proxy._fastlane is not built")
async def test_plain_requests_stay_in_the_engine_others_escape(
    monkeypatch: pytest.MonkeyPatch, backends: BackendFactory, proxy: ProxyFactory
) -> None:
    monkeypatch.setenv("PARLOUR_PROXY_FAST_LANE", "1")
    a = await backends("a")
    rt = await proxy([a.spec])
    assert rt.fast_lane is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 1\r\n" in head
        assert await reader.readexactly(1) == b"a"
        assert not rt.upstreams.conns and rt.totals().active_conns == 1  # the engine's client
        # a request with a body is not the fast lane's: the connection moves to the
        # Python relay with what the engine read of it
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        out = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        assert out.startswith(b"HTTP/1.1 200") and b"hello" in out
        assert len(rt.upstreams.conns) == 1 and rt.totals().active_conns == 1
        assert a.bodies == [b"hello"]
        snap = rt.backends()[0]
        assert (snap.requests, rt.upstreams.counters.total_conns) == (2, 1)
    finally:
        writer.close()
