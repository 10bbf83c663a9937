"""``parlour packets analyze``: packet list, conversations, filters, formats, plot, errors."""

from __future__ import annotations

import csv
import io
import json
import re
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from packets_helpers import EXAMPLE_CSV, craft_capture

from parlour.packets.analyze.decode import decode_capture
from parlour.packets.analyze.dissect import analyze
from parlour.packets.analyze.filters import FilterError, parse_filters
from parlour.packets.analyze.follow import Follower, StreamChunk
from parlour.packets.build.conversation import (
    AppMessage,
    BuildOptions,
    Endpoint,
    build_conversations,
)
from parlour.packets.build.messages import load_messages
from parlour.packets.build.writers import LinkOptions, write_capture_file
from parlour.packets.cli import packets as packets_cli
from parlour.packets.files.pcap import PcapWriter
from parlour.packets.files.reader import read_capture

RETRANSMISSION = [
    ("c", 1, 1, "PA", 5, 502, 1000), ("c", 1, 1, "PA", 5, 502, 300_000),
    ("s", 1, 6, "A", 0, 510, 100), ("s", 1, 6, "RA", 0, 0, 100),
]  # fmt: skip


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(packets_cli, ["analyze", *args])
    assert "Traceback" not in res.output
    return res.exit_code, res.output


@pytest.fixture
def crafted(tmp_path: Path) -> Path:
    path = tmp_path / "crafted.pcap"
    craft_capture(path, RETRANSMISSION)
    return path


@pytest.fixture
def http(tmp_path: Path) -> Path:
    path = tmp_path / "http.pcapng"
    built = build_conversations(load_messages(EXAMPLE_CSV, framing="auto"))
    write_capture_file(path, built, LinkOptions("ethernet", {}), "pcapng")
    return path


def test_packet_list_reads_like_wireshark(crafted: Path) -> None:
    code, out = run(str(crafted))
    assert code == 0, out
    lines = out.splitlines()
    assert "40000 → 7878 [PSH, ACK] Seq=1 Ack=1 Win=64256 Len=5" in lines[3]
    assert "10.0.0.2 → 10.0.0.1" in lines[3]
    assert "[TCP Retransmission] 40000 → 7878 [PSH, ACK] Seq=1 Ack=1 Win=64256 Len=5" in lines[4]
    assert "7878 → 40000 [RST, ACK] Seq=1 Ack=6 Win=0 Len=0" in lines[6]
    assert lines[0].split()[:2] == ["1", "0.000000"]
    conv = out[out.index("Conversations") :]
    assert "10.0.0.2:40000" in conv and "10.0.0.1:7878" in conv and "0.000200" in conv


def test_json_output(crafted: Path) -> None:
    code, out = run(str(crafted), "--format", "json")
    assert code == 0, out
    doc = json.loads(out)
    p4 = doc["packets"][4]
    assert p4["flags"] == ["retransmission"]
    assert p4["tcp"] == {
        "stream": 0, "sport": 40000, "dport": 7878, "flags": 0x18, "seq": 1, "ack": 1,
        "raw_seq": 1001, "raw_ack": 5001, "len": 5, "window": 64256,
    }  # fmt: skip
    assert doc["packets"][6]["flags"] == ["RST"]
    (conv,) = doc["conversations"]
    assert conv["to_server"]["packets"] == 4 and conv["to_client"]["packets"] == 3
    assert conv["to_server"]["payload_bytes"] == 10
    assert conv["initial_rtt"] == pytest.approx(0.0002)


def test_csv_output_and_conversations(crafted: Path) -> None:
    code, out = run(str(crafted), "--format", "csv")
    assert code == 0, out
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["No.", "Time", "Source", "Destination", "Protocol", "Length", "Info",
                       "Stream", "Flags"]  # fmt: skip
    assert len(rows) == 8 and rows[5][8] == "retransmission"
    code, out = run(str(crafted), "--format", "csv", "--conversations")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[1] == ["0", "10.0.0.2:40000", "10.0.0.1:7878", "4", "182", "0.301200", "3", "132",
                       "0.301300", "0.000000", "0.301400", "0.000200"]  # fmt: skip


