"""Analysis flags agree with tshark's tcp.analysis.* packet for packet on anomalous captures."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packets_helpers import EXAMPLE_CSV, TSHARK, TsharkFields, craft_capture

from parlour.packets.analyze.decode import decode_capture, decode_records
from parlour.packets.analyze.dissect import analyze
from parlour.packets.analyze.tcp_analysis import TSHARK_FIELDS
from parlour.packets.build.conversation import build_conversations
from parlour.packets.build.messages import load_messages
from parlour.packets.cli.analyze import packet_row
from parlour.packets.files.pcap import PcapWriter
from parlour.packets.files.reader import read_capture

FIELD_NAMES = sorted(set(TSHARK_FIELDS.values()))


def ours(path: Path) -> list[set[str]]:
    result = []
    for p in analyze(decode_records(read_capture(path))).packets:
        flags = set(p.tcp.analysis) if p.tcp else set()
        result.append({TSHARK_FIELDS[f] for f in flags})
    return result


def theirs(path: Path, tshark_fields: TsharkFields) -> list[set[str]]:
    rows = tshark_fields(path, *FIELD_NAMES)
    return [{name for name, value in zip(FIELD_NAMES, row, strict=True) if value} for row in rows]


def assert_agree(
    path: Path, tshark_fields: TsharkFields, ignore: frozenset[str] = frozenset()
) -> list[set[str]]:
    mine = [flags - ignore for flags in ours(path)]
    reference = [flags - ignore for flags in theirs(path, tshark_fields)]
    diffs = [(i + 1, m, r) for i, (m, r) in enumerate(zip(mine, reference, strict=True)) if m != r]
    assert not diffs, f"frame, ours, tshark: {diffs}"
    return reference


SCENARIOS: dict[str, tuple[list[tuple[str, int, int, str, int, int, int]], str, int | None]] = {
    # name: (segments after the handshake, a flag tshark must report somewhere, window scale)
    "retransmission": (
        [("c", 1, 1, "PA", 100, 502, 1000), ("c", 1, 1, "PA", 100, 502, 300_000),
         ("s", 1, 101, "A", 0, 502, 100)],
        "tcp.analysis.retransmission", 7,
    ),
    "lost_and_acked_unseen": (
        [("c", 101, 1, "PA", 100, 502, 1000), ("s", 1, 201, "A", 0, 502, 100)],
        "tcp.analysis.ack_lost_segment", 7,
    ),
    "dup_acks_and_fast_retransmission": (
        [("c", 101, 1, "PA", 100, 502, 1000), ("s", 1, 1, "A", 0, 502, 100),
         ("c", 201, 1, "PA", 100, 502, 100), ("s", 1, 1, "A", 0, 502, 100),
         ("c", 301, 1, "PA", 100, 502, 100), ("s", 1, 1, "A", 0, 502, 100),
         ("c", 1, 1, "PA", 100, 502, 1000), ("s", 1, 401, "A", 0, 502, 100)],
        "tcp.analysis.fast_retransmission", 7,
    ),
    "out_of_order": (
        [("c", 101, 1, "PA", 100, 502, 1000), ("c", 1, 1, "PA", 100, 502, 50),
         ("s", 1, 201, "A", 0, 502, 100)],
        "tcp.analysis.out_of_order", 7,
    ),
    "spurious": (
        [("c", 1, 1, "PA", 100, 502, 1000), ("s", 1, 101, "A", 0, 502, 100),
         ("c", 1, 1, "PA", 100, 502, 200_000)],
        "tcp.analysis.spurious_retransmission", 7,
    ),
    "zero_window": (
        [("c", 1, 1, "PA", 100, 502, 1000), ("s", 1, 101, "A", 0, 0, 100),
         ("c", 101, 1, "A", 1, 502, 200_000), ("s", 1, 101, "A", 0, 0, 100),
         ("s", 1, 101, "A", 0, 502, 100_000), ("c", 101, 1, "PA", 50, 502, 100)],
        "tcp.analysis.zero_window", 7,
    ),
    "keep_alive": (
        [("c", 1, 1, "PA", 10, 502, 1000), ("s", 1, 11, "A", 0, 502, 100),
         ("c", 10, 1, "A", 0, 502, 5_000_000), ("s", 1, 11, "A", 0, 502, 100)],
        "tcp.analysis.keep_alive", 7,
    ),
    "reset": (
        [("c", 1, 1, "PA", 10, 502, 1000), ("s", 1, 11, "RA", 0, 0, 100)],
        "tcp.connection.rst", 7,
    ),
    "window_full_without_scaling": (
        [("s", 1, 1, "A", 0, 1000, 100), ("c", 1, 1, "PA", 1000, 64240, 1000),
         ("s", 1, 1001, "A", 0, 1000, 100)],
        "tcp.analysis.window_full", None,
    ),
    "window_full_with_scaling": (
        [("s", 1, 1, "A", 0, 2, 100), ("c", 1, 1, "PA", 256, 502, 1000),
         ("s", 1, 257, "A", 0, 502, 100)],
        "tcp.analysis.window_full", 7,
    ),
    "zero_window_probe": (
        [("c", 1, 1, "PA", 100, 502, 1000), ("s", 1, 101, "A", 0, 0, 100),
         ("c", 101, 1, "A", 1, 502, 200_000), ("s", 1, 101, "A", 0, 0, 100)],
        "tcp.analysis.zero_window_probe", 7,
    ),
    "dup_acks_after_window_update": (
        [("c", 1, 1, "PA", 100, 502, 1000), ("s", 1, 101, "A", 0, 502, 100),
         ("s", 1, 101, "A", 0, 600, 100), ("c", 201, 1, "PA", 100, 502, 100),
         ("s", 1, 101, "A", 0, 600, 100), ("c", 301, 1, "PA", 100, 502, 100),
         ("s", 1, 101, "A", 0, 600, 100)],
        "tcp.analysis.duplicate_ack", 7,
    ),
    "keep_alive_with_byte": (
        [("c", 1, 1, "PA", 10, 502, 1000), ("s", 1, 11, "A", 0, 502, 100),
         ("c", 10, 1, "A", 1, 502, 5_000_000), ("s", 1, 11, "A", 0, 502, 100)],
        "tcp.analysis.keep_alive_ack", 7,
    ),
    "port_reuse": (
        [("c", 1, 1, "PA", 10, 502, 1000), ("s", 1, 11, "RA", 0, 0, 100),
         ("c", 90000, 0, "S", 0, 64240, 1_000_000), ("s", 70000, 90001, "SA", 0, 64240, 100)],
        "tcp.analysis.reused_ports", 7,
    ),
    # two flags on one packet: the Info prefixes come in tshark's order
    "lost_and_acked_unseen_together": (
        [("s", 1, 1, "PA", 100, 502, 1000), ("c", 101, 301, "PA", 50, 502, 1000)],
        "tcp.analysis.ack_lost_segment", 7,
    ),
    "zero_window_acking_unseen_data": (
        [("c", 1, 1, "PA", 100, 502, 1000), ("s", 1, 201, "A", 0, 0, 100)],
        "tcp.analysis.zero_window", 7,
    ),
    "retransmission_filling_the_window": (
        [("s", 1, 1, "A", 0, 1, 100), ("c", 1, 1, "PA", 128, 502, 1000),
         ("c", 1, 1, "PA", 128, 502, 300_000), ("s", 1, 129, "A", 0, 502, 100)],
        "tcp.analysis.window_full", 7,
    ),
        "window_update": (
        [("c", 1, 1, "PA", 10, 502, 1000), ("s", 1, 11, "A", 0, 100, 100),
         ("s", 1, 11, "A", 0, 502, 100)],
        "tcp.analysis.window_update", 7,
    ),
}  # fmt: skip


@pytest.mark.tshark
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_crafted_anomalies_agree_with_tshark(
    tmp_path: Path, tshark_fields: TsharkFields, name: str
) -> None:
    segments, expected, ws = SCENARIOS[name]
    path = tmp_path / f"{name}.pcap"
    craft_capture(path, segments, ws)
    reference = assert_agree(path, tshark_fields)
    assert any(expected in flags for flags in reference), reference


@pytest.mark.tshark
@settings(
    deadline=None, max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_conversations_agree_with_tshark(
    tmp_path: Path, tshark_fields: TsharkFields, data: st.DataObject
) -> None:
    """Drop, duplicate, delay and reorder packets of a clean conversation; flags still agree."""
    built = build_conversations(load_messages(EXAMPLE_CSV, framing="auto"))
    frames = [(p.ts_ns, p.datagram) for p in built]
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(frames) - 1))
        op = data.draw(st.sampled_from(["drop", "dup", "swap", "late_dup"]))
        if op == "drop" and len(frames) > 2:
            del frames[i]
        elif op == "dup":
            frames.insert(i + 1, frames[i])
        elif op == "late_dup":
            frames.insert(
                i + 1, (frames[i][0] + data.draw(st.integers(0, 50_000_000)), frames[i][1])
            )
        elif op == "swap" and i + 1 < len(frames):
            frames[i], frames[i + 1] = frames[i + 1], frames[i]
    ts = [t for t, _ in frames]
    mono = [max(ts[: k + 1]) for k in range(len(ts))]
    frames = [(mono[k], f) for k, (_, f) in enumerate(frames)]
    path = tmp_path / "mutated.pcap"
    with open(path, "wb") as f:
        PcapWriter(f, 101).write_many(frames)
    # one tshark run: the analysis fields, then the Protocol and Info columns (Info last: it
    # may itself contain the separator)
    n = len(FIELD_NAMES)
    rows = tshark_fields(path, *FIELD_NAMES, "_ws.col.Protocol", "_ws.col.Info")
    theirs_flags = [{name for name, v in zip(FIELD_NAMES, r[:n], strict=True) if v} for r in rows]
    mine_flags = ours(path)
    flag_diffs = [
        (i + 1, m, t)
        for i, (m, t) in enumerate(zip(mine_flags, theirs_flags, strict=True))
        if m != t
    ]
    assert not flag_diffs, f"frame, ours, tshark: {flag_diffs}"
    # relative numbers, Dup ACK N#k, prefixes in tshark's order, reassembly: character for
    # character
    mine = [packet_row(pa) for pa in analyze(decode_capture(path)).packets]
    diffs = [
        (r[0], r[4], r[6], row[n], ";".join(row[n + 1 :]))
        for r, row in zip(mine, rows, strict=True)
        if (r[4], r[6]) != (row[n], ";".join(row[n + 1 :]))
    ]
    assert not diffs, diffs


@pytest.mark.tshark
def test_info_column_and_initial_rtt_agree_with_tshark(
    tmp_path: Path, tshark_fields: TsharkFields
) -> None:
    """The Info column (relative numbers, scaled window, analysis prefixes, Dup ACK N#k) and
    the handshake RTT read like tshark's, for every frame of every crafted scenario."""
    paths = []
    for name, (segments, _flag, ws) in sorted(SCENARIOS.items()):
        path = tmp_path / f"{name}.pcap"
        craft_capture(path, segments, ws)
        paths.append(path)
    mismatches = []
    for path in paths:
        rows = tshark_fields(path, "_ws.col.Info", "tcp.analysis.initial_rtt")
        result = analyze(decode_capture(path))
        for pa, (info, rtt) in zip(result.packets, rows, strict=True):
            if pa.info != info:
                mismatches.append((path.name, pa.packet.number, pa.info, info))
            if rtt:
                conv = result.conversations[pa.tcp.stream if pa.tcp else 0]
                assert conv.handshake_rtt_ns is not None
                assert abs(conv.handshake_rtt_ns / 1e9 - float(rtt)) < 1e-6
    assert not mismatches, mismatches


def _tshark_conversations(path: Path) -> dict[frozenset[str], dict[str, tuple[int, int]]]:
    """``tshark -z conv,tcp``: per conversation, frames and bytes sent by each endpoint."""
    assert TSHARK is not None
    out = subprocess.run(
        [TSHARK, "-n", "-q", "-r", str(path), "-z", "conv,tcp"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    convs = {}
    for line in out.splitlines():
        m = re.match(
            r"(\S+)\s+<->\s+(\S+)\s+(\d+)\s+(\d+) bytes\s+(\d+)\s+(\d+) bytes", line.strip()
        )
        if m:
            a, b = m.group(1), m.group(2)
            # columns: "<-" (B to A), then "->" (A to B)
            convs[frozenset((a, b))] = {
                b: (int(m.group(3)), int(m.group(4))),
                a: (int(m.group(5)), int(m.group(6))),
            }
    return convs


@pytest.mark.tshark
def test_conversations_agree_with_tshark(tmp_path: Path, tshark_fields: TsharkFields) -> None:
    paths = []
    for name in ("dup_acks_and_fast_retransmission", "reset", "keep_alive"):
        segments, _flag, ws = SCENARIOS[name]
        paths.append(tmp_path / f"{name}.pcap")
        craft_capture(paths[-1], segments, ws)
    built = build_conversations(load_messages(EXAMPLE_CSV, framing="auto"))
    paths.append(tmp_path / "http.pcap")
    with open(paths[-1], "wb") as f:
        PcapWriter(f, 101).write_many((p.ts_ns, p.datagram) for p in built)
    for path in paths:
        reference = _tshark_conversations(path)
        result = analyze(decode_capture(path))
        assert len(reference) == len(result.conversations) > 0
        for conv in result.conversations:
            client = f"{conv.client[0]}:{conv.client[1]}"
            server = f"{conv.server[0]}:{conv.server[1]}"
            theirs = reference[frozenset((client, server))]
            assert theirs[client] == (conv.to_server.packets, conv.to_server.bytes)
            assert theirs[server] == (conv.to_client.packets, conv.to_client.bytes)
