"""Composition root: settings -> store -> core -> writer, needs, bus -> hub -> endpoint -> doors.

``ChatServer.start(settings)`` builds and starts everything on the running loop;
``await server.stop()`` shuts down gracefully (stop accepting, finish in-flight writes, tell
clients, flush and close the store). Used by ``parlour serve`` and by the end-to-end tests
(in-process, on port 0).
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from parlour.bus.memory import InProcessBus
from parlour.core.config import CoreConfig
from parlour.core.file_tokens import file_token_key
from parlour.core.needs import Answers, Need
from parlour.core.outcome import Delivery, Outcome
from parlour.core.passwords import Argon2Hasher, generate_password
from parlour.core.ports import Bus, BusMessage, PasswordHasher, Reads, Store
from parlour.core.service import ChatService
from parlour.files.http import UPLOAD_URL, FileLimits, FilesHttp
from parlour.p2p.relay import RelayConfig
from parlour.server.cluster import ClusterNode, new_node_id
from parlour.server.config import Settings, describe
from parlour.storage.memory import MemoryStore
from parlour.storage.reads import InlineReads
from parlour.storage.sqlite import SqliteStore
from parlour.transports.endpoint import Endpoint, EndpointLimits
from parlour.transports.http_guard import HttpGuard
from parlour.transports.hub import Hub
from parlour.transports.needs import NeedRunner
from parlour.transports.pipeline import InlineWriter, Pipeline, StoreWriter
from parlour.transports.proxy_header import networks
from parlour.transports.tcp import TcpListener, WireFactory, make_server_ssl_context
from parlour.transports.udp_relay import ChatRelay
from parlour.transports.web import WebListener
from parlour.web.assets import Assets

__all__ = ["ChatServer", "check_open_file_limit", "core_config", "open_store"]

log = logging.getLogger("parlour.server")

#: descriptors the server needs besides its connections (listening sockets, the database and
#: its WAL files, the event loop's own, the thread pools')
SPARE_FILES = 64


def check_open_file_limit(max_connections: int) -> int | None:
    """Warn when the process may not open ``max_connections`` sockets; returns the soft limit
    when it is too low. Only reads the limit: raising it is the operator's (``ulimit -n``,
    systemd ``LimitNOFILE``), not a library's, to decide."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max_connections + SPARE_FILES
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    log.warning(
        "open-file limit too low for max_connections",
        extra={
            "fields": {
                "soft_limit": soft,
                "hard_limit": hard,
                "max_connections": max_connections,
                "needed": need,
                "hint": "raise `ulimit -n` (systemd: LimitNOFILE) or lower max_connections",
            }
        },
    )
    return int(soft)


