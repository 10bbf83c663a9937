"""Several nodes, at the core level (`parlour.core.replica`): two `ChatService`s in cluster mode
over one memory store (which assigns sequence numbers like PostgreSQL); what one commits
reaches the other as `remote(...)` in any order, or not at all; gaps are read from the store
after the grace. Whatever the bus does, every member receives every message exactly once, in
sequence order (hypothesis draws the bus's behaviour)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from core_harness import PlainHasher, answer
from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.core.config import CoreConfig
from parlour.core.outcome import Outcome
from parlour.core.ports import BusMessage
from parlour.core.service import ChatService
from parlour.core.writes import Assigned
from parlour.protocol import (
    HelloRequest,
    JoinRequest,
    LoginRequest,
    MessageEvent,
    Ok,
    SendRequest,
    SignupRequest,
)
from parlour.storage.memory import MemoryStore

_rng = random.Random(7)


def _entropy(n: int) -> bytes:
    return bytes(_rng.randrange(256) for _ in range(n))


CFG = CoreConfig(cluster=True, rate_per_second=1e6, rate_burst=1e6, gap_grace=0.05)


@dataclass
class Node:
    name: str
    service: ChatService
    store: MemoryStore
    now: float = 1000.0
    got: dict[int, list[int]] = field(default_factory=dict)  # conn -> room seqs received
    outbox: list[BusMessage] = field(default_factory=list)
    n: int = 0
    next_conn: int = 1
    rid: int = 0

    def record(self, outcome: Outcome) -> None:
        for d in outcome.deliveries:
            if isinstance(d.event, MessageEvent):
                for conn in d.to:
                    self.got.setdefault(conn, []).append(d.event.seq)

    def run(self, conn: int, request: Any) -> Outcome:
        """Handle a request to completion (needs answered), commit it, apply it."""
        answers: dict[Any, Any] = {}
        while True:
            out = self.service.handle(conn, request, self.now, answers)
            if not out.needs:
                break
            for need in out.needs:
                answers[need] = answer(self.store, PlainHasher(), need)
        assigned: list[Assigned] = self.store.apply_assigning(out.writes) if out.writes else []
        done, facts = self.service.committed(out, assigned, self.now)
        self.record(done)
        self.n += 1
        self.outbox.append(
            BusMessage(self.name, out.deliveries, facts, out.remote + done.remote, self.n)
        )
        return done

    def connect(self, user: str, signup: bool) -> int:
        conn = self.next_conn
        self.next_conn += 1
        self.service.connect(conn, f"10.0.0.{conn}:1", self.now)
        self.rid += 1
        self.run(conn, HelloRequest(id=self.rid, version=1))
        self.rid += 1
        kind = SignupRequest if signup else LoginRequest
        self.run(conn, kind(id=self.rid, username=user, password="password1"))  # type: ignore[call-arg]
        self.rid += 1
        self.run(conn, JoinRequest(id=self.rid, room="general"))
        return conn

    def send(self, conn: int, text: str) -> int:
        self.rid += 1
        done = self.run(conn, SendRequest(id=self.rid, room="general", text=text, client_id=text))
        assert isinstance(done.reply, Ok)
        return int(done.reply.data["seq"])

    def receive(self, message: BusMessage) -> None:
        out = self.service.remote(
            message.origin, message.facts, message.deliveries, message.effects, self.now
        )
        self.record(out)

    def settle(self) -> None:
        """Time passes: the node compares the store's heads with what it delivered (every
        `poll_interval` in the real node), and gaps are read from the store."""
        self.now += 1.0
        heads = self.store.heads()
        assert self.service.heads(heads.rooms, heads.dms, heads.broadcast, self.now)
        for need in self.service.gaps(self.now):
            found = answer(self.store, PlainHasher(), need)
            self.record(self.service.filled(need, found, self.now))
        assert not self.service.gaps(self.now + 10)


def two_nodes() -> tuple[Node, Node]:
    store = MemoryStore()
    seed = ChatService(store.load(), CFG, entropy=_entropy)
    boot = seed.bootstrap(0.0, "admin-secret", {})
    if boot.needs:
        boot = seed.bootstrap(
            0.0, "admin-secret", {n: answer(store, PlainHasher(), n) for n in boot.needs}
        )
    store.apply(boot.writes)
    a = Node("a", ChatService(store.load(), CFG, entropy=_entropy), store)
    b = Node("b", ChatService(store.load(), CFG, entropy=_entropy), store)
    return a, b


def exchange(x: Node, y: Node) -> None:
    for m in x.outbox:
        y.receive(m)
    x.outbox.clear()


@settings(max_examples=60, deadline=None)
@given(
    sends=st.lists(st.booleans(), min_size=1, max_size=40),
    seed=st.integers(0, 2**32 - 1),
    drop=st.floats(0.0, 0.5),
)
def test_every_member_gets_every_message_once_in_order(
    sends: list[bool], seed: int, drop: float
) -> None:
    a, b = two_nodes()
    alice = a.connect("alice", signup=True)
    exchange(a, b)
    bob = b.connect("bob", signup=True)
    exchange(b, a)
    rng = random.Random(seed)
    acked: list[int] = []
    in_flight: list[tuple[Node, BusMessage]] = []
    for i, from_a in enumerate(sends):
        node, conn = (a, alice) if from_a else (b, bob)
        acked.append(node.send(conn, f"m{i}"))
        other = b if from_a else a
        for m in node.outbox:
            if rng.random() >= drop:  # else lost on the bus
                in_flight.append((other, m))
        node.outbox.clear()
        # the bus delivers some of what is in flight, per origin in order, at random moments
        rng.shuffle(in_flight)
        keep: list[tuple[Node, BusMessage]] = []
        for target, m in in_flight:
            if rng.random() < 0.5:
                target.receive(m)
            else:
                keep.append((target, m))
        in_flight = keep
    for target, m in in_flight:
        target.receive(m)
    a.settle()
    b.settle()
    assert sorted(acked) == list(range(1, len(sends) + 1))
    for node, conn in ((a, alice), (b, bob)):
        assert node.got[conn] == sorted(acked), (node.name, node.got[conn])


def test_a_room_nobody_here_follows_is_not_held() -> None:
    """A node without members online in the room takes the store's word: its window is reset
    instead of waiting for what it missed (nothing to read, nothing held)."""
    a, b = two_nodes()
    alice = a.connect("alice", signup=True)
    a.send(alice, "one")
    second = a.send(alice, "two")
    b.receive(a.outbox[-1])  # only the second reaches b, and nobody is on b
    assert not b.service.replica.held
    room = b.service.state.rooms["general"]
    assert room.log.last_seq == second
    assert b.service.gaps(b.now + 10) == ()


def test_a_resend_on_the_other_node_is_answered_with_the_original() -> None:
    a, b = two_nodes()
    alice = a.connect("alice", signup=True)
    exchange(a, b)
    first = a.send(alice, "hello")
    exchange(a, b)
    alice_b = b.connect("alice", signup=False)
    b.rid += 1
    done = b.run(alice_b, SendRequest(id=b.rid, room="general", text="hello", client_id="hello"))
    assert isinstance(done.reply, Ok)
    assert done.reply.data["seq"] == first and done.reply.data["duplicate"] is True
    assert [m.seq for m in a.store.room_messages("general", before=None, after=None, limit=9)] == [
        first
    ]
