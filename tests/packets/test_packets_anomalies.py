"""Teaching mode: ``build --anomaly`` (or an ``anomaly`` column) gets a conversation wrong on
purpose — the source design's reused sequence numbers with nobody listening, segments lost,
duplicated, reordered, a reset, a full receive buffer — tshark flags exactly what Parlour
says it will, and ``analyze --explain`` says which flag and why."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from packets_helpers import EXAMPLE_CSV, TSHARK, compare_rows, our_rows, tshark_rows

from parlour.packets.analyze.dissect import analyze
from parlour.packets.analyze.tcp_analysis import (
    ACK_LOST_SEGMENT,
    DUPLICATE_ACK,
    LOST_SEGMENT,
    RETRANSMISSION,
    WINDOW_UPDATE,
    ZERO_WINDOW,
)
from parlour.packets.build.conversation import (
    ANOMALIES,
    RTO_NS,
    AppMessage,
    BuiltPacket,
    build_conversations,
)
from parlour.packets.build.messages import load_messages, parse_messages
from parlour.packets.cli import packets

RST, PSH, ACK = 0x04, 0x08, 0x10
HEADER = "msg_id,app_protocol,src_app,dst_app,src_port,dst_port,message,timestamp"


def example(anomaly: str) -> list[AppMessage]:
    return load_messages(EXAMPLE_CSV, framing="auto", anomaly=anomaly)


def build(tmp_path: Path, anomaly: str, csv: Path = EXAMPLE_CSV) -> Path:
    out = tmp_path / f"{anomaly.replace(',', '+') or 'clean'}.pcap"
    res = CliRunner().invoke(packets, ["build", str(csv), "-o", str(out), "--anomaly", anomaly])
    assert res.exit_code == 0, res.output
    return out


def data_packets(built: list[BuiltPacket]) -> list[BuiltPacket]:
    return [p for p in built if p.payload]


def flagged(path: Path) -> dict[int, tuple[str, ...]]:
    return {pa.packet.number: pa.flags for pa in analyze(path).packets if pa.flags}


def explain(path: Path) -> str:
    res = CliRunner().invoke(packets, ["analyze", str(path), "--explain"])
    assert res.exit_code == 0, res.output
    return res.output


def test_the_source_designs_mistake_reuse_seq_with_nobody_listening(tmp_path: Path) -> None:
    """Every message at sequence number 1 and no connection: each one answered by the
    kernel's RST (RFC 793: its sequence number is the data's ACK, no ACK flag of its own),
    and every message after the first in each direction flagged as a retransmission."""
    built = build_conversations(example("reuse-seq,rst"))
    assert not any(p.flags & 0x02 for p in built)  # no SYN: nothing was ever opened
    assert len(built) == 20  # 10 messages, 10 resets, nothing else
    for data, reset in zip(built[::2], built[1::2], strict=True):
        assert data.payload and data.flags == PSH | ACK
        assert reset.flags == RST and reset.seq == data.ack and reset.ack == 0
        assert (reset.src, reset.dst) == (data.dst, data.src)
    first_seq = {}
    for p in data_packets(built):
        first_seq.setdefault(p.src, p.seq)
        assert p.seq == first_seq[p.src]  # sequence number 1 every time
    path = build(tmp_path, "reuse-seq,rst")
    flags = flagged(path)
    numbers = [pa.packet.number for pa in analyze(path).packets if pa.tcp and pa.tcp.seglen]
    # the first request and the first response are new; every later message is "resent"
    assert [n for n in numbers if RETRANSMISSION not in flags.get(n, ())] == numbers[:2]
    story = explain(path)
    assert "there is no connection on port 80" in story
    assert "tshark: [TCP Retransmission]: seq 1 is below" in story
    assert "note: these are not the bytes seq 1 carried in packet 1" in story
    assert "the sender reuses sequence numbers" in story


def test_rst_alone_nobody_listening_sequence_numbers_right(tmp_path: Path) -> None:
    path = build(tmp_path, "rst")
    result = analyze(path)
    resets = [pa for pa in result.packets if pa.tcp and pa.tcp.flags & RST]
    assert len(resets) == 10
    # the numbers continue: no retransmissions, only the resets
    assert not any(RETRANSMISSION in pa.flags for pa in result.packets)
    assert "kernel resets data that belongs to nothing" in explain(path)


def test_reuse_seq_in_an_open_connection(tmp_path: Path) -> None:
    path = build(tmp_path, "reuse-seq")
    result = analyze(path)
    data = [pa for pa in result.packets if pa.tcp and pa.tcp.seglen]
    assert all(pa.tcp and pa.tcp.rel_seq == 1 for pa in data)
    resent = [pa for pa in data if RETRANSMISSION in pa.flags]
    assert len(resent) == len(data) - 2  # all but the first message of each side
    # the receiver already holds those numbers: its ACK does not move, a duplicate ACK
    assert any(DUPLICATE_ACK in pa.flags for pa in result.packets)
    story = explain(path)
    assert "the sender reuses sequence numbers" in story
    assert "tshark: [TCP Dup ACK" in story


def test_drop_leaves_the_data_out_of_the_capture(tmp_path: Path) -> None:
    clean = build_conversations(example(""))
    dropped = build_conversations(example("drop"))
    assert len(dropped) == len(clean) - 10  # the ten data segments
    assert not data_packets(dropped)
    path = build(tmp_path, "drop")
    flags = [f for fs in flagged(path).values() for f in fs]
    assert ACK_LOST_SEGMENT in flags and LOST_SEGMENT in flags
    story = explain(path)
    assert "tshark: [TCP ACKed unseen segment]: it acknowledges bytes" in story
    assert "tshark: [TCP Previous segment not captured]" in story


def test_lose_resends_after_the_retransmission_timeout(tmp_path: Path) -> None:
    built = build_conversations(example("lose"))
    data = data_packets(built)
    assert len(data) == 20
    for first, again in zip(data[::2], data[1::2], strict=True):
        assert (again.seq, again.payload) == (first.seq, first.payload)
        assert again.ts_ns - first.ts_ns == RTO_NS
    # nothing between a segment and its resend acknowledges it: the network lost it
    for first, again in zip(data[::2], data[1::2], strict=True):
        between = built[built.index(first) + 1 : built.index(again)]
        end = (first.seq + len(first.payload)) & 0xFFFFFFFF
        assert not any(p.src == first.dst and p.ack == end for p in between)
    path = build(tmp_path, "lose")
    resent = [n for n, fs in flagged(path).items() if RETRANSMISSION in fs]
    assert len(resent) == 10
    assert "tshark: [TCP Retransmission]" in explain(path)


def test_duplicate_and_reorder(tmp_path: Path) -> None:
    dup = build_conversations(example("duplicate"))
    data = data_packets(dup)
    pairs = zip(data[::2], data[1::2], strict=True)
    assert len(data) == 20 and all(a.datagram == b.datagram for a, b in pairs)
    assert sum(RETRANSMISSION in fs for fs in flagged(build(tmp_path, "duplicate")).values())
    reordered = build_conversations(example("reorder"))
    clean = build_conversations(example(""))
    assert sorted(p.datagram for p in reordered) == sorted(p.datagram for p in clean)
    assert [p.datagram for p in reordered] != [p.datagram for p in clean]
    flags = [f for fs in flagged(build(tmp_path, "reorder")).values() for f in fs]
    assert LOST_SEGMENT in flags  # a later segment came first: a gap, filled afterwards


def test_zero_window_then_window_update(tmp_path: Path) -> None:
    path = build(tmp_path, "zero-window")
    flags = [fs for fs in flagged(path).values()]
    assert sum(ZERO_WINDOW in fs for fs in flags) == 10
    assert sum(WINDOW_UPDATE in fs for fs in flags) == 10
    story = explain(path)
    assert "tshark: [TCP ZeroWindow]" in story and "receive buffer is full" in story
    assert "tshark: [TCP Window Update]: same ACK, bigger window" in story


def test_anomaly_column_applies_to_its_row_only(tmp_path: Path) -> None:
    csv = tmp_path / "one.csv"
    rows = EXAMPLE_CSV.read_text().splitlines()
    body = [r + (",duplicate" if r.startswith("3,") else ",") for r in rows[1:]]
    csv.write_text("\n".join([rows[0] + ",anomaly", *body]) + "\n")
    messages = load_messages(csv, framing="auto")
    assert [m.anomaly for m in messages] == ["", "", "duplicate", *[""] * 7]
    path = tmp_path / "one.pcap"
    res = CliRunner().invoke(packets, ["build", str(csv), "-o", str(path)])
    assert res.exit_code == 0, res.output
    result = analyze(path)
    resent = [pa for pa in result.packets if RETRANSMISSION in pa.flags]
    assert len(resent) == 1 and resent[0].packet.payload.startswith(b"GET /style.css")
    # --anomaly fills in the rows that name none; a row's own wins
    messages = load_messages(csv, framing="auto", anomaly="zero-window")
    assert [m.anomaly for m in messages][:4] == ["zero-window", "zero-window", "duplicate",
                                                 "zero-window"]  # fmt: skip


def test_unknown_anomaly_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        packets, ["build", str(EXAMPLE_CSV), "-o", str(tmp_path / "x.pcap"), "--anomaly", "oops"]
    )
    assert res.exit_code != 0
    assert "oops" in res.output and "reuse-seq" in res.output
    with pytest.raises(ValueError, match="unknown anomaly 'late'"):
        parse_messages(f"{HEADER},anomaly\n1,HTTP,a,b,5000,80,hi,0,late\n")


COMBINATIONS = [*ANOMALIES, "reuse-seq,rst", "lose,duplicate", "reuse-seq,drop",
                "rst,zero-window", "reorder,zero-window", "lose,reorder"]  # fmt: skip


@pytest.mark.tshark
@pytest.mark.skipif(TSHARK is None, reason="needs tshark (CI installs it with apt)")
@pytest.mark.parametrize("anomaly", COMBINATIONS)
def test_tshark_flags_what_parlour_says(tmp_path: Path, anomaly: str) -> None:
    """Every frame of every anomaly: Protocol, Info, tcp.stream, tcp.len and each
    tcp.analysis flag as tshark 4.0 has them."""
    path = build(tmp_path, anomaly)
    mine, problem = our_rows(path)
    assert problem is None
    disagreements = compare_rows(mine, tshark_rows(path))
    assert not disagreements, disagreements
