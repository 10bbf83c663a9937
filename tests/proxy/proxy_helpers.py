from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from parlour.proxy.config import ProxyConfig
from parlour.proxy.control import BackendSnapshot, BackendSpec, ProxySettings
from parlour.proxy.pool import StateChange
from parlour.proxy.runtime import ProxyRuntime


@dataclass
class Backend:
    name: str
    port: int
    runner: web.AppRunner
    seen: list[web.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    # (threshold, future) pairs resolved by `saw` when `seen` reaches them
    _seen_waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)

    def saw(self, request: web.Request) -> None:
        """Record a request the backend received and wake `seen_at_least` waiters."""
        self.seen.append(request)
        for n, fut in list(self._seen_waiters):
            if len(self.seen) >= n and not fut.done():
                fut.set_result(None)

    async def seen_at_least(self, n: int, timeout: float = 10.0) -> None:
        """Wait until this backend has received ``n`` requests in all."""
        if len(self.seen) >= n:
            return
        waiter = (n, asyncio.get_running_loop().create_future())
        self._seen_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter[1], timeout)
        finally:
            self._seen_waiters.remove(waiter)

    @property
    def spec(self) -> BackendSpec:
        return BackendSpec("127.0.0.1", self.port)

    async def stop(self) -> None:
        await self.runner.cleanup()


def backend_app(b: Backend) -> web.Application:
    async def index(request: web.Request) -> web.Response:
        b.saw(request)
        b.headers.append(dict(request.headers))
        return web.Response(text=b.name)

    async def echo(request: web.Request) -> web.StreamResponse:
        b.saw(request)
        b.headers.append(dict(request.headers))
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        total = bytearray()
        async for chunk in request.content.iter_any():
            total += chunk
            await resp.write(chunk)
        b.bodies.append(bytes(total))
        await resp.write_eof()
        return resp

    async def ws(request: web.Request) -> web.WebSocketResponse:
        b.saw(request)
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str(f"{b.name}:{msg.data}")
        return sock

    async def big(request: web.Request) -> web.StreamResponse:
        b.saw(request)
        n = int(request.query.get("n", "1000000"))
        resp = web.StreamResponse()
        resp.content_length = n
        await resp.prepare(request)
        block = b"x" * 65536
        sent = 0
        while sent < n:
            piece = block[: min(len(block), n - sent)]
            await resp.write(piece)
            sent += len(piece)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/", index)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/ws", ws)
    app.router.add_get("/big", big)
    app.router.add_route("*", "/{tail:.*}", index)
    return app


