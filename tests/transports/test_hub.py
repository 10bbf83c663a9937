"""Hub and pipeline without sockets: fan-out encoding, ordering, bounded queues."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from fakes import RecordingWriter
from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.core.outcome import Delivery, Outcome
from parlour.core.writes import AppendRoomMessage, Audit, CreateRoom, CreateUser
from parlour.protocol import (
    NDJSON,
    BroadcastEvent,
    DisconnectEvent,
    Event,
    EventName,
    Ok,
    ProtocolError,
    event_from_fields,
)
from parlour.protocol.testing import LENGTH_PREFIXED, LengthPrefixedWire, unframe
from parlour.storage.sqlite import GroupCommitWriter, SqliteStore
from parlour.transports import testing
from parlour.transports.hub import Hub
from parlour.transports.pipeline import Pipeline


class FakeTransport(testing.FakeTransport):
    """Keeps each chunk as the hub hands it over (shared buffers are checked by identity) and
    counts write calls; `buffer` is the write buffer size it reports (set it to play a peer
    that stopped reading)."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []
        self.buffer = 0
        self.write_calls = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.write_calls += 1
        self.chunks.append(bytes(data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write_calls += 1
        self.chunks.extend(bytes(c) for c in list_of_data)

    def get_write_buffer_size(self) -> int:
        return self.buffer

    def frames(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in b"".join(self.chunks).splitlines()]


def event(n: int | str, pad: int = 0) -> Event:
    return BroadcastEvent(sender="admin", text=f"t{n}" + "x" * pad, ts=1.0, seq=1)


def frame(n: int | str, pad: int = 0) -> bytes:
    """What the NDJSON wire makes of ``event(n, pad)``."""
    return NDJSON.encode_event(event(n, pad))


def disconnect_frame(code: str, reason: str) -> bytes:
    return NDJSON.encode_event(DisconnectEvent(code=code, reason=reason))


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_fan_out_encodes_once_and_coalesces_writes() -> None:
    hub = Hub()
    transports = {i: FakeTransport() for i in range(1, 6)}
    for conn, t in transports.items():
        hub.add(conn, t)
    for n in range(10):
        hub.dispatch(Outcome(deliveries=(Delivery(event(n), tuple(transports)),)), None)
    assert hub.stats.frames_encoded == 10
    await settle()
    for t in transports.values():
        assert [f["text"] for f in t.frames()] == [f"t{n}" for n in range(10)]
        assert t.write_calls == 1  # ten frames, one write per recipient
        # the very same bytes object was handed to every transport
    first = transports[1].chunks
    assert all(a is b for a, b in zip(first, transports[2].chunks, strict=True))


async def test_reply_then_deliveries_then_close() -> None:
    hub = Hub()
    a, b = FakeTransport(), FakeTransport()
    hub.add(1, a)
    hub.add(2, b)
    hub.dispatch(
        Outcome(
            reply=Ok(7, {"x": 1}),
            deliveries=(Delivery(event(1), (1, 2)),),
            close=((2, "kicked", "bye"),),
        ),
        1,
    )
    await settle()
    assert [f["type"] for f in a.frames()] == ["ok", "event"]
    assert [f.get("event") for f in b.frames()] == ["broadcast", "disconnect"]
    assert b.frames()[-1]["code"] == "kicked" and b.closing
    assert not a.closing


async def test_slow_consumer_is_cut_off_and_others_unaffected() -> None:
    hub = Hub(send_queue_max=4096)
    slow, fast = FakeTransport(), FakeTransport()
    hub.add(1, slow)
    hub.add(2, fast)
    slow.buffer = 5000  # the peer stopped reading: the transport buffer is over the limit
    hub.deliver(event(1), (1, 2))
    await settle()
    assert hub.stats.slow_consumers == 1
    assert slow.closing
    assert slow.frames()[-1]["code"] == "slow_consumer"
    hub.deliver(event(2), (1, 2))  # nothing more is queued for the closing peer
    await settle()
    assert slow.frames()[-1]["code"] == "slow_consumer"
    assert not fast.closing and len(fast.frames()) == 2


async def test_queue_limit_bounds_memory_within_one_iteration() -> None:
    hub = Hub(send_queue_max=2048)
    t = FakeTransport()
    hub.add(1, t)
    for n in range(1000):
        hub.deliver(event(n, pad=100), (1,))
    assert hub.buffered(1) < 4 * 2048 + 200
    await settle()
    assert t.closing and hub.stats.slow_consumers == 1


async def test_stalled_writer_is_cut_off_and_closing_peer_aborted() -> None:
    now = [0.0]
    hub = Hub(stall_timeout=10, close_grace=5, clock=lambda: now[0])
    t = FakeTransport()
    hub.add(1, t)
    hub.pause_writing(1)
    now[0] = 5
    hub.sweep()
    assert not t.closing
    now[0] = 11
    hub.sweep()
    await settle()
    assert t.closing and not t.aborted
    now[0] = 17
    hub.sweep()
    assert t.aborted


async def test_a_closing_peer_that_keeps_reading_is_kept_until_it_has_read_the_reason() -> None:
    """Issue 10: slow consumers were never told why (aborted 5 s after the cut-off while
    they were still reading their backlog). A closing connection is aborted only when its
    peer stops reading (no progress for close_grace), or after stall_timeout in all."""
    now = [0.0]
    hub = Hub(stall_timeout=60, close_grace=5, clock=lambda: now[0])
    t = FakeTransport()
    hub.add(1, t)
    t.buffer = 900_000
    hub.close(1, "slow_consumer", "you are not reading fast enough")
    await settle()
    for step in range(1, 11):  # the peer reads a little every 2 s: 20 s, not aborted
        now[0] = 2.0 * step
        t.buffer -= 50_000
        hub.sweep()
        assert not t.aborted, step
    now[0] = 24.0  # then it stops reading: aborted once close_grace passes without progress
    hub.sweep()
    assert not t.aborted
    now[0] = 25.5
    hub.sweep()
    assert t.aborted
    # and nobody is kept for ever, reading or not
    hub2 = Hub(stall_timeout=30, close_grace=5, clock=lambda: now[0])
    t2 = FakeTransport()
    hub2.add(1, t2)
    t2.buffer = 10**9
    start = now[0]
    hub2.close(1, "kicked", "bye")
    for step in range(1, 20):
        now[0] = start + 2.0 * step
        t2.buffer -= 1000
        hub2.sweep()
    assert t2.aborted


async def test_pipeline_dispatches_in_submission_order() -> None:
    writer = RecordingWriter()
    writer.start()
    hub = Hub()
    t = FakeTransport()
    hub.add(1, t)
    pipeline = Pipeline(writer, hub)
    write = (Audit("a", "x", "y", "z", 1.0),)
    pipeline.apply(Outcome(reply=Ok(1, {}), writes=write), 1)
    pipeline.apply(Outcome(reply=Ok(2, {})), 1)  # no writes, but must wait behind #1
    pipeline.apply(Outcome(reply=Ok(3, {}), writes=write), 1)
    await settle()
    assert t.frames() == []
    writer.submitted[1][1].set_result(None)  # #3 commits first: still nothing may go out
    await settle()
    assert t.frames() == []
    writer.submitted[0][1].set_result(None)
    await settle()
    assert [f["id"] for f in t.frames()] == [1, 2, 3]
    await asyncio.wait_for(pipeline.drained(), 1)


async def test_pipeline_never_acknowledges_a_failed_write() -> None:
    writer = RecordingWriter()
    writer.start()
    hub = Hub()
    a, b = FakeTransport(), FakeTransport()
    hub.add(1, a)
    hub.add(2, b)
    pipeline = Pipeline(writer, hub)
    pipeline.apply(
        Outcome(
            reply=Ok(9, {"seq": 1}),
            deliveries=(Delivery(event(1), (2,)),),
            writes=(Audit("a", "x", "y", "z", 1.0),),
        ),
        1,
    )
    writer.submitted[0][1].set_exception(OSError("disk full"))
    await settle()
    assert [(f["id"], f["code"]) for f in a.frames()] == [(9, "internal_error")]
    assert b.frames() == []
    assert pipeline.storage_failures == 1


async def test_segments_keep_each_members_order_with_replies_spliced_in() -> None:
    hub = Hub()
    ts = {i: FakeTransport() for i in (1, 2, 3, 4)}
    for conn, t in ts.items():
        hub.add(conn, t)
    room = (1, 2, 3)
    for n in range(6):
        sender = 1 + n % 2  # members 1 and 2 take turns sending
        hub.dispatch(
            Outcome(reply=Ok(n, {}), deliveries=(Delivery(event(n), room),)),
            sender,
        )
    hub.send(4, b'{"type":"ok","id":"other","data":{}}\n')  # not a member: unaffected
    hub.close(3, "kicked", "bye")
    hub.dispatch(Outcome(deliveries=(Delivery(event(99), room),)), None)
    await settle()

    def seen(conn: int) -> list[object]:
        return [f.get("id", f.get("text", f.get("code"))) for f in ts[conn].frames()]

    texts = [f"t{n}" for n in range(6)]
    assert seen(1) == [0, "t0", "t1", 2, "t2", "t3", 4, "t4", "t5", "t99"]
    assert seen(2) == ["t0", 1, "t1", "t2", 3, "t3", "t4", 5, "t5", "t99"]
    assert seen(3) == [*texts, "kicked"]
    assert seen(4) == ["other"]


async def test_segment_bytes_are_bounded_and_the_queue_limit_still_cuts_off() -> None:
    """Segments are bounded in bytes; a member whose buffer is over the limit is cut off on
    bytes, the other member gets everything in order."""
    hub = Hub(send_queue_max=16384)  # 43 kB in one iteration: under the 64 kB burst bound
    slow, fast = FakeTransport(), FakeTransport()
    hub.add(1, slow)
    hub.add(2, fast)
    room = (1, 2)
    frames = [frame(n, pad=200) for n in range(200)]
    for n in range(200):
        hub.deliver(event(n, pad=200), room)
        assert hub.buffered(2) <= 4 * 16384  # segments are handed on as they fill
    slow.buffer = 20000  # the slow peer's kernel buffer is over the limit
    await settle()
    assert slow.closing and slow.frames()[-1]["code"] == "slow_consumer"
    assert hub.stats.slow_consumers >= 1
    assert b"".join(fast.chunks) == b"".join(frames)
    assert not fast.closing


async def test_segment_ends_at_a_close_and_a_removed_member_gets_nothing() -> None:
    hub = Hub()
    ts = {i: FakeTransport() for i in (1, 2, 3)}
    for conn, t in ts.items():
        hub.add(conn, t)
    room = (1, 2, 3)
    hub.deliver(event(1), room)
    hub.remove(3)  # connection lost mid-iteration: nothing queued for it is written
    hub.deliver(event(2), room)
    hub.close(2, "kicked", "bye")  # what was dispatched before goes out first
    hub.deliver(event(3), room)  # after the close: not for 2
    await settle()
    assert [f.get("text", f.get("code")) for f in ts[1].frames()] == ["t1", "t2", "t3"]
    assert [f.get("text", f.get("code")) for f in ts[2].frames()] == ["t1", "t2", "kicked"]
    assert ts[2].closing
    assert ts[3].chunks == []


# ---------------------------------------------------------------------------- model check

Op = tuple[str, int, int]  # (kind, a, b)

_ROOMS: tuple[tuple[int, ...], ...] = ((1, 2, 3, 4), (2, 3), (1, 4), (3,))

ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(0, len(_ROOMS) - 1), st.integers(0, 1)),
        st.tuples(st.just("send"), st.integers(1, 5), st.just(0)),
        st.tuples(st.just("close"), st.integers(1, 5), st.just(0)),
        st.tuples(st.just("remove"), st.integers(1, 5), st.just(0)),
        st.tuples(st.just("yield"), st.just(0), st.just(0)),
    ),
    max_size=60,
)