def test_filters(crafted: Path) -> None:
    def numbers(*filters: str) -> list[int]:
        args = [a for f in filters for a in ("--filter", f)]
        code, out = run(str(crafted), "--format", "json", *args)
        assert code == 0, out
        return [p["number"] for p in json.loads(out)["packets"]]

    assert numbers("flag=retransmission") == [5]
    assert numbers("flag=rst") == [7]
    assert numbers("flag=retransmission,rst") == [5, 7]
    assert numbers("flag=any") == [5, 7]
    assert numbers("src=10.0.0.1") == [2, 6, 7]
    assert numbers("host=10.0.0.9") == []
    assert numbers("port=7878 flag!=any", "src=10.0.0.2") == [1, 3, 4]
    assert numbers("dport = 7878 and sport=40000") == [1, 3, 4, 5]
    assert numbers("stream=0", "proto=tcp") == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("flag=bogus", "unknown flag"),
        ("port=99999", "expected a port"),
        ("host=10.0.0", "not an IP address"),
        ("colour=red", "unknown filter key"),
        ("port", "expected KEY=VALUE"),
        ("port=", "needs a value"),
    ],
)
def test_bad_filters_are_clear_errors(crafted: Path, expr: str, message: str) -> None:
    code, out = run(str(crafted), "--filter", expr)
    assert code == 2 and message in out
    with pytest.raises(FilterError, match=message):
        parse_filters([expr])


def test_http_protocol_column_and_follow(http: Path) -> None:
    code, out = run(str(http), "--filter", "proto=http")
    assert code == 0, out
    assert "HTTP" in out and "GET /index.html HTTP/1.1" in out
    code, out = run(str(http), "--follow")
    assert code == 0, out
    assert "Follow TCP stream 0" in out and "    GET /index.html HTTP/1.1" in out


def test_plot_draws_a_png(crafted: Path, tmp_path: Path) -> None:
    png = tmp_path / "seq.png"
    code, out = run(str(crafted), "--plot", str(png), "--format", "csv")
    assert code == 0, out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out = run(str(crafted), "--plot", str(png), "--stream", "3")
    assert code == 2 and "no TCP conversation 3" in out


def test_plot_needs_tcp(tmp_path: Path) -> None:
    path = tmp_path / "udp.pcap"
    udp = bytes.fromhex("4500002000010000401100000a0000010a0000021f900050000c0000") + b"abcd"
    with open(path, "wb") as f:
        PcapWriter(f, 101).write_many([(1, udp)])
    code, out = run(str(path), "--plot", str(tmp_path / "x.png"))
    assert code == 1 and "no TCP conversation to plot" in out
    code, out = run(str(path))
    assert code == 0 and "UDP" in out and "8080 → 80 Len=4" in out


def test_bad_checksums_are_flagged_and_offload_is_not(tmp_path: Path) -> None:
    built = build_conversations(load_messages(EXAMPLE_CSV, framing="auto"))
    frames = [bytearray(p.datagram) for p in built]
    frames[2][-1] ^= 0xFF  # the handshake ACK's TSecr: TCP checksum now wrong
    frames[3][-1] ^= 0xFF  # payload byte: TCP checksum now wrong
    frames[4][8] = 1  # TTL: IP checksum now wrong
    # packet 6 as a sender with checksum offload leaves it: the folded pseudo-header sum
    f6 = frames[5]
    pseudo = sum(int.from_bytes(f6[i : i + 2], "big") for i in (12, 14, 16, 18))
    pseudo += 6 + len(f6) - 20
    while pseudo >> 16:
        pseudo = (pseudo & 0xFFFF) + (pseudo >> 16)
    f6[36:38] = pseudo.to_bytes(2, "big")
    path = tmp_path / "bad.pcap"
    with open(path, "wb") as f:
        PcapWriter(f, 101).write_many(
            (p.ts_ns, bytes(fr)) for p, fr in zip(built, frames, strict=True)
        )
    code, out = run(str(path), "--format", "json", "--checksums", "--filter", "flag=bad-checksum")
    assert code == 0, out
    bad = json.loads(out)["packets"]
    assert [p["number"] for p in bad] == [3, 4, 5]
    # tshark's words with checksum validation on, where it puts them
    assert "Win=64256 [TCP CHECKSUM INCORRECT] Len=0 TSval=" in bad[0]["info"]
    # not reassembled; the HTTP line replaces the TCP summary (tshark with checks on)
    assert bad[1]["info"] == "GET /index.html HTTP/1.1 Continuation"
    assert bad[2]["checksums"] == {"ip_ok": False, "tcp_ok": True}
    code, out = run(str(path), "--format", "json", "--filter", "flag=any")  # not by default
    assert json.loads(out)["packets"] == []


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world", b"\xd4\xc3\xb2\xa1" + b"\0" * 30, b"\n\r\r\n" + b"\xff" * 40],
)
def test_garbage_files_are_clear_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pcap"
    path.write_bytes(content)
    code, out = run(str(path))
    assert code == 1 and out.startswith("Error: ") and str(path) in out


