"""One node of several: the glue between the core's cluster mode, the pipeline, the bus, the
node registry and the store (docs/design/scale-out.md).

* **After a commit** (`complete`, the pipeline's hook) the core applies the node's own
  committed messages in order (`ChatService.committed`) and the outcome is published on the
  bus — its writes as committed, its deliveries with their logical addresses, its remote
  effects — numbered per node (`BusMessage.n`).
* **From the bus** (`on_bus`) another node's outcome is applied at once
  (`ChatService.remote`); its events reach this node's sessions right away. A skipped number
  means a lost message: the node reads the truth again (`resync`).
* **A session's stream starts with its catch-up**: between the moment a `login`/`signup`/
  `sync` is handled (its catch-up planned from the windows as they are then) and the moment
  its reply is sent, live events for that connection are held back (`admit`) and sent right
  after the reply and the catch-up: nothing newer overtakes the catch-up, nothing is missed
  between them.
* **Gaps** the bus did not fill within `gap_grace` are read from the store (`gaps`/`filled`);
  the store's heads are compared with what was delivered every `poll_interval` (twice a
  second while the bus is down, so that cross-node delivery goes on through the store), and
  after every (re)connection to the bus, when the caches are reloaded too (`resync`).
* **Login throttles** count every node's password checks (remote effects); a node that
  starts first replays the recent ones the bus keeps (`restore_logins`).
* **The registry**: every `heartbeat` the node says it is alive with its users' session
  counts (expiring keys in Redis); nodes whose key expired are forgotten (`node_gone`), so a
  node killed with its sessions does not leave them online.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from parlour.core.needs import Need, ReadBroadcasts, ReadDm, ReadRoom
from parlour.core.outcome import ConnId, Delivery, Outcome, ToConns
from parlour.core.ports import Bus, BusMessage, Reads
from parlour.core.records import Heads, StoreSnapshot
from parlour.core.service import ChatService
from parlour.core.writes import CreateUser, Write
from parlour.protocol import Event, Ok, SessionReply, SyncReply
from parlour.transports.hub import Hub
from parlour.transports.pipeline import Pipeline

__all__ = ["ClusterNode", "new_node_id"]

log = logging.getLogger("parlour.cluster")


def new_node_id(name: str | None = None) -> str:
    """A node id unique to this process start: the name (host name by default) and a random
    suffix, so that a node that restarts is a new node for the others."""
    base = name or socket.gethostname()
    return f"{base}-{secrets.token_hex(3)}"


def _fenced(outcome: Outcome, conn: ConnId | None) -> bool:
    """Whether `outcome` starts (or continues) a session's catch-up on `conn`."""
    reply = outcome.reply
    return (
        conn is not None
        and isinstance(reply, Ok)
        and isinstance(reply.data, SessionReply | SyncReply)
    )