def _reference(ops: list[Op]) -> dict[int, bytes]:
    """What each transport must receive: per-connection FIFO queues flushed at each yield
    (the hub before segments), frames numbered in dispatch order."""
    flushed: dict[int, list[bytes]] = {c: [] for c in range(1, 6)}
    pending: dict[int, list[bytes]] = {c: [] for c in range(1, 6)}
    state = dict.fromkeys(range(1, 6), "open")
    for n, (kind, a, _) in enumerate(ops):
        data = frame(n)
        if kind == "deliver":
            targets = _ROOMS[a]
            for c in targets:
                if state[c] == "open":
                    pending[c].append(data)
        elif kind == "send":
            if state[a] == "open":
                pending[a].append(data)
        elif kind == "close":
            if state[a] == "open":
                pending[a].append(disconnect_frame("kicked", "bye"))
                state[a] = "closing"
        elif kind == "remove":
            if state[a] != "removed":
                pending[a].clear()
                state[a] = "removed"
        else:
            for c in flushed:
                flushed[c] += pending[c]
                pending[c].clear()
    for c in flushed:
        if state[c] != "removed":
            flushed[c] += pending[c]
    return {c: b"".join(v) for c, v in flushed.items()}


async def _run_hub(ops: list[Op]) -> dict[int, bytes]:
    hub = Hub()
    ts = {c: FakeTransport() for c in range(1, 6)}
    for c, t in ts.items():
        hub.add(c, t)
    for n, (kind, a, b) in enumerate(ops):
        if kind == "deliver":
            # b == 1: an equal but not identical tuple (the hub must compare by value)
            to = _ROOMS[a] if b == 0 else tuple(list(_ROOMS[a]))
            hub.deliver(event(n), to)
        elif kind == "send":
            hub.send(a, frame(n))
        elif kind == "close":
            hub.close(a, "kicked", "bye")
        elif kind == "remove":
            hub.remove(a)
        else:
            await settle()
    await settle()
    return {c: b"".join(t.chunks) for c, t in ts.items()}