def core_config(settings: Settings) -> CoreConfig:
    """The core's settings from the server's (only fields the core knows are passed)."""
    wanted: dict[str, Any] = {
        "password_min_length": settings.min_password,
        "lockout_threshold": settings.lockout_attempts,
        "lockout_seconds": settings.lockout_seconds,
        "address_lockout_threshold": settings.address_lockout_attempts,
        "account_lockout_threshold": settings.account_lockout_attempts,
        "read_rate_per_second": settings.read_rate,
        "read_burst": float(settings.read_burst),
        "duplicate_login": settings.duplicate_login,
        "broadcast_policy": settings.broadcast,
        "log_message_text": settings.log_message_text,
        "default_rooms": settings.default_rooms,
        "join_history": settings.history_on_join,
        "max_message_length": settings.max_message,
        "rate_per_second": settings.rate,
        "rate_burst": float(settings.burst),
        "presence_window": settings.presence_window,
        "session_token_ttl": settings.session_token_ttl,
        "heartbeat_s": settings.heartbeat,
        "max_frame": settings.max_frame,
        "file_transfers": settings.p2p,
        "file_offer_ttl": settings.p2p_offer_ttl,
        "file_offers_per_user": settings.p2p_offers_per_user,
        "file_offers_max": settings.p2p_max_offers,
        "upload_url": UPLOAD_URL if settings.web and settings.uploads else None,
        "max_file_size": settings.max_file_size,
        "user_quota": settings.user_quota,
        "max_concurrent_uploads": settings.max_concurrent_uploads,
        "file_token_key": file_token_key(settings.secret_key) if settings.secret_key else None,
        # one login/sync catch-up is written at once: it must fit the per-connection send
        # queue with room to spare, or a reconnecting client is cut off as a slow consumer
        "catch_up_bytes": min(CoreConfig().catch_up_bytes, settings.send_queue_max // 2),
        # PostgreSQL: the store is shared by any number of nodes, so it assigns sequence numbers
        "cluster": settings.postgres,
    }
    known = {f.name for f in dataclasses.fields(CoreConfig)}
    return CoreConfig(**{k: v for k, v in wanted.items() if k in known})


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules
        return False


def _needs_cluster_extra(what: str) -> None:
    missing = [m for m in ("asyncpg", "redis") if not _importable(m)]
    if missing:
        raise ValueError(
            f"{what} needs the optional 'cluster' dependencies, which are not installed"
            f" (missing: {', '.join(missing)}); install them with: pip install 'parlour[cluster]'"
        )


def open_store(settings: Settings) -> Store:
    if settings.store == "memory":
        return MemoryStore()
    if settings.postgres:
        _needs_cluster_extra("--store postgresql://…")
        from parlour.storage.postgres import PostgresStore

        return PostgresStore.open(settings.store, max_size=settings.pg_pool)
    return SqliteStore.open(settings.data_dir, synchronous=settings.sqlite_synchronous)


def open_reads(store: Store) -> Reads:
    """The reads the adapter awaits for the core's read needs."""
    reads = getattr(store, "reads", None)
    if callable(reads):  # SQLite: a thread pool; PostgreSQL: the pool's own loop
        made: Reads = reads()
        return made
    return InlineReads(store)


def open_writer(store: Store, cluster: bool) -> StoreWriter:
    """Group commit for SQLite and PostgreSQL; inline for the memory store (which assigns
    sequence numbers itself with several in-process nodes)."""
    writer = getattr(store, "writer", None)
    if callable(writer):
        made: StoreWriter = writer()
        return made
    if cluster:
        assigning = getattr(store, "apply_assigning", None)
        if assigning is None:
            raise ValueError("several nodes need a store that assigns sequence numbers")
        return InlineWriter(assigning)
    return InlineWriter(store.apply)


def open_bus(settings: Settings) -> Bus | None:
    """The Redis bus when the settings name one (None: in-process)."""
    if not settings.redis:
        return None
    _needs_cluster_extra("--bus redis://…")
    from parlour.bus.redis import RedisBus

    return RedisBus(settings.bus, settings.bus_prefix)


async def open_relay(
    settings: Settings, observe: Callable[[bytes, tuple[str, int]], bool]
) -> ChatRelay | None:
    """The UDP relay of file transfers (None when disabled). Its port defaults to the chat
    port's number (UDP beside TCP), or any free one when that is taken or the chat port is
    picked by the system."""
    if not (settings.p2p and settings.p2p_relay):
        return None
    host = settings.p2p_relay_host or settings.host
    port = settings.p2p_relay_port or settings.port
    config = RelayConfig(
        max_transfers=settings.p2p_relay_max_transfers,
        rate_per_transfer=settings.p2p_relay_rate,
        total_rate=settings.p2p_relay_total_rate,
        total_burst=max(RelayConfig().total_burst, int(settings.p2p_relay_total_rate / 10)),
    )
    secret = os.urandom(32)
    try:
        return await ChatRelay.open(secret, observe, host=host, port=port, config=config)
    except OSError as exc:
        if settings.p2p_relay_port or exc.errno != errno.EADDRINUSE:
            raise
        log.warning(
            "udp port of the chat port's number is taken; relay on a free port",
            extra={"fields": {"port": port}},
        )
        return await ChatRelay.open(secret, observe, host=host, port=0, config=config)


async def run_needs(
    needs: NeedRunner, call: Callable[[Answers], Outcome], *, rounds: int = 64
) -> Outcome:
    """Call the core (``call(answers)``) until it needs nothing more (outside a connection:
    the bootstrap)."""
    answers: dict[Need, Any] = {}
    for _ in range(rounds):
        outcome = call(answers)
        if not outcome.needs:
            return outcome
        answers.update(await needs.satisfy(None, outcome.needs))
    raise RuntimeError("the core kept asking for needs")


@dataclass
class ChatServer:
    settings: Settings
    store: Store
    service: ChatService
    writer: StoreWriter
    endpoint: Endpoint
    listener: TcpListener
    needs: NeedRunner
    reads: Reads
    bus: Bus
    node: str
    #: the UDP relay of file transfers (None when disabled)
    relay: ChatRelay | None = None
    own_store: bool = True
    #: several nodes: this node's part (None for the single-node default)
    cluster: ClusterNode | None = None
    own_bus: bool = False
    addresses: list[tuple[str, int]] = field(default_factory=list)
    #: the web client and the WebSocket door (None when ``settings.web`` is off)
    web: WebListener | None = None
    #: files in chat: the tus uploads and downloads on the web listener (None when off)
    files: FilesHttp | None = None
    #: the admin password generated on first start (None if it came from the environment or
    #: the admin already existed); shown once on the console, never logged
    generated_admin_password: str | None = None
    _stopped: bool = False

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        password_hasher: PasswordHasher | None = None,
        tick_interval: float = 1.0,
        bus: Bus | None = None,
        bus_node: str | None = None,
        store: Store | None = None,
        reads: Reads | None = None,
        core_overrides: Mapping[str, Any] | None = None,
        wire_factory: WireFactory | None = None,
        assets: Assets | None = None,
    ) -> ChatServer:
        """Build and start a server for `settings` on the running loop. The keyword arguments
        are for tests and embedding: another password hasher, a shared bus and this node's
        name on it, an already open store (kept open: the caller closes it) and the reads to
        satisfy the core's read needs with (the store's own by default), core settings
        that have no server setting, the wire of each TCP connection, and the web client's
        files (the package's by default)."""
        check_open_file_limit(settings.max_connections)
        ssl_context = None
        if settings.tls_cert is not None and settings.tls_key is not None:
            ssl_context = make_server_ssl_context(settings.tls_cert, settings.tls_key)
        own_store = store is None
        if store is None:
            store = open_store(settings)
        own_reads = reads is None
        needs: NeedRunner | None = None
        relay: ChatRelay | None = None
        web: WebListener | None = None
        files: FilesHttp | None = None
        listener: TcpListener | None = None
        node_part: ClusterNode | None = None
        own_bus = False
        the_bus: Bus | None = None
        try:
            config = core_config(settings)
            served: list[ChatService] = []
            relay = await open_relay(
                settings, lambda token, addr: served[0].udp_probe(token, addr, clock())
            )
            if relay is not None:
                public = settings.p2p_relay_public_host
                config = dataclasses.replace(config, file_relay=(public, relay.address[1]))
            if core_overrides:
                config = dataclasses.replace(config, **core_overrides)
            if config.cluster and config.file_token_key is None and settings.web:
                log.warning(
                    "no secret_key: file tokens are valid only on the node that issued them",
                    extra={
                        "fields": {
                            "hint": "set the same PARLOUR_SECRET_KEY on every node, or uploads "
                            "and downloads balanced to another node are refused (401)"
                        }
                    },
                )
            service = ChatService(
                store.load(**ChatService.load_args(config, clock())), config, entropy=os.urandom
            )
            served.append(service)
            argon2 = Argon2Hasher(
                time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib
            )
            if reads is None:
                reads = open_reads(store)
            needs = NeedRunner(
                password_hasher or argon2,
                reads,
                max_queued=settings.password_queue,
                tickets=relay.tickets if relay is not None else None,
            )
            cluster_mode = config.cluster
            serve_here = getattr(store, "serve_here", None)
            if serve_here is not None:  # PostgreSQL: a pool on this loop
                await serve_here()
            writer = open_writer(store, cluster_mode)
            writer.start()
            generated: str | None = None
            if service.needs_bootstrap():
                password = settings.admin_password or generate_password()
                first = await run_needs(needs, lambda a: service.bootstrap(clock(), password, a))
                try:
                    await writer.submit(first.writes)
                except Exception:
                    if not cluster_mode:
                        raise
                    # another node created the first admin at the same moment: take its
                    # state instead
                    service = ChatService(
                        store.load(**ChatService.load_args(config, clock())),
                        config,
                        entropy=os.urandom,
                    )
                else:
                    generated = password if settings.admin_password is None else None
            hub = Hub(send_queue_max=settings.send_queue_max, stall_timeout=settings.idle_timeout)
            pipeline: Pipeline
            if cluster_mode:
                node = bus_node or new_node_id(settings.node_name)
                # clients (and operators) see which node they reached: `hello`'s `server`
                service.config_server_name(f"{config.server_name} ({node})")
                own_bus = bus is None
                the_bus = bus if bus is not None else open_bus(settings) or InProcessBus()
                registry: Any = the_bus if hasattr(the_bus, "heartbeat") else None
                node_part = ClusterNode(
                    node=node,
                    service=service,
                    store=store,
                    reads=reads,
                    bus=the_bus,
                    hub=hub,
                    clock=clock,
                    registry=registry,
                )
                pipeline = Pipeline(writer, hub)
                node_part.attach(pipeline)
                if registry is not None:
                    registry.on_state = node_part.on_bus_state
                    if own_bus:
                        await registry.start()
                await node_part.restore_logins()
                node_part.start()
            else:
                node = bus_node or "local"
                the_bus = bus if bus is not None else InProcessBus()
                router = service.router
                single_bus = the_bus

                def on_bus(message: BusMessage) -> None:
                    local = message.origin == node
                    for d in message.deliveries:
                        to = d.to if local else router.resolve(d.address) if d.address else ()
                        if to:
                            hub.deliver(d.event, to)

                def publish(deliveries: tuple[Delivery, ...]) -> None:
                    single_bus.publish(BusMessage(node, deliveries))

                the_bus.subscribe(node, on_bus)
                pipeline = Pipeline(writer, hub, publish)
            limits = EndpointLimits(
                max_frame=settings.max_frame,
                max_connections=settings.max_connections,
                max_connections_per_address=settings.max_connections_per_address,
                idle_timeout=settings.idle_timeout,
                login_timeout=settings.login_timeout,
                abuse_cooldown=settings.abuse_cooldown,
                tick_interval=tick_interval,
            )
            endpoint = Endpoint(
                service,
                writer,
                hub,
                limits=limits,
                needs=needs,
                pipeline=pipeline,
                clock=clock,
            )
            endpoint.start()
            proxies = networks(settings.trusted_proxies)
            listener = TcpListener(
                endpoint,
                settings.host,
                settings.port,
                ssl_context=ssl_context,
                wire_factory=wire_factory,
                proxy_port=settings.proxy_port,
                trusted_proxies=proxies,
            )
            addresses = await listener.start()
            if settings.web and settings.uploads:
                files = FilesHttp(
                    service,
                    reads,
                    writer,
                    settings.files_path,
                    FileLimits(
                        max_file_size=settings.max_file_size,
                        user_quota=settings.user_quota,
                        max_concurrent_uploads=settings.max_concurrent_uploads,
                        expiry=settings.upload_expiry,
                    ),
                    clock=clock,
                )
            if settings.web:
                web = WebListener(
                    endpoint,
                    assets if assets is not None else Assets.packaged(),
                    settings.web_listen_host,
                    settings.web_listen_port,
                    ssl_context=ssl_context,
                    public_url=settings.public_url,
                    max_frame=settings.max_frame,
                    ping_interval=settings.heartbeat,
                    guard=HttpGuard.for_chat(
                        max_connections=settings.max_connections,
                        per_address=settings.max_connections_per_address,
                        header_timeout=min(10.0, settings.login_timeout),
                        trusted_proxies=proxies,
                    ),
                    routes=files.add_routes if files is not None else None,
                    trusted_proxies=proxies,
                )
                await web.start()
                service.web_listening(*web.location)
                if files is not None:
                    files.start()
        except BaseException:
            if node_part is not None:
                await node_part.stop()
            close_bus = getattr(the_bus, "close", None)
            if own_bus and close_bus is not None:
                await close_bus()
            if relay is not None:
                relay.close()
            if files is not None:
                await files.stop()
            if web is not None:
                await web.stop_accepting()
                await web.wait_closed()
            if listener is not None:
                await listener.stop_accepting()
                await listener.wait_closed()
            if needs is not None:
                needs.close()
            if reads is not None and own_reads:
                _close(reads)
            if own_store:
                _close(store)
            raise
        assert listener is not None
        server = cls(
            settings=settings,
            store=store,
            service=service,
            writer=writer,
            endpoint=endpoint,
            listener=listener,
            needs=needs,
            reads=reads,
            bus=the_bus,
            node=node,
            relay=relay,
            own_store=own_store,
            cluster=node_part,
            own_bus=own_bus,
            addresses=addresses,
            web=web,
            files=files,
            generated_admin_password=generated,
        )
        log.info(
            "server started",
            extra={
                "fields": {
                    "addresses": [f"{h}:{p}" for h, p in addresses],
                    "proxy_protocol": [f"{h}:{p}" for h, p in listener.proxy_addresses],
                    "udp_relay": f"{relay.address[0]}:{relay.address[1]}" if relay else None,
                    "web": web.url if web is not None else None,
                    "tls": ssl_context is not None,
                    "settings": {k: str(v) for k, v in describe(settings).items()},
                }
            },
        )
        return server

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful shutdown: stop accepting, finish in-flight work, tell clients, flush."""
        if self._stopped:
            return
        self._stopped = True
        log.info("shutting down", extra={"fields": {"connections": len(self.endpoint)}})
        await self.listener.stop_accepting()
        if self.files is not None:
            await self.files.stop()
        if self.web is not None:
            await self.web.stop_accepting()
        await self.endpoint.shutdown(grace=grace)
        await self.writer.close()
        stats = getattr(self.writer, "stats", None)
        if stats is not None:
            log.info("store writer", extra={"fields": dataclasses.asdict(stats)})
        log.info("hub", extra={"fields": dataclasses.asdict(self.endpoint.hub.stats)})
        await self.listener.wait_closed()
        if self.relay is not None:
            self.relay.close()
            log.info("udp relay", extra={"fields": dataclasses.asdict(self.relay.relay.stats)})
        if self.web is not None:
            await self.web.wait_closed()
        if self.cluster is not None:
            await self.cluster.stop()
        if self.own_bus:
            close = getattr(self.bus, "close", None)
            if close is not None:
                await close()
        self.bus.unsubscribe(self.node)
        self.needs.close()
        _close(self.reads)
        if self.own_store:
            aclose = getattr(self.store, "aclose", None)
            if aclose is not None:
                await aclose()
            _close(self.store)
        log.info("server stopped")


def _close(resource: object) -> None:
    close = getattr(resource, "close", None)
    if callable(close):
        close()
