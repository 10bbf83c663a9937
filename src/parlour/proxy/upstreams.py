"""What the data planes need of the proxy, in one place: the upstream-facing side.

The relays (`http_relay`, `tcp_relay`), the fast lane's policy side (`fastlane`) and the
health checks depend on this module and nothing above it (no import of `runtime`, which
composes them). `Upstreams` gives them:

- backends with a slot taken (`try_acquire`, `acquire` with the bounded wait queue,
  `release`), chosen by the sans-I/O `BackendPool`;
- connections to them (`open_upstream`, `connect_upstream`): connect timeout, TLS to
  backends, retries on other backends, passive health and connection statistics;
- the Python relay's idle keep-alive pools (`take_idle`, `park_idle`, `drop_idle`,
  `expire_idle`);
- the client connections (`accept`, `forget`: admission against `max_connections`) and
  this run's proxy-wide `counters`;
- error pages (`error_page`, with Retry-After on 503s) and background tasks (`spawn`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from parlour.proxy.admission import WaitQueue, may_retry
from parlour.proxy.config import ProxyConfig
from parlour.proxy.headers import error_response
from parlour.proxy.pool import FULL, Backend, BackendPool, StateChange

__all__ = ["Counters", "IdleConnection", "Reapable", "UpstreamResult", "Upstreams"]

log = logging.getLogger("parlour.proxy")

UpstreamResult = tuple[Backend, asyncio.Transport, Any]
_C = TypeVar("_C")


class Reapable(Protocol):
    """A client connection, as the reaper and `stop()` see it."""

    def check_timeouts(self, now: float) -> None: ...
    def shutdown(self) -> None: ...
    @property
    def busy(self) -> bool: ...


class IdleConnection(Protocol):
    """A pooled upstream connection (the Python relay's `HttpUpstream`)."""

    backend: Backend
    closed: bool
    idle_since: float

    def expired(self, now: float) -> bool: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class Counters:
    """This run's proxy-wide counters (never going down while the process runs)."""

    total_conns: int = 0  # client connections admitted
    requests: int = 0
    errors: int = 0  # error answers (and failed tcp connections)
    rejected: int = 0  # clients refused at max_connections or while stopping


class Upstreams:
    """One worker's upstream side, shared by every relay and the fast lane."""

    def __init__(
        self,
        config: ProxyConfig,
        pool: BackendPool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.pool = pool
        self.clock = clock
        self.counters = Counters()
        self.conns: set[Reapable] = set()  # Python relay client connections
        # clients that live elsewhere (the fast lane's engine) but count toward the limit
        self.other_clients: Callable[[], int] = lambda: 0
        self.waiters: WaitQueue[asyncio.Future[None]] = WaitQueue(config.max_queue)
        self.idle: dict[str, list[IdleConnection]] = {}
        self.stopping = False
        self.backend_ssl: ssl.SSLContext | None = None  # TLS to backends (runtime sets it)
        self._background: set[asyncio.Task[None]] = set()
        self._all_down = False

    # ------------------------------------------------------------------ clients
    def at_limit(self) -> bool:
        """No new client now: max_connections reached, or the proxy is stopping."""
        clients = len(self.conns) + self.other_clients()
        return self.stopping or clients >= self.pool.settings.max_connections

    def accept(self, conn: Reapable | None) -> bool:
        """Admit a new client (`conn` joins the registry; None: one counted elsewhere),
        or count it as rejected and return False."""
        if self.at_limit():
            self.counters.rejected += 1
            return False
        if conn is not None:
            self.conns.add(conn)
        self.counters.total_conns += 1
        return True

    def forget(self, conn: Reapable) -> None:
        self.conns.discard(conn)

    # ------------------------------------------------------------------ misc
    def error_page(self, status: int, detail: str, *, busy: bool = False) -> bytes:
        """An error page. A 503 says when to retry (Retry-After): in a second when every
        backend is busy or the proxy is at its connection limit, else at the next health
        check, which may bring a backend back (at most a minute)."""
        retry = None
        if status == 503:
            wait = math.ceil(self.pool.settings.health_interval_s)
            retry = 1 if busy else min(60, max(1, wait))
        return error_response(status, detail, retry)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a background task, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def cancel_background(self) -> None:
        for task in list(self._background):
            task.cancel()

    # ------------------------------------------------------------------ all down
    def state_changed(self, change: StateChange) -> None:
        """A backend's state changed: say so once when none is left up, and when one is."""
        if change.new == "down" or change.old == "up":
            self.check_all_down()
        elif change.new == "up" and self._all_down:
            self._all_down = False
            log.info("backend %s is up again: traffic resumes", change.backend_id)

    def check_all_down(self) -> None:
        if len(self.pool) and not self.pool.any_up() and not self._all_down:
            self._all_down = True
            log.error("ALL BACKENDS ARE DOWN: clients get 503 (http) or a closed connection")

    # ------------------------------------------------------------------ slots
    def try_acquire(
        self, key: bytes | None, exclude: frozenset[str] = frozenset()
    ) -> Backend | str | None:
        """Synchronous fast path: a backend with a slot taken, "full", or None (none up)."""
        choice = self.pool.choose(self.clock(), key, exclude)
        if choice is FULL:
            return "full"
        if choice is None and exclude:
            choice = self.pool.choose(self.clock(), key)
            if choice is FULL:
                return "full"
        if isinstance(choice, Backend):
            choice.active += 1
            if choice.active > choice.active_peak:
                choice.active_peak = choice.active
            return choice
        self.check_all_down()
        return None

    async def acquire(
        self, key: bytes | None, exclude: frozenset[str] = frozenset()
    ) -> Backend | str:
        """A backend with a slot taken, or an error: "down" (no backend up), "queue_full",
        "queue_timeout". Waits in the bounded queue while all backends are at max_conns."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.pool.settings.queue_timeout_s
        while True:
            got = self.try_acquire(key, exclude)
            if isinstance(got, Backend):
                return got
            if got is None:
                return "down"
            remaining = deadline - loop.time()
            if remaining <= 0:
                return "queue_timeout"
            fut: asyncio.Future[None] = loop.create_future()
            if not self.waiters.push(fut, loop.time(), remaining):
                return "queue_full"
            for b in self.pool.all():
                if b.full:
                    b.queued += 1
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                self.waiters.remove(fut)
                return "queue_timeout"
            finally:
                for b in self.pool.all():
                    if b.queued:
                        b.queued -= 1

    def release(self, b: Backend) -> None:
        b.active -= 1
        if not self.waiters.waiting:  # (the usual case: nobody waits for a slot)
            return
        while True:
            fut = self.waiters.pop()
            if fut is None:
                return
            if not fut.done():
                fut.set_result(None)
                return

    # ------------------------------------------------------------------ connecting
    def backend_server_name(self, b: Backend) -> str:
        """The name sent (SNI) and verified when connecting to `b` over TLS."""
        cfg = self.config.backend_tls
        return cfg.server_name if cfg is not None and cfg.server_name else b.spec.host

    async def open_upstream(
        self,
        key: bytes | None,
        factory: Callable[[Backend], asyncio.BaseProtocol],
        first: Backend | None = None,
    ) -> UpstreamResult | str:
        """Acquire a backend and connect to it, retrying other backends on connect failure
        (up to retry_limit). Returns (backend, transport, protocol) or an error word.
        The slot stays taken on success; the caller releases it."""
        loop = asyncio.get_running_loop()

        def connect(b: Backend) -> Awaitable[tuple[asyncio.Transport, Any]]:
            if self.backend_ssl is not None:
                return loop.create_connection(
                    functools.partial(factory, b),
                    b.spec.host,
                    b.spec.port,
                    ssl=self.backend_ssl,
                    server_hostname=self.backend_server_name(b),
                    ssl_handshake_timeout=self.pool.settings.connect_timeout_s,
                )
            return loop.create_connection(functools.partial(factory, b), b.spec.host, b.spec.port)

        got = await self.connect_upstream(key, connect, first)
        if isinstance(got, str):
            return got
        b, (transport, protocol) = got
        return b, transport, protocol

    async def connect_upstream(
        self,
        key: bytes | None,
        connect: Callable[[Backend], Awaitable[_C]],
        first: Backend | None = None,
    ) -> tuple[Backend, _C] | str:
        """`open_upstream` with a pluggable connector (`connect(backend)`, e.g. a raw
        socket for the fast lane): acquire, connect within connect_timeout_s, retry other
        backends on failure. Returns (backend, connection) or an error word; the slot
        stays taken on success."""
        tried: set[str] = set()
        attempt = 0
        while True:
            if first is not None:
                got: Backend | str = first
                first = None
            else:
                got = await self.acquire(key, frozenset(tried))
            if isinstance(got, str):
                return got
            b = got
            s = self.pool.settings
            try:
                conn = await asyncio.wait_for(connect(b), s.connect_timeout_s)
            except asyncio.CancelledError:
                self.release(b)
                raise
            except (OSError, TimeoutError) as exc:
                self.release(b)
                b.connect_errors += 1
                reason = "connect timeout" if isinstance(exc, TimeoutError) else str(exc)
                self.pool.passive_failure(b.id, self.clock(), f"connect failed: {reason}")
                attempt += 1
                tried.add(b.id)
                if not may_retry(
                    attempt=attempt, retry_limit=s.retry_limit, request_sent=False, method=None
                ).retry:
                    log.warning("giving up after %d connect attempt(s): %s", attempt, reason)
                    return "connect_failed"
                b.retries += 1
                continue
            self.pool.passive_success(b.id, self.clock())
            b.total_conns += 1
            b.last_connected = self.clock()
            return b, conn

    # ------------------------------------------------------------------ idle pools
    def take_idle(self, backend_id: str) -> Any:
        """A pooled connection to the backend that is still open, or None."""
        idle = self.idle.get(backend_id)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def park_idle(self, conn: IdleConnection, now: float) -> bool:
        """Keep `conn` for the next request to its backend (True), or say it should be
        closed: the backend is not up and enabled any more, the proxy stops, or the pool
        is full. The pool holds max_idle_upstream connections, or as many requests as were
        in flight on the backend at once in the last second or two if that is more (a
        burst would otherwise pay a connect per request; the extra ones age out after
        idle_timeout_s)."""
        b = conn.backend
        if (
            conn.closed
            or b.health.state != "up"  # (b.state without the property call)
            or b.admin != "enabled"
            or self.stopping
            or self.pool.find(b.id) is not b
        ):
            return False
        idle = self.idle.setdefault(b.id, [])
        if len(idle) >= max(self.config.max_idle_upstream, b.active_peak, b.active_peak_prev):
            return False
        conn.idle_since = now
        idle.append(conn)
        return True

    def unpark(self, conn: IdleConnection) -> None:
        """`conn` closed while it waited in the pool."""
        idle = self.idle.get(conn.backend.id)
        if idle is not None and conn in idle:
            idle.remove(conn)

    def drop_idle(self, backend_id: str) -> None:
        """Close the pooled connections to a backend (removed, disabled or draining)."""
        for conn in self.idle.pop(backend_id, []):
            conn.close()

    def expire_idle(self, now: float) -> None:
        for backend_id, idle in list(self.idle.items()):
            keep = [c for c in idle if not c.expired(now)]
            if len(keep) != len(idle):
                self.idle[backend_id] = keep

    def close_idle(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
        self.idle.clear()
