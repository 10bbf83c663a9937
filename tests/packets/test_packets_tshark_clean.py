"""tshark reads every capture the builder writes: no malformed packets, good checksums, no
TCP analysis warnings, and each CSV message is the payload of the right segment."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packets_helpers import EXAMPLE_CSV, TsharkFields

from parlour.packets.build.conversation import (
    AppMessage,
    BuildOptions,
    Endpoint,
    build_conversations,
)
from parlour.packets.build.messages import load_messages, parse_hosts
from parlour.packets.build.writers import LinkOptions, write_capture_file
from parlour.packets.cli import packets
from parlour.packets.files.pcap import PcapWriter

FIELDS = (
    "frame.number", "ip.checksum.status", "tcp.checksum.status", "tcp.analysis.flags",
    "_ws.malformed", "_ws.expert.severity", "ip.src", "tcp.srcport", "tcp.payload", "tcp.len",
)  # fmt: skip
WARN = 6291456  # PI_WARN; PI_ERROR is larger


def assert_clean(rows: list[list[str]], count: int) -> None:
    assert len(rows) == count
    for row in rows:
        number, ip_ok, tcp_ok, analysis, malformed, severity = row[:6]
        assert ip_ok == "1" and tcp_ok == "1", f"bad checksum in frame {number}"
        assert analysis == "" and malformed == "", f"frame {number}: {row}"
        assert all(int(s) < WARN for s in severity.split(",") if s), f"frame {number}: {row}"


def payloads(rows: list[list[str]]) -> list[tuple[str, int, bytes]]:
    return [(r[6], int(r[7]), bytes.fromhex(r[8])) for r in rows if r[8]]


@pytest.mark.tshark
@pytest.mark.parametrize("link", ["raw", "ethernet"])
@pytest.mark.parametrize("suffix", ["pcap", "pcapng"])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_cli_build_is_clean_in_tshark(
    tmp_path: Path, tshark_fields: TsharkFields, link: str, suffix: str, nanosecond: bool
) -> None:
    out = tmp_path / f"http.{suffix}"
    args = ["build", str(EXAMPLE_CSV), "-o", str(out), "--link", link,
            "--hosts", "client_browser=10.0.0.2,web_server=10.0.0.1"]  # fmt: skip
    if nanosecond:
        args.append("--nanosecond")
    result = CliRunner().invoke(packets, args)
    assert result.exit_code == 0, result.output
    rows = tshark_fields(out, *FIELDS)
    assert_clean(rows, 26)
    messages = load_messages(
        EXAMPLE_CSV, parse_hosts("client_browser=10.0.0.2,web_server=10.0.0.1"), framing="auto"
    )
    seen = payloads(rows)
    assert [(m.src.ip, m.src.port, m.payload) for m in messages] == seen
    # the payload begins with the CSV text itself
    assert seen[0][2].startswith(b"GET /index.html HTTP/1.1")


@pytest.mark.tshark
def test_http_conversation_shows_every_request_and_response(
    tmp_path: Path, tshark_fields: TsharkFields
) -> None:
    out = tmp_path / "http.pcap"
    write_capture_file(out, build_conversations(load_messages(EXAMPLE_CSV, framing="auto")))
    rows = tshark_fields(out, "http.request.line", "http.response.line", "http.request.method")
    methods = [r[2] for r in rows if r[2]]
    assert methods == ["GET", "GET", "GET", "POST", "GET"]
    assert sum(1 for r in rows if r[1]) == 5


@pytest.mark.tshark
def test_big_endian_pcap_and_long_segmented_messages(
    tmp_path: Path, tshark_fields: TsharkFields
) -> None:
    a, b = Endpoint("192.168.1.10", 50000, "a"), Endpoint("192.168.1.20", 7878, "b")
    big = bytes(range(256)) * 40
    msgs = [
        AppMessage(a, b, big, 10**18),
        AppMessage(b, a, b"x" * 3000, 10**18 + 5_000_000),
        AppMessage(a, b, b"bye", 10**18 + 9_000_000),
    ]
    built = build_conversations(msgs, BuildOptions(mss=536))
    out = tmp_path / "be.pcap"
    with open(out, "wb") as f:
        PcapWriter(f, LinkOptions().linktype, big_endian=True).write_many(
            (p.ts_ns, p.datagram) for p in built
        )
    rows = tshark_fields(out, *FIELDS)
    assert_clean(rows, len(built))
    data = payloads(rows)
    assert b"".join(p for ip, _, p in data if ip == a.ip) == big + b"bye"
    assert b"".join(p for ip, _, p in data if ip == b.ip) == b"x" * 3000


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=2500)


@pytest.mark.tshark
@settings(
    deadline=None, max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(st.tuples(st.booleans(), text), min_size=1, max_size=6),
    cport=st.integers(1024, 65535),
    sport=st.integers(1, 1023),
    seed=st.integers(0, 2**16),
    gaps=st.lists(st.integers(0, 10**9), min_size=6, max_size=6),
)
def test_random_conversations_are_clean(
    tmp_path: Path,
    tshark_fields: TsharkFields,
    texts: list[tuple[bool, str]],
    cport: int,
    sport: int,
    seed: int,
    gaps: list[int],
) -> None:
    c, s = Endpoint("10.1.1.1", cport, "c"), Endpoint("10.2.2.2", sport, "s")
    t = 10**18
    msgs = []
    for i, (from_client, body) in enumerate(texts):
        t += gaps[i]
        src, dst = (c, s) if from_client or i == 0 else (s, c)
        msgs.append(AppMessage(src, dst, body.encode(), t, str(i)))
    built = build_conversations(msgs, BuildOptions(seed=seed))
    out = tmp_path / f"r{seed}.pcapng"
    write_capture_file(out, built)
    rows = tshark_fields(out, *FIELDS, extra=("-d", f"tcp.port=={sport},data"))
    assert_clean(rows, len(built))
    for sender in (c, s):
        sent = b"".join(m.payload for m in msgs if m.src == sender)
        assert b"".join(p for ip, _, p in payloads(rows) if ip == sender.ip) == sent
