"""Helpers of the scale-out tests: several `ChatServer` nodes on one store, clients that
record every message event exactly as it arrived (before the client library's own
de-duplication), and the loss / duplicate / order counts checked at every receiver."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from parlour.client import Client
from parlour.protocol import DmEvent, Event, MessageEvent

__all__ = ["PASSWORD", "Recorder", "Tally", "eventually", "recording_client", "tally"]

PASSWORD = "password-123"
TIMEOUT = 30.0


@dataclass
class Recorder:
    """Every message and DM event one client received, in arrival order, as the server sent
    them (duplicates included), and every other event."""

    room: dict[str, list[int]] = field(default_factory=dict)
    dm: dict[str, list[int]] = field(default_factory=dict)
    other: list[Event] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, event: Event) -> None:
        if isinstance(event, MessageEvent):
            self.room.setdefault(event.room, []).append(event.seq)
        elif isinstance(event, DmEvent):
            self.dm.setdefault(event.peer, []).append(event.seq)
        else:
            self.other.append(event)
        self.changed.set()


async def recording_client(port: int, **kwargs: Any) -> tuple[Client, Recorder]:
    """A client whose every pushed event is recorded raw (`Recorder`) before the library
    de-duplicates it."""
    client = Client("127.0.0.1", port, **kwargs)
    rec = Recorder()
    original = client._on_event

    def on_event(event: Event) -> None:
        rec(event)
        original(event)

    client._on_event = on_event  # type: ignore[method-assign]
    await client.connect()
    return client, rec


async def eventually(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Wait until `check()` holds, woken by any client event or every 50 ms (the condition
    involves several connections and nodes; there is no single event to wait on)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Tally:
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    receivers: int = 0
    checked: int = 0

    def __str__(self) -> str:
        return (
            f"{self.receivers} receivers, {self.checked} deliveries checked: "
            f"{self.lost} lost, {self.duplicated} duplicated, {self.out_of_order} out of order"
        )


def tally(acked: set[int], received: list[list[int]]) -> Tally:
    """Count, at every receiver, the acknowledged sequence numbers it never got, those it got
    twice and the arrivals lower than one before them."""
    t = Tally(receivers=len(received))
    for seqs in received:
        t.checked += len(seqs)
        got = set(seqs)
        t.lost += len(acked - got)
        t.duplicated += len(seqs) - len(got)
        highest = 0
        for s in seqs:
            if s < highest:
                t.out_of_order += 1
            highest = max(highest, s)
    return t


async def close_all(clients: list[Client]) -> None:
    for c in clients:
        with contextlib.suppress(Exception):
            await c.close()


async def gather_bounded(coros: list[Awaitable[Any]], limit: int = 20) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Awaitable[Any]) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))
