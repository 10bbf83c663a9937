"""File handling on both ends and the relay core."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from parlour.p2p import wire
from parlour.p2p.files import FileChanged, FileSink, FileSource, describe_file, safe_name
from parlour.p2p.ranges import RangeSet
from parlour.p2p.relay import Relay, RelayConfig, ticket_for

SECRET = b"s" * 32
TID = b"T" * 8
A, B, X = ("127.0.0.1", 1), ("127.0.0.2", 2), ("127.0.0.3", 3)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("/abs/path/x.txt", "x.txt"),
        ("..", "file"),
        (".bashrc", "bashrc"),
        ("a\x00b\nc.txt", "a_b_c.txt"),
        ("", "file"),
        ("   ", "file"),
        ("é" * 300 + ".txt", None),
    ],
)
def test_safe_name(given: str, expected: str | None) -> None:
    name = safe_name(given)
    assert "/" not in name and "\x00" not in name and not name.startswith(".")
    assert len(name.encode()) <= 200
    if expected is not None:
        assert name == expected
    else:
        assert name.endswith(".txt")


def _sink(tmp_path: Path, data: bytes, name: str = "f.bin", resume: bool = True) -> FileSink:
    return FileSink(tmp_path, name, len(data), hashlib.sha256(data).digest(), resume=resume)


def test_sink_out_of_order_writes_verify_and_never_overwrite(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "f.bin").write_bytes(b"existing")
    sink = _sink(tmp_path, data)
    for off in (200_000, 0, 100_000):
        sink.write(off, data[off : off + 100_000])
    final = sink.verify_and_place()
    assert final == tmp_path / "f (1).bin" and final.read_bytes() == data
    assert (tmp_path / "f.bin").read_bytes() == b"existing"
    assert not sink.part.exists()


def test_sink_bad_hash_discards(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    sink = _sink(tmp_path, data)
    sink.write(0, b"x" * 10_000)
    assert sink.verify_and_place() is None
    assert not sink.part.exists() and list(tmp_path.iterdir()) == []


def test_sink_resume_state_round_trip(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    first = _sink(tmp_path, data)
    first.write(0, data[:50_000])
    first.write(120_000, data[120_000:150_000])
    first.save_state(RangeSet([(0, 50_000), (120_000, 150_000)]))
    first.close()
    second = _sink(tmp_path, data)
    assert list(second.held) == [(0, 50_000), (120_000, 150_000)]
    second.write(50_000, data[50_000:120_000])
    second.write(150_000, data[150_000:])
    assert second.verify_and_place() == tmp_path / "f.bin"
    assert (tmp_path / "f.bin").read_bytes() == data
    # resume=False starts over
    third = _sink(tmp_path, data, resume=False)
    assert not third.held


def test_sink_starting_over_forgets_the_old_state(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    first = _sink(tmp_path, data)
    first.write(0, data[:60_000])
    first.save_state(RangeSet([(0, 60_000)]))
    first.close()
    fresh = _sink(tmp_path, data, resume=False)
    assert not fresh.held and not fresh.state_path.exists()
    fresh.write(0, b"x" * 10_000)  # then it dies without recording anything
    fresh.close()
    assert not _sink(tmp_path, data).held  # the old record cannot vouch for new bytes


def test_sink_state_longer_than_the_part_file_is_refused(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    s = _sink(tmp_path, data)
    s.write(0, data[:10_000])
    s.save_state(RangeSet([(0, 10_000)]))
    s.close()
    s.state_path.write_text(
        json.dumps({"size": 100_000, "sha256": s.sha256.hex(), "held": [[0, 90_000]]})
    )
    assert not _sink(tmp_path, data).held


def test_sink_state_of_another_file_is_ignored(tmp_path: Path) -> None:
    data = os.urandom(1000)
    s = _sink(tmp_path, data)
    s.write(0, data[:500])
    s.save_state(RangeSet([(0, 500)]))
    s.close()
    s.state_path.write_text('{"size": 1000, "sha256": "00", "held": [[0, 500]]}')
    assert not _sink(tmp_path, data).held


def test_sink_refuses_a_symlinked_part_file(tmp_path: Path) -> None:
    data = b"abc"
    target = tmp_path / "victim"
    target.write_bytes(b"keep")
    part = tmp_path / f".f.bin.{hashlib.sha256(data).hexdigest()[:16]}.part"
    part.symlink_to(target)
    state = part.with_name(part.name + ".json")
    state.write_text(
        f'{{"size": 3, "sha256": "{hashlib.sha256(data).hexdigest()}", "held": [[0, 3]]}}'
    )
    with pytest.raises(OSError):
        _sink(tmp_path, data)
    assert target.read_bytes() == b"keep"


def test_source_detects_changes(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    path.write_bytes(os.urandom(10_000))
    offer = describe_file(path)
    assert offer.sha256 == hashlib.sha256(path.read_bytes()).digest()
    src = FileSource(path, offer.size)
    assert src.read(0, 100) == path.read_bytes()[:100]
    with path.open("r+b") as f:
        f.write(b"changed")
    os.utime(path, ns=(1, 1))
    with pytest.raises(FileChanged):
        src.read(100, 100)
    src.close()
    src = FileSource(path, offer.size)
    path.unlink()
    with pytest.raises(FileChanged, match="removed"):
        src.read(0, 10)
    src.close()
    with pytest.raises(FileChanged):
        (tmp_path / "t").write_bytes(b"12")
        FileSource(tmp_path / "t", 3)


# ---------------------------------------------------------------------------- relay


def _bind(relay: Relay, side: int, addr: tuple[str, int], now: float = 0.0) -> list:
    return relay.datagram_received(
        wire.relay_bind(TID, side, ticket_for(SECRET, TID, side)), addr, now
    )


def _sealed(n: int = 100) -> bytes:
    return bytes([wire.Kind.SEALED]) + TID + bytes(n)


def test_relay_binds_and_forwards_both_ways() -> None:
    relay = Relay(SECRET, 0.0)
    (bound,) = _bind(relay, 0, A)
    assert wire.parse_relay_bound(bound[0]).observed == A and bound[1] == A
    assert relay.datagram_received(_sealed(), A, 0.0) == []  # the other side is not bound
    _bind(relay, 1, B)
    assert relay.datagram_received(_sealed(), A, 0.0) == [(_sealed(), B)]
    assert relay.datagram_received(_sealed(), B, 0.0) == [(_sealed(), A)]
    assert relay.datagram_received(_sealed(), X, 0.0) == []  # a stranger
    assert relay.stats.forwarded == 2 and relay.stats.dropped_unknown == 2


def test_relay_refuses_bad_tickets_and_garbage() -> None:
    relay = Relay(SECRET, 0.0)
    bad = wire.relay_bind(TID, 0, bytes(16))
    assert relay.datagram_received(bad, A, 0.0) == []
    assert relay.datagram_received(b"\x00" * 40, A, 0.0) == []
    assert relay.datagram_received(bad[:-3], A, 0.0) == []
    assert relay.stats.dropped_bad_ticket == 1 and relay.stats.dropped_malformed == 2
    assert len(relay) == 0


def test_relay_rate_limit_and_table_bounds() -> None:
    cfg = RelayConfig(
        rate_per_transfer=10_000, burst_per_transfer=5_000, max_transfers=2, idle_timeout=10
    )
    relay = Relay(SECRET, 0.0, cfg)
    _bind(relay, 0, A)
    _bind(relay, 1, B)
    passed = sum(len(relay.datagram_received(_sealed(1000), A, 0.0)) for _ in range(20))
    assert passed == 4 and relay.stats.dropped_rate == 16
    assert len(relay.datagram_received(_sealed(1000), A, 0.2)) == 1  # refilled 2000 bytes
    for i in range(2):
        tid = bytes([i]) * 8
        relay.datagram_received(wire.relay_bind(tid, 0, ticket_for(SECRET, tid, 0)), X, 1.0)
    assert relay.stats.dropped_full == 1 and len(relay) == 2
    assert relay.expire(20.0) == 2 and len(relay) == 0


def test_relay_rebinding_follows_the_latest_address() -> None:
    relay = Relay(SECRET, 0.0)
    _bind(relay, 0, A)
    _bind(relay, 1, B)
    _bind(relay, 1, X)  # the receiver's NAT mapping changed
    assert relay.datagram_received(_sealed(), A, 0.0) == [(_sealed(), X)]
