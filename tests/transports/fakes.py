"""A tiny stand-in for the chat core, to test the transports without it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from parlour.core.outcome import ConnId, Delivery, Outcome
from parlour.core.writes import Audit
from parlour.protocol import MessageEvent, Ok

__all__ = ["EchoService", "RecordingWriter", "free_connect"]


class EchoService:
    """`hello` -> ok; `send` -> a durable write, ok to the sender and a `message` event to all;
    anything else -> ok with the request type."""

    def __init__(self) -> None:
        self.conns: list[ConnId] = []
        self.seq = 0
        self.disconnected: list[tuple[ConnId, str]] = []
        self.ticks = 0
        self._disconnect_seen = asyncio.Event()

    def connect(self, conn: ConnId, peer: str, now: float) -> Outcome:
        self.conns.append(conn)
        return Outcome()

    def handle(self, conn: ConnId, request: Any, now: float, answers: Any = None) -> Outcome:
        if request.TYPE == "send":
            self.seq += 1
            event = MessageEvent(
                room=request.room,
                seq=self.seq,
                ts=now,
                sender=f"c{conn}",
                text=request.text,
                client_id=request.client_id,
            )
            return Outcome(
                reply=Ok(request.id, {"seq": self.seq}),
                deliveries=(Delivery(event, tuple(self.conns)),),
                writes=(Audit(f"c{conn}", "send", request.room, request.text, now),),
            )
        return Outcome(reply=Ok(request.id, {"type": request.TYPE}))

    def abandon(self, conn: ConnId) -> None:
        return None

    def disconnect(self, conn: ConnId, now: float, reason: str) -> Outcome:
        self.conns.remove(conn)
        self.disconnected.append((conn, reason))
        self._disconnect_seen.set()
        return Outcome()

    async def disconnects(self, count: int) -> None:
        """Return once the endpoint has reported ``count`` disconnections in all."""
        while len(self.disconnected) < count:
            self._disconnect_seen.clear()
            await self._disconnect_seen.wait()

    def tick(self, now: float) -> Outcome:
        self.ticks += 1
        return Outcome()


class RecordingWriter:
    """A writer whose commits the test releases by hand (to test ordering)."""

    def __init__(self) -> None:
        self.submitted: list[tuple[Sequence[Any], asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pending(self) -> int:
        return sum(1 for _, f in self.submitted if not f.done())

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()

    def submit(self, writes: Sequence[Any]) -> asyncio.Future[None]:
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self.submitted.append((writes, fut))
        return fut

    async def close(self) -> None:
        return None


async def free_connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port, limit=1 << 22)
