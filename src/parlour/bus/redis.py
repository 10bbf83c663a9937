"""`RedisBus`: the `Bus` port between the nodes of one deployment, over Redis pub/sub; and the
node registry (which nodes are alive, how many sessions each user has on each) in Redis keys
that expire, so that a node that dies vanishes by itself.

Redis is never the truth (docs/design/scale-out.md). Pub/sub delivers at most once: a message
published while a node is disconnected is lost for it. So every message carries its origin's
running number (`BusMessage.n`) and every (re)subscription is reported (`on_state`): the node
then reads what it may have missed from PostgreSQL. `publish` never waits: messages go out in
order from one task; while Redis cannot be reached they are dropped (and counted) — the other
nodes find the messages in the store.

Keys (``prefix`` keeps deployments and test runs apart; the channel is ``{prefix}:bus``):

* ``{prefix}:node:{id}`` — the node is alive (refreshed every `heartbeat`, expires after
  `ttl`);
* ``{prefix}:sessions:{id}`` — hash user key -> live sessions on that node (same expiry);
* ``{prefix}:logins`` — a stream of the recent login checks (`parlour.bus.journal`), trimmed
  to about `MAX_ENTRIES` and expiring `HORIZON` after the last one; a starting node reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from parlour.bus.codec import BusDecodeError, decode, encode
from parlour.bus.journal import HORIZON, MAX_ENTRIES, login_checks
from parlour.core.outcome import RemoteEffect
from parlour.core.ports import BusMessage

__all__ = ["RedisBus", "redact_url"]

log = logging.getLogger("parlour.bus")

#: messages waiting to be published at most (beyond: the oldest are dropped; the store has them)
MAX_QUEUED = 100_000


def redact_url(url: str) -> str:
    """`url` without its password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


