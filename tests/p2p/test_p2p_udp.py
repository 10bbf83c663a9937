"""End to end over real UDP sockets on 127.0.0.1 (ephemeral ports), through the relay."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parlour.p2p.connection import RelayInfo, TransferConfig
from parlour.p2p.events import Reason
from parlour.p2p.files import FileOffer, describe_file
from parlour.p2p.manager import TransferHandle, TransferManager, TransferResult
from parlour.p2p.progress import Progress
from parlour.p2p.relay import RelayConfig, ticket_for
from parlour.p2p.relay_udp import RelayServer
from parlour.p2p.testing import ImpairedRelayServer

SECRET = b"relay-secret-for-the-udp-tests!!"
FAST = TransferConfig(idle_timeout=3.0, connect_timeout=8.0, direct_timeout=0.5)
WAIT = 60.0  # upper bound for a whole test's transfers (they take well under a second)
RELAY_CFG = RelayConfig(rate_per_transfer=200e6, burst_per_transfer=4 << 20, total_rate=400e6)


@pytest.fixture
async def managers() -> AsyncIterator[tuple[TransferManager, TransferManager]]:
    a, b = TransferManager(config=FAST), TransferManager(config=FAST)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
async def lossy_relay() -> AsyncIterator[ImpairedRelayServer]:
    relay = await ImpairedRelayServer.start_impaired(
        SECRET, loss=0.05, reorder=0.05, seed=14, config=RELAY_CFG
    )
    yield relay
    relay.close()


def _file(tmp_path: Path, name: str, size: int) -> tuple[Path, FileOffer]:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path, describe_file(path)


def _relay(relay: RelayServer, tid: bytes, side: int) -> RelayInfo:
    return RelayInfo(relay.address, ticket_for(SECRET, tid, side))


def _pair(
    sender: TransferManager,
    receiver: TransferManager,
    path: Path,
    offer: FileOffer,
    dest: Path,
    *,
    relay: RelayServer | None = None,
    direct: bool = True,
    tid: bytes | None = None,
    key: bytes | None = None,
) -> tuple[TransferHandle, TransferHandle]:
    tid = tid or os.urandom(8)
    key = key or os.urandom(32)
    hs = sender.send_file(
        path,
        offer,
        transfer_id=tid,
        key=key,
        peers=[receiver.address] if direct else [],
        relay=_relay(relay, tid, 0) if relay else None,
    )
    hr = receiver.accept_file(
        offer,
        dest,
        transfer_id=tid,
        key=key,
        peers=[sender.address] if direct else [],
        relay=_relay(relay, tid, 1) if relay else None,
    )
    return hs, hr


async def _results(*handles: TransferHandle) -> list[TransferResult]:
    return list(await asyncio.wait_for(asyncio.gather(*(h.wait() for h in handles)), WAIT))


async def test_two_transfers_each_way_through_a_lossy_reordering_relay(
    tmp_path: Path,
    managers: tuple[TransferManager, TransferManager],
    lossy_relay: ImpairedRelayServer,
) -> None:
    a, b = managers
    (tmp_path / "in_a").mkdir()
    (tmp_path / "in_b").mkdir()
    handles = []
    for i, (s, r, dest) in enumerate(
        [(a, b, "in_b"), (a, b, "in_b"), (b, a, "in_a"), (b, a, "in_a")]
    ):
        path, offer = _file(tmp_path, f"f{i}.bin", 1_500_000 + 7 * i)
        handles.append(
            (path, _pair(s, r, path, offer, tmp_path / dest, relay=lossy_relay, direct=False))
        )
    results = await _results(*(h for _, pair in handles for h in pair))
    for path, (hs, hr) in handles:
        rs, rr = await hs.wait(), await hr.wait()
        assert rs.ok and rr.ok, (rs.message, rr.message)
        assert rr.path is not None and rr.path.read_bytes() == path.read_bytes()
        assert rr.via_relay and rs.via_relay
    assert lossy_relay.dropped > 100 and lossy_relay.reordered > 100
    assert sum(r.stats.data_bytes_resent for r in results) > 0


async def test_direct_transfer_reports_progress(
    tmp_path: Path, managers: tuple[TransferManager, TransferManager]
) -> None:
    a, b = managers
    path, offer = _file(tmp_path, "p.bin", 3_000_000)
    reports: list[Progress] = []
    tid, key = os.urandom(8), os.urandom(32)
    a.progress_interval = 0.0
    hs = a.send_file(
        path, offer, transfer_id=tid, key=key, peers=[b.address], on_progress=reports.append
    )
    out = tmp_path / "out"
    out.mkdir()
    hr = b.accept_file(offer, out, transfer_id=tid, key=key, peers=[a.address])
    rs, rr = await _results(hs, hr)
    assert rs.ok and rr.ok and not rr.via_relay
    assert rr.path == out / "p.bin" and rr.path.read_bytes() == path.read_bytes()
    assert reports[-1].done == reports[-1].total == 3_000_000 and reports[-1].eta == 0.0
    assert any(0 < r.done < r.total for r in reports)
    assert [r.done for r in reports] == sorted(r.done for r in reports)


async def test_interrupted_transfer_resumes_from_what_the_receiver_holds(
    tmp_path: Path, lossy_relay: ImpairedRelayServer
) -> None:
    path, offer = _file(tmp_path, "big.bin", 6_000_000)
    out = tmp_path / "out"
    out.mkdir()
    tid, key = os.urandom(8), os.urandom(32)
    receiver = TransferManager(config=FAST)
    sender = TransferManager(config=FAST)
    await receiver.start()
    await sender.start()
    half = asyncio.get_running_loop().create_future()

    def watch(p: Progress) -> None:
        if p.done > 1_500_000 and not half.done():
            half.set_result(None)

    receiver.progress_interval = 0.0
    _hs, hr = _pair(
        sender, receiver, path, offer, out, relay=lossy_relay, direct=False, tid=tid, key=key
    )
    hr_progress = receiver._drivers[tid]
    hr_progress.on_progress = watch
    await asyncio.wait_for(half, WAIT)
    await sender.close()  # the sender's client goes away mid-transfer
    first = await asyncio.wait_for(hr.wait(), WAIT)
    assert not first.ok and first.reason in (Reason.SHUTDOWN, Reason.IDLE_TIMEOUT)
    assert 1_500_000 <= first.bytes < offer.size
    assert not (out / "big.bin").exists()
    sender = TransferManager(config=FAST)
    await sender.start()
    hs2, hr2 = _pair(
        sender, receiver, path, offer, out, relay=lossy_relay, direct=False, tid=tid, key=key
    )
    rs, rr = await _results(hs2, hr2)
    assert rs.ok and rr.ok
    assert rr.resumed_bytes >= first.bytes - 300_000  # what was fsynced before the cut
    assert rs.stats.data_bytes_sent - rs.stats.data_bytes_resent <= offer.size - rr.resumed_bytes
    assert (out / "big.bin").read_bytes() == path.read_bytes()
    assert [p.name for p in out.iterdir()] == ["big.bin"]  # no leftovers
    await sender.close()
    await receiver.close()


async def test_relay_fallback_when_the_direct_path_is_silent(
    tmp_path: Path, managers: tuple[TransferManager, TransferManager]
) -> None:
    a, b = managers
    relay = await RelayServer.start(SECRET, config=RELAY_CFG)
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a black hole: never answers
    hole.bind(("127.0.0.1", 0))
    try:
        path, offer = _file(tmp_path, "r.bin", 500_000)
        tid, key = os.urandom(8), os.urandom(32)
        hs = a.send_file(
            path,
            offer,
            transfer_id=tid,
            key=key,
            peers=[hole.getsockname()],
            relay=_relay(relay, tid, 0),
        )
        hr = b.accept_file(
            offer,
            tmp_path,
            transfer_id=tid,
            key=key,
            peers=[hole.getsockname()],
            relay=_relay(relay, tid, 1),
        )
        rs, rr = await _results(hs, hr)
        assert rs.ok and rr.ok and rs.via_relay and rr.via_relay
        assert any("relay" in n for n in hs.notices)
        assert hs.observed == a.address and hr.observed == b.address
        assert relay.relay.stats.forwarded > 400
    finally:
        hole.close()
        relay.close()


async def test_file_changing_mid_send_fails_that_transfer_only(
    tmp_path: Path, managers: tuple[TransferManager, TransferManager]
) -> None:
    a, b = managers
    cfg = TransferConfig(
        idle_timeout=3.0, window=256 * 1024, read_block=64 * 1024, read_ahead=64 * 1024
    )
    a.config = cfg
    b.config = cfg
    victim, offer = _file(tmp_path, "v.bin", 20_000_000)
    other, other_offer = _file(tmp_path, "o.bin", 1_000_000)
    (tmp_path / "out").mkdir()
    hs, hr = _pair(a, b, victim, offer, tmp_path / "out")
    hs2, hr2 = _pair(a, b, other, other_offer, tmp_path / "out")
    with victim.open("r+b") as f:
        f.seek(19_000_000)
        f.write(b"edited")
    rs, rr, rs2, rr2 = await _results(hs, hr, hs2, hr2)
    assert not rs.ok and rs.reason is Reason.FILE_CHANGED
    assert not rr.ok and rr.reason is Reason.FILE_CHANGED and rr.by_peer
    assert rs2.ok and rr2.ok and (tmp_path / "out" / "o.bin").read_bytes() == other.read_bytes()


@contextlib.contextmanager
def _small_tmpfs(path: Path, size: str):  # type: ignore[no-untyped-def]
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_full_disk_fails_that_transfer_with_a_reason(
    tmp_path: Path, managers: tuple[TransferManager, TransferManager]
) -> None:
    a, b = managers
    with _small_tmpfs(tmp_path / "tiny", "1m") as tiny:
        big, offer = _file(tmp_path, "big.bin", 3_000_000)
        small, small_offer = _file(tmp_path, "small.bin", 200_000)
        (tmp_path / "roomy").mkdir()
        hs, hr = _pair(a, b, big, offer, tiny)
        hs2, hr2 = _pair(a, b, small, small_offer, tmp_path / "roomy")
        rs, rr, rs2, rr2 = await _results(hs, hr, hs2, hr2)
        assert not rr.ok and rr.reason is Reason.DISK_FULL
        assert not rs.ok and rs.reason is Reason.DISK_FULL and rs.by_peer
        assert rs2.ok and rr2.ok
        assert not (tiny / "big.bin").exists()


async def test_hostile_names_stay_in_the_destination(
    tmp_path: Path, managers: tuple[TransferManager, TransferManager]
) -> None:
    a, b = managers
    path, offer = _file(tmp_path, "x.bin", 10_000)
    evil = FileOffer("../../escape.bin", offer.size, offer.sha256)
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    _rs, rr = await _results(*_pair(a, b, path, evil, dest))
    assert rr.ok and rr.path == dest / "escape.bin"
    assert (
        not (tmp_path / "escape.bin").exists() and not (tmp_path / "deep" / "escape.bin").exists()
    )


async def test_junk_and_a_forged_flood_on_the_socket(
    tmp_path: Path, managers: tuple[TransferManager, TransferManager]
) -> None:
    a, b = managers
    path, offer = _file(tmp_path, "ok.bin", 2_000_000)
    victim_path, victim_offer = _file(tmp_path, "victim.bin", 30_000_000)
    (tmp_path / "out").mkdir()
    hs, hr = _pair(a, b, path, offer, tmp_path / "out")
    tid = os.urandom(8)
    hvs, hvr = _pair(a, b, victim_path, victim_offer, tmp_path / "out", tid=tid)
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(3000):
            if i % 2:
                junk.sendto(os.urandom(100), b.address)  # unknown transfer ids
            else:
                junk.sendto(b"\x12" + tid + i.to_bytes(6, "big") + os.urandom(1000), b.address)
        rs, rr, _rvs, rvr = await _results(hs, hr, hvs, hvr)
    finally:
        junk.close()
    assert rs.ok and rr.ok
    assert not rvr.ok and rvr.reason is Reason.FLOOD
    assert b.unknown_datagrams > 0


async def test_manager_misuse_is_refused(
    tmp_path: Path, managers: tuple[TransferManager, TransferManager]
) -> None:
    a, b = managers
    path, offer = _file(tmp_path, "m.bin", 1000)
    idle = TransferManager()
    with pytest.raises(RuntimeError, match="start"):
        idle.send_file(path, offer, transfer_id=b"12345678", key=bytes(32), peers=[b.address])
    await idle.close()  # never started: nothing to do
    tid, key = os.urandom(8), os.urandom(32)
    a.send_file(path, offer, transfer_id=tid, key=key, peers=[b.address])
    with pytest.raises(ValueError, match="already running"):
        a.send_file(path, offer, transfer_id=tid, key=key, peers=[b.address])
    with pytest.raises(ValueError, match="32 bytes"):
        a.send_file(path, offer, transfer_id=os.urandom(8), key=b"short", peers=[b.address])
    bad = FileOffer("m.bin", 999, offer.sha256)
    with pytest.raises(Exception, match="999"):
        a.send_file(path, bad, transfer_id=os.urandom(8), key=key, peers=[b.address])


class _Gate(RelayServer):
    """A relay that can hold back everything going to one address for a while."""

    blocked: tuple[str, int] | None = None
    held_back = 0

    def forward(self, data: bytes, dest: tuple[str, int]) -> None:
        if dest == self.blocked:
            self.held_back += 1
            return
        super().forward(data, dest)


async def test_closing_right_after_the_result_still_delivers_done(tmp_path: Path) -> None:
    """The receiver's app closes its manager as soon as the file is verified, while its DONE
    is being lost: close() must let the DONE get through (graceful shutdown), or the sender
    would end with an idle timeout although the file arrived."""
    sender, receiver = TransferManager(config=FAST), TransferManager(config=FAST)
    await sender.start()
    await receiver.start()
    loop = asyncio.get_running_loop()
    _, gate = await loop.create_datagram_endpoint(
        lambda: _Gate(SECRET), local_addr=("127.0.0.1", 0)
    )
    try:
        path, offer = _file(tmp_path, "d.bin", 400_000)
        (tmp_path / "out").mkdir()
        tid, key = os.urandom(8), os.urandom(32)

        def outage(p: Progress) -> None:  # the network drops the receiver's last words
            if p.done == p.total and gate.blocked is None:
                gate.blocked = sender.address
                loop.call_later(0.3, setattr, gate, "blocked", ("0.0.0.0", 0))

        receiver.progress_interval = 0.0
        hs = sender.send_file(
            path, offer, transfer_id=tid, key=key, peers=[], relay=_relay(gate, tid, 0)
        )
        hr = receiver.accept_file(
            offer, tmp_path / "out", transfer_id=tid, key=key, peers=[],
            relay=_relay(gate, tid, 1), on_progress=outage,
        )  # fmt: skip
        rr = await asyncio.wait_for(hr.wait(), WAIT)
        assert rr.ok
        await receiver.close(timeout=10.0)
        rs = await asyncio.wait_for(hs.wait(), WAIT)
        assert rs.ok, rs.message
        assert gate.held_back > 0
    finally:
        gate.close()
        await sender.close()
        await receiver.close()


async def test_ipv6_loopback(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    a, b = TransferManager(config=FAST), TransferManager(config=FAST)
    try:
        await a.start("::1", 0)
        await b.start("::1", 0)
    except OSError as exc:
        await a.close()
        await b.close()
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        path, offer = _file(tmp_path, "six.bin", 500_000)
        (tmp_path / "out").mkdir()
        rs, rr = await _results(*_pair(a, b, path, offer, tmp_path / "out"))
        assert rs.ok and rr.ok and rr.path is not None
        assert rr.path.read_bytes() == path.read_bytes()
        assert a.address[0] == "::1"
    finally:
        await a.close()
        await b.close()
