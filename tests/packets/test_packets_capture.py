"""Live capture: the BPF port filter (pure, via an interpreter), the stop rules, and — as root —
real AF_PACKET captures of a chat server and client talking on 127.0.0.1, read back by tshark."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from packets_helpers import TSHARK, run_tshark_fields

from parlour.core.passwords import Argon2Hasher
from parlour.packets.capture.bpf import accept_all, pack_program, port_filter, run_filter
from parlour.packets.capture.live import (
    ARPHRD_LOOPBACK,
    PACKET_OUTGOING,
    CaptureError,
    CaptureLimits,
    LiveCapture,
    capture_to_file,
    keep_frame,
    link_for_arphrd,
    sll_header,
)
from parlour.packets.cli import packets
from parlour.packets.files.reader import read_capture
from parlour.packets.wire.addresses import ipv4_to_int
from parlour.packets.wire.linktypes import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW
from parlour.packets.wire.packet import ipv4_tcp_packet

IS_ROOT = os.geteuid() == 0
root = pytest.mark.skipif(not IS_ROOT, reason="needs root (AF_PACKET sockets)")

ETH_HDR = b"\x00" * 12


def _ipv6_tcp(sport: int, dport: int, next_header: int = 6) -> bytes:
    hdr = bytes([0x60, 0, 0, 0]) + (20).to_bytes(2, "big") + bytes([next_header, 64])
    hdr += b"\0" * 15 + b"\1" + b"\0" * 15 + b"\1"
    return hdr + sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + b"\0" * 16


ports = st.integers(1, 65535)


@given(sport=ports, dport=ports, want=ports, ihl_words=st.integers(0, 10))
def test_port_filter_matches_like_tcpdump(
    sport: int, dport: int, want: int, ihl_words: int
) -> None:
    ip = ipv4_tcp_packet(ipv4_to_int("10.0.0.1"), ipv4_to_int("10.0.0.2"), sport, dport, 1, 0, 2, 1)
    # IPv4 options shift the TCP header: the filter must follow the header length
    ip = bytes([0x45 + ihl_words]) + ip[1:20] + b"\x01" * (4 * ihl_words) + ip[20:]
    v6 = _ipv6_tcp(sport, dport)
    expected = want in (sport, dport)
    eth = port_filter(want, 65535, 14)
    raw = port_filter(want, 65535, 0)
    assert bool(run_filter(eth, ETH_HDR + b"\x08\x00" + ip)) is expected
    assert bool(run_filter(eth, ETH_HDR + b"\x86\xdd" + v6)) is expected
    assert bool(run_filter(raw, ip)) is expected
    assert bool(run_filter(raw, v6)) is expected


@given(port=ports, data=st.binary(max_size=80))
def test_port_filter_never_fails_on_garbage(port: int, data: bytes) -> None:
    for link_len in (0, 14):
        assert run_filter(port_filter(port, 1000, link_len), data) in (0, 1000)


def test_port_filter_rejects_other_protocols_and_later_fragments() -> None:
    ip = bytearray(ipv4_tcp_packet(1, 2, 7878, 80, 1, 0, 2, 1))
    prog = port_filter(7878, 100, 14)
    assert run_filter(prog, ETH_HDR + b"\x08\x00" + bytes(ip)) == 100
    udp = bytearray(ip)
    udp[9] = 17
    assert run_filter(prog, ETH_HDR + b"\x08\x00" + bytes(udp)) == 0
    frag = bytearray(ip)
    frag[6:8] = (0x0010).to_bytes(2, "big")  # fragment offset 16*8: no TCP header here
    assert run_filter(prog, ETH_HDR + b"\x08\x00" + bytes(frag)) == 0
    assert run_filter(prog, ETH_HDR + b"\x08\x06" + bytes(ip)) == 0  # ARP
    assert run_filter(prog, ETH_HDR + b"\x86\xdd" + _ipv6_tcp(7878, 1, next_header=17)) == 0


def test_program_packing_and_limits() -> None:
    prog = port_filter(80, 262144)
    assert len(pack_program(prog)) == 8 * len(prog) == 160
    assert run_filter(accept_all(64), b"") == 64
    with pytest.raises(ValueError):
        port_filter(0, 100)
    with pytest.raises(ValueError):
        port_filter(80, 100, link_len=4)
    with pytest.raises(ValueError):
        pack_program([])


def test_stop_rules_take_time_as_an_argument() -> None:
    lim = CaptureLimits(count=3, seconds=2.0)
    assert not lim.done(2, now=101.0, started=100.0)
    assert lim.done(3, now=100.0, started=100.0)
    assert lim.done(0, now=102.0, started=100.0)
    assert lim.wait(now=101.5, started=100.0) == pytest.approx(0.5)
    assert CaptureLimits().wait(now=5.0, started=0.0) == 3600.0
    assert not CaptureLimits().done(10**9, now=1e9, started=0.0)
    with pytest.raises(ValueError):
        CaptureLimits(count=0)
    with pytest.raises(ValueError):
        CaptureLimits(seconds=0)


def test_loopback_outgoing_copies_are_skipped_like_tcpdump() -> None:
    assert not keep_frame(PACKET_OUTGOING, loopback=True)
    assert keep_frame(0, loopback=True)  # PACKET_HOST: the arriving copy
    assert keep_frame(PACKET_OUTGOING, loopback=False)
    assert link_for_arphrd(ARPHRD_LOOPBACK) == (LINKTYPE_ETHERNET, 14)
    assert link_for_arphrd(0xFFFE) == (LINKTYPE_RAW, 0)
    with pytest.raises(CaptureError, match="unsupported hardware type"):
        link_for_arphrd(24)  # FireWire


def test_capture_cli_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    out = tmp_path / "x.pcap"
    res = runner.invoke(packets, ["capture", "-i", "no-such-if0", "-o", str(out), "-c", "1"])
    assert res.exit_code == 1
    assert "no such interface 'no-such-if0'" in res.output
    assert not out.exists()

    def denied(*_args: object) -> socket.socket:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("parlour.packets.capture.live.socket.socket", denied)
    res = runner.invoke(packets, ["capture", "-o", str(out), "-c", "1"])
    assert res.exit_code == 1
    assert "capturing needs root (or CAP_NET_RAW)" in res.output
    assert not out.exists()
    res = runner.invoke(packets, ["capture", "-o", str(out), "--seconds", "0"])
    assert res.exit_code == 2


# ----------------------------------------------------------------------------- live, as root


class _Background:
    """Run a capture in a thread; ``ready`` is set once the socket is bound and filtering."""

    def __init__(self, path: Path, **kwargs: object) -> None:
        self.ready = threading.Event()
        self.cap: LiveCapture | None = None
        self.report: object = None
        self.error: BaseException | None = None

        def on_ready(cap: LiveCapture) -> None:
            self.cap = cap
            self.ready.set()

        def run() -> None:
            try:
                self.report = capture_to_file(path, ready=on_ready, **kwargs)
            except BaseException as exc:  # surfaced by finish()
                self.error = exc
                self.ready.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "capture did not start"
        assert self.error is None, self.error

    def finish(self) -> object:
        if self.cap is not None:
            self.cap.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()
        assert self.error is None, self.error
        return self.report


def _exchange(port: int, payloads: list[bytes]) -> None:
    """A real kernel TCP exchange on 127.0.0.1:*port*: each payload sent, then echoed back."""
    with socket.create_server(("127.0.0.1", port)) as srv:
        cli = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn, _ = srv.accept()
        with cli, conn:
            for p in payloads:
                cli.sendall(p)
                got = b""
                while len(got) < len(p):
                    got += conn.recv(65536)
                conn.sendall(got)
                back = b""
                while len(back) < len(p):
                    back += cli.recv(65536)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.root
@root
def test_capture_count_filter_and_no_loopback_duplicates(tmp_path: Path) -> None:
    port, other = _free_port(), _free_port()
    out = tmp_path / "cap.pcap"
    bg = _Background(out, port=port, limits=CaptureLimits(count=200, seconds=30))
    _exchange(other, [b"not me\n"])  # filtered out in the kernel
    _exchange(port, [b"one\n", b"two\n", b"x" * 3000])
    bg.finish()
    recs = read_capture(out)
    assert recs and all(r.linktype == LINKTYPE_ETHERNET for r in recs)
    rows = run_tshark_fields(out, "tcp.srcport", "tcp.dstport", "tcp.len", "tcp.analysis.flags",
                             "tcp.checksum.status")  # fmt: skip
    assert all(str(port) in (r[0], r[1]) for r in rows)
    # each packet once: a duplicate copy would read as a retransmission
    assert not [r for r in rows if r[3]]
    sent = sum(int(r[2]) for r in rows if r[1] == str(port))
    assert sent == len(b"one\ntwo\n") + 3000
    assert next(r for r in rows if r[1] == str(port))[2] == "0"  # starts with the SYN


@pytest.mark.root
@root
def test_capture_stops_at_count_and_pcapng(tmp_path: Path) -> None:
    port = _free_port()
    out = tmp_path / "cap.pcapng"
    bg = _Background(out, port=port, limits=CaptureLimits(count=3))
    _exchange(port, [b"hello\n"])
    bg.thread.join(10)
    report = bg.finish()
    assert report is not None and "count reached" in str(report)
    recs = read_capture(out)
    assert len(recs) == 3
    assert out.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    if TSHARK:
        rows = run_tshark_fields(out, "tcp.flags.str")
        assert len(rows) == 3


@pytest.mark.root
@root
def test_capture_time_limit_with_no_traffic(tmp_path: Path) -> None:
    out = tmp_path / "quiet.pcap"
    report = capture_to_file(out, port=_free_port(), limits=CaptureLimits(seconds=0.2))
    assert "stopped: time" in str(report)
    assert read_capture(out) == []


@pytest.mark.root
@root
async def test_capture_a_chat_server_and_two_clients(tmp_path: Path) -> None:
    from parlour.client import Client
    from parlour.server.app import ChatServer
    from parlour.server.config import Settings

    server = await ChatServer.start(
        Settings(port=0, data_dir=tmp_path / "data", admin_password="admin-password-1"),
        password_hasher=Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1),
    )
    out = tmp_path / "chat.pcap"
    try:
        bg = await asyncio.to_thread(_Background, out, port=server.port,
                                     limits=CaptureLimits(seconds=60))  # fmt: skip
        async with (
            Client("127.0.0.1", server.port, reconnect=False) as alice,
            Client("127.0.0.1", server.port, reconnect=False) as bob,
        ):
            await alice.signup("alice", "password-123")
            await bob.signup("bob", "password-123")
            await alice.join("general")
            await bob.join("general")
            await alice.send("general", "hello bob")
            await bob.send("general", "hi alice")
        report = await asyncio.to_thread(bg.finish)
    finally:
        await server.stop(grace=2)
    assert "stopped: stopped" in str(report)
    rows = run_tshark_fields(out, "tcp.stream", "tcp.flags.str", "tcp.payload",
                             "tcp.analysis.flags")  # fmt: skip
    streams = {r[0] for r in rows}
    assert len(streams) == 2  # one connection per client
    payload = b"".join(bytes.fromhex(r[2].replace(":", "")) for r in rows if r[2])
    for needle in (b"alice", b"bob", b"hello bob", b"hi alice", b"general"):
        assert needle in payload
    assert not [r for r in rows if r[3]], "tshark flagged a clean loopback exchange"
    syns = [r for r in rows if "S" in r[1].replace("·", "")]
    assert len(syns) >= 4  # SYN and SYN-ACK for both connections


@pytest.mark.root
@root
def test_capture_command_end_to_end(tmp_path: Path) -> None:
    """The real command in a subprocess, stopped by SIGINT (Ctrl-C): the file stays valid."""
    import signal
    import sys

    port = _free_port()
    out = tmp_path / "cli.pcapng"
    cmd = [sys.executable, "-m", "parlour", "packets", "capture", "-p", str(port), "-o", str(out)]
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()  # printed once the socket is listening
            assert "capturing TCP port" in first, first
            _exchange(port, [b"ping\n"])
            proc.send_signal(signal.SIGINT)
            rest = proc.stderr.read()
            assert proc.wait(10) == 0, rest
        finally:
            if proc.poll() is None:
                proc.kill()
    assert "stopped: interrupted" in rest
    recs = read_capture(out)
    assert len(recs) >= 7  # handshake, data, echo, ACKs, teardown
    assert any(b"ping\n" in r.data for r in recs)


@pytest.mark.root
@root
@pytest.mark.skipif(shutil.which("capsh") is None, reason="needs capsh to drop CAP_NET_RAW")
def test_without_cap_net_raw_capture_and_send_fail_clearly(tmp_path: Path) -> None:
    """Really without the capability (capsh drops it), not a simulated PermissionError."""
    import sys

    from packets_helpers import EXAMPLE_CSV

    out = tmp_path / "x.pcap"
    py = f"{sys.executable} -m parlour packets"
    for args, needle in (
        (f"capture -o {out} -c 1", "capturing needs root (or CAP_NET_RAW)"),
        (f"build {EXAMPLE_CSV} --send", "sending raw packets needs root (or CAP_NET_RAW)"),
    ):
        proc = subprocess.run(
            ["capsh", "--drop=cap_net_raw", "--", "-c", f"{py} {args}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert needle in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_cooked_header_layout() -> None:
    hdr = sll_header(0, ARPHRD_LOOPBACK, b"\0" * 6, 0x0800)
    assert hdr == bytes.fromhex("0000 0304 0006 000000000000 0000 0800".replace(" ", ""))
    assert len(sll_header(4, 1, bytes(range(10)), 0x86DD)) == 16  # long addresses are cut


@pytest.mark.root
@root
def test_capture_on_any_writes_cooked_frames_once(tmp_path: Path) -> None:
    port = _free_port()
    out = tmp_path / "any.pcap"
    bg = _Background(out, interface="any", port=port, limits=CaptureLimits(seconds=30))
    _exchange(port, [b"over any\n"])
    bg.finish()
    recs = read_capture(out)
    assert recs and all(r.linktype == LINKTYPE_LINUX_SLL for r in recs)
    rows = run_tshark_fields(out, "sll.pkttype", "tcp.payload", "tcp.analysis.flags")
    assert not [r for r in rows if r[2]]  # no duplicate copies (they read as retransmissions)
    assert sum(1 for r in rows if r[1]) == 2  # the line and its echo