def test_missing_file_and_bad_options(tmp_path: Path, crafted: Path) -> None:
    code, out = run(str(tmp_path / "nope.pcap"))
    assert code == 1 and "cannot read" in out
    code, out = run(str(crafted), "--format", "csv", "--follow")
    assert code == 2 and "--follow and --explain print text" in out


def test_truncated_capture_shows_every_complete_packet_then_warns(crafted: Path) -> None:
    data = crafted.read_bytes()
    crafted.write_bytes(data[:-7])
    res = CliRunner().invoke(packets_cli, ["analyze", str(crafted)])
    assert "Traceback" not in res.output
    assert res.exit_code == 2  # like tshark
    rows = [line for line in res.stdout.splitlines() if re.match(r"\s+\d+\s+\d+\.\d{6} ", line)]
    assert len(rows) == 6  # 7 packets, the last one cut
    assert "appears to have been cut short in the middle of a packet" in res.stderr


def test_explain_tells_the_story(crafted: Path) -> None:
    code, out = run(str(crafted), "--explain")
    assert code == 0, out
    assert "completes the three-way handshake" in out
    assert "tshark: [TCP Retransmission]: seq 1 is below the 6 already sent" in out
    assert "resets the connection" in out
    assert "1× retransmission" in out and "handshake round trip 0.200 ms" in out


def _chat_capture(path: Path, payloads: list[bytes], mss: int = 64) -> None:
    client, server = Endpoint("10.0.0.2", 40000, "c"), Endpoint("10.0.0.1", 7878, "s")
    t = 1_700_000_000 * 10**9
    msgs = [AppMessage(client, server, data, t + i * 10**6) for i, data in enumerate(payloads)]
    built = build_conversations(msgs, BuildOptions(mss=mss))
    with open(path, "wb") as f:
        PcapWriter(f, 101).write_many((p.ts_ns, p.datagram) for p in built)


def test_chat_lines_are_reassembled_and_shown_on_the_segment_that_completes_them(
    tmp_path: Path,
) -> None:
    login = b'{"id":1,"type":"login","username":"alice","password":"secret-pw"}\n'
    event = b'{"type":"event","event":"message","room":"general","from":"bob","text":"hi"}\n'
    path = tmp_path / "chat.pcap"
    _chat_capture(path, [login + event])
    result = analyze(decode_capture(path))
    data = [pa for pa in result.packets if pa.tcp is not None and pa.tcp.seglen]
    assert len(data) == 3  # 144 bytes at 52 per segment
    assert [pa.protocol for pa in data] == ["TCP", "Parlour", "Parlour"]
    assert data[0].info.endswith("[TCP segment of a reassembled PDU]")
    assert data[1].info == "login alice"
    assert data[2].info == "#general ← bob: hi"
    assert [line.text for pa in data for line in pa.chat] == ["login alice", "#general ← bob: hi"]
    assert all("secret-pw" not in pa.info for pa in result.packets)


def test_long_segments_spell_out_a_few_lines_and_count_the_rest(tmp_path: Path) -> None:
    data = b"".join(
        b'{"type":"event","event":"message","room":"g","from":"a","text":"t%d"}\n' % i
        for i in range(10)
    )
    path = tmp_path / "many.pcap"
    _chat_capture(path, [data], mss=1460)
    (pa,) = [pa for pa in analyze(decode_capture(path)).packets if pa.chat]
    assert pa.info == "#g ← a: t0 | #g ← a: t1 | #g ← a: t2 | #g ← a: t3 | … +6 more lines"
    assert len(pa.chat) == 10 and pa.chat[9].text == "#g ← a: t9"


