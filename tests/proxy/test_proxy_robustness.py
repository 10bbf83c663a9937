"""Robustness over real sockets: passive health, killing backends under load (only
in-flight requests may fail, counters stay right across kill/restart cycles), a backend
that stops reading, a POST on a reused connection, and every statistic surviving a
restart through the real SQLite store."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from proxy_helpers import BackendFactory, ProxyFactory, raw_exchange, wait_state

from parlour.proxy.control import BackendSpec
from parlour.proxy.stats_store import SCHEMA_VERSION, StatsStore


class RawBackend(asyncio.Protocol):
    """A minimal keep-alive HTTP backend that can be killed abruptly (every connection
    reset, listener closed) and started again on the same port."""

    def __init__(self, owner: KillableBackend) -> None:
        self.owner = owner
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.owner.conns.add(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.owner.count_served()
            body = self.owner.name.encode()
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.conns.discard(self)


class KillableBackend:
    """Listens on its own socket rather than through `loop.create_server`: with asyncio's
    Server (3.11), a connection accepted just before `Server.close()` is wrapped after it
    (the accept hands it to a task), the transport then fails (`Server._attach` asserts
    the server is open) and the socket leaks: never answered, never reset, until garbage
    collection closes it (ResourceWarning; the proxy's request on it fails late). Here
    `kill` stops accepting, then waits for every connection already accepted to be
    wrapped and resets it with the others."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.served = 0
        # (threshold, future) pairs resolved by count_served when `served` reaches them
        self._served_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.conns: set[RawBackend] = set()
        self.listener: socket.socket | None = None
        # accepted sockets being wrapped in a transport (connect_accepted_socket)
        self._wrapping: set[asyncio.Task[object]] = set()

    def count_served(self) -> None:
        self.served += 1
        for n, fut in list(self._served_waiters):
            if self.served >= n and not fut.done():
                fut.set_result(None)

    async def served_at_least(self, n: int, timeout: float = 10.0) -> None:
        """Wait until this backend has answered ``n`` requests in all."""
        if self.served >= n:
            return
        waiter = (n, asyncio.get_running_loop().create_future())
        self._served_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter[1], timeout)
        finally:
            self._served_waiters.remove(waiter)

    async def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))  # the same port again after a kill
            listener.listen(128)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self.listener = listener
        self.port = listener.getsockname()[1]
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)

    def _accept(self) -> None:
        assert self.listener is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            task: asyncio.Task[object] = loop.create_task(
                loop.connect_accepted_socket(lambda: RawBackend(self), conn)
            )
            self._wrapping.add(task)
            task.add_done_callback(self._wrapping.discard)

    async def kill(self) -> None:
        assert self.listener is not None
        asyncio.get_running_loop().remove_reader(self.listener.fileno())
        self.listener.close()
        self.listener = None
        # a connection accepted before the close is reset too, once it is a transport
        await asyncio.gather(*self._wrapping)
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.abort()

    @property
    def id(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def killable() -> AsyncIterator[Callable[[str], KillableBackend]]:
    made: list[KillableBackend] = []

    def make(name: str) -> KillableBackend:
        made.append(KillableBackend(name))
        return made[-1]

    yield make
    for b in made:
        if b.listener is not None:
            await b.kill()


@dataclasses.dataclass
class LoadStats:
    ok: int = 0
    failed: int = 0
    by_name: dict[str, int] = dataclasses.field(default_factory=dict)
    # The test starts a new phase at each step (kill, seen down, restart); a failed request
    # counts against the phase it was sent in, whenever its failure reaches the client
    # (the failure of a request in flight at the kill may arrive after `a` is seen down).
    phase: int = 0
    failed_by_phase: collections.Counter[int] = dataclasses.field(
        default_factory=collections.Counter
    )

    def next_phase(self) -> int:
        self.phase += 1
        return self.phase

    def fail(self, sent_in: int) -> None:
        self.failed += 1
        self.failed_by_phase[sent_in] += 1


async def _client(port: int, stop: asyncio.Event, stats: LoadStats) -> None:
    """Keep-alive GETs in a loop; reconnects when the proxy closes the connection."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while not stop.is_set():
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert reader is not None
        sent_in = stats.phase
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
            body = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            stats.fail(sent_in)
            writer.close()
            writer = None
            continue
        if head.startswith(b"HTTP/1.1 200"):
            stats.ok += 1
            name = body.decode()
            stats.by_name[name] = stats.by_name.get(name, 0) + 1
        else:
            stats.fail(sent_in)
        if b"Connection: close" in head:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def test_kill_backend_under_load_only_in_flight_fail_and_counters_stay_right(
    proxy: ProxyFactory, killable: Callable[[str], KillableBackend]
) -> None:
    a, b = killable("a"), killable("b")
    await a.start()
    await b.start()
    rt = await proxy(
        [BackendSpec("127.0.0.1", a.port), BackendSpec("127.0.0.1", b.port)],
        health_interval_s=0.05,
        health_rise=2,
        health_fall=2,
        retry_limit=2,
    )
    port = rt.listen_port or 0
    stop = asyncio.Event()
    stats = LoadStats()
    concurrency = 8
    clients = [asyncio.create_task(_client(port, stop, stats)) for _ in range(concurrency)]
    # per kill cycle: (phase `a` was last started in, phase from the kill until `a` is
    # seen down, phase from then on until `a` is started again)
    cycles: list[tuple[int, int, int]] = []
    try:
        await a.served_at_least(51)
        await b.served_at_least(51)
        started_in = stats.phase
        for _cycle in range(3):
            killed_in = stats.next_phase()
            await a.kill()
            await wait_state(rt, a.id, "down")
            down_in = stats.next_phase()
            cycles.append((started_in, killed_in, down_in))
            served_b = b.served
            await b.served_at_least(served_b + 201)
            snap = next(s for s in rt.backends() if s.id == a.id)
            assert snap.last_crashed is not None and snap.last_crash_reason
            served_a = a.served
            started_in = stats.next_phase()
            await a.start()
            await wait_state(rt, a.id, "up")
            await a.served_at_least(served_a + 51)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), 10)
    for started_in, killed_in, down_in in cycles:
        # only requests in flight on `a` at the kill may fail: at most one per client (sent
        # before the kill, or after it on a connection the proxy did not yet know was dead)
        assert stats.failed_by_phase[started_in] + stats.failed_by_phase[killed_in] <= (
            concurrency
        ), stats.failed_by_phase
        # once `a` is down, traffic continues on b without errors
        assert stats.failed_by_phase[down_in] == 0, stats.failed_by_phase
    # every client's last request was answered (or its connection closed by the proxy), and
    # the proxy releases a backend slot before it writes the end of the response
    assert [s.active_conns for s in rt.backends()] == [0, 0]
    snaps = {s.id: s for s in rt.backends()}
    answered = stats.ok + stats.failed
    # every client request is counted once by the proxy (the last one of a client may be
    # counted without an answer when it stopped mid-request)
    assert answered <= rt.totals().requests <= answered + concurrency
    # each backend's request counter covers every request it answered
    assert snaps[a.id].requests >= stats.by_name["a"]
    assert snaps[b.id].requests >= stats.by_name["b"]
    assert snaps[a.id].requests <= a.served + concurrency * 3  # sends that died in the kill
    assert snaps[b.id].requests == b.served
    assert snaps[a.id].state == "up" and snaps[a.id].total_up_s > 0


async def test_passive_failures_mark_a_backend_down_without_active_checks(
    proxy: ProxyFactory,
    killable: Callable[[str], KillableBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from parlour.proxy import health_checks

    a, b = killable("a"), killable("b")
    await a.start()
    await b.start()
    # health_interval_s is 60 s (fixture default): only the first active check runs. Wait
    # for it to finish (on both backends, before the kill) so it cannot count a failure.
    real_check = health_checks.check_backend
    checked: list[tuple[bool, str]] = []
    first_round_done = asyncio.Event()

    async def check(host: str, port: int, s: object, *tls: object) -> tuple[bool, str]:
        result = await real_check(host, port, s, *tls)  # type: ignore[arg-type]
        checked.append(result)
        if len(checked) == 2:
            # _check_one applies the result synchronously after this returns, before the
            # waiting test task can run again
            first_round_done.set()
        return result

    monkeypatch.setattr(health_checks, "check_backend", check)
    rt = await proxy(
        [BackendSpec("127.0.0.1", a.port), BackendSpec("127.0.0.1", b.port)],
        health_fall=2,
        retry_limit=2,
    )
    port = rt.listen_port or 0
    await asyncio.wait_for(first_round_done.wait(), 10)
    assert checked == [(True, ""), (True, "")]
    await a.kill()
    for _ in range(6):
        out = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"b")
    snap = next(s for s in rt.backends() if s.id == a.id)
    assert snap.state == "down"
    # down after exactly `fall` passive failures, then no more traffic to it
    assert snap.connect_errors == rt.settings().health_fall == 2
    assert len(checked) == 2  # no active check ran after the first round
    assert snap.last_crash_reason and "connect failed" in snap.last_crash_reason


@pytest.mark.python_relay  # (the fast lane's pooled connections are not the relay's)
async def test_post_on_reused_connection_is_not_replayed(proxy: ProxyFactory) -> None:
    """The backend closes after reading a POST sent on a pooled keep-alive connection:
    the POST may have been processed, so the proxy answers 502 and never sends it again."""
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                received.append(head.split(b"\r\n", 1)[0])
                if head.startswith(b"POST"):
                    await reader.readexactly(2)
                    writer.transport.abort()
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        rt = await proxy([BackendSpec("127.0.0.1", srv.sockets[0].getsockname()[1])])
        port = rt.listen_port or 0
        out = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200")
        # the proxy parks the upstream connection before it closes the client's connection,
        # so raw_exchange having read to EOF means it is pooled
        assert len(rt.upstreams.idle.get(rt.backends()[0].id, [])) == 1
        out = await raw_exchange(
            port, b"POST /pay HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
        )
        assert out.startswith(b"HTTP/1.1 502")
        assert received == [b"GET / HTTP/1.1", b"POST /pay HTTP/1.1"]
    finally:
        srv.close()
        with contextlib.suppress(Exception):
            await srv.wait_closed()


async def test_backend_that_stops_reading_does_not_make_the_proxy_buffer(
    proxy: ProxyFactory,
) -> None:
    """A backend takes a request head and then never reads: the proxy stops reading the
    client's upload instead of buffering it."""
    stalled: list[asyncio.Transport] = []
    paused_for_upstream = asyncio.Event()

    def watch_client_pauses() -> None:
        """Set paused_for_upstream when the proxy's client connection pauses reading because
        the upstream's write buffer is full (now, or later through pause_reading)."""
        (conn,) = rt.upstreams.conns
        if "upstream" in conn.paused:  # type: ignore[attr-defined]
            paused_for_upstream.set()
            return
        pause_reading = conn.pause_reading  # type: ignore[attr-defined]

        def watched(reason: str) -> None:
            pause_reading(reason)
            if reason == "upstream":
                paused_for_upstream.set()

        conn.pause_reading = watched  # type: ignore[attr-defined]

    class Stalling(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            t: asyncio.Transport = transport  # type: ignore[assignment]
            t.get_extra_info("socket").setsockopt(1, 8, 4096)  # SOL_SOCKET, SO_RCVBUF
            stalled.append(t)
            watch_client_pauses()

        def data_received(self, data: bytes) -> None:
            stalled[-1].pause_reading()

    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Stalling, "127.0.0.1", 0)
    buffer_size = 16384
    try:
        rt = await proxy(
            [BackendSpec("127.0.0.1", srv.sockets[0].getsockname()[1])], buffer_size=buffer_size
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
        total = 256 * 1024 * 1024
        writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        sent = 0

        async def upload() -> None:
            nonlocal sent
            while sent < total:
                writer.write(block)
                sent += len(block)
                await writer.drain()

        up_task = asyncio.create_task(upload())
        await asyncio.wait_for(paused_for_upstream.wait(), 10)
        conn = next(iter(rt.upstreams.conns))
        upstream = conn.upstream  # type: ignore[attr-defined]
        assert upstream is not None and upstream.transport is not None
        # bounded: the proxy holds at most about one buffer's worth plus what one read
        # brought in (asyncio reads up to 256 KiB at once; a loaded machine lets that much
        # gather in the socket), the rest stays in the client's socket buffers (the
        # upload is blocked, far from complete)
        one_read = 256 * 1024
        assert upstream.transport.get_write_buffer_size() <= buffer_size + one_read + len(block)
        assert conn.buffered <= buffer_size  # type: ignore[attr-defined]
        assert not up_task.done() and sent < total // 4
        up_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await up_task
        writer.transport.abort()
        del reader
    finally:
        srv.close()
        for t in stalled:
            t.abort()


async def test_every_statistic_survives_a_restart_with_the_sqlite_store(
    tmp_path: Path, backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a, b = await backends("a"), await backends("b")
    db = tmp_path / "stats.db"
    store = StatsStore(db)
    rt = await proxy([a.spec, b.spec], store=store, load_from="previous")
    port = rt.listen_port or 0
    for _ in range(6):
        out = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200")
    bid = f"127.0.0.1:{b.port}"
    for _ in range(rt.settings().health_fall):
        rt.pool.passive_failure(bid, rt.clock(), "connect failed: refused (test)")
    assert rt.pool.get(bid).state == "down"
    before = {s.id: s for s in rt.backends()}
    await rt.stop(drain_timeout_s=0.5)
    store.close()

    store2 = StatsStore(db)
    try:
        rt2 = await proxy([], store=store2, load_from="previous")
        after = {s.id: s for s in rt2.backends()}
        assert set(after) == set(before)
        for bid_, old in before.items():
            new = after[bid_]
            for field in (
                "requests",
                "total_conns",
                "bytes_in",
                "bytes_out",
                "connect_errors",
                "response_errors",
                "retries",
                "last_connected",
                "last_crashed",
                "last_crash_reason",
                "p50_ms",
                "p99_ms",
            ):
                assert getattr(new, field) == getattr(old, field), (bid_, field)
            assert new.total_up_s >= old.total_up_s - 0.01
        assert after[bid].last_crash_reason == "connect failed: refused (test)"
        assert after[f"127.0.0.1:{a.port}"].p50_ms is not None
        events = store2.events(backend_id=bid)
        assert any(e.kind == "down" for e in events)
    finally:
        store2.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_listening_socket_uses_so_reuseport_with_several_workers(workers: int) -> None:
    import socket

    from parlour.proxy.config import ProxyConfig
    from parlour.proxy.runtime import ProxyRuntime

    rt = ProxyRuntime(ProxyConfig(listen_port=0, admin_port=None, workers=workers))
    sock = rt._make_socket()
    try:
        assert bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)) == (workers > 1)
    finally:
        sock.close()


def test_several_processes_opening_a_fresh_store_at_once(tmp_path: Path) -> None:
    """--workers N open the same new database together: the schema migration runs once
    and no opener fails with "database is locked" (each round races 4 openers on a new
    file; the lost race that SQLite answers without waiting hit about one round in ten)."""
    for round_ in range(20):
        db = tmp_path / f"fresh{round_}.db"
        assert _open_fresh_store_at_once(db, openers=4) == [], round_
        with StatsStore(db) as store:
            assert store.schema_version == SCHEMA_VERSION
            assert store.load_backends() == []


def _open_fresh_store_at_once(db: Path, openers: int) -> list[BaseException]:
    """Open (and close) a StatsStore on `db` from `openers` threads released together;
    each thread has its own connection, so SQLite locks them as separate processes."""
    import threading

    errors: list[BaseException] = []
    start = threading.Barrier(openers)

    def open_store() -> None:
        start.wait()
        try:
            StatsStore(db).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(openers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    return errors


def test_opening_a_fresh_store_waits_for_a_sibling_holding_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Switching a fresh (rollback-mode) file to WAL upgrades a read transaction to a
    write one, and SQLite answers SQLITE_BUSY to that at once, busy timeout or not: the
    store must wait for the sibling that holds the write lock instead of failing."""
    import sqlite3
    import threading

    db = tmp_path / "fresh.db"
    sibling = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    sibling.execute("BEGIN IMMEDIATE")  # the write lock of a sibling mid-switch
    wal_attempts = 0
    retried_or_done = threading.Event()
    real_connect = sqlite3.connect

    def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)

        def trace(sql: str) -> None:
            nonlocal wal_attempts
            if sql.replace(" ", "").lower() == "pragmajournal_mode=wal":
                wal_attempts += 1
                if wal_attempts >= 2:  # the first attempt was refused and retried
                    retried_or_done.set()

        conn.set_trace_callback(trace)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced_connect)
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            StatsStore(db).close()
        except BaseException as exc:
            errors.append(exc)
        finally:
            retried_or_done.set()

    opener = threading.Thread(target=open_store)
    opener.start()
    try:
        assert retried_or_done.wait(30)
        assert errors == []  # still waiting, not failed
    finally:
        sibling.execute("COMMIT")
        sibling.close()
        opener.join(30)
    assert not opener.is_alive()
    assert errors == []
    assert wal_attempts >= 2
    with StatsStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION


def test_response_head_drops_hop_by_hop_and_fields_named_by_connection() -> None:
    from parlour.proxy.headers import build_response_head

    headers = [
        (b"Content-Type", b"text/plain"),
        (b"Connection", b"keep-alive, X-Secret"),
        (b"X-Secret", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"Content-Length", b"3"),
    ]
    head = build_response_head(
        200, b"OK", headers, client_version="1.1", framing="length", keep_alive=True
    )
    assert head == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
        b"Via: 1.1 parlour\r\n\r\n"
    )
    head = build_response_head(
        200, b"OK", headers, client_version="1.0", framing="chunked", keep_alive=False
    )
    assert b"Content-Length" not in head and b"X-Secret" not in head
    assert head.endswith(b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")


async def test_active_http_health_check_path_status_and_timeout(proxy: ProxyFactory) -> None:
    """health_kind = "http": GET health_path must answer health_expect_status in time; a
    backend that accepts connections but fails the check is taken out after `fall`."""
    from aiohttp import web

    from parlour.proxy.control import ProxySettings
    from parlour.proxy.health_checks import check_backend

    healthy = {"value": True}

    async def health(_request: web.Request) -> web.Response:
        return web.Response(status=200 if healthy["value"] else 503, text="health")

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text="a")

    app = web.Application()
    app.router.add_get("/healthz", health)
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, never answer

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    try:
        s = ProxySettings(health_kind="http", health_path="/healthz", health_timeout_s=0.3)
        assert await check_backend("127.0.0.1", port, s) == (True, "")
        ok, reason = await check_backend(
            "127.0.0.1", port, dataclasses.replace(s, health_path="/missing")
        )
        assert not ok and "status 404 (want 200)" in reason
        ok, reason = await check_backend("127.0.0.1", silent_port, s)
        assert (ok, reason) == (False, "health check timed out")
        ok, reason = await check_backend(
            "127.0.0.1", silent_port, dataclasses.replace(s, health_kind="tcp")
        )
        assert ok  # a TCP check only needs the connect

        rt = await proxy(
            [BackendSpec("127.0.0.1", port)],
            health_kind="http",
            health_path="/healthz",
            health_interval_s=0.05,
            health_fall=2,
            health_rise=2,
        )
        bid = f"127.0.0.1:{port}"
        healthy["value"] = False
        await wait_state(rt, bid, "down")
        snap = rt.backends()[0]
        assert snap.last_crash_reason == "health check: status 503 (want 200)"
        out = await raw_exchange(rt.listen_port or 0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 503")
        healthy["value"] = True
        await wait_state(rt, bid, "up")
        out = await raw_exchange(
            rt.listen_port or 0, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"a")
    finally:
        for w in held:
            w.close()
        silent.close()
        await runner.cleanup()


async def test_full_wait_queue_answers_503_at_once(proxy: ProxyFactory) -> None:
    """max_conns reached and the bounded queue (max_queue) full: 503 without waiting."""
    release = asyncio.Event()
    got_request = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        got_request.set()
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        writer.close()

    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        rt = await proxy(
            [BackendSpec("127.0.0.1", srv.sockets[0].getsockname()[1], max_conns=1)],
            max_queue=0,
            queue_timeout_s=60.0,
        )
        port = rt.listen_port or 0
        first = asyncio.create_task(
            raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        )
        # the proxy takes the backend slot before it connects: the backend seeing the
        # request means the slot is held
        await asyncio.wait_for(got_request.wait(), 10)
        assert rt.backends()[0].active_conns == 1
        out = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 503") and b"busy" in out
        release.set()
        assert (await asyncio.wait_for(first, 5)).startswith(b"HTTP/1.1 200")
    finally:
        release.set()
        srv.close()
