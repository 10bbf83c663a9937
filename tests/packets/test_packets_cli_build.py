"""``parlour packets build`` as a new user tries it: hex dump, narration, host mapping file,
Ethernet with chosen MACs, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from packets_helpers import EXAMPLE_CSV

from parlour.packets.analyze.decode import decode_capture, decode_records
from parlour.packets.analyze.dissect import analyze
from parlour.packets.build.conversation import build_conversations
from parlour.packets.build.messages import load_messages
from parlour.packets.cli import packets
from parlour.packets.files.reader import read_capture
from parlour.packets.files.records import Record
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


HEADER = "msg_id,app_protocol,src_app,dst_app,src_port,dst_port,message,timestamp"


def _csv(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    path = tmp_path / "m.csv"
    path.write_bytes(("\n".join([header, *rows]) + "\n").encode())
    return path


@pytest.mark.parametrize(
    ("rows", "args", "message"),
    [
        (["1,HTTP,a,b,5000,80,GET / HTTP/1.1,1e300"], (), "timestamp '1e300' is out of range"),
        (["1,HTTP,a,b,5000,80,GET / HTTP/1.1,5000000000"], (), "a pcap file holds times up to"),
        (["1,HTTP,a,b,5000,80,hi,0"], ("--start", "-5"), "Invalid value for '--start'"),
        (["1,HTTP,a,b,5000,80,hi,0"], ("--start", "1e20"), "Invalid value for '--start'"),
        ([], (), "has no messages (only a header)"),
        (["1,HTTP,a,b,5000,80,hi,0,oops"], (), "unknown anomaly 'oops'"),
    ],
)
def test_bad_input_is_one_line_never_a_traceback(
    tmp_path: Path, rows: list[str], args: tuple[str, ...], message: str
) -> None:
    header = HEADER + (",anomaly" if rows and rows[0].endswith("oops") else "")
    path = _csv(tmp_path, *rows, header=header)
    res = CliRunner().invoke(packets, ["build", str(path), "-o", str(tmp_path / "x.pcap"), *args])
    assert res.exit_code in (1, 2), res.output
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x.pcap").exists()  # nothing half-written


def test_far_future_times_fit_pcapng_and_missing_directories_are_clear(tmp_path: Path) -> None:
    path = _csv(tmp_path, "1,HTTP,a,b,5000,80,GET / HTTP/1.1,5000000000")
    res = CliRunner().invoke(packets, ["build", str(path), "-o", str(tmp_path / "x.pcapng")])
    assert res.exit_code == 0, res.output
    assert read_capture(tmp_path / "x.pcapng")[0].ts_ns // 10**9 == 5_000_000_000 - 1  # SYN
    res = CliRunner().invoke(packets, ["build", str(path), "-o", "/nonexistent/dir/x.pcapng"])
    assert res.exit_code == 1
    assert "cannot write /nonexistent/dir/x.pcapng: No such file or directory" in res.output


def test_messages_longer_than_the_csv_field_limit_are_built(tmp_path: Path) -> None:
    body = "x" * 200_000  # the csv module stops at 131,072 characters by default
    path = _csv(tmp_path, f"1,RAW,a,b,5000,7000,{body},0")
    out = tmp_path / "long.pcap"
    res = CliRunner().invoke(packets, ["build", str(path), "-o", str(out)])
    assert res.exit_code == 0, res.output
    payload = b"".join(p.packet.payload for p in analyze(decode_capture(out)).packets)
    assert payload == body.encode()


def test_line_endings_inside_quoted_fields_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "crlf.csv"
    path.write_bytes(
        HEADER.encode() + b"\n" + b'1,RAW,a,b,5000,7000,"line one\r\nline two\nend",0\n'
    )
    (msg,) = load_messages(path)
    assert msg.payload == b"line one\r\nline two\nend"


def test_server_first_protocols_are_opened_by_the_client(tmp_path: Path) -> None:
    """An SMTP server greets first, but the client (ephemeral port) opened the connection;
    SMTP lines end with CR LF."""
    path = _csv(
        tmp_path,
        "1,SMTP,mail,laptop,25,40123,220 mail.example ESMTP,0.010",
        "2,SMTP,laptop,mail,40123,25,EHLO laptop,0.020",
        "3,SMTP,mail,laptop,25,40123,250 mail.example,0.030",
    )
    built = build_conversations(load_messages(path, framing="auto"))
    syn = built[0]
    assert syn.flags == 0x02 and (syn.src.name, syn.src.port) == ("laptop", 40123)
    data = [p.payload for p in built if p.payload]
    assert data == [b"220 mail.example ESMTP\r\n", b"EHLO laptop\r\n", b"250 mail.example\r\n"]
    # the client column says who opens when ports do not
    path = _csv(
        tmp_path,
        "1,RAW,srv,cli,7000,7001,hello,0,cli",
        "2,RAW,cli,srv,7001,7000,hi,0.1,",
        header=HEADER + ",client",
    )
    syn = build_conversations(load_messages(path))[0]
    assert syn.flags == 0x02 and syn.src.name == "cli"


def test_a_port_pair_can_be_reused_after_a_close(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "1,HTTP,c,s,40000,80,GET /a HTTP/1.1,0.0,first",
        "2,HTTP,s,c,80,40000,HTTP/1.1 200 OK,0.01,first",
        "3,HTTP,c,s,40000,80,GET /b HTTP/1.1,0.02,second",  # same ports, a new connection
        "4,HTTP,s,c,80,40000,HTTP/1.1 200 OK,0.03,second",
        "5,HTTP,c,s,40000,80,GET /c HTTP/1.1,200,second",  # a long silence: another one
        header=HEADER + ",connection",
    )
    built = build_conversations(
        load_messages(path, framing="auto"), new_connection_after_ns=60 * 10**9
    )
    syns = [i for i, p in enumerate(built) if p.flags == 0x02]
    fins = [i for i, p in enumerate(built) if p.flags & 0x01]
    assert len(syns) == 3 and len(fins) == 6
    assert syns[1] > fins[1] and syns[2] > fins[3]  # each opens after the previous closed
    assert len({built[i].seq for i in syns}) == 3  # new initial sequence numbers
    result = analyze(decode_records(Record(p.ts_ns, p.datagram, len(p.datagram), 101)
                                    for p in built))  # fmt: skip
    assert len(result.conversations) == 3
    reused = [pa.packet.number for pa in result.packets if "port numbers reused" in pa.flags]
    assert reused == [syns[1] + 1, syns[2] + 1]  # what tshark notes on a real network


def test_send_follows_the_csv_timing() -> None:
    from parlour.packets.capture import rawsend

    sent: list[float] = []
    now = [100.0]

    class FakeSocket:
        def __enter__(self) -> FakeSocket:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def setsockopt(self, *args: object) -> None:
            pass

        def sendto(self, data: bytes, addr: object) -> int:
            sent.append(now[0])
            return len(data)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    datagram = b"\x45" + b"\0" * 15 + bytes([127, 0, 0, 1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rawsend.socket, "socket", lambda *a: FakeSocket())
        n = rawsend.send_packets(
            [datagram] * 3, times_ns=[0, 500_000_000, 2_000_000_000], speed=2.0,
            clock=lambda: now[0], sleep=sleep,
        )  # fmt: skip
    assert n == 3
    assert [round(t - 100.0, 3) for t in sent] == [0.0, 0.25, 1.0]


def test_plot_alone_prints_no_packet_list(tmp_path: Path) -> None:
    out = tmp_path / "http.pcap"
    assert CliRunner().invoke(packets, ["build", str(EXAMPLE_CSV), "-o", str(out)]).exit_code == 0
    res = CliRunner().invoke(packets, ["analyze", str(out), "--plot", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    assert res.stdout == ""
    assert "wrote the sequence graph of conversation 0" in res.stderr