def test_analysis_of_a_clean_build_has_no_flags(http: Path) -> None:
    result = analyze(decode_capture(http))
    assert all(not pa.flags for pa in result.packets)
    (conv,) = result.conversations
    assert conv.to_server.packets + conv.to_client.packets == len(result.packets)
    assert conv.to_server.start_rel_ns == 0 and conv.to_client.start_rel_ns == 100_000


def test_sack_blocks_are_relative_like_tshark(tmp_path: Path) -> None:
    from parlour.packets.wire.addresses import ipv4_to_int
    from parlour.packets.wire.packet import ipv4_tcp_packet
    from parlour.packets.wire.tcp import TcpOptions, encode_options

    path = tmp_path / "sack.pcap"
    craft_capture(path, [("c", 101, 1, "PA", 100, 502, 1000)])
    c, s = ipv4_to_int("10.0.0.2"), ipv4_to_int("10.0.0.1")
    sack = encode_options(TcpOptions(sack_blocks=((1000 + 101, 1000 + 201),)), False)
    frame = ipv4_tcp_packet(s, c, 7878, 40000, 5001, 1001, 0x10, 502, sack, b"", 9)
    data = path.read_bytes()
    with open(path, "ab") as f:
        f.write(struct.pack("<IIII", 1_700_000_001, 0, len(frame), len(frame)) + frame)
    assert len(data) < path.stat().st_size
    result = analyze(decode_capture(path))
    last = result.packets[-1]
    assert last.info.endswith("Len=0 SLE=101 SRE=201")


def _follow(path: Path, stream: int = 0, chat: bool = True) -> list[StreamChunk]:
    result = analyze(decode_capture(path))
    follower = Follower(stream, chat=chat)
    return [c for pa in result.packets for c in follower.feed(pa)] + follower.finish()


def test_follow_keeps_long_chat_lines_whole(tmp_path: Path) -> None:
    text = "word " * 400  # 2000 characters: cut to 80 in the packet list, never in --follow
    line = b'{"id":3,"type":"send","room":"general","text":"%s"}\n' % text.encode()
    login = b'{"id":1,"type":"login","username":"alice","password":"pw-secret-1"}\n'
    path = tmp_path / "long.pcap"
    _chat_capture(path, [login, line], mss=536)
    texts = [c.text for c in _follow(path) if c.text]
    assert texts == ["login alice", f"send #general: {text}"]
    res = CliRunner().invoke(packets_cli, ["analyze", str(path), "--follow"])
    assert res.exit_code == 0 and f"send #general: {text}" in res.output
    assert "pw-secret-1" not in res.output


def test_follow_marks_bytes_the_capture_missed(tmp_path: Path) -> None:
    lines = [b'{"type":"send","room":"r","text":"line %d"}\n' % i for i in range(6)]
    path = tmp_path / "chat.pcap"
    _chat_capture(path, lines)
    recs = read_capture(path)
    # drop the data segment of line 2 (the receiver's ACK for it stays: it was delivered)
    dropped = [r for r in recs if b"line 2" in r.data]
    assert len(dropped) == 1
    with open(path, "wb") as f:
        PcapWriter(f, 101).write_many((r.ts_ns, r.data) for r in recs if r not in dropped)
    chunks = _follow(path)
    assert [c.text for c in chunks if c.text] == [
        "send #r: line 0", "send #r: line 1", "send #r: line 3", "send #r: line 4",
        "send #r: line 5",
    ]  # fmt: skip
    (gap,) = [c for c in chunks if c.missing]
    assert gap.missing == len(lines[2]) and not gap.snapped
    res = CliRunner().invoke(packets_cli, ["analyze", str(path), "--follow"])
    assert f"[{len(lines[2])} bytes missing in capture file]" in res.output
    # raw view of the same conversation: every other byte is there, in order
    raw = b"".join(c.data for c in _follow(path, chat=False))
    assert raw == b"".join(lines[:2] + lines[3:])