@settings(max_examples=300, deadline=None)
@given(ops_strategy)
def test_segments_deliver_exactly_what_per_connection_queues_would(ops: list[Op]) -> None:
    assert asyncio.run(_run_hub(ops)) == _reference(ops)


def test_events_built_from_wire_fields_are_the_typed_events() -> None:
    fields = {"from": "admin", "text": "hi", "ts": 1.0, "seq": 3}
    built = event_from_fields("broadcast", fields)
    assert built == BroadcastEvent(sender="admin", text="hi", ts=1.0, seq=3)
    assert built.name is EventName.BROADCAST and built["from"] == "admin"
    assert (
        NDJSON.encode_event(built)
        == b'{"type":"event","event":"broadcast","from":"admin","text":"hi","ts":1.0,"seq":3}\n'
    )
    with pytest.raises(ProtocolError, match="unknown event"):
        event_from_fields("no-such-event", fields)
    with pytest.raises(ProtocolError, match="missing field 'ts'"):
        event_from_fields("broadcast", {"from": "admin", "text": "hi"})


async def test_an_event_is_encoded_once_per_wire_kind_present() -> None:
    """Recipients of two wire kinds: one encoding per kind (not per recipient), each
    recipient gets its own kind's bytes, the same object for every recipient of a kind."""
    hub = Hub()
    nd = {i: FakeTransport() for i in (1, 2, 3)}
    lp = {i: FakeTransport() for i in (4, 5)}
    for conn, t in nd.items():
        hub.add(conn, t)
    for conn, t in lp.items():
        hub.add(conn, t, LengthPrefixedWire())
    everyone = (1, 2, 3, 4, 5)
    for n in range(4):
        hub.deliver(event(n), everyone)
    hub.deliver(event("nd-only"), (1, 2))  # one kind present: one encoding
    assert hub.stats.frames_encoded == 4 * 2 + 1
    await settle()
    for t in nd.values():
        assert [f["text"] for f in t.frames()] == ["t0", "t1", "t2", "t3"] + (
            ["tnd-only"] if t is not nd[3] else []
        )
    for t in lp.values():
        payloads, rest = unframe(b"".join(t.chunks))
        assert rest == b""
        assert payloads == [NDJSON.encode_event(event(n))[:-1] for n in range(4)]
        assert b"".join(t.chunks) == b"".join(
            LENGTH_PREFIXED.encode_event(event(n)) for n in range(4)
        )
    assert lp[4].chunks[0] is lp[5].chunks[0] and nd[1].chunks[0] is nd[3].chunks[0]


