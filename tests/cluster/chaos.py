"""Load and faults for the scale-out chaos runs (tests/cluster/test_cluster_chaos.py, short;
bench/cluster.py chaos, long).

Clients of the client library connect through the proxy, sign up and join one room; some of
them send at a steady pace (each `send` retried by the library with the same client id across
reconnects, and after `unavailable`), all of them record every message event exactly as the
server sent it (`cluster_helpers.Recorder`). While the load runs, a fault is injected over
and over: a node killed with SIGKILL (and started again), Redis or PostgreSQL restarted. At
the end every receiver must hold every *acknowledged* message exactly once, in sequence
order: `Tally` counts what is lost, duplicated and out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cluster_helpers import PASSWORD, Recorder, Tally, close_all, recording_client, tally

from parlour.client import Backoff, Client, ClientError

__all__ = ["ChaosResult", "Crowd", "run_chaos"]

ROOM = "general"


@dataclass
class Crowd:
    clients: list[Client] = field(default_factory=list)
    recs: list[Recorder] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)
    failures: Counter[str] = field(default_factory=Counter)
    sent: int = 0

    @classmethod
    async def open(cls, port: int, n: int, prefix: str) -> Crowd:
        crowd = cls()
        for i in range(n):
            client, rec = await recording_client(
                port, backoff=Backoff(base=0.05, maximum=1.0), request_timeout=60.0
            )
            await client.signup(f"{prefix}{i}", PASSWORD)
            await client.join(ROOM)
            crowd.clients.append(client)
            crowd.recs.append(rec)
        return crowd

    async def send_steadily(self, client: Client, rate: float, until: float, tag: str) -> None:
        period = 1.0 / rate
        n = 0
        next_at = time.monotonic()
        while time.monotonic() < until:
            n += 1
            self.sent += 1
            try:
                ack = await client.send(ROOM, f"{tag} {n}")
            except (ClientError, TimeoutError) as exc:
                self.failures[type(exc).__name__ + ": " + str(exc)[:60]] += 1
            else:
                self.acked.add(ack.seq)
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = time.monotonic()

    def received(self) -> list[list[int]]:
        return [r.room.get(ROOM, []) for r in self.recs]

    def complete(self) -> bool:
        acked = self.acked
        return all(acked <= set(seqs) for seqs in self.received())

    async def close(self) -> None:
        await close_all(self.clients)


@dataclass
class ChaosResult:
    tally: Tally
    acked: int
    sent: int
    faults: int
    failures: Counter[str]
    seconds: float
    settle_seconds: float

    def __str__(self) -> str:
        failed = sum(self.failures.values())
        return (
            f"{self.faults} faults in {self.seconds:.0f} s; {self.sent} sends, {self.acked} "
            f"acknowledged, {failed} failed; settled in {self.settle_seconds:.1f} s; {self.tally}"
        )


async def run_chaos(
    port: int,
    fault: Callable[[int], Awaitable[None]],
    *,
    clients: int = 12,
    senders: int = 6,
    rate: float = 10.0,
    duration: float = 15.0,
    every: float = 4.0,
    prefix: str = "chaos",
    settle: float = 90.0,
) -> ChaosResult:
    """`clients` clients through `port` (the proxy); `senders` of them send `rate` messages a
    second each for `duration` seconds while `fault(i)` runs every `every` seconds."""
    crowd = await Crowd.open(port, clients, prefix)
    faults = 0
    try:
        started = time.monotonic()
        until = started + duration
        load = [
            asyncio.create_task(crowd.send_steadily(c, rate, until, f"{prefix}-{i}"))
            for i, c in enumerate(crowd.clients[:senders])
        ]
        rng = random.Random(1)
        while time.monotonic() + every < until:
            await asyncio.sleep(every * (0.75 + rng.random() / 2))
            await fault(faults)
            faults += 1
        await asyncio.gather(*load)
        seconds = time.monotonic() - started
        settle_from = time.monotonic()
        deadline = settle_from + settle
        while not crowd.complete() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        settled = time.monotonic() - settle_from
        return ChaosResult(
            tally(crowd.acked, crowd.received()),
            len(crowd.acked),
            crowd.sent,
            faults,
            crowd.failures,
            seconds,
            settled,
        )
    finally:
        with contextlib.suppress(Exception):
            await crowd.close()
