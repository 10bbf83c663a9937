"""The proxy's asyncio runtime: listeners, backend connections, health checks, timeouts,
persistence — and the `ProxyControl` implementation the admin API talks to.

The relays (`tcp_relay`, `http_relay`) are asyncio Protocols (no streams in the hot path);
this module gives them backends (`acquire`/`release`/`open_upstream`) and keeps the
statistics. All decisions (which backend, up or down, retry or not) are made by the
sans-I/O modules `pool`, `balancing`, `health` and `admission`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import os
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from parlour.proxy.admission import WaitQueue, may_retry
from parlour.proxy.config import (
    ConfigError,
    ProxyConfig,
    apply_setting_changes,
    load_config,
    validate_settings,
)
from parlour.proxy.control import (
    BackendSnapshot,
    BackendSpec,
    ControlError,
    ListenerInfo,
    ProxySettings,
    TotalsSnapshot,
)
from parlour.proxy.headers import error_response
from parlour.proxy.pool import FULL, Admin, Backend, BackendPool, StateChange
from parlour.proxy.run_totals import RunTotals
from parlour.proxy.stats_merge import add_backend_counters, merge_backends, merge_totals
from parlour.proxy.tls import ServerTls, TlsError, backend_context

if TYPE_CHECKING:
    from aiohttp import web

    from parlour.proxy.fastlane import FastLane

__all__ = ["ProxyRuntime", "Reapable", "StoreLike", "UpstreamResult"]

log = logging.getLogger("parlour.proxy")

PERSIST_INTERVAL_S = 5.0
WORKER_STATS_INTERVAL_S = 1.0


class StoreLike(Protocol):
    def load_backends(self) -> list[tuple[BackendSpec, str]]: ...
    def save_backends(self, items: list[tuple[BackendSpec, str]]) -> None: ...
    def load_settings(self) -> dict[str, object] | None: ...
    def save_settings(self, settings: ProxySettings) -> None: ...
    def save_snapshot(self, snaps: list[BackendSnapshot]) -> None: ...
    def load_snapshots(self) -> dict[str, BackendSnapshot]: ...
    def close(self) -> None: ...


class WorkerStatsStore(Protocol):
    """What multi-worker statistics need on top of `StoreLike` (`StatsStore` has it)."""

    def save_worker_totals(self, run: str, worker: int, totals: TotalsSnapshot) -> None: ...
    def load_worker_totals(self, run: str) -> list[TotalsSnapshot]: ...
    def take_previous_runs(self, run: str) -> dict[str, BackendSnapshot]: ...


class Reapable(Protocol):
    def check_timeouts(self, now: float) -> None: ...
    def shutdown(self) -> None: ...
    @property
    def busy(self) -> bool: ...


UpstreamResult = tuple[Backend, asyncio.Transport, Any]
_C = TypeVar("_C")


class ProxyRuntime:
    """One worker's proxy. Create, `await start()`, later `await stop()`."""

    def __init__(
        self,
        config: ProxyConfig,
        *,
        store: StoreLike | None = None,
        clock: Callable[[], float] = time.time,
        admin: bool = True,
        persist: bool = True,
        worker: int = 0,
        run_id: str | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        # shared by all workers of one `parlour proxy` run (the parent picks it)
        self.run_id = run_id or secrets.token_hex(8)
        self._peer_totals: list[TotalsSnapshot] = []
        self.clock = clock
        self.store = store
        self._persist_enabled = persist
        self._follow_store: StoreLike | None = None
        self._admin_enabled = admin and config.admin_port is not None
        self.pool = BackendPool(validate_settings(config.settings))
        self.pool.listeners.append(self._on_state_change)
        self.conns: set[Reapable] = set()
        self.waiters: WaitQueue[asyncio.Future[None]] = WaitQueue(config.max_queue)
        self.started_at = clock()
        self.total_conns = 0
        self.requests = 0
        self.errors = 0
        self.run_totals = RunTotals()  # this run's bytes, removed backends included
        self.rejected = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._admin_runner: web.AppRunner | None = None
        self.admin_port: int | None = None
        self.admin_token: str | None = None
        self.listen_port: int | None = None
        self._persist_scheduled = False
        self._all_down = False
        self.stopping = False
        self.idle_upstream: dict[str, list[Any]] = {}
        self.fast_lane: FastLane | None = None  # the native data plane, when it runs
        self.tls: ServerTls | None = None  # TLS on the listener
        self.data_plane = "not started"
        self.backend_ssl: ssl.SSLContext | None = None  # TLS to backends

    # ============================================================ ProxyControl
    def settings(self) -> ProxySettings:
        return self.pool.settings

    def listener(self) -> ListenerInfo:
        c = self.config
        return ListenerInfo(
            mode=c.mode,
            listen_host=c.listen_host,
            listen_port=self.listen_port if self.listen_port is not None else c.listen_port,
            backlog=c.backlog,
            workers=c.workers,
            load_from=c.load_from,
            store=c.store,
            tls=self.tls is not None,
            backend_tls=self.backend_ssl is not None,
            data_plane=self.data_plane,
            config_path=c.path,
        )

    def update_settings(self, **changes: object) -> ProxySettings:
        new = apply_setting_changes(self.pool.settings, changes)
        self.pool.apply_settings(new)
        self._settings_applied()
        log.info("settings changed: %s", ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        if self.store is not None:
            self.store.save_settings(new)
        return new

    def backends(self) -> list[BackendSnapshot]:
        """Every backend, with the other workers' counters added (see `totals`)."""
        own = self.own_backends()
        if not self._peer_totals:
            return own
        return merge_backends(own, [t.backends for t in self._peer_totals])

    def own_backends(self) -> list[BackendSnapshot]:
        """This worker's own figures (what it persists)."""
        if self.fast_lane is not None:
            self.fast_lane.harvest()
        return self.pool.snapshots(self.clock())

    def totals(self) -> TotalsSnapshot:
        """Totals over all workers: this worker's live figures plus the other workers'
        latest saved ones (worker 0 reads them from the store every second)."""
        own = self.own_totals()
        if not self._peer_totals:
            return own
        return merge_totals(own, self._peer_totals)

    def own_totals(self) -> TotalsSnapshot:
        """This worker's totals of this run (every counter), and its backends' figures
        (which carry earlier runs)."""
        snaps = tuple(self.own_backends())  # (harvests the fast lane first)
        bytes_in, bytes_out = self.run_totals.bytes(self.pool.all())
        return TotalsSnapshot(
            started_at=self.started_at,
            active_conns=len(self.conns) + (self.fast_lane.clients if self.fast_lane else 0),
            total_conns=self.total_conns,
            requests=self.requests,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            errors=self.errors,
            backends=snaps,
        )

    def add_backend(self, spec: BackendSpec) -> BackendSnapshot:
        b = self._add_live(spec)
        self._persist_soon()
        return self._snapshot(b)

    def _add_live(self, spec: BackendSpec, admin: Admin = "enabled") -> Backend:
        """Add a backend while running: it is `checking` (no traffic) until the health
        check started here at once says up or down."""
        b = self.pool.add(spec, self.clock(), admin, health="checking")
        self.run_totals.revive(b)  # (removed earlier in this run: its counts go on)
        from parlour.proxy.health_checks import check_now

        try:
            asyncio.get_running_loop()
        except RuntimeError:  # (not running yet: the health loop checks it when it starts)
            return b
        self.spawn(check_now(self, b))
        return b

    def remove_backend(self, backend_id: str) -> None:
        b = self.pool.get(backend_id)
        self.run_totals.retire(b, self._snapshot(b))  # (its share of the totals stays)
        self.pool.remove(backend_id)
        for conn in self.idle_upstream.pop(backend_id, []):
            conn.close()
        if self.fast_lane is not None:
            self.fast_lane.drop_backend(b)
        self._persist_soon()

    def _set_admin(self, backend_id: str, admin: Admin) -> BackendSnapshot:
        b = self.pool.set_admin(backend_id, admin, self.clock())
        if admin != "enabled":
            for conn in self.idle_upstream.pop(backend_id, []):
                conn.close()
            if self.fast_lane is not None:
                self.fast_lane.drop_backend(b)
        self._persist_soon()
        return self._snapshot(b)

    def enable_backend(self, backend_id: str) -> BackendSnapshot:
        return self._set_admin(backend_id, "enabled")

    def disable_backend(self, backend_id: str) -> BackendSnapshot:
        return self._set_admin(backend_id, "disabled")

    def drain_backend(self, backend_id: str) -> BackendSnapshot:
        return self._set_admin(backend_id, "draining")

    def set_weight(self, backend_id: str, weight: int) -> BackendSnapshot:
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise ControlError("invalid", "weight must be an integer")
        b = self.pool.set_weight(backend_id, weight)
        self._persist_soon()
        return self._snapshot(b)

    def _snapshot(self, b: Backend) -> BackendSnapshot:
        """One backend's figures, with the fast lane's latest counters added first."""
        if self.fast_lane is not None:
            self.fast_lane.harvest()
        return b.snapshot(self.clock())

    async def reload(self) -> None:
        """Re-read the configuration file: live settings, the backend list (the file is
        the truth for backends: new ones are added, missing ones removed, weights
        updated) and the TLS certificates, which new connections use from then on.
        Established connections are kept. Started without a file, only the certificate
        files are read again. Nothing changes when anything fails (ControlError)."""
        if self.config.path is None:
            if self.tls is None and self.backend_ssl is None:
                raise ControlError("no_config", "the proxy was started without a config file")
            self._reload_tls(self.config)
            log.info("TLS certificates reloaded")
            return
        try:
            fresh = load_config(self.config.path)
        except ConfigError as exc:
            raise ControlError("invalid", str(exc)) from None
        fresh = self._reload_tls(fresh)
        self.pool.apply_settings(fresh.settings)
        self._settings_applied()
        wanted = {b.id: b for b in fresh.backends}
        for b in self.pool.all():
            if b.id not in wanted:
                self.remove_backend(b.id)
        for spec in fresh.backends:
            existing = self.pool.find(spec.id)
            if existing is None:
                self._add_live(spec)
            else:
                existing.spec = spec
                self.pool.set_weight(spec.id, spec.weight)
        self.config = dataclasses.replace(
            self.config,
            settings=fresh.settings,
            backends=fresh.backends,
            tls=fresh.tls,
            backend_tls=fresh.backend_tls,
        )
        if self.store is not None:
            self.store.save_settings(fresh.settings)
        self._persist_soon()
        log.info("configuration reloaded from %s", self.config.path)

    def _reload_tls(self, fresh: ProxyConfig) -> ProxyConfig:
        """Build TLS contexts from `fresh` (the certificate files read again) and put them
        in use; raise ControlError and change nothing if a file cannot be used. Turning
        TLS on or off needs a restart: then the running choice stays (with a warning).
        Returns `fresh` with the TLS parts actually in use."""
        tls, backend_tls = fresh.tls, fresh.backend_tls
        if (tls is None) != (self.tls is None):
            log.warning(
                "TLS on the listener stays %s until a restart (the file %s [tls])",
                "off" if self.tls is None else "on, its certificates read again",
                "has" if tls is not None else "has no",
            )
            tls = self.config.tls
        if (backend_tls is None) != (self.backend_ssl is None):
            log.warning(
                "TLS to backends stays %s until a restart (the file %s [backend_tls])",
                "off" if self.backend_ssl is None else "on",
                "has" if backend_tls is not None else "has no",
            )
            backend_tls = self.config.backend_tls
        try:
            backend_ssl = backend_context(backend_tls) if backend_tls is not None else None
            if self.tls is not None and tls is not None:
                self.tls.reload(tls)  # (swaps only once every file has loaded)
        except TlsError as exc:
            raise ControlError("invalid", str(exc)) from None
        self.backend_ssl = backend_ssl  # (new backend connections; pooled ones stay)
        return dataclasses.replace(fresh, tls=tls, backend_tls=backend_tls)

    # ============================================================== lifecycle
    def _load_initial_state(self) -> None:
        """The backends, their operator states and the settings to start with. What the
        command line set wins; then, with load_from = "previous", what the previous run
        saved in the store; then the config file; then the defaults. Logged (worker 0)."""
        now = self.clock()
        c = self.config
        say = log.info if self.worker == 0 else log.debug
        specs: list[tuple[BackendSpec, str]] = [(b, "up") for b in c.backends]
        from_cli = "backends" in c.explicit
        origin = "the command line (--backend)" if from_cli else (c.path or "the defaults")
        folded: list[str] = []
        previous = c.load_from == "previous"
        if previous and self.store is None:
            log.warning("load_from = previous needs a store (--store): starting from %s", origin)
        if self.store is not None:
            if previous:
                stored = self.store.load_backends()
                if from_cli:
                    say(
                        "backends: %d from the command line (--backend); load_from = previous: "
                        "not used for backends",
                        len(specs),
                    )
                elif stored:
                    specs = stored
                    say("backends: %d from the previous run (%s)", len(specs), c.store)
                else:
                    say("backends: %d from %s (no previous run in %s)", len(specs), origin, c.store)
                self._restore_settings(self.store.load_settings())
            else:
                say("backends: %d from %s", len(specs), origin)
            snaps = self.store.load_snapshots()
            take = getattr(self.store, "take_previous_runs", None)
            if self._persist_enabled and take is not None:
                # the other workers' share of earlier runs joins worker 0's carried totals
                for bid, extra in take(self.run_id).items():
                    snaps[bid] = add_backend_counters(snaps[bid], extra) if bid in snaps else extra
                    folded.append(bid)
        else:
            say("backends: %d from %s", len(specs), origin)
            snaps = {}
        for spec, state in specs:
            admin: Admin = state if state in ("disabled", "draining") else "enabled"  # type: ignore[assignment]
            try:
                b = self.pool.add(spec, now, admin)
            except ControlError as exc:
                log.warning("skipping backend %s: %s", spec.id, exc.message)
                continue
            if spec.id in snaps and self._persist_enabled:
                # only worker 0 carries the previous totals; the others count from zero
                b.restore(snaps[spec.id])
        if self.store is not None and not self._persist_enabled:
            # extra worker processes only read the store: worker 0 owns the writes, and
            # the others follow its backend set, operator states and settings
            self._follow_store = self.store
            self.store = None
        if self.store is not None:
            self.store.save_settings(self.pool.settings)
            self._persist()
            # folded counters of backends not in this run's set are kept for a later one
            absent = [snaps[bid] for bid in folded if self.pool.find(bid) is None]
            if absent:
                self.store.save_snapshot(absent)

    def _restore_settings(self, saved: dict[str, object] | None) -> None:
        """load_from = previous: the previous run's settings, except those the command
        line set."""
        c = self.config
        say = log.info if self.worker == 0 else log.debug
        if not saved:
            say("settings: from %s (no previous run in %s)", c.path or "the defaults", c.store)
            return
        known = {f.name for f in dataclasses.fields(ProxySettings)}
        keep = sorted(known & c.explicit)
        changes = {k: v for k, v in saved.items() if k in known and k not in c.explicit}
        try:
            self.pool.apply_settings(apply_setting_changes(self.pool.settings, changes))
        except ControlError as exc:
            log.warning("ignoring stored settings: %s", exc.message)
            return
        say(
            "settings: the previous run's (%s)%s",
            c.store,
            f", except {', '.join(keep)} from the command line" if keep else "",
        )

    def _make_socket(self) -> socket.socket:
        host, port = self.config.listen_host, self.config.listen_port
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.config.workers > 1 and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.setblocking(False)
        return sock

    async def start(self, sock: socket.socket | None = None) -> None:
        # certificates first: a bad file is a clear error before anything listens
        if self.config.tls is not None:
            self.tls = ServerTls(self.config.tls)
        if self.config.backend_tls is not None:
            self.backend_ssl = backend_context(self.config.backend_tls)
            if not self.config.backend_tls.verify:
                log.warning("TLS to backends WITHOUT certificate verification (verify = false)")
        self._load_initial_state()
        loop = asyncio.get_running_loop()
        sock = sock or self._make_socket()
        from parlour.proxy.fastlane import FastLane, engine_class

        engine, why = engine_class(self.config.mode, self.config.fast_lane)
        if engine is not None and (self.tls is not None or self.backend_ssl is not None):
            # the engine relays plain HTTP on both sides
            engine, why = None, "TLS " + ("listener" if self.tls is not None else "to backends")
        if engine is not None:
            sock.setblocking(False)
            sock.listen(self.config.backlog)
            self.listen_port = sock.getsockname()[1]
            self.fast_lane = FastLane(self)
            self.fast_lane.start(engine, sock)
            self.data_plane = "fast lane (native)"
            log.info("data plane: %s", self.data_plane)
        else:
            factory: Callable[[], asyncio.Protocol]
            tls = self.tls is not None
            if self.config.mode == "tcp":
                from parlour.proxy.tcp_relay import TcpClient

                factory = lambda: TcpClient(self)  # noqa: E731
            else:
                from parlour.proxy.http_relay import HttpClient

                factory = lambda: HttpClient(self, tls=tls)  # noqa: E731
            server_ssl = None
            if self.tls is not None:
                server_ssl = self.tls.context()
                names = self.tls.names()
                log.info(
                    "TLS on the listener (%s+)%s",
                    self.tls.config.min_version,
                    f", certificates by name for {', '.join(names)}" if names else "",
                )
            server = await loop.create_server(
                factory,
                sock=sock,
                backlog=self.config.backlog,
                ssl=server_ssl,
                ssl_handshake_timeout=self.pool.settings.client_timeout_s if server_ssl else None,
            )
            self._servers.append(server)
            self.listen_port = server.sockets[0].getsockname()[1]
            self.data_plane = f"python relay ({why})"
            log.info("data plane: %s", self.data_plane)
        from parlour.proxy.health_checks import health_loop

        self._tasks.append(asyncio.create_task(health_loop(self)))
        self._tasks.append(asyncio.create_task(self._reaper()))
        if self.store is not None:
            self._tasks.append(asyncio.create_task(self._persist_loop()))
            if self.config.workers > 1 and hasattr(self.store, "load_worker_totals"):
                peers = cast("WorkerStatsStore", self.store)
                self._tasks.append(asyncio.create_task(self._peer_stats_loop(peers)))
        if self._follow_store is not None:
            self._tasks.append(asyncio.create_task(self._follow_loop(self._follow_store)))
            if hasattr(self._follow_store, "save_worker_totals"):
                mine = cast("WorkerStatsStore", self._follow_store)
                self._tasks.append(asyncio.create_task(self._worker_stats_loop(mine)))
        if self._admin_enabled:
            await self._start_admin()
        if not len(self.pool):
            where = (
                f"on the dashboard ({self._admin_url()}) or"
                if self._admin_runner is not None
                else "with a reload of the config file or, with the admin listener,"
            )
            log.warning(
                "no backends yet: clients get 503 until one is added %s with POST /api/backends",
                where,
            )
        log.info(
            "parlour proxy (%s%s) listening on %s:%s with %d backend(s), algorithm %s",
            self.config.mode,
            " over TLS" if self.tls is not None else "",
            self.config.listen_host,
            self.listen_port,
            len(self.pool),
            self.pool.settings.algorithm,
        )

    async def _start_admin(self) -> None:
        from aiohttp import web

        from parlour.proxy.admin import RedactingAccessLogger, create_admin_app

        token = self.config.admin_token or os.environ.get("PARLOUR_PROXY_TOKEN") or ""
        if not token:
            token = secrets.token_urlsafe(24)
            print(f"parlour proxy: admin token (generated, shown once): {token}", flush=True)
        self.admin_token = token
        app = create_admin_app(
            self,
            token,
            self.store,  # type: ignore[arg-type]
            metrics_public=self.config.metrics_public,
        )
        runner = web.AppRunner(app, access_log_class=RedactingAccessLogger)
        await runner.setup()
        admin_ssl = None
        if self.config.admin_tls_cert and self.config.admin_tls_key:
            from parlour.proxy.tls import admin_context

            admin_ssl = admin_context(self.config.admin_tls_cert, self.config.admin_tls_key)
        site = web.TCPSite(
            runner, self.config.admin_host, self.config.admin_port or 0, ssl_context=admin_ssl
        )
        await site.start()
        self._admin_runner = runner
        addresses = runner.addresses
        if addresses:
            self.admin_port = int(addresses[0][1])
        log.info("admin API and dashboard on %s", self._admin_url())

    def _admin_url(self) -> str:
        scheme = "https" if self.config.admin_tls_cert else "http"
        return f"{scheme}://{self.config.admin_host}:{self.admin_port}/"

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Stop accepting, let busy connections finish (up to the timeout), close the rest."""
        if self.stopping:
            return
        self.stopping = True
        for server in self._servers:
            server.close()
        fast = self.fast_lane
        if fast is not None:
            fast.stop_accepting()
        for conn in list(self.conns):
            if not conn.busy:
                conn.shutdown()
        deadline = asyncio.get_running_loop().time() + drain_timeout_s
        while (
            any(c.busy for c in self.conns) or (fast is not None and fast.busy)
        ) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.conns):
            conn.shutdown()
        if fast is not None:
            fast.close()
        for conns in self.idle_upstream.values():
            for up in conns:
                up.close()
        self.idle_upstream.clear()
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        if self.store is not None:
            self._persist()
        if self._follow_store is not None and hasattr(self._follow_store, "save_worker_totals"):
            self._save_worker_totals(cast("WorkerStatsStore", self._follow_store))
        log.info("parlour proxy stopped")

    def _settings_applied(self) -> None:
        if self.fast_lane is not None:
            self.fast_lane.configure()

    # ============================================================ persistence
    def _on_state_change(self, change: StateChange) -> None:
        self._persist_soon()
        record = getattr(self.store, "record_event", None)
        if record is not None and change.new in ("up", "down"):
            try:
                record(change.backend_id, change.new, change.reason, change.at)
            except Exception:
                log.exception("could not record the state change")
        if change.new == "down" or change.old == "up":
            self._check_all_down()
        elif change.new == "up" and self._all_down:
            self._all_down = False
            log.info("backend %s is up again: traffic resumes", change.backend_id)

    def _check_all_down(self) -> None:
        if len(self.pool) and not self.pool.any_up() and not self._all_down:
            self._all_down = True
            log.error("ALL BACKENDS ARE DOWN: clients get 503 (http) or a closed connection")

    def _persist_soon(self) -> None:
        if self.store is None or self._persist_scheduled:
            return
        self._persist_scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self._persist)
        except RuntimeError:
            self._persist()

    def _persist(self) -> None:
        self._persist_scheduled = False
        if self.store is None:
            return
        try:
            self.store.save_backends([(b.spec, b.state) for b in self.pool.all()])
            self.store.save_snapshot(self.own_backends())
        except Exception:
            log.exception("could not persist proxy statistics")

    async def _persist_loop(self) -> None:
        while True:
            await asyncio.sleep(PERSIST_INTERVAL_S)
            store = self.store
            if store is None:
                return
            items = [(b.spec, str(b.state)) for b in self.pool.all()]
            snaps = self.own_backends()
            try:  # SQLite off the event loop thread (the store is thread-safe)
                await asyncio.to_thread(_write_store, store, items, snaps)
            except Exception:
                log.exception("could not persist proxy statistics")

    def _save_worker_totals(self, store: WorkerStatsStore) -> None:
        try:
            store.save_worker_totals(self.run_id, self.worker, self.own_totals())
        except Exception:
            log.exception("could not save this worker's statistics")

    async def _worker_stats_loop(self, store: WorkerStatsStore) -> None:
        """Workers 1..N-1: publish this worker's counters for worker 0 to add up."""
        while True:
            await asyncio.sleep(WORKER_STATS_INTERVAL_S)
            totals = self.own_totals()
            try:
                await asyncio.to_thread(store.save_worker_totals, self.run_id, self.worker, totals)
            except Exception:
                log.exception("could not save this worker's statistics")

    async def _peer_stats_loop(self, store: WorkerStatsStore) -> None:
        """Worker 0: fetch the other workers' latest counters for `totals()`."""
        while True:
            await asyncio.sleep(WORKER_STATS_INTERVAL_S)
            try:
                self._peer_totals = await asyncio.to_thread(store.load_worker_totals, self.run_id)
            except Exception:
                log.exception("could not read the other workers' statistics")

    async def _follow_loop(self, store: StoreLike, period_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                items, saved = await asyncio.to_thread(
                    lambda: (store.load_backends(), store.load_settings())
                )
                self.follow(items, saved)
            except Exception:
                log.exception("could not follow worker 0's state")

    def follow(self, items: list[tuple[BackendSpec, str]], saved: dict[str, object] | None) -> None:
        """Make this worker's backend set, operator states and settings match `items` /
        `saved` (worker 0's, read from the store). Health stays this worker's own."""
        if saved:
            known = {f.name for f in dataclasses.fields(ProxySettings)}
            try:
                wanted_settings = apply_setting_changes(
                    self.pool.settings, {k: v for k, v in saved.items() if k in known}
                )
            except ControlError as exc:
                log.warning("ignoring stored settings: %s", exc.message)
            else:
                if wanted_settings != self.pool.settings:
                    self.pool.apply_settings(wanted_settings)
                    self._settings_applied()
        wanted = {spec.id: (spec, state) for spec, state in items}
        if not wanted:
            return
        for b in self.pool.all():
            if b.id not in wanted:
                self.remove_backend(b.id)
        for spec, state in wanted.values():
            admin: Admin = state if state in ("disabled", "draining") else "enabled"  # type: ignore[assignment]
            existing = self.pool.find(spec.id)
            if existing is None:
                self._add_live(spec, admin)
                continue
            if existing.spec != spec:
                existing.spec = spec
                self.pool.set_weight(spec.id, spec.weight)
            if existing.admin != admin:
                self._set_admin(spec.id, admin)

    # ================================================================ timeouts
    async def _reaper(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            s = self.pool.settings
            shortest = min(
                s.client_timeout_s, s.server_timeout_s, s.idle_timeout_s, s.queue_timeout_s
            )
            await asyncio.sleep(min(1.0, max(0.02, shortest / 4)))
            now = loop.time()
            for conn in list(self.conns):
                conn.check_timeouts(now)
            if self.fast_lane is not None:
                self.fast_lane.sweep()
                self.fast_lane.harvest()
            self.run_totals.fold()
            for b in self.pool.all():
                b.active_peak_prev, b.active_peak = b.active_peak, b.active
            for backend_id, idle in list(self.idle_upstream.items()):
                keep = [c for c in idle if not c.expired(now)]
                if len(keep) != len(idle):
                    self.idle_upstream[backend_id] = keep

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

    # ============================================================== backends
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
        self._check_all_down()
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

    async def open_upstream(
        self,
        key: bytes | None,
        factory: Callable[[Backend], asyncio.Protocol],
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

    def backend_server_name(self, b: Backend) -> str:
        """The name sent (SNI) and verified when connecting to `b` over TLS."""
        cfg = self.config.backend_tls
        return cfg.server_name if cfg is not None and cfg.server_name else b.spec.host

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


def _write_store(
    store: StoreLike, items: list[tuple[BackendSpec, str]], snaps: list[BackendSnapshot]
) -> None:
    store.save_backends(items)
    store.save_snapshot(snaps)
