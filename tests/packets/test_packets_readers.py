"""Readers + decoder: captures written by scapy and by tshark itself, in every supported link
type and file flavour, are read exactly as tshark reads them; garbage gives a clear error."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packets_helpers import EXAMPLE_CSV, TSHARK, TsharkFields

from parlour.packets.analyze.decode import decode_capture
from parlour.packets.analyze.dissect import analyze
from parlour.packets.build.conversation import build_conversations
from parlour.packets.build.messages import load_messages
from parlour.packets.build.writers import LinkOptions, write_capture_file
from parlour.packets.files.pcap import PcapWriter
from parlour.packets.files.reader import read_capture
from parlour.packets.files.records import CaptureFormatError

FIELDS = (
    "frame.len", "frame.cap_len", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport", "tcp.len",
    "tcp.seq", "tcp.ack", "tcp.flags", "tcp.window_size", "tcp.stream",
)  # fmt: skip


def _scapy_packets() -> list[Any]:
    from scapy.layers.inet import IP, TCP

    pkts = []
    t = 1_700_000_000.0
    spec = [
        ("S", 1000, 0, b""), ("SA", 5000, 1001, b""), ("A", 1001, 5001, b""),
        ("PA", 1001, 5001, b'{"type":"login","username":"alice","password":"pw"}\n'),
        ("A", 5001, 1053, b""), ("PA", 5001, 1053, b'{"type":"ok","id":1}\n'),
        ("FA", 1053, 5021, b""), ("FA", 5021, 1054, b""), ("A", 1054, 5022, b""),
    ]  # fmt: skip
    for i, (flags, seq, ack, payload) in enumerate(spec):
        client = {0: True, 1: False, 2: True, 3: True, 4: False, 5: False, 6: True, 7: False,
                  8: True}[i]  # fmt: skip
        src, dst = ("10.1.0.2", "10.1.0.1") if client else ("10.1.0.1", "10.1.0.2")
        sport, dport = (43210, 7878) if client else (7878, 43210)
        p = IP(src=src, dst=dst, id=i + 1) / TCP(
            sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=512
        )
        if payload:
            p = p / payload
        p.time = t + i * 0.001
        pkts.append(p)
    return pkts


def _write_scapy(path: Path, kind: str) -> None:
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether, Loopback
    from scapy.utils import PcapNgWriter, PcapWriter

    frames = []
    for p in _scapy_packets():
        if kind.startswith("ether") or kind == "pcapng":
            f = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / p
        elif kind == "sll":
            f = CookedLinux(pkttype=0, lladdrtype=772, lladdrlen=6, src=b"\0" * 8, proto=0x0800) / p
        elif kind == "sll2":
            f = CookedLinuxV2(proto=0x0800, ifindex=1, lladdrtype=772, lladdrlen=6) / p
        elif kind == "null":
            f = Loopback(type=2) / p
        else:
            f = p
        f.time = p.time
        frames.append(f)
    if kind == "pcapng":
        w = PcapNgWriter(str(path))
    else:
        linktype = {"sll": 113, "sll2": 276, "null": 0, "raw": 101}.get(kind, 1)
        w = PcapWriter(
            str(path), linktype=linktype, endianness=">" if kind.endswith("_be") else "<",
            nano=kind.endswith("_ns"), sync=True,
        )  # fmt: skip
    for f in frames:
        w.write(f)
    w.close()


def _ours(path: Path) -> list[list[str]]:
    result = analyze(decode_capture(path))
    rows = []
    for pa in result.packets:
        p, t = pa.packet, pa.tcp
        assert t is not None and p.tcp is not None, p.problem
        rows.append(
            [
                str(p.wire_len), str(p.cap_len), p.src, p.dst, str(t.sport), str(t.dport),
                str(t.seglen), str(t.rel_seq), str(t.rel_ack), f"0x{t.flags:03x}",
                str(t.window), str(t.stream),
            ]
        )  # fmt: skip
    return rows


def _norm_flags(rows: list[list[str]]) -> list[list[str]]:
    return [[*r[:9], f"0x{int(r[9], 16):03x}", *r[10:]] for r in rows]


SCAPY_KINDS = ["ether", "ether_be", "ether_ns", "ether_be_ns", "sll", "sll2", "null", "raw",
               "pcapng"]  # fmt: skip


@pytest.mark.tshark
@pytest.mark.parametrize("kind", SCAPY_KINDS)
def test_scapy_written_captures_read_like_tshark(
    tmp_path: Path, tshark_fields: TsharkFields, kind: str
) -> None:
    path = tmp_path / f"{kind}.cap"
    _write_scapy(path, kind)
    mine = _ours(path)
    assert len(mine) == 9
    assert _norm_flags(mine) == _norm_flags(tshark_fields(path, *FIELDS))


@pytest.mark.tshark
@pytest.mark.parametrize(
    ("fmt", "link"),
    [("pcapng", "raw"), ("nsecpcap", "raw"), ("pcap", "ethernet"), ("pcapng", "ethernet")],
)
def test_captures_rewritten_by_tshark_read_like_tshark(
    tmp_path: Path, tshark_fields: TsharkFields, fmt: str, link: str
) -> None:
    """tshark (libwiretap, the same writer as dumpcap) rewrites our capture; we read its file."""
    assert TSHARK is not None
    ours_path = tmp_path / "built.pcap"
    built = build_conversations(load_messages(EXAMPLE_CSV, framing="auto"))
    write_capture_file(ours_path, built, LinkOptions(link, {}), "pcap")
    out = tmp_path / f"tshark.{fmt}"
    subprocess.run(
        [TSHARK, "-r", str(ours_path), "-F", fmt, "-w", str(out)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    mine = _ours(out)
    assert len(mine) == len(built)
    assert _norm_flags(mine) == _norm_flags(tshark_fields(out, *FIELDS))
    assert [r.ts_ns // 1000 for r in read_capture(out)] == [p.ts_ns // 1000 for p in built]


def _valid_capture(tmp_path: Path) -> bytes:
    path = tmp_path / "valid.pcap"
    built = build_conversations(load_messages(EXAMPLE_CSV, framing="auto"))
    write_capture_file(path, built, LinkOptions("ethernet", {}), "pcap")
    return path.read_bytes()


def _check_bytes(data: bytes) -> None:
    """Either a clean read + analysis, or CaptureFormatError — never anything else."""
    try:
        table = decode_capture(data)
    except CaptureFormatError as exc:
        assert str(exc)
        return
    result = analyze(table)
    assert len(result.packets) == len(table)
    for pa in result.packets:
        _ = pa.info, pa.flags, pa.protocol


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(0, 4000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=8),
)
def test_truncated_or_corrupted_captures_never_crash(
    tmp_path: Path, cut: int, flips: list[tuple[int, int]]
) -> None:  # fmt: skip
    data = bytearray(_valid_capture(tmp_path))
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    _check_bytes(bytes(data[: min(cut, len(data))] if cut < len(data) else data))


@settings(max_examples=150, deadline=None)
@given(
    head=st.sampled_from(
        [b"", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\x0a\x0d\x0d\x0a"]
    ),
    body=st.binary(max_size=600),
)
def test_garbage_never_crashes(head: bytes, body: bytes) -> None:
    _check_bytes(head + body)


def test_pcap_and_pcapng_give_the_same_decoded_packets(tmp_path: Path) -> None:
    built = build_conversations(load_messages(EXAMPLE_CSV, framing="auto"))
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcapng"
    write_capture_file(a, built, LinkOptions("ethernet", {}), "pcap")
    write_capture_file(b, built, LinkOptions("ethernet", {}), "pcapng")
    ta, tb = decode_capture(a), decode_capture(b)
    assert [p.payload for p in ta] == [p.payload for p in tb] == [p.payload for p in built]
    assert list(ta.tcp_headers()) == list(tb.tcp_headers())
    assert all(h is not None for h in ta.tcp_headers())
    lengths = [ta.tcp_payload_len(h) for h in ta.tcp_headers() if h is not None]
    assert lengths == [len(p.payload) for p in built]


def test_fast_and_careful_decoders_agree(tmp_path: Path) -> None:
    built = build_conversations(load_messages(EXAMPLE_CSV, framing="auto"))
    path = tmp_path / "raw.pcap"
    with open(path, "wb") as f:
        PcapWriter(f, 101, big_endian=True, nanosecond=True).write_many(
            (p.ts_ns, p.datagram) for p in built
        )
    table = decode_capture(path)
    for i, (h, p) in enumerate(zip(table.tcp_headers(), table, strict=True)):
        assert h is not None and p.tcp is not None and p.ip is not None
        assert (h[11], h[12], h[13], h[14], h[16], h[17]) == (
            p.tcp.sport, p.tcp.dport, p.tcp.seq, p.tcp.ack, p.tcp.flags, p.tcp.window,
        )  # fmt: skip
        assert p.ts_ns == built[i].ts_ns
        assert p.ip_checksum_ok and p.tcp_checksum_ok


def test_unreadable_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureFormatError, match="cannot read"):
        decode_capture(tmp_path / "missing.pcap")


@settings(max_examples=500, deadline=None)
@given(
    linktype=st.sampled_from([0, 1, 101, 108, 113, 228, 276, 147]),
    prefix=st.sampled_from(
        [
            b"",
            b"\x02\x00\x00\x00",
            b"\x00" * 12 + b"\x08\x00",
            b"\x45",
            b"\x60",
            b"\x00" * 12 + b"\x86\xdd\x60\x00\x00\x00\x00\x20\x00\x40",
            b"\x1e\x00\x00\x00\x60",
        ]
    ),
    body=st.binary(max_size=120),
)
def test_decode_record_never_raises(linktype: int, prefix: bytes, body: bytes) -> None:
    from parlour.packets.analyze.decode import decode_record
    from parlour.packets.analyze.dissect import Dissector
    from parlour.packets.files.records import Record

    frame = prefix + body
    for wire_len in (len(frame), len(frame) + 1000):  # as captured, and cut by a snap length
        p = decode_record(1, Record(0, frame, wire_len, linktype))
        _ = p.ip, p.tcp, p.seglen, repr(p)
        if p.tcp is not None:
            assert len(p.tcp.options_raw) <= p.tcp.header_len - 20
        # the whole analysis of any frame gives columns, never an exception
        pa = Dissector().record(Record(0, frame, wire_len, linktype))
        assert isinstance(pa.info, str) and pa.protocol


@pytest.mark.tshark
def test_ipv6_tcp_reads_like_tshark(tmp_path: Path, tshark_fields: TsharkFields) -> None:
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapWriter as ScapyPcapWriter

    path = tmp_path / "v6.pcap"
    w = ScapyPcapWriter(str(path), linktype=1, sync=True)
    for i, p in enumerate(_scapy_packets()):
        tcp = p[TCP]
        client = p.src == "10.1.0.2"
        v6 = IPv6(src="fd00::2" if client else "fd00::1", dst="fd00::1" if client else "fd00::2")
        if i == 4:
            v6 = v6 / IPv6ExtHdrHopByHop()
        f = Ether() / v6 / tcp
        f.time = p.time
        w.write(f)
    w.close()
    fields = ("frame.len", "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "tcp.len",
              "tcp.seq", "tcp.ack", "tcp.stream", "tcp.checksum.status")  # fmt: skip
    reference = tshark_fields(path, *fields)
    result = analyze(decode_capture(path))
    mine = []
    for pa in result.packets:
        p, t = pa.packet, pa.tcp
        assert t is not None, p.problem
        mine.append([
            str(p.wire_len), p.src, p.dst, str(t.sport), str(t.dport), str(t.seglen),
            str(t.rel_seq), str(t.rel_ack), str(t.stream), "1" if p.tcp_checksum_ok else "0",
        ])  # fmt: skip
    assert mine == reference
    assert result.packets[3].app == ("Parlour", "login alice")
    assert result.conversations[0].client == ("fd00::2", 43210)