class ClusterNode:
    def __init__(
        self,
        *,
        node: str,
        service: ChatService,
        store: Any,
        reads: Reads,
        bus: Bus,
        hub: Hub,
        clock: Callable[[], float] = time.time,
        registry: Any = None,
        heartbeat: float = 1.0,
        poll_interval: float = 2.0,
    ) -> None:
        self.node = node
        self.service = service
        self.store = store
        self.reads = reads
        self.bus = bus
        self.hub = hub
        self.registry = registry
        self.clock = clock
        self.heartbeat = heartbeat
        self.poll_interval = poll_interval
        self.pipeline: Pipeline | None = None
        self._n = 0
        #: origin node -> the number of its last message seen
        self._seen: dict[str, int] = {}
        #: connection -> events held back until its catch-up is sent, and how many of its
        #: catch-up outcomes are in flight
        self._held: dict[ConnId, list[Event]] = {}
        self._fences: dict[ConnId, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._resync_wanted = asyncio.Event()
        self._bus_up = registry is None  # an in-process bus is always there
        self._bus_since = time.monotonic()
        self._stopping = False
        self.resyncs = 0
        self.gap_reads = 0
        self.lost_messages = 0

    # ================================================================== wiring

    def attach(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        pipeline.admit = self.admit
        pipeline.complete = self.complete
        pipeline.deliver = self.deliver

    def start(self) -> None:
        self.bus.subscribe(self.node, self.on_bus)
        self._runner = asyncio.get_running_loop().create_task(
            self._run(), name=f"parlour-node-{self.node}"
        )
        self._resync_wanted.set()  # what was committed between the load and the subscription

    async def restore_logins(self, timeout: float = 3.0) -> int:
        """Count the deployment's recent login checks (the bus's journal) in this node's
        throttles before it serves anybody: a node that (re)starts must not be the place to
        guess passwords from scratch. Without the journal (Redis not answering within
        `timeout`) the node starts with empty throttles and says so."""
        try:
            checks = await asyncio.wait_for(self.bus.login_history(), timeout)
        except Exception as exc:  # RedisError, OSError, TimeoutError: start without them
            log.warning(
                "login throttles start empty: the bus's journal could not be read",
                extra={"fields": {"error": type(exc).__name__}},
            )
            return 0
        return self.service.restore_logins(checks, self.clock())

    async def stop(self) -> None:
        self._stopping = True
        self.bus.unsubscribe(self.node)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        for task in list(self._tasks):
            task.cancel()
        if self.registry is not None:
            await self.registry.leave(self.node)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ================================================================== pipeline hooks

    def admit(self, outcome: Outcome, conn: ConnId | None) -> None:
        if _fenced(outcome, conn):
            assert conn is not None
            self._fences[conn] = self._fences.get(conn, 0) + 1
            self._held.setdefault(conn, [])

    def deliver(self, deliveries: tuple[Delivery, ...]) -> None:
        """Deliveries to this node's connections (events for a connection whose catch-up is
        still on its way are held back)."""
        held = self._held
        if not held:
            self.hub.deliver_all(deliveries)
            return
        hub = self.hub
        for d in deliveries:
            to = d.to
            if not to:
                continue
            if any(c in held for c in to):
                for c in to:
                    waiting = held.get(c)
                    if waiting is not None:
                        waiting.append(d.event)
                to = tuple(c for c in to if c not in held)
                if not to:
                    continue
            hub.deliver(d.event, to)

    def complete(
        self, applied: Outcome, result: Any, conn: ConnId | None, dispatch: Outcome
    ) -> Outcome:
        """The pipeline's hook: `applied`'s writes are committed (`result`: what the store
        assigned) or failed (`result` is the exception; `dispatch` is then the error reply)."""
        now = self.clock()
        facts: tuple[Write, ...]
        failed = isinstance(result, BaseException)
        if isinstance(result, BaseException):
            done, facts = dispatch, ()
            self._resync_wanted.set()  # the core may be ahead of the store: read it again
            reply = applied.reply
            if conn is not None and isinstance(reply, Ok) and isinstance(reply.data, SessionReply):
                # not committed: the session must not stay open (the client tries again)
                created = next((x.name for x in applied.writes if isinstance(x, CreateUser)), None)
                self.service.undo_login(conn, created, now)
            applied = dataclasses.replace(applied, remote=(), deliveries=())  # tell nobody
        elif applied.writes:
            done, facts = self.service.committed(applied, result or (), now)
        else:
            done, facts = applied, ()
        effects = applied.remote + done.remote if done is not applied else applied.remote
        deliveries = tuple(
            d
            for d in applied.deliveries
            if d.address is not None and type(d.address) is not ToConns
        )
        if facts or effects or deliveries:
            self._n += 1
            self.bus.publish(BusMessage(self.node, deliveries, facts, effects, self._n))
        if conn is not None and conn in self._fences and _fenced(applied, conn):
            left = self._fences[conn] - 1
            events = self._held.get(conn, [])
            if left > 0:
                self._fences[conn] = left
                self._held[conn] = []
            else:
                del self._fences[conn]
                self._held.pop(conn, None)
            if events and not failed:  # (a session that failed to start has no stream)
                later = tuple(Delivery(e, (conn,)) for e in events)
                done = dataclasses.replace(done, deliveries=done.deliveries + later)
        return done

    def _dispatch(self, outcome: Outcome) -> None:
        """Dispatch what the node produced by itself (from the bus, a gap read, a resync):
        events at once; writes, closes and remote effects through the pipeline."""
        if outcome.deliveries:
            self.deliver(outcome.deliveries)
        if outcome.writes or outcome.close or outcome.remote:
            assert self.pipeline is not None
            rest = Outcome(writes=outcome.writes, close=outcome.close, remote=outcome.remote)
            self.pipeline.apply(rest, None)

    # ================================================================== the bus

    def on_bus(self, message: BusMessage) -> None:
        origin = message.origin
        if origin == self.node:
            return
        last = self._seen.get(origin)
        self._seen[origin] = message.n
        if last is not None and message.n != last + 1:
            self.lost_messages += max(0, message.n - last - 1)
            log.warning(
                "bus messages lost",
                extra={"fields": {"origin": origin, "expected": last + 1, "got": message.n}},
            )
            self._resync_wanted.set()
        outcome = self.service.remote(
            origin, message.facts, message.deliveries, message.effects, self.clock()
        )
        self._dispatch(outcome)
        self._read_gaps()

    def on_bus_state(self, connected: bool) -> None:
        """The Redis bus connected or lost its connection."""
        self._bus_up = connected
        self._bus_since = time.monotonic()
        if connected:
            self._seen.clear()  # numbering goes on, but anything may have been missed
            self._resync_wanted.set()

    # ================================================================== gaps, heads, resync

    def _read_gaps(self) -> None:
        for need in self.service.gaps(self.clock()):
            self.gap_reads += 1
            self._spawn(self._fill(need))

    async def _fill(self, need: Need) -> None:
        found: list[Any] = []
        try:
            if isinstance(need, ReadRoom):
                found = list(
                    await self.reads.room_messages(
                        need.room, before=need.before, after=need.after, limit=need.limit
                    )
                )
            elif isinstance(need, ReadDm):
                found = list(
                    await self.reads.dm_messages(
                        need.conv, before=need.before, after=need.after, limit=need.limit
                    )
                )
            elif isinstance(need, ReadBroadcasts):
                found = list(await self.reads.broadcasts(after=need.after, limit=need.limit))
        except Exception as exc:
            log.warning("gap read failed: %s", exc)
        self._dispatch(self.service.filled(need, found, self.clock()))

    async def _heads(self) -> bool:
        convs = sorted(
            {
                cid
                for user in self.service.sessions.by_user
                for cid in self.service.state.users[user].convs
            }
        )
        got = self.store.heads(convs)
        heads: Heads = await got if inspect.isawaitable(got) else got
        return self.service.heads(heads.rooms, heads.dms, heads.broadcast, self.clock())

    async def resync(self) -> None:
        """Read the truth again: the caches from a fresh snapshot, then every scope's head."""
        self.resyncs += 1
        now = self.clock()
        load = getattr(self.store, "aload", None)
        args = {"recent": 0, "audit": 0, "client_ids": 0, "tokens_valid_at": now}
        snap: StoreSnapshot
        if load is not None:
            snap = await load(**args)
        else:
            snap = self.store.load(**args)
        self._dispatch(self.service.refresh(snap, self.clock()))
        self._dispatch(self.service.want_offers())  # offers are never stored: ask for them
        await self._heads()
        self._read_gaps()

    async def _registry(self) -> None:
        registry = self.registry
        if registry is None or not self._bus_up:
            return
        sessions = self.service.sessions
        counts = {user: len(conns) for user, conns in sessions.by_user.items()}
        await registry.heartbeat(self.node, counts)
        # a node's key has had time to come back since the bus (re)connected
        if time.monotonic() - self._bus_since < 2 * registry.ttl:
            return
        nodes = sorted(sessions.remote_nodes())
        alive = await registry.alive(nodes)
        for gone in set(nodes) - alive:
            log.warning("node gone", extra={"fields": {"node": gone}})
            self._seen.pop(gone, None)
            self._dispatch(self.service.node_gone(gone, self.clock()))

    async def _load_registry(self) -> None:
        if self.registry is None:
            return
        for node, counts in (await self.registry.sessions()).items():
            if node != self.node:
                self.service.sessions.set_remote(node, counts)

    async def _run(self) -> None:
        """The node's clock: gap reads every few tens of milliseconds, the registry every
        `heartbeat`, the heads every `poll_interval` (faster while the bus is down), resyncs
        when asked for."""
        loop = asyncio.get_running_loop()
        next_beat = next_poll = loop.time()
        registry_loaded = False
        while not self._stopping:
            try:
                now = loop.time()
                if self._resync_wanted.is_set() and (self._bus_up or self.registry is None):
                    self._resync_wanted.clear()
                    await self.resync()
                    if self.registry is not None:
                        await self._load_registry()
                        registry_loaded = True
                if now >= next_beat:
                    next_beat = now + self.heartbeat
                    if not registry_loaded and self._bus_up and self.registry is not None:
                        await self._load_registry()
                        registry_loaded = True
                    await self._registry()
                if now >= next_poll:
                    next_poll = now + (self.poll_interval if self._bus_up else 0.5)
                    if not await self._heads():
                        self._resync_wanted.set()
                self._read_gaps()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("node upkeep failed: %s", exc)
                if not self._resync_wanted.is_set():
                    self._resync_wanted.set()
                await asyncio.sleep(0.5)
            await asyncio.sleep(self.service.config.gap_grace / 2)
