"""The bus between nodes: the message codec (every write, effect, address and event survives
a round trip; anything else is refused), and `RedisBus` over a real Redis — messages in
order between two buses, the node registry with expiry, and the state callback when Redis
goes away and comes back."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster_services import REDIS_URL, PrivateRedis, fresh_prefix, require_redis
from parlour.bus.codec import BusDecodeError, decode, encode
from parlour.core import outcome as o
from parlour.core import writes as w
from parlour.core.outcome import Delivery
from parlour.core.ports import BusMessage
from parlour.protocol import MessageEvent, PresenceEvent

text = st.text(max_size=30)
num = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _values(cls: type) -> st.SearchStrategy[object]:
    """Instances of a flat dataclass with fields drawn by their annotations."""
    fields = {}
    for f in dataclasses.fields(cls):
        kind = str(f.type)
        if "tuple" in kind:
            fields[f.name] = st.tuples(text, text)
        elif kind.startswith("int"):
            fields[f.name] = st.integers(0, 2**53)
        elif "float" in kind and "None" in kind:
            fields[f.name] = st.none() | num
        elif "float" in kind:
            fields[f.name] = num
        elif "bool" in kind:
            fields[f.name] = st.booleans()
        elif "Role" in kind:
            fields[f.name] = st.sampled_from(["admin", "member"])
        elif "None" in kind:
            fields[f.name] = st.none() | text
        else:
            fields[f.name] = text
    return st.builds(cls, **fields)


writes = st.one_of(*(_values(c) for c in w.Write.__args__))
effects = st.one_of(*(_values(c) for c in o.RemoteEffect.__args__))
addresses = st.one_of(
    _values(o.ToRoom), _values(o.ToUsers), st.just(o.ToAll()), _values(o.ToPresence)
)
events = st.one_of(
    st.builds(
        MessageEvent,
        room=text,
        seq=st.integers(1, 2**40),
        ts=num,
        sender=text,
        text=st.none() | text,
        edited=st.booleans(),
        deleted=st.booleans(),
        client_id=st.none() | text,
    ),
    st.builds(PresenceEvent, user=text, online=st.booleans(), ts=num),
)


@settings(max_examples=200)
@given(
    origin=text,
    n=st.integers(0, 2**53),
    facts=st.lists(writes, max_size=5),
    fx=st.lists(effects, max_size=5),
    ds=st.lists(st.tuples(events, addresses), max_size=5),
)
def test_codec_round_trip(
    origin: str,
    n: int,
    facts: list[w.Write],
    fx: list[o.RemoteEffect],
    ds: list[tuple[object, o.Address]],
) -> None:
    deliveries = tuple(Delivery(e, (1, 2), a) for e, a in ds)  # type: ignore[arg-type]
    message = BusMessage(origin, deliveries, tuple(facts), tuple(fx), n)
    back = decode(encode(message))
    assert back.origin == origin and back.n == n
    assert back.facts == tuple(facts)
    assert back.effects == tuple(fx)
    assert [(d.event, d.address) for d in back.deliveries] == [(e, a) for e, a in ds]
    assert all(d.to == () for d in back.deliveries)  # the origin's connections stay there


def test_codec_leaves_out_connection_addresses_and_refuses_strangers() -> None:
    event = PresenceEvent(user="a", online=True, ts=1.0)
    message = BusMessage("n1", (Delivery(event, (3,), o.ToConns((3,))),), (), (), 1)
    assert decode(encode(message)).deliveries == ()
    for bad in (
        b"not json",
        b"[]",
        b'{"o": "n", "n": 1, "f": [["os.system", "rm"]]}',
        b'{"o": "n", "n": 1, "f": [["CreateUser", "a"]]}',
        b'{"o": "n", "n": 1, "e": [["SessionsChanged", "a", {"x": 1}]]}',
        b'{"o": "n", "n": 1, "d": [[{"type": "event", "event": "nope"}, ["ToAll"]]]}',
    ):
        with pytest.raises(BusDecodeError):
            decode(bad)


@pytest_asyncio.fixture
async def two_buses() -> AsyncIterator[tuple[object, object]]:
    require_redis()
    from parlour.bus.redis import RedisBus

    prefix = fresh_prefix()
    a, b = RedisBus(REDIS_URL, prefix, ttl=1.0), RedisBus(REDIS_URL, prefix, ttl=1.0)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _until(check: object, what: str) -> None:
    for _ in range(200):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out: {what}")


@pytest.mark.cluster
async def test_messages_go_between_buses_in_order(two_buses: tuple[object, object]) -> None:
    from parlour.bus.redis import RedisBus

    a, b = two_buses
    assert isinstance(a, RedisBus) and isinstance(b, RedisBus)
    got: list[int] = []
    b.subscribe("b", lambda m: got.append(m.n))
    await _until(lambda: a.connected and b.connected, "both connected")
    for n in range(1, 301):
        a.publish(BusMessage("a", (), (w.RecordLogin("x", float(n)),), (), n))
    await _until(lambda: len(got) == 300, "300 messages")
    assert got == list(range(1, 301))


@pytest.mark.cluster
async def test_the_registry_expires_a_silent_node(two_buses: tuple[object, object]) -> None:
    from parlour.bus.redis import RedisBus

    a, b = two_buses
    assert isinstance(a, RedisBus) and isinstance(b, RedisBus)
    await a.heartbeat("node-a", {"alice": 2, "bob": 1})
    await b.heartbeat("node-b", {})
    assert await b.alive(["node-a", "node-b", "node-x"]) == {"node-a", "node-b"}
    sessions = await b.sessions()
    assert sessions["node-a"] == {"alice": 2, "bob": 1} and sessions["node-b"] == {}
    await b.leave("node-b")
    assert await a.alive(["node-b"]) == set()
    await asyncio.sleep(1.2)  # node-a stops beating: its key expires after ttl (1 s)
    assert await b.alive(["node-a"]) == set()


@pytest.mark.cluster
async def test_a_restarted_redis_is_reported_and_joined_again() -> None:
    pytest.importorskip("redis", reason="the cluster extra (redis) is not installed")
    from parlour.bus.redis import RedisBus

    server = PrivateRedis()
    states: list[bool] = []
    bus = RedisBus(server.url, fresh_prefix(), on_state=states.append)
    got: list[int] = []
    bus.subscribe("me", lambda m: got.append(m.n))
    await bus.start()
    try:
        await _until(lambda: states == [True], "connected")
        await asyncio.to_thread(server.stop)
        await _until(lambda: states == [True, False], "disconnected")
        await asyncio.to_thread(server.start)
        await _until(lambda: states == [True, False, True], "connected again")
        bus.publish(BusMessage("other", (), (), (), 7))
        await _until(lambda: got == [7], "a message after the restart")
    finally:
        await bus.close()
        server.close()


@pytest.mark.cluster
async def test_the_login_journal_outlives_the_messages(two_buses: tuple[object, object]) -> None:
    """Login checks published on one bus are read back, in order, by a bus that starts later
    (a node that restarts); other effects and messages are not kept."""
    from parlour.bus.redis import RedisBus

    a, b = two_buses
    assert isinstance(a, RedisBus) and isinstance(b, RedisBus)
    await _until(lambda: a.connected, "connected")
    checks: list[o.RemoteEffect] = []
    for n in range(1, 41):
        check: o.RemoteEffect = (
            o.LoginSucceeded("vic", "10.0.0.1")
            if n % 10 == 0
            else o.LoginFailed("vic", f"10.0.0.{n % 3}", 1000.0 + n)
        )
        checks.append(check)
        a.publish(BusMessage("a", (), (), (o.SessionsChanged("x", 1), check), n))
    a.publish(BusMessage("a", (), (), (), 41))  # nothing to keep
    await _until(lambda: a.published == 41, "published")
    late = RedisBus(REDIS_URL, a.prefix)
    try:
        assert await late.login_history() == tuple(checks)
    finally:
        await late.close()
    other = RedisBus(REDIS_URL, fresh_prefix())  # another deployment shares nothing
    try:
        assert await other.login_history() == ()
    finally:
        await other.close()


async def test_the_in_process_journal_keeps_login_checks_for_its_horizon() -> None:
    from parlour.bus.journal import HORIZON
    from parlour.bus.memory import InProcessBus

    now = [0.0]
    bus = InProcessBus(clock=lambda: now[0])
    old = o.LoginFailed("vic", "a", 0.0)
    bus.publish(BusMessage("n", (), (), (old, o.EndSessions("vic", "kicked", "bye")), 1))
    now[0] = HORIZON / 2
    new = o.LoginSucceeded("vic", "a")
    bus.publish(BusMessage("n", (), (), (new,), 2))
    assert await bus.login_history() == (old, new)
    now[0] = HORIZON + 1  # the first one is past the horizon
    assert await bus.login_history() == (new,)
