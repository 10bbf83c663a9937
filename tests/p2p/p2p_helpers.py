"""An in-memory network with a fake clock for the sans-I/O transfer protocol.

:class:`Net` carries datagrams between addresses through one-way :class:`Link` s that can
drop, duplicate, reorder (random extra delay), corrupt and rate-limit them (a bottleneck with
a tail-drop queue). :class:`Node` is a client: it owns the connections of one address (any
number of transfers, both roles), serves their file reads from memory, writes into memory
(optionally through a slow "disk" that finishes writes later) and checks the SHA-256 the way
the real adapter does. :meth:`Net.run` steps the fake clock from one due thing to the next:
no sleeps, no real time.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from parlour.p2p.connection import Address, Connection, RelayInfo, TransferConfig
from parlour.p2p.events import (
    Completed,
    Failed,
    ReadRequest,
    ReadyToVerify,
    Reason,
    WriteData,
)
from parlour.p2p.ranges import RangeSet
from parlour.p2p.receiver import ReceiverConnection
from parlour.p2p.sender import SenderConnection

KEY = bytes(range(32))


@dataclass
class Link:
    """Impairments of one direction. ``rate`` in bytes/s (None = unlimited)."""

    delay: float = 0.010
    jitter: float = 0.0  # extra uniform delay 0..jitter (reorders)
    loss: float = 0.0
    dup: float = 0.0
    corrupt: float = 0.0
    rate: float | None = None
    queue_bytes: int = 64 * 1024
    up: bool = True
    _free_at: float = 0.0
    dropped: int = 0
    carried: int = 0


@dataclass
class Transfer:
    """One transfer's two ends and what happened to them."""

    tid: bytes
    data: bytes
    sender: SenderConnection
    receiver: ReceiverConnection
    sink: bytearray
    sender_node: Node
    receiver_node: Node
    sender_events: list[Any] = field(default_factory=list)
    receiver_events: list[Any] = field(default_factory=list)

    @property
    def sender_result(self) -> Completed | Failed | None:
        return self.sender.result

    @property
    def receiver_result(self) -> Completed | Failed | None:
        return self.receiver.result

    @property
    def done(self) -> bool:
        return self.sender.closed and self.receiver.closed

    @property
    def finished(self) -> bool:
        return self.sender.result is not None and self.receiver.result is not None


class Node:
    def __init__(self, net: Net, addr: Address, *, disk_rate: float | None = None) -> None:
        self.net = net
        self.addr = addr
        self.conns: dict[bytes, Connection] = {}
        self.sources: dict[bytes, bytes] = {}
        self.sinks: dict[bytes, bytearray] = {}
        self.disk_rate = disk_rate  # bytes/s; None = writes finish at once
        self._disk_free_at = 0.0
        self.pending_writes: list[tuple[float, bytes, int, int]] = []
        self.max_unwritten: dict[bytes, int] = {}
        self.event_log: dict[bytes, list[Any]] = {}
        self.corrupt_reads: dict[bytes, int] = {}  # tid -> offset whose read gets flipped
        self.unknown = 0
        net.nodes[addr] = self

    def deliver(self, data: bytes, src: Address, now: float) -> None:
        conn = self.conns.get(data[1:9])
        if conn is None:
            self.unknown += 1
            return
        conn.receive_datagram(data, src, now)

    def timers(self) -> list[float]:
        out = [t for c in self.conns.values() if (t := c.timer()) is not None]
        if self.pending_writes:
            out.append(self.pending_writes[0][0])
        return out

    def pump(self, now: float) -> None:
        while self.pending_writes and self.pending_writes[0][0] <= now:
            _, tid, off, length = heapq.heappop(self.pending_writes)
            conn = self.conns[tid]
            assert isinstance(conn, ReceiverConnection)
            if not conn.closed and conn.result is None:
                conn.data_written(off, length, now)
        for tid, conn in list(self.conns.items()):
            t = conn.timer()
            if t is not None and t <= now:
                conn.handle_timer(now)
            for _ in range(3):
                self._events(tid, conn, now)
                for data, dst in conn.datagrams_to_send(now):
                    self.net.send(self.addr, dst, data, now)
                if not conn._events and not getattr(conn, "_run", b""):
                    break

    def _events(self, tid: bytes, conn: Connection, now: float) -> None:
        log = self.event_log.setdefault(tid, [])
        for ev in conn.events():
            log.append(ev)
            if isinstance(ev, ReadRequest):
                assert isinstance(conn, SenderConnection)
                chunk = self.sources[tid][ev.offset : ev.offset + ev.length]
                bad = self.corrupt_reads.get(tid)
                if bad is not None and ev.offset <= bad < ev.offset + ev.length:
                    flip = bytearray(chunk)
                    flip[bad - ev.offset] ^= 0xFF
                    chunk = bytes(flip)
                conn.provide_data(ev.offset, chunk, now)
            elif isinstance(ev, WriteData):
                assert isinstance(conn, ReceiverConnection)
                sink = self.sinks[tid]
                sink[ev.offset : ev.offset + len(ev.data)] = ev.data
                if self.disk_rate is None:
                    conn.data_written(ev.offset, len(ev.data), now)
                else:
                    start = max(now, self._disk_free_at)
                    self._disk_free_at = start + len(ev.data) / self.disk_rate
                    heapq.heappush(
                        self.pending_writes, (self._disk_free_at, tid, ev.offset, len(ev.data))
                    )
                    unwritten = sum(p[3] for p in self.pending_writes if p[1] == tid)
                    self.max_unwritten[tid] = max(self.max_unwritten.get(tid, 0), unwritten)
            elif isinstance(ev, ReadyToVerify):
                assert isinstance(conn, ReceiverConnection)
                if hashlib.sha256(self.sinks[tid]).digest() == conn.sha256:
                    conn.finish(now)
                else:
                    conn.abort(Reason.HASH_MISMATCH, "", now)


