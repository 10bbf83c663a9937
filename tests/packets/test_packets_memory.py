"""The analysis keeps memory bounded on long captures: a conversation that closed with a
message still unfinished (a segment lost, a body cut short) gives its bytes back once it has
been silent for RELEASE_AFTER packets, and what is shown does not change."""

from __future__ import annotations

from pathlib import Path

import pytest

from parlour.packets.analyze import dissect
from parlour.packets.analyze.dissect import Dissector, analyze
from parlour.packets.build.conversation import AppMessage, Endpoint, build_conversations
from parlour.packets.build.writers import write_capture_file
from parlour.packets.files.reader import read_capture

T0 = 1_700_000_000_000_000_000


def capture(tmp_path: Path) -> Path:
    browser, web = Endpoint("127.0.0.1", 40000), Endpoint("127.0.0.1", 80)
    a, b = Endpoint("127.0.0.1", 40001), Endpoint("127.0.0.1", 9000)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    messages = [
        AppMessage(browser, web, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n", T0),
        # the body stops after 30,000 of its 100,000 bytes, then the connection closes
        AppMessage(web, browser, head + b"x" * 30_000, T0 + 1_000_000),
        *(AppMessage(a, b, b"ping %d\n" % i, T0 + 10_000_000 + i * 1_000) for i in range(5200)),
    ]
    path = tmp_path / "long.pcap"
    write_capture_file(path, build_conversations(messages))
    return path


def pending_bytes(d: Dissector, stream: int) -> int:
    assert d.tracker is not None
    st = next(s for s in d.tracker.streams.values() if s.index == stream)
    total = 0
    for side in (st.cside, st.sside):
        if side.reassembly is not None:
            for msp in side.reassembly.msps.values():
                total += sum(len(f[3]) for f in msp.frags) + len(msp.complete_data)
    return total


def test_a_closed_conversation_gives_its_unfinished_message_back(tmp_path: Path) -> None:
    path = capture(tmp_path)
    records = read_capture(path)
    assert len(records) > dissect.RELEASE_AFTER + 200
    d = Dissector()
    rows = []
    for i, rec in enumerate(records):
        rows.append(d.record(rec).info)
        if i == 200:  # the HTTP conversation has closed: its 30 kB still wait for the rest
            assert pending_bytes(d, 0) > 30_000
    assert pending_bytes(d, 0) == 0
    # the reading is the same as when nothing is ever given back
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dissect, "RELEASE_AFTER", 10**9)
        assert [pa.info for pa in analyze(path).packets] == rows
