"""The proxy's asyncio runtime: one worker's lifecycle (listeners, health checks, the
reaper, persistence, the admin listener) and the `ProxyControl` implementation the admin
API talks to.

It composes the parts and owns no relaying itself: the relays (`tcp_relay`,
`http_relay`) and the fast lane work against `upstreams.Upstreams` (backends with slots,
connections, idle pools, client admission, counters), the store is `persistence`'s, and
every decision (which backend, up or down, retry or not) is made by the sans-I/O modules
`pool`, `balancing`, `health` and `admission`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

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
from parlour.proxy.persistence import (
    Items,
    Persistence,
    StoreLike,
    load_start_state,
    stored_settings,
)
from parlour.proxy.pool import Admin, Backend, BackendPool
from parlour.proxy.run_totals import RunTotals
from parlour.proxy.stats_merge import merge_backends, merge_totals
from parlour.proxy.tls import ServerTls, TlsError, backend_context
from parlour.proxy.upstreams import Upstreams

if TYPE_CHECKING:
    from aiohttp import web

    from parlour.proxy.fastlane import FastLane

__all__ = ["ProxyRuntime"]

log = logging.getLogger("parlour.proxy")


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
        self.clock = clock
        self.store = store  # (whoever made it closes it)
        self._admin_enabled = admin and config.admin_port is not None
        self.pool = BackendPool(validate_settings(config.settings))
        self.upstreams = Upstreams(config, self.pool, clock)
        self.run_totals = RunTotals()  # this run's bytes, removed backends included
        self.persistence = Persistence(
            store,
            writer=persist,
            run_id=self.run_id,
            worker=worker,
            workers=config.workers,
            items=lambda: [(b.spec, str(b.state)) for b in self.pool.all()],
            snapshots=self.own_backends,
            totals=self.own_totals,
            follow=self.follow,
        )
        self.pool.listeners.append(self.persistence.state_changed)
        self.pool.listeners.append(self.upstreams.state_changed)
        self.started_at = clock()
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._admin_runner: web.AppRunner | None = None
        self.admin_port: int | None = None
        self.admin_token: str | None = None
        self.listen_port: int | None = None
        self.fast_lane: FastLane | None = None  # the native data plane, when it runs
        self.tls: ServerTls | None = None  # TLS on the listener
        self.data_plane = "not started"

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
            backend_tls=self.upstreams.backend_ssl is not None,
            data_plane=self.data_plane,
            config_path=c.path,
        )

    def update_settings(self, **changes: object) -> ProxySettings:
        new = apply_setting_changes(self.pool.settings, changes)
        self.pool.apply_settings(new)
        self._settings_applied()
        log.info("settings changed: %s", ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        self.persistence.save_settings(new)
        return new

    def backends(self) -> list[BackendSnapshot]:
        """Every backend, with the other workers' counters added (see `totals`)."""
        own = self.own_backends()
        peers = self.persistence.peers
        if not peers:
            return own
        return merge_backends(own, [t.backends for t in peers])

    def own_backends(self) -> list[BackendSnapshot]:
        """This worker's own figures (what it persists)."""
        if self.fast_lane is not None:
            self.fast_lane.harvest()
        return self.pool.snapshots(self.clock())

    def totals(self) -> TotalsSnapshot:
        """Totals over all workers: this worker's live figures plus the other workers'
        latest saved ones (worker 0 reads them from the store every second)."""
        own = self.own_totals()
        peers = self.persistence.peers
        if not peers:
            return own
        return merge_totals(own, peers)

    def own_totals(self) -> TotalsSnapshot:
        """This worker's totals of this run (every counter), and its backends' figures
        (which carry earlier runs)."""
        snaps = tuple(self.own_backends())  # (harvests the fast lane first)
        bytes_in, bytes_out = self.run_totals.bytes(self.pool.all())
        ups = self.upstreams
        return TotalsSnapshot(
            started_at=self.started_at,
            active_conns=len(ups.conns) + ups.other_clients(),
            total_conns=ups.counters.total_conns,
            requests=ups.counters.requests,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            errors=ups.counters.errors,
            backends=snaps,
        )

    def add_backend(self, spec: BackendSpec) -> BackendSnapshot:
        b = self._add_live(spec)
        self.persistence.soon()
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
        self.upstreams.spawn(check_now(self.upstreams, b))
        return b

    def remove_backend(self, backend_id: str) -> None:
        b = self.pool.get(backend_id)
        self.run_totals.retire(b, self._snapshot(b))  # (its share of the totals stays)
        self.pool.remove(backend_id)
        self.upstreams.drop_idle(backend_id)
        if self.fast_lane is not None:
            self.fast_lane.drop_backend(b)
        self.persistence.soon()

    def _set_admin(self, backend_id: str, admin: Admin) -> BackendSnapshot:
        b = self.pool.set_admin(backend_id, admin, self.clock())
        if admin != "enabled":
            self.upstreams.drop_idle(backend_id)
            if self.fast_lane is not None:
                self.fast_lane.drop_backend(b)
        self.persistence.soon()
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
        self.persistence.soon()
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
            if self.tls is None and self.upstreams.backend_ssl is None:
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
        self.persistence.save_settings(fresh.settings)
        self.persistence.soon()
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
        if (backend_tls is None) != (self.upstreams.backend_ssl is None):
            log.warning(
                "TLS to backends stays %s until a restart (the file %s [backend_tls])",
                "off" if self.upstreams.backend_ssl is None else "on",
                "has" if backend_tls is not None else "has no",
            )
            backend_tls = self.config.backend_tls
        try:
            backend_ssl = backend_context(backend_tls) if backend_tls is not None else None
            if self.tls is not None and tls is not None:
                self.tls.reload(tls)  # (swaps only once every file has loaded)
        except TlsError as exc:
            raise ControlError("invalid", str(exc)) from None
        self.upstreams.backend_ssl = backend_ssl  # (new connections; pooled ones stay)
        return dataclasses.replace(fresh, tls=tls, backend_tls=backend_tls)

    # ============================================================== lifecycle
    # ============================================================== lifecycle
    def _load_initial_state(self) -> None:
        """The backends, operator states, settings and carried counters to start with
        (`persistence.load_start_state` says where from)."""
        carry = self.persistence.store is not None
        start = load_start_state(
            self.config,
            self.store,
            self.pool.settings,
            worker=self.worker,
            run_id=self.run_id,
            carry=carry,
        )
        if start.settings != self.pool.settings:
            self.pool.apply_settings(start.settings)
        now = self.clock()
        for spec, state in start.backends:
            admin: Admin = state if state in ("disabled", "draining") else "enabled"  # type: ignore[assignment]
            try:
                b = self.pool.add(spec, now, admin)
            except ControlError as exc:
                log.warning("skipping backend %s: %s", spec.id, exc.message)
                continue
            if spec.id in start.snaps and carry:
                # only worker 0 carries the previous totals; the others count from zero
                b.restore(start.snaps[spec.id])
        self.persistence.save_settings(self.pool.settings)
        self.persistence.save_now()
        # folded counters of backends not in this run's set are kept for a later one
        self.persistence.keep_snapshots(
            [start.snaps[bid] for bid in start.folded if self.pool.find(bid) is None]
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
            self.upstreams.backend_ssl = backend_context(self.config.backend_tls)
            if not self.config.backend_tls.verify:
                log.warning("TLS to backends WITHOUT certificate verification (verify = false)")
        self._load_initial_state()
        sock = sock or self._make_socket()
        await self._listen(sock)
        from parlour.proxy.health_checks import health_loop

        self._tasks.append(asyncio.create_task(health_loop(self.upstreams)))
        self._tasks.append(asyncio.create_task(self._reaper()))
        for loop in self.persistence.tasks():
            self._tasks.append(asyncio.create_task(loop))
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

    async def _listen(self, sock: socket.socket) -> None:
        """Serve `sock` with the fast lane when it can carry the traffic, else with the
        Python relay (asyncio Protocols, TLS when configured)."""
        from parlour.proxy.fastlane import FastLane, engine_class

        ups = self.upstreams
        engine, why = engine_class(
            self.config.mode,
            self.config.fast_lane,
            tls=self.tls is not None,
            backend_tls=ups.backend_ssl is not None,
        )
        if self.tls is not None:
            names = self.tls.names()
            log.info(
                "TLS on the listener (%s+)%s",
                self.tls.config.min_version,
                f", certificates by name for {', '.join(names)}" if names else "",
            )
        if engine is not None:
            sock.setblocking(False)
            sock.listen(self.config.backlog)
            self.listen_port = sock.getsockname()[1]
            self.fast_lane = FastLane(ups)
            self.fast_lane.start(engine, sock, self.tls)
            self.data_plane = "fast lane (native" + (", TLS)" if self.tls is not None else ")")
            log.info("data plane: %s", self.data_plane)
            return
        factory: Callable[[], asyncio.BaseProtocol]
        tls = self.tls is not None
        if self.config.mode == "tcp":
            from parlour.proxy.tcp_relay import TcpClient, TlsTcpClient

            tcp = TlsTcpClient if tls else TcpClient
            factory = lambda: tcp(ups)  # noqa: E731
        else:
            from parlour.proxy.http_relay import HttpClient, TlsHttpClient

            http = TlsHttpClient if tls else HttpClient
            factory = lambda: http(ups, tls=tls)  # noqa: E731
        server_ssl = None if self.tls is None else self.tls.context()
        server = await asyncio.get_running_loop().create_server(
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
            self.persistence.store,  # type: ignore[arg-type]
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
        ups = self.upstreams
        if ups.stopping:
            return
        ups.stopping = True
        for server in self._servers:
            server.close()
        fast = self.fast_lane
        if fast is not None:
            fast.stop_accepting()
        for conn in list(ups.conns):
            if not conn.busy:
                conn.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout_s
        while (any(c.busy for c in ups.conns) or (fast is not None and fast.busy)) and (
            loop.time() < deadline
        ):
            await asyncio.sleep(0.05)
        for conn in list(ups.conns):
            conn.shutdown()
        if fast is not None:
            fast.close()
        ups.close_idle()
        ups.cancel_background()
        for task in self._tasks:
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
        self.persistence.stop()
        log.info("parlour proxy stopped")

    def _settings_applied(self) -> None:
        if self.fast_lane is not None:
            self.fast_lane.configure()

    # ================================================================ workers 1..N-1
    def follow(self, items: Items, saved: dict[str, object] | None) -> None:
        """Make this worker's backend set, operator states and settings match `items` /
        `saved` (worker 0's, read from the store). Health stays this worker's own."""
        if saved:
            try:
                wanted_settings = stored_settings(self.pool.settings, saved)
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
        ups = self.upstreams
        while True:
            s = self.pool.settings
            shortest = min(
                s.client_timeout_s, s.server_timeout_s, s.idle_timeout_s, s.queue_timeout_s
            )
            await asyncio.sleep(min(1.0, max(0.02, shortest / 4)))
            now = loop.time()
            for conn in list(ups.conns):
                conn.check_timeouts(now)
            if self.fast_lane is not None:
                self.fast_lane.sweep()
                self.fast_lane.harvest()
            self.run_totals.fold()
            for b in self.pool.all():
                b.active_peak_prev, b.active_peak = b.active_peak, b.active
            ups.expire_idle(now)
