"""``parlour packets build`` as a new user tries it: hex dump, narration, host mapping file,
Ethernet with chosen MACs, and clear errors."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from packets_helpers import EXAMPLE_CSV

from parlour.packets.cli import packets
from parlour.packets.files.reader import read_capture
from parlour.packets.wire.linktypes import LINKTYPE_ETHERNET


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(packets, list(args))
    return res.exit_code, res.output


def test_hexdump_prints_a_summary_and_the_bytes_of_every_packet(tmp_path: Path) -> None:
    out = tmp_path / "http.pcap"
    code, text = run("build", str(EXAMPLE_CSV), "-o", str(out), "--hexdump")
    assert code == 0, text
    lines = [line for line in text.splitlines() if not line.startswith("wrote ")]
    assert lines[0] == "   1  0.000000  client_browser:51874 → web_server:80  [SYN] Seq=0 Len=0"
    assert lines[1].startswith("0000  45 00 00 3c ")  # IPv4, header length 20, 60 bytes
    assert "[SYN, ACK] Seq=0 Ack=1 Len=0" in text
    assert (
        "  4  0.000300  client_browser:51874 → web_server:80  [PSH, ACK] Seq=1 Ack=1 Len=28" in text
    )
    assert "GET /index.h" in text  # the ASCII column
    assert "[FIN, ACK] Seq=134 Ack=238 Len=0" in text
    assert "wrote 26 packets (10 messages)" in text
    assert len(read_capture(out)) == 26


def test_explain_narrates_without_writing_a_file(tmp_path: Path) -> None:
    code, text = run("build", str(EXAMPLE_CSV), "--explain")
    assert code == 0, text
    assert "SYN" in text.splitlines()[0]
    assert "GET /index.html" in text
    assert len([line for line in text.splitlines() if line.strip()]) == 26


def test_hosts_file_and_macs_for_an_ethernet_pcapng(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# lab hosts\nclient_browser 10.0.0.2\nweb_server=10.0.0.1  # the server\n")
    out = tmp_path / "http.pcapng"
    code, text = run(
        "build", str(EXAMPLE_CSV), "-o", str(out), "--hosts-file", str(hosts),
        "--link", "ethernet", "--mac", "web_server=aa:bb:cc:dd:ee:01",
    )  # fmt: skip
    assert code == 0, text
    recs = read_capture(out)
    assert recs[0].linktype == LINKTYPE_ETHERNET
    syn = recs[0].data
    assert syn[:6] == bytes.fromhex("aabbccddee01")  # to the server's chosen MAC
    assert syn[6:12] == bytes.fromhex("02000a000002")  # from the default MAC for 10.0.0.2
    assert syn[14 + 12 : 14 + 20] == bytes([10, 0, 0, 2, 10, 0, 0, 1])
    assert recs[3].comment == "message 1: client_browser -> web_server"


def test_build_errors_are_clear(tmp_path: Path) -> None:
    code, text = run("build", str(EXAMPLE_CSV))
    assert code == 2 and "nothing to do" in text
    code, text = run("build", str(tmp_path / "missing.csv"), "--explain")
    assert code == 1 and "cannot read" in text
    code, text = run("build", str(EXAMPLE_CSV), "--explain", "--hosts", "web_server=10.0.0")
    assert code == 1 and "not an IPv4 address" in text
    code, text = run("build", str(EXAMPLE_CSV), "-o", str(tmp_path / "x.pcap"), "--link",
                     "ethernet", "--mac", "web_server=zz")  # fmt: skip
    assert code == 2 and "not a MAC address" in text
    code, text = run("build", str(EXAMPLE_CSV), "--replay", "nowhere")
    assert code == 1 and "expected HOST:PORT" in text
