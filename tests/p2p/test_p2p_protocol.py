"""The sans-I/O transfer protocol over an in-memory network with a fake clock."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from p2p_helpers import KEY, Link, Net, Node, payload, start_transfer

from parlour.p2p.connection import State, TransferConfig
from parlour.p2p.events import Completed, Failed, Reason, RelayFallback
from parlour.p2p.ranges import RangeSet
from parlour.p2p.relay import Relay
from parlour.p2p.wire import MAX_DATAGRAM

A, B, C = ("10.0.0.1", 1000), ("10.0.0.2", 2000), ("10.0.0.3", 3000)
SMALL = TransferConfig(window=256 * 1024, read_block=64 * 1024, read_ahead=128 * 1024)

# Failures a hostile schedule may legitimately cause; anything else is a bug.
NETWORK_FAILURES = {Reason.IDLE_TIMEOUT, Reason.NO_PATH, Reason.STALLED}


def _net(seed: int = 1, **link: float) -> tuple[Net, Node, Node]:
    net = Net(random.Random(seed))
    net.default = Link(**link)  # type: ignore[arg-type]
    return net, Node(net, A), Node(net, B)


def test_clean_transfer_is_identical_and_both_sides_complete() -> None:
    net, a, b = _net()
    t = start_transfer(net, a, b, payload(1_000_000), config=SMALL)
    net.run(lambda: t.done)
    assert t.sender_result == Completed() and t.receiver_result == Completed()
    assert bytes(t.sink) == t.data
    assert t.sender.stats.data_bytes_resent == 0
    assert t.sender.state is State.CLOSED and t.receiver.state is State.CLOSED


def test_every_datagram_fits_a_1280_byte_path() -> None:
    net, a, b = _net(loss=0.05)
    net.record = True
    t = start_transfer(net, a, b, payload(300_000), config=SMALL)
    net.run(lambda: t.done)
    assert t.sender_result == Completed()
    sizes = {len(d) for _, _, d in net.injected}
    assert max(sizes) == MAX_DATAGRAM == 1280 - 40 - 8


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    size=st.integers(0, 200_000),
    loss=st.sampled_from([0.0, 0.01, 0.1, 0.3]),
    dup=st.sampled_from([0.0, 0.05, 0.3]),
    jitter=st.sampled_from([0.0, 0.005, 0.05]),
    delay=st.sampled_from([0.0005, 0.02, 0.15]),
    corrupt=st.sampled_from([0.0, 0.02]),
    seed=st.integers(0, 2**32 - 1),
)
def test_hostile_network_never_corrupts(
    size: int, loss: float, dup: float, jitter: float, delay: float, corrupt: float, seed: int
) -> None:
    """Drops, duplicates, reordering, delays and bit flips: the file arrives byte-identical or
    the transfer fails with a network reason; never a silent corruption, never a hash
    mismatch (which would mean the protocol itself assembled wrong bytes)."""
    net, a, b = _net(seed, loss=loss, dup=dup, jitter=jitter, delay=delay, corrupt=corrupt)
    data = random.Random(seed).randbytes(size)
    t = start_transfer(net, a, b, data, config=SMALL)
    net.run(lambda: t.done, max_time=400)
    rr, sr = t.receiver_result, t.sender_result
    assert rr is not None and sr is not None, "both sides must end with a result"
    if isinstance(rr, Completed):
        assert bytes(t.sink) == data
    else:
        assert isinstance(rr, Failed) and rr.reason in NETWORK_FAILURES, rr
    if isinstance(sr, Failed):
        assert sr.reason in NETWORK_FAILURES, sr
    if corrupt == 0 and dup == 0:
        assert t.receiver.stats.forged_dropped == 0
    if loss <= 0.1:
        assert isinstance(rr, Completed), "a 10% lossy path must not stop a transfer"


fates = st.tuples(st.sampled_from([0, 0, 0, 0, 1, 2]), st.sampled_from([0.0, 0.001, 0.01, 0.08]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule=st.lists(fates, min_size=1, max_size=60), size=st.integers(0, 120_000))
def test_explicit_schedules_never_corrupt(schedule: list[tuple[int, float]], size: int) -> None:
    """Hypothesis writes the network's behaviour datagram by datagram (drop, duplicate, how
    late), so a failure shrinks to the shortest schedule that shows it."""
    net = Net(random.Random(0))
    net.schedule = schedule
    a, b = Node(net, A), Node(net, B)
    data = random.Random(size).randbytes(size)
    t = start_transfer(net, a, b, data, config=SMALL)
    net.run(lambda: t.done, max_time=400)
    rr, sr = t.receiver_result, t.sender_result
    assert rr is not None and sr is not None
    if isinstance(rr, Completed):
        assert bytes(t.sink) == data
    else:
        assert isinstance(rr, Failed) and rr.reason in NETWORK_FAILURES, rr
    if isinstance(sr, Failed):
        assert sr.reason in NETWORK_FAILURES, sr
    if all(action != 1 for action, _ in schedule):
        assert isinstance(rr, Completed) and isinstance(sr, Completed)


def test_lossy_link_recovers_and_counts_resends() -> None:
    net, a, b = _net(3, loss=0.05, jitter=0.002, delay=0.01)
    t = start_transfer(net, a, b, payload(2_000_000), config=SMALL)
    net.run(lambda: t.done)
    assert bytes(t.sink) == t.data
    stats = t.sender.stats
    assert stats.packets_lost > 0 and stats.data_bytes_resent > 0
    # Resends stay in proportion to the loss (no flood of spurious resends).
    assert stats.data_bytes_resent < 0.25 * len(t.data)


def test_reordering_is_not_mistaken_for_congestion() -> None:
    """Every datagram delayed by a random 0-5 ms on a 20 MB/s link, nothing lost: the first
    reorderings look like losses, but the late ACKs prove them spurious, the thresholds
    widen and the window cuts are undone, so the link stays nearly full."""
    net, a, b = _net(8)
    net.default = Link(delay=0.01, jitter=0.005, rate=20e6, queue_bytes=256 * 1024)
    t = start_transfer(net, a, b, payload(10_000_000))
    net.run(lambda: t.done)
    assert bytes(t.sink) == t.data
    stats = t.sender.stats
    assert stats.extra["spurious_losses"] > 0
    assert t.sender._packet_threshold > 3 and t.sender._time_factor > 1.125
    assert stats.data_bytes_resent < 0.02 * len(t.data)
    assert len(t.data) / net.now > 5e6  # (fake seconds; without the undo it was ~0.4 MB/s)


def test_congestion_control_backs_off_on_a_slow_bottleneck() -> None:
    """A 1 MB/s link with a 64 KiB queue: the sender must not flood it; losses stay a small
    fraction of what it sends, and the goodput approaches the link rate."""
    net, a, b = _net(5)
    net.links[(A, B)] = link = Link(delay=0.02, rate=1_000_000, queue_bytes=64 * 1024)
    t = start_transfer(net, a, b, payload(3_000_000), config=SMALL)
    net.run(lambda: t.done)
    assert bytes(t.sink) == t.data
    assert link.dropped < 0.05 * link.carried
    elapsed = net.now
    assert len(t.data) / elapsed > 0.5e6
    assert t.sender.cc.cwnd < 400_000


def test_slow_disk_never_overruns_the_window() -> None:
    """The receiver's disk writes 200 kB/s: the flow-control window caps what waits in
    memory, nothing is dropped for it, and the file is complete."""
    net = Net(random.Random(2))
    a = Node(net, A)
    b = Node(net, B, disk_rate=200_000)
    t = start_transfer(net, a, b, payload(1_500_000), config=SMALL)
    net.run(lambda: t.done, max_time=60)
    assert bytes(t.sink) == t.data and t.receiver_result == Completed()
    assert b.max_unwritten[t.tid] <= SMALL.window
    assert net.now >= 1_500_000 / 200_000  # it really waited for the disk


def test_resume_sends_only_what_the_receiver_lacks() -> None:
    data = payload(800_000)
    sink = bytearray(len(data))
    held = RangeSet([(0, 300_000), (500_000, 600_000)])
    for s, e in held:
        sink[s:e] = data[s:e]
    net, a, b = _net()
    t = start_transfer(net, a, b, data, config=SMALL, held=held, sink=sink)
    net.run(lambda: t.done)
    assert bytes(t.sink) == data and t.receiver_result == Completed()
    assert t.sender.stats.data_bytes_sent == len(data) - held.total()
    assert t.sender.held_by_peer_at_start == held.total()


def test_interrupted_transfer_resumes_with_new_keys() -> None:
    """The link dies mid-way; both sides time out. A second attempt under the same key and
    transfer id starts from what the receiver wrote, with fresh randoms (new nonces)."""
    data = payload(1_000_000)
    net, a, b = _net(9)
    cfg = TransferConfig(window=256 * 1024, read_block=64 * 1024, idle_timeout=5)
    t1 = start_transfer(net, a, b, data, config=cfg, tid=b"resume01")
    net.run(lambda: t1.receiver.bytes_written > 400_000)
    net.default.up = False
    net.run(lambda: t1.done, max_time=net.now + 60)
    assert isinstance(t1.receiver_result, Failed)
    assert t1.receiver_result.reason is Reason.IDLE_TIMEOUT
    held = t1.receiver.held
    assert 400_000 <= held.total() < len(data)
    net.default.up = True
    t2 = start_transfer(net, a, b, data, config=cfg, tid=b"resume01", held=held, sink=t1.sink)
    net.run(lambda: t2.done)
    assert bytes(t2.sink) == data and t2.receiver_result == Completed()
    assert t2.sender.stats.data_bytes_sent <= len(data) - held.total() + 50_000
    assert t1.sender._random != t2.sender._random


def test_many_concurrent_transfers_both_directions_and_peers() -> None:
    net = Net(random.Random(4))
    net.default = Link(loss=0.02, jitter=0.003)
    a, b, c = Node(net, A), Node(net, B), Node(net, C)
    pairs = [(a, b), (b, a), (a, b), (b, a), (c, a), (b, c)]
    ts = [
        start_transfer(net, s, r, payload(150_000 + 1000 * i, seed=i), config=SMALL)
        for i, (s, r) in enumerate(pairs)
    ]
    net.run(lambda: all(t.done for t in ts))
    for t in ts:
        assert t.receiver_result == Completed() and bytes(t.sink) == t.data


def test_forged_datagrams_are_dropped_and_counted() -> None:
    """Random bytes, wrong-key packets and bit-flipped packets for the transfer's id never
    reach the file; the transfer completes."""
    net, a, b = _net()
    net.record = True
    t = start_transfer(net, a, b, payload(400_000), config=SMALL)
    other = start_transfer(net, a, b, payload(1000), key=bytes(32), tid=b"otherkey")
    net.run(lambda: t.receiver.bytes_written > 100_000)
    rng = random.Random(1)
    for i in range(200):
        forged = bytearray(rng.randbytes(rng.randrange(20, 1232)))
        forged[0] = 0x12
        forged[1:9] = t.tid
        forged[9:15] = (10_000 + i).to_bytes(6, "big")
        net.inject(A, B, bytes(forged))
    # A real packet of another transfer (other key) relabelled with this transfer's id.
    theirs = [d for s, _, d in net.injected if d[1:9] == other.tid and d[0] == 0x12]
    for d in theirs[:5]:
        net.inject(A, B, d[:1] + t.tid + d[9:])
    net.run(lambda: t.done)
    assert bytes(t.sink) == t.data and t.receiver_result == Completed()
    assert t.receiver.stats.forged_dropped >= 200


def test_replayed_datagrams_are_dropped_not_accepted() -> None:
    net, a, b = _net()
    net.record = True
    t = start_transfer(net, a, b, payload(300_000), config=SMALL)
    net.run(lambda: t.receiver.bytes_written > 100_000)
    captured = [d for s, _, d in net.injected if s == A and d[0] == 0x12]
    for d in captured:
        net.inject(A, B, d)
    net.run(lambda: t.done)
    assert bytes(t.sink) == t.data
    assert t.receiver.stats.replays_dropped >= len(captured) - 5


def test_replay_from_an_earlier_attempt_is_useless() -> None:
    """Datagrams of attempt 1 replayed into attempt 2 (same key and id) do not open."""
    data = payload(200_000)
    net, a, b = _net()
    net.record = True
    t1 = start_transfer(net, a, b, data, config=SMALL, tid=b"sametid1")
    net.run(lambda: t1.done)
    old = [d for s, _, d in net.injected if s == A]
    b.sinks.pop(t1.tid)
    t2 = start_transfer(net, a, b, data, config=SMALL, tid=b"sametid1")
    net.run(lambda: t2.receiver.state is State.ESTABLISHED)
    for d in old:
        net.inject(A, B, d)
    net.run(lambda: t2.done)
    assert bytes(t2.sink) == data and t2.receiver_result == Completed()
    assert t2.receiver.stats.forged_dropped + t2.receiver.stats.replays_dropped >= len(old) - 1


def test_forged_flood_ends_only_that_transfer() -> None:
    net, a, b = _net()
    cfg = TransferConfig(window=256 * 1024, read_block=64 * 1024, invalid_burst=100)
    t = start_transfer(net, a, b, payload(2_000_000), config=cfg)
    bystander = start_transfer(net, a, b, payload(300_000, seed=3), config=SMALL)
    net.run(lambda: t.receiver.bytes_written > 50_000)
    junk = bytes([0x12]) + t.tid + bytes(1200)
    for i in range(300):
        net.inject(C, B, junk[:9] + i.to_bytes(6, "big") + junk[15:])
    net.run(lambda: t.done and bystander.done)
    assert isinstance(t.receiver_result, Failed)
    assert t.receiver_result.reason is Reason.FLOOD
    assert isinstance(t.sender_result, Failed) and t.sender_result.by_peer
    assert t.sender_result.reason is Reason.FLOOD
    assert bystander.receiver_result == Completed() and bytes(bystander.sink) == bystander.data


def test_vanished_peer_ends_with_idle_timeout() -> None:
    net, a, b = _net()
    t = start_transfer(net, a, b, payload(2_000_000), config=SMALL)
    net.run(lambda: t.receiver.bytes_written > 100_000)
    del a.conns[t.tid]  # the sender's client is gone
    net.run(lambda: t.receiver.closed, max_time=net.now + 100)
    assert isinstance(t.receiver_result, Failed)
    assert t.receiver_result.reason is Reason.IDLE_TIMEOUT
    assert net.now < 100


def test_no_path_fails_with_reason() -> None:
    net, a, b = _net()
    net.default.up = False
    t = start_transfer(net, a, b, payload(1000))
    net.run(lambda: t.done, max_time=100)
    for r in (t.sender_result, t.receiver_result):
        assert isinstance(r, Failed) and r.reason is Reason.NO_PATH


def test_sender_abort_reaches_the_receiver() -> None:
    net, a, b = _net()
    t = start_transfer(net, a, b, payload(1_000_000), config=SMALL)
    net.run(lambda: t.receiver.bytes_written > 100_000)
    t.sender.abort(Reason.FILE_CHANGED, "the file was modified", net.now)
    net.run(lambda: t.done)
    rr = t.receiver_result
    assert isinstance(rr, Failed) and rr.reason is Reason.FILE_CHANGED and rr.by_peer
    assert "modified" in rr.detail


def test_receiver_hash_mismatch_is_reported_to_both() -> None:
    """The sender's file changed under it (a flipped byte it read): the receiver's SHA-256
    check catches it, discards nothing silently and tells the sender."""
    net, a, b = _net()
    t = start_transfer(net, a, b, payload(300_000), config=SMALL)
    a.corrupt_reads[t.tid] = 123_456
    net.run(lambda: t.done)
    for r in (t.receiver_result, t.sender_result):
        assert isinstance(r, Failed) and r.reason is Reason.HASH_MISMATCH


def test_offer_mismatch() -> None:
    net, a, b = _net()
    t = start_transfer(net, a, b, payload(10_000))
    t.receiver.sha256 = hashlib.sha256(b"something else").digest()
    net.run(lambda: t.done)
    assert isinstance(t.sender_result, Failed)
    assert t.sender_result.reason is Reason.OFFER_MISMATCH


def test_wrong_key_never_connects() -> None:
    net, a, b = _net()
    t = start_transfer(net, a, b, payload(1000))
    t.receiver._keys = type(t.receiver._keys)(bytes(32), t.tid)
    net.run(lambda: t.done, max_time=100)
    assert isinstance(t.receiver_result, Failed) and t.receiver_result.reason is Reason.NO_PATH
    assert t.receiver.stats.forged_dropped > 0


def test_path_probing_picks_the_candidate_that_answers() -> None:
    net, a, b = _net()
    dead = ("10.9.9.9", 9)
    t = start_transfer(
        net, a, b, payload(50_000), sender_candidates=[dead, B], receiver_candidates=[A, dead]
    )
    net.run(lambda: t.done)
    assert t.receiver_result == Completed()
    assert t.sender.path == B and t.receiver.path == A


def test_relay_fallback_when_direct_path_is_blocked() -> None:
    net, a, b = _net()
    relay_addr = ("10.0.0.100", 4000)
    relay = Relay(b"relay-secret-for-tests-000000000", 0.0)

    class RelayNode(Node):
        def deliver(self, data: bytes, src: tuple[str, int], now: float) -> None:
            for out, dest in relay.datagram_received(data, src, now):
                self.net.send(self.addr, dest, bytes(out), now)

    RelayNode(net, relay_addr)
    net.links[(A, B)] = Link(up=False)
    net.links[(B, A)] = Link(up=False)
    t = start_transfer(net, a, b, payload(200_000), config=SMALL, relay=(relay_addr, relay_addr))
    net.run(lambda: t.done)
    assert t.receiver_result == Completed() and bytes(t.sink) == t.data
    assert t.sender.via_relay and t.receiver.via_relay
    assert any(isinstance(e, RelayFallback) for e in a.event_log[t.tid])
    assert relay.stats.forwarded > 150


def test_migration_when_the_peer_address_changes() -> None:
    """A NAT rebinding mid-transfer: the receiver's packets suddenly come from a new port."""
    net, a, b = _net()
    t = start_transfer(net, a, b, payload(600_000), config=SMALL)
    net.run(lambda: t.receiver.bytes_written > 100_000)
    new_b = ("10.0.0.2", 2999)
    net.nodes[new_b] = b
    original = net.send

    def send(src: tuple[str, int], dst: tuple[str, int], data: bytes, now: float) -> None:
        original(new_b if src == B else src, dst, data, now)

    net.send = send  # type: ignore[method-assign]
    net.run(lambda: t.done)
    assert t.receiver_result == Completed() and t.sender.path == new_b
    assert t.sender.stats.path_changes == 1


def test_idle_keepalive_holds_a_stalled_but_alive_transfer() -> None:
    """The receiver's disk stalls for longer than the idle timeout; keep-alives keep both
    ends up and the transfer completes when the disk comes back."""
    net = Net(random.Random(2))
    a = Node(net, A)
    b = Node(net, B, disk_rate=20_000)
    cfg = TransferConfig(window=64 * 1024, read_block=64 * 1024, idle_timeout=3)
    t = start_transfer(net, a, b, payload(200_000), config=cfg)
    net.run(lambda: t.done, max_time=100)
    assert t.receiver_result == Completed() and net.now > 3 * cfg.idle_timeout


@pytest.mark.parametrize("size", [0, 1, 1194, 1195, 64 * 1024, 64 * 1024 + 1])
def test_edge_sizes(size: int) -> None:
    net, a, b = _net()
    t = start_transfer(net, a, b, payload(size), config=SMALL)
    net.run(lambda: t.done)
    assert t.receiver_result == Completed() and bytes(t.sink) == t.data


def test_key_is_checked() -> None:
    net, a, b = _net()
    with pytest.raises(ValueError, match="32 bytes"):
        start_transfer(net, a, b, b"x", key=KEY[:16])