class RedisBus:
    def __init__(
        self,
        url: str,
        prefix: str = "parlour",
        *,
        ttl: float = 5.0,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.channel = f"{prefix}:bus"
        self.ttl = ttl
        self.on_state = on_state
        self._handlers: dict[str, Callable[[BusMessage], None]] = {}
        no_retry = Retry(NoBackoff(), 0)
        self._redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, retry=no_retry
        )
        self._queue: deque[bytes] = deque()
        self._journal_key = f"{prefix}:logins"
        self._journal: deque[bytes] = deque(maxlen=MAX_ENTRIES)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.connected = False
        self.published = 0
        self.received = 0
        self.dropped = 0
        self.undecodable = 0

    # ------------------------------------------------------------------ the Bus port

    def subscribe(self, node: str, handler: Callable[[BusMessage], None]) -> None:
        if node in self._handlers:
            raise ValueError(f"node {node!r} is already subscribed")
        self._handlers[node] = handler

    def unsubscribe(self, node: str) -> None:
        self._handlers.pop(node, None)

    def publish(self, message: BusMessage) -> None:
        queue = self._queue
        if len(queue) >= MAX_QUEUED:
            queue.popleft()
            self.dropped += 1
        queue.append(encode(message))
        checks = login_checks(message)
        if checks:
            self._journal.append(encode(BusMessage(message.origin, (), (), checks)))
        self._wake.set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start publishing and listening (connecting in the background when Redis is down)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen(), name="parlour-bus-listen"),
            loop.create_task(self._publish(), name="parlour-bus-publish"),
        ]

    async def close(self, flush: float = 2.0) -> None:
        """Stop; what is waiting to be published goes out first (for at most `flush`
        seconds: a node that stops says goodbye)."""
        deadline = asyncio.get_running_loop().time() + flush
        while self._queue and self.connected and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        self._closing = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    def _state(self, connected: bool) -> None:
        if connected == self.connected:
            return
        self.connected = connected
        if connected:
            log.info("bus connected", extra={"fields": {"redis": redact_url(self.url)}})
        else:
            log.warning("bus disconnected", extra={"fields": {"redis": redact_url(self.url)}})
        if self.on_state is not None:
            try:
                self.on_state(connected)
            except Exception:
                log.exception("bus state callback failed")

    async def _listen(self) -> None:
        delay = 0.1
        while not self._closing:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._state(True)
                delay = 0.1
                while not self._closing:
                    item = await pubsub.get_message(timeout=1.0)
                    if item is None:
                        continue
                    if item.get("type") != "message":
                        continue
                    self._deliver(item["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._state(False)
                log.debug("bus listen failed: %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if not self._closing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _deliver(self, data: bytes) -> None:
        try:
            message = decode(data)
        except BusDecodeError as exc:
            self.undecodable += 1
            if self.undecodable <= 10:
                log.error("undecodable bus message dropped: %s", exc)
            return
        self.received += 1
        for node, handler in list(self._handlers.items()):
            try:
                handler(message)
            except Exception:
                log.exception("bus subscriber failed", extra={"fields": {"node": node}})

    async def _publish(self) -> None:
        queue, journal = self._queue, self._journal
        while not self._closing:
            if not queue and not journal:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [queue.popleft() for _ in range(min(len(queue), 512))]
            checks = [journal.popleft() for _ in range(min(len(journal), 512))]
            try:
                if len(batch) == 1 and not checks:
                    await self._redis.publish(self.channel, batch[0])
                else:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for data in batch:
                            pipe.publish(self.channel, data)
                        for data in checks:
                            pipe.xadd(
                                self._journal_key, {"m": data}, maxlen=MAX_ENTRIES, approximate=True
                            )
                        if checks:
                            pipe.pexpire(self._journal_key, int(HORIZON * 1000))
                        await pipe.execute()
                self.published += len(batch)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # Lost for the other nodes; they read it from the store (the truth). Keep
                # nothing while Redis is down: what waits would only be older and older.
                self.dropped += len(batch) + len(queue)
                queue.clear()
                journal.clear()
                self._state(False)
                log.debug("bus publish failed: %s", exc)
                await asyncio.sleep(0.2)

    async def login_history(self) -> tuple[RemoteEffect, ...]:
        """The login checks of the last `HORIZON` seconds, oldest first (raises `RedisError`
        or `OSError` when Redis cannot be reached)."""
        since = f"{int((time.time() - HORIZON) * 1000)}-0"
        entries = await self._redis.xrange(self._journal_key, min=since, max="+")
        out: list[RemoteEffect] = []
        for _, fields in entries or ():
            data = (fields or {}).get(b"m")
            if not isinstance(data, bytes):
                continue
            try:
                out.extend(decode(data).effects)
            except BusDecodeError:
                self.undecodable += 1
        return tuple(out)

    # ------------------------------------------------------------------ the node registry

    async def heartbeat(self, node: str, sessions: Mapping[str, int]) -> None:
        """Say `node` is alive, with its users' live session counts (both expire)."""
        ttl_ms = int(self.ttl * 1000)
        key = f"{self.prefix}:sessions:{node}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(f"{self.prefix}:node:{node}", str(time.time()), px=ttl_ms)
            pipe.delete(key)
            if sessions:
                pipe.hset(key, mapping={k: v for k, v in sessions.items()})
                pipe.pexpire(key, ttl_ms)
            await pipe.execute()

    async def alive(self, nodes: list[str]) -> set[str]:
        """Which of `nodes` are alive (their key has not expired)."""
        if not nodes:
            return set()
        async with self._redis.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.exists(f"{self.prefix}:node:{node}")
            found = await pipe.execute()
        return {node for node, n in zip(nodes, found, strict=True) if n}

    async def sessions(self) -> dict[str, dict[str, int]]:
        """Every live node's session counts: node -> user key -> sessions."""
        out: dict[str, dict[str, int]] = {}
        pattern = f"{self.prefix}:node:*"
        start = len(self.prefix) + len(":node:")
        async for raw in self._redis.scan_iter(match=pattern, count=500):
            node = (raw.decode() if isinstance(raw, bytes) else str(raw))[start:]
            counts = await self._redis.hgetall(f"{self.prefix}:sessions:{node}")
            out[node] = {
                (k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in counts.items()
            }
        return out

    async def leave(self, node: str) -> None:
        """`node` stops: its keys go at once (the others need not wait for them to expire)."""
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(f"{self.prefix}:node:{node}", f"{self.prefix}:sessions:{node}")