async def test_pipeline_with_the_group_commit_writer_acks_after_commit_in_order(
    tmp_path: Path,
) -> None:
    """The SQLite writer reports whole batches (no done-callback per outcome): replies still go
    out only after their batch committed, in submission order, and outcomes without writes
    wait behind earlier ones."""
    store = SqliteStore.open(tmp_path)
    committed: list[int] = []

    def apply_batch(batches: Sequence[Sequence[Any]]) -> None:
        store.apply_batch(batches)
        committed.extend(x.seq for b in batches for x in b)

    writer = GroupCommitWriter(apply_batch, name="test-writer")
    writer.start()
    hub = Hub()
    t = FakeTransport()
    hub.add(1, t)
    pipeline = Pipeline(writer, hub)
    store.apply([CreateUser("bob", "h", "member", 1.0), CreateRoom("r", "bob", 1.0)])
    sent: list[int] = []

    def dispatched(n: int) -> None:
        assert n in committed, f"outcome {n} dispatched before its write was committed"
        sent.append(n)

    try:
        for n in range(1, 301):
            if n % 3:
                writes = (AppendRoomMessage("r", n, "bob", "x", 1.0, f"c{n}"),)
                outcome = Outcome(reply=Ok(n, {}), writes=writes)
                pipeline.apply(outcome, 1, lambda n=n: dispatched(n))
            else:
                pipeline.apply(Outcome(reply=Ok(n, {})), 1)
            if n % 50 == 0:
                await asyncio.sleep(0)
        await asyncio.wait_for(pipeline.drained(), 30)
        await settle()
        assert [f["id"] for f in t.frames()] == list(range(1, 301))
        assert sent == [n for n in range(1, 301) if n % 3]
        assert committed == sent  # every acknowledged write was committed, in order
    finally:
        await writer.close()
        store.close()


async def test_a_delivery_to_nobody_known_is_dropped_quietly() -> None:
    hub = Hub()
    hub.deliver(event(1), (7, 8))  # no connection was ever added
    hub.send(7, frame(2))
    await settle()
    assert hub.stats.frames_queued == 0 and len(hub) == 0
