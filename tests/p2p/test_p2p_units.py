"""Building blocks: range sets, the wire format, keys, congestion control, progress."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parlour.p2p import wire
from parlour.p2p.congestion import NewReno, Pacer, RttEstimator
from parlour.p2p.crypto import InvalidTag, TransferKeys
from parlour.p2p.progress import RateMeter
from parlour.p2p.ranges import RangeSet

ranges_st = st.lists(
    st.tuples(st.integers(0, 300), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=25,
)


def _model(rs: list[tuple[int, int]]) -> set[int]:
    return {x for s, e in rs for x in range(s, e)}


@given(ranges_st, st.integers(0, 340), st.integers(0, 340))
def test_rangeset_matches_a_set_model(rs: list[tuple[int, int]], a: int, b: int) -> None:
    model: set[int] = set()
    r = RangeSet()
    for s, e in rs:
        new = set(range(s, e)) - model
        assert r.add(s, e) == len(new)
        model |= set(range(s, e))
    assert r.total() == len(model)
    items = list(r)
    assert all(s < e for s, e in items)
    assert all(items[i][1] < items[i + 1][0] for i in range(len(items) - 1))  # merged
    assert _model(items) == model
    lo, hi = min(a, b), max(a, b)
    assert r.covers(lo, hi) == (set(range(lo, hi)) <= model)
    assert _model(r.gaps(lo, hi)) == set(range(lo, hi)) - model
    assert (a in r) == (a in model)
    gap = r.first_gap(lo, hi)
    missing = sorted(set(range(lo, hi)) - model)
    assert (gap is None) == (not missing)
    if gap is not None:
        assert gap[0] == missing[0]
    c = r.copy()
    added = c.add_new(lo, hi)
    assert _model(added) == set(range(lo, hi)) - model
    c.discard_below(a)
    assert _model(list(c)) == {x for x in model | set(range(lo, hi)) if x >= a}
    pe = r.prefix_end(a)
    assert pe >= a and set(range(a, pe)) <= model and (pe == a or pe not in model)


ack_ranges = (
    st.lists(st.integers(0, 2**40), min_size=2, max_size=2 * wire.ACK_MAX_RANGES, unique=True)
    .map(lambda xs: sorted(xs, reverse=True))
    .filter(lambda xs: len(xs) % 2 == 0)
)


@given(ack_ranges, st.integers(0, 2**32 - 1), st.integers(0, wire.MAX_OFFSET))
def test_ack_round_trip(points: list[int], delay: int, max_offset: int) -> None:
    ranges = [(points[i + 1], points[i]) for i in range(0, len(points), 2)]
    frame = wire.encode_ack(delay, max_offset, ranges)
    (ack,) = wire.parse_frames(frame)
    assert ack == wire.Ack(delay, max_offset, tuple(ranges))


@given(
    st.lists(st.integers(0, 10**6), max_size=2 * wire.HAVE_MAX_RANGES, unique=True),
    st.binary(min_size=32, max_size=32),
)
def test_have_round_trip(points: list[int], digest: bytes) -> None:
    points = sorted(points)[: len(points) // 2 * 2]
    ranges = [(points[i], points[i + 1]) for i in range(0, len(points), 2)]
    frame = wire.encode_have(10**6, digest, 5000, ranges)
    assert len(frame) <= wire.MAX_PLAINTEXT
    (have,) = wire.parse_frames(frame)
    assert have == wire.Have(10**6, digest, 5000, tuple(ranges))


@given(st.integers(0, 255), st.text(max_size=300))
def test_close_round_trip_is_bounded(code: int, text: str) -> None:
    (close,) = wire.parse_frames(wire.encode_close(code, text))
    assert isinstance(close, wire.Close) and close.code == code
    assert text.startswith(close.reason) and len(close.reason.encode()) <= 200


@given(st.binary(max_size=1300))
def test_frame_parser_never_crashes(data: bytes) -> None:
    try:
        frames = wire.parse_frames(data)
    except wire.WireError:
        return
    assert frames


def test_frame_parser_rejects_bad_input() -> None:
    with pytest.raises(wire.WireError):
        wire.parse_frames(b"")
    with pytest.raises(wire.WireError):
        wire.parse_frames(b"\x99")
    bad = wire.encode_ack(0, 0, [(5, 10), (7, 20)])  # overlapping, not descending
    with pytest.raises(wire.WireError):
        wire.parse_frames(bad)
    with pytest.raises(wire.WireError):
        wire.parse_frames(wire.encode_have(100, bytes(32), 0, [(50, 200)]))  # past the end


def test_relay_messages_round_trip() -> None:
    bind = wire.relay_bind(b"12345678", 1, bytes(range(16)))
    assert wire.parse_relay_bind(bind) == wire.RelayBind(b"12345678", 1, bytes(range(16)))
    for addr in (("127.0.0.1", 5), ("::1", 65535)):
        bound = wire.parse_relay_bound(wire.relay_bound(b"12345678", 0, addr))
        assert bound.observed == addr
    with pytest.raises(wire.WireError):
        wire.parse_relay_bind(bind[:-1])


def test_session_keys_differ_per_direction_and_attempt() -> None:
    keys = TransferKeys(bytes(32), b"tid00001")
    s2r, r2s = keys.session(b"a" * 16, b"b" * 16)
    hdr = b"h" * 15
    sealed = s2r.seal(hdr, 7, b"secret")
    assert b"secret" not in sealed
    assert s2r.open(hdr, 7, sealed[15:]) == b"secret"
    with pytest.raises(InvalidTag):
        r2s.open(hdr, 7, sealed[15:])  # reflected
    with pytest.raises(InvalidTag):
        s2r.open(hdr, 8, sealed[15:])  # another packet number
    with pytest.raises(InvalidTag):
        s2r.open(b"H" + hdr[1:], 7, sealed[15:])  # header changed
    other, _ = keys.session(b"c" * 16, b"b" * 16)  # a new attempt: new randoms
    with pytest.raises(InvalidTag):
        other.open(hdr, 7, sealed[15:])
    assert keys.hello_ok(b"body", keys.hello_mac(b"body"))
    assert not TransferKeys(bytes(32), b"tid00002").hello_ok(b"body", keys.hello_mac(b"body"))


def test_rtt_estimator_follows_rfc6298() -> None:
    rtt = RttEstimator(0.333)
    rtt.update(0.1, 0.0)
    assert rtt.smoothed == pytest.approx(0.1) and rtt.rttvar == pytest.approx(0.05)
    rtt.update(0.2, 0.0)
    assert rtt.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)
    assert rtt.smoothed == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)
    assert rtt.pto(0.01) == pytest.approx(rtt.smoothed + 4 * rtt.rttvar + 0.01)


def test_newreno_slow_start_avoidance_and_one_cut_per_round() -> None:
    cc = NewReno(1000)
    assert cc.cwnd == 10_000 and cc.in_slow_start
    cc.on_sent(1000)
    cc.on_acked(1000, 1000)
    assert cc.cwnd == 11_000 and cc.bytes_in_flight == 0
    cc.on_sent(1000)
    assert cc.on_congestion(sent_time=1.0, now=2.0)
    assert cc.cwnd == 5500 and not cc.in_slow_start
    assert not cc.on_congestion(sent_time=1.5, now=2.1)  # sent before the cut: same event
    assert cc.cwnd == 5500
    for _ in range(6):
        cc.on_sent(1000)
        cc.on_acked(1000, 1000)
    assert cc.cwnd == 6500  # one datagram per window of acknowledgements
    cc.on_sent(1000)
    cc.on_acked(1000, 0)
    assert cc.cwnd == 6500 and cc.bytes_in_flight == 1000  # (the earlier unacked 1000)
    cc.undo()
    assert cc.cwnd == 11_000  # the cut is given back
    cc.on_persistent_congestion(4.0)
    assert cc.cwnd == cc.min_window


def test_pacer_spreads_a_window_over_the_rtt() -> None:
    p = Pacer(1000)
    p.configure(cwnd=100_000, srtt=0.1, slow_start=False, sampled=True)  # 1.25 MB/s
    now, sent = 0.0, 0
    while p.can_send(now):
        p.on_sent(1000)
        sent += 1
    assert sent <= 11  # the burst allowance, not the window
    t = p.next_send_time(now)
    assert t > now and p.can_send(t)


def test_rate_meter_and_eta() -> None:
    m = RateMeter(window=2.0)
    assert m.update(0.0, 0) == 0.0
    assert m.update(1.0, 1000) == pytest.approx(1000)
    assert m.update(2.0, 3000) == pytest.approx(1500)
    assert RateMeter.eta(3000, 6000, 1500) == pytest.approx(2.0)
    assert RateMeter.eta(0, 10, 0) is None
