"""``analyze --plot``: the sequence graph marks zero windows, duplicate ACKs, SACK blocks,
retransmissions and segments the capture missed; ``--direction`` picks the panels; the
receive-window line stays on the picture."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from packets_helpers import EXAMPLE_CSV

from parlour.packets.analyze.dissect import Analysis, analyze
from parlour.packets.analyze.seqplot import WINDOW_SCALE_LIMIT, sequence_series
from parlour.packets.build.conversation import build_conversations
from parlour.packets.build.messages import load_messages
from parlour.packets.build.writers import write_capture_file
from parlour.packets.cli import packets


def built(tmp_path: Path, anomaly: str = "", csv: Path = EXAMPLE_CSV) -> Analysis:
    path = tmp_path / "c.pcap"
    write_capture_file(path, build_conversations(load_messages(csv, framing="auto",
                                                               anomaly=anomaly)))  # fmt: skip
    return analyze(path)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_a_clean_conversation(tmp_path: Path) -> None:
    result = built(tmp_path)
    conv = result.conversations[0]
    client = sequence_series(result, conv, True)
    server = sequence_series(result, conv, False)
    # five requests and five responses, each acknowledged
    assert len(client.data) == 5 and len(server.data) == 5
    assert client.title == "127.0.0.1:51874 → 127.0.0.1:80"
    for _t, _first, end in client.data:
        assert any(ack == end for _t, ack in client.acks)
    assert not (client.resent or client.dup_acks or client.zero_window or client.lost)
    # the window edge runs far above 133 bytes of requests: drawn along the top edge
    limit, clipped = client.y_limit()
    assert clipped and client.data_top <= limit <= client.data_top * WINDOW_SCALE_LIMIT * 1.1


def test_zero_window_marked_where_the_receiver_closes_it(tmp_path: Path) -> None:
    result = built(tmp_path, "zero-window")
    conv = result.conversations[0]
    for side in (True, False):
        s = sequence_series(result, conv, side)
        assert len(s.zero_window) == len(s.data) == 5
        # each zero window acknowledges one of the sender's segments, right after it
        assert [a for _t, a in s.zero_window] == [end for _t, _f, end in s.data]
        # there the window edge comes down to the ACK line
        assert all(point in s.window for point in s.zero_window)


def test_resent_bytes_and_duplicate_acks(tmp_path: Path) -> None:
    result = built(tmp_path, "reuse-seq")
    client = sequence_series(result, result.conversations[0], True)
    assert len(client.data) == 1 and len(client.resent) == 4
    assert all(first == 1 for _t, first, _e in client.resent)
    # the server's ACK stays where the first request ended: duplicates
    assert client.dup_acks and {a for _t, a in client.dup_acks} == {client.data[0][2]}


def test_a_gap_the_capture_missed(tmp_path: Path) -> None:
    csv = tmp_path / "one.csv"
    rows = EXAMPLE_CSV.read_text().splitlines()
    body = [r + (",drop" if r.startswith("3,") else ",") for r in rows[1:]]
    csv.write_text("\n".join([rows[0] + ",anomaly", *body]) + "\n")
    result = built(tmp_path, csv=csv)
    client = sequence_series(result, result.conversations[0], True)
    # GET /style.css (27 bytes after the first request's 28) never made it into the capture
    assert client.lost == [(client.lost[0][0], 29, 56)]
    assert [first for _t, first, _e in client.data] == [1, 56, 83, 107]


@pytest.mark.parametrize(("direction", "panels"), [("both", 2), ("client", 1), ("server", 1)])
def test_direction_chooses_the_panels(tmp_path: Path, direction: str, panels: int) -> None:
    path = tmp_path / "c.pcap"
    write_capture_file(path, build_conversations(load_messages(EXAMPLE_CSV, framing="auto")))
    png = tmp_path / f"{direction}.png"
    res = CliRunner().invoke(
        packets, ["analyze", str(path), "--plot", str(png), "--direction", direction]
    )
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"wrote the sequence graph of conversation 0 to {png}"
    assert png_size(png) == (1000, int(350 + 350 * panels))


def test_unknown_direction_is_refused(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        packets, ["analyze", str(EXAMPLE_CSV), "--plot", "x.png", "--direction", "up"]
    )
    assert res.exit_code == 2 and "'up' is not one of" in res.output