async def start_backend(name: str, port: int = 0) -> Backend:
    b = Backend(name, 0, None)  # type: ignore[arg-type]
    runner = web.AppRunner(backend_app(b), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    b.runner = runner
    b.port = int(runner.addresses[0][1])
    return b


BackendFactory = Callable[..., Awaitable[Backend]]
ProxyFactory = Callable[..., Awaitable[ProxyRuntime]]


@pytest.fixture
async def backends() -> AsyncIterator[BackendFactory]:
    started: list[Backend] = []

    async def make(name: str, port: int = 0) -> Backend:
        b = await start_backend(name, port)
        started.append(b)
        return b

    yield make
    for b in started:
        with contextlib.suppress(Exception):
            await b.stop()


@pytest.fixture
async def proxy() -> AsyncIterator[ProxyFactory]:
    started: list[ProxyRuntime] = []

    async def make(
        backend_specs: list[BackendSpec], *, mode: str = "http", store: object = None, **kw: object
    ) -> ProxyRuntime:
        cfg_fields = {
            k: kw.pop(k)
            for k in list(kw)
            if k
            in {
                "proxy_protocol",
                "max_header_bytes",
                "max_queue",
                "load_from",
                "path",
                "max_idle_upstream",
                "tls",
                "backend_tls",
            }
        }
        settings = ProxySettings(**{"health_interval_s": 60.0, **kw})  # type: ignore[arg-type]
        cfg = ProxyConfig(
            mode=mode,  # type: ignore[arg-type]
            listen_port=0,
            admin_port=None,
            settings=settings,
            backends=tuple(backend_specs),
            **cfg_fields,  # type: ignore[arg-type]
        )
        rt = ProxyRuntime(cfg, store=store)  # type: ignore[arg-type]
        await rt.start()
        started.append(rt)
        return rt

    yield make
    for rt in started:
        await rt.stop(drain_timeout_s=0.5)
    for rt in started:  # no slot leaked or released twice
        assert [b.active for b in rt.pool.all()] == [0] * len(rt.pool)


async def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the proxy closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def wait_state(rt: ProxyRuntime, backend_id: str, state: str, timeout: float = 10) -> None:
    """Wait (event-driven, through ``rt.pool.listeners``) until a backend is in ``state``."""
    if rt.pool.get(backend_id).state == state:
        return
    reached = asyncio.Event()

    def on_change(change: StateChange) -> None:
        if change.backend_id == backend_id and change.new == state:
            reached.set()

    rt.pool.listeners.append(on_change)
    try:
        await asyncio.wait_for(reached.wait(), timeout)
    finally:
        rt.pool.listeners.remove(on_change)


class FakeStore:
    """An in-memory stand-in for `StatsStore` (what `ProxyRuntime` uses of it)."""

    def __init__(self) -> None:
        self.backends: list[tuple[BackendSpec, str]] = []
        self.settings: dict[str, object] | None = None
        self.snaps: dict[str, BackendSnapshot] = {}

    def load_backends(self) -> list[tuple[BackendSpec, str]]:
        return list(self.backends)

    def save_backends(self, items: list[tuple[BackendSpec, str]]) -> None:
        self.backends = list(items)

    def load_settings(self) -> dict[str, object] | None:
        return self.settings

    def save_settings(self, settings: ProxySettings) -> None:
        self.settings = dataclasses.asdict(settings)

    def save_snapshot(self, snaps: list[BackendSnapshot]) -> None:
        self.snaps.update({s.id: s for s in snaps})

    def load_snapshots(self) -> dict[str, BackendSnapshot]:
        return dict(self.snaps)

    def close(self) -> None:
        pass


def counts(names: list[str]) -> Counter[str]:
    return Counter(names)


class ProxyProcess:
    """A `parlour proxy` subprocess whose stderr log lines can be waited on."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def wait_for(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        """Read log lines until ``pattern`` has matched ``count`` of them; return the matches."""
        assert self.proc.stderr is not None
        while len(found := [m for x in self.lines if (m := re.search(pattern, x))]) < count:
            line = (await self.proc.stderr.readline()).decode()
            if not line:
                raise AssertionError("proxy exited:\n" + "".join(self.lines))
            self.lines.append(line)
        return found

    def log(self) -> str:
        return "".join(self.lines)


@contextlib.asynccontextmanager
async def proxy_process(cfg: Path, token: str, *args: str) -> AsyncIterator[ProxyProcess]:
    """Run `parlour proxy --config cfg [args...]` with the admin token; SIGTERM it afterwards
    (kill if it hangs) and check that it exited with status 0."""
    env = {**os.environ, "PARLOUR_PROXY_TOKEN": token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parlour", "proxy", "--config", str(cfg), *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    p = ProxyProcess(proc)
    try:
        yield p
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.communicate(), 20)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, p.log()


T = TypeVar("T")

# How often `poll_worker_tick` re-reads; well below the workers' 1 s publishing tick.
WORKER_POLL_INTERVAL_S = 0.1


async def poll_worker_tick(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 15.0
) -> T:
    """The one deliberate poll in the proxy tests: wait until ``done(await probe())``.

    With ``parlour proxy --workers N`` the workers are separate processes. Workers 1..N-1
    publish their counters to the stats database on a periodic tick
    (``WORKER_STATS_INTERVAL_S``, 1 s) and worker 0 reads them back on its own tick; neither
    step writes a log line or signals anything the test could wait on. The only observables
    are worker 0's admin API (``/api/stats``) and the stats database, so the test re-reads
    one of them (``probe``) until the merged value is there, bounded by ``timeout``."""

    async def poll() -> T:
        while not done(value := await probe()):
            await asyncio.sleep(WORKER_POLL_INTERVAL_S)
        return value

    return await asyncio.wait_for(poll(), timeout)


async def poll_admin_until(
    session: aiohttp.ClientSession,
    admin_port: int,
    token: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 15.0,
) -> dict[str, Any]:
    """Re-read worker 0's ``/api/stats`` until ``done(stats)``; see `poll_worker_tick`."""
    url = f"http://127.0.0.1:{admin_port}/api/stats"

    async def probe() -> dict[str, Any]:
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
            stats: dict[str, Any] = await r.json()
        return stats

    return await poll_worker_tick(probe, done, timeout)


def epoll_events(epfd: int, fd: int) -> int:
    """The event mask `fd` is registered with in the epoll set `epfd` (/proc fdinfo)."""
    with open(f"/proc/self/fdinfo/{epfd}") as f:
        for line in f:
            parts = line.split()
            if parts[:1] == ["tfd:"] and int(parts[1]) == fd:
                return int(parts[3], 16)
    raise AssertionError(f"fd {fd} is not in the epoll set")