class Net:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random(1)
        self.now = 0.0
        self.nodes: dict[Address, Node] = {}
        self.links: dict[tuple[Address, Address], Link] = {}
        self.default = Link()
        self._queue: list[tuple[float, int, Address, Address, bytes]] = []
        self._seq = itertools.count()
        self.sent = 0
        self.injected: list[tuple[Address, Address, bytes]] = []  # every datagram, for replays
        self.record = False

    schedule: list[tuple[int, float]] | None = None  # explicit fates, cycled (see send)
    _fate = 0

    def link(self, src: Address, dst: Address) -> Link:
        return self.links.get((src, dst), self.default)

    def send(self, src: Address, dst: Address, data: bytes, now: float) -> None:
        self.sent += 1
        if self.record:
            self.injected.append((src, dst, data))
        if self.schedule:
            # An explicit schedule (hypothesis draws it): (0 deliver | 1 drop | 2 duplicate,
            # extra delay) for each datagram in turn, over and over.
            action, extra = self.schedule[self._fate % len(self.schedule)]
            self._fate += 1
            if action == 1:
                return
            for i in range(2 if action == 2 else 1):
                at = now + self.default.delay + extra * (i + 1)
                heapq.heappush(self._queue, (at, next(self._seq), src, dst, data))
            return
        link = self.link(src, dst)
        rng = self.rng
        if not link.up or rng.random() < link.loss:
            link.dropped += 1
            return
        copies = 2 if rng.random() < link.dup else 1
        for _ in range(copies):
            at = now
            if link.rate is not None:
                backlog = (link._free_at - now) * link.rate
                if backlog > link.queue_bytes:
                    link.dropped += 1
                    continue
                link._free_at = max(now, link._free_at) + len(data) / link.rate
                at = link._free_at
            at += link.delay + (rng.random() * link.jitter if link.jitter else 0.0)
            payload = data
            if link.corrupt and rng.random() < link.corrupt:
                flip = bytearray(data)
                flip[rng.randrange(len(flip))] ^= 1 << rng.randrange(8)
                payload = bytes(flip)
            link.carried += 1
            heapq.heappush(self._queue, (at, next(self._seq), src, dst, payload))

    def inject(self, src: Address, dst: Address, data: bytes, at: float | None = None) -> None:
        """Put a datagram on the wire as if from ``src`` (forgeries, replays)."""
        heapq.heappush(
            self._queue, (self.now if at is None else at, next(self._seq), src, dst, data)
        )

    def run(self, until: Any, max_time: float = 600.0, max_steps: int = 2_000_000) -> None:
        """Step until ``until()`` is true or ``max_time`` passes (fake seconds)."""
        for _ in range(max_steps):
            for node in list(self.nodes.values()):
                node.pump(self.now)
            if until():
                return
            times = [t for n in self.nodes.values() for t in n.timers()]
            if self._queue:
                times.append(self._queue[0][0])
            if not times:
                return
            nxt = max(min(times), self.now)
            if nxt > max_time:
                self.now = max_time
                return
            self.now = nxt
            while self._queue and self._queue[0][0] <= self.now:
                _, _, src, dst, data = heapq.heappop(self._queue)
                node = self.nodes.get(dst)
                if node is not None:
                    node.deliver(data, src, self.now)
        raise AssertionError("the simulation did not settle (a timer loop?)")


_tids = itertools.count(1)


def start_transfer(
    net: Net,
    sender: Node,
    receiver: Node,
    data: bytes,
    *,
    config: TransferConfig | None = None,
    held: RangeSet | None = None,
    sink: bytearray | None = None,
    relay: tuple[Address, Address] | None = None,
    key: bytes = KEY,
    tid: bytes | None = None,
    receiver_candidates: list[Address] | None = None,
    sender_candidates: list[Address] | None = None,
) -> Transfer:
    tid = tid or next(_tids).to_bytes(8, "big")
    digest = hashlib.sha256(data).digest()
    common: dict[str, Any] = dict(
        transfer_id=tid, key=key, size=len(data), sha256=digest, now=net.now, config=config
    )
    s = SenderConnection(
        candidates=sender_candidates if sender_candidates is not None else [receiver.addr],
        relay=RelayInfo(relay[0], relay_ticket(relay, tid, 0)) if relay else None,
        random=net.rng.randbytes(16),
        **common,
    )
    r = ReceiverConnection(
        candidates=receiver_candidates if receiver_candidates is not None else [sender.addr],
        relay=RelayInfo(relay[0], relay_ticket(relay, tid, 1)) if relay else None,
        random=net.rng.randbytes(16),
        **common,
    )
    if held is not None:
        r.hold(held)
    sender.conns[tid] = s
    sender.sources[tid] = data
    receiver.conns[tid] = r
    receiver.sinks[tid] = sink if sink is not None else bytearray(len(data))
    return Transfer(tid, data, s, r, receiver.sinks[tid], sender, receiver)


RELAY_SECRET = b"relay-secret-for-tests-000000000"


def relay_ticket(relay: tuple[Address, Address], tid: bytes, side: int) -> bytes:
    from parlour.p2p.relay import ticket_for

    return ticket_for(RELAY_SECRET, tid, side)


def payload(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)
