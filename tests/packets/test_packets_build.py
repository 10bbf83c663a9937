"""Builders against scapy (byte for byte) and the conversation builder's TCP bookkeeping."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packets_helpers import EXAMPLE_CSV, scapy_options
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import rdpcap

from parlour.packets.build.conversation import (
    AppMessage,
    BuildOptions,
    BuiltPacket,
    Endpoint,
    build_conversations,
)
from parlour.packets.build.messages import (
    MessageFileError,
    load_messages,
    parse_hosts,
    parse_messages,
)
from parlour.packets.build.writers import LinkOptions, frame_for, write_capture
from parlour.packets.wire.addresses import format_ipv4, ipv4_to_int
from parlour.packets.wire.checksum import internet_checksum
from parlour.packets.wire.ipv4 import build_ipv4, parse_ipv4
from parlour.packets.wire.packet import ipv4_tcp_packet
from parlour.packets.wire.tcp import (
    TcpFlags,
    TcpOptions,
    build_tcp_segment,
    encode_options,
    parse_tcp,
)


def scapy_packet(p: BuiltPacket) -> bytes:
    ip = parse_ipv4(p.datagram)
    tcp = parse_tcp(p.datagram[ip.header_len :])
    pkt = IP(src=p.src.ip, dst=p.dst.ip, id=ip.ident, flags="DF", ttl=ip.ttl) / TCP(
        sport=p.src.port,
        dport=p.dst.port,
        seq=p.seq,
        ack=p.ack,
        flags=p.flags,
        window=tcp.window,
        options=scapy_options(tcp.options_raw),
    )
    if p.payload:
        pkt = pkt / Raw(p.payload)
    return bytes(pkt)


def example_packets(**kw: object) -> list[BuiltPacket]:
    return build_conversations(load_messages(EXAMPLE_CSV, framing="auto"), BuildOptions(**kw))  # type: ignore[arg-type]


def test_example_conversation_matches_scapy_byte_for_byte() -> None:
    packets = example_packets()
    assert len(packets) == 26
    for p in packets:
        assert p.datagram == scapy_packet(p)


def test_ethernet_frames_match_scapy() -> None:
    link = LinkOptions("ethernet", {"web_server": bytes.fromhex("001122334455")})
    for p in example_packets()[:6]:
        frame = frame_for(p, link)
        src = "00:11:22:33:44:55" if p.src.name == "web_server" else "02:00:7f:00:00:01"
        dst = "00:11:22:33:44:55" if p.dst.name == "web_server" else "02:00:7f:00:00:01"
        assert frame == bytes(Ether(src=src, dst=dst) / IP(scapy_packet(p)))


ports = st.integers(1, 65535)
u32 = st.integers(0, 2**32 - 1)
ips = st.integers(1, 2**32 - 1).map(format_ipv4)


@settings(deadline=None, max_examples=60)
@given(
    src=ips, dst=ips, sport=ports, dport=ports, seq=u32, ack=u32,
    flags=st.integers(0, 255), window=st.integers(0, 65535), ident=st.integers(0, 65535),
    ttl=st.integers(1, 255), payload=st.binary(max_size=300),
    ts=st.none() | st.tuples(u32, u32), mss=st.none() | st.integers(0, 65535),
    wscale=st.none() | st.integers(0, 14), sack=st.booleans(),
)  # fmt: skip
def test_ipv4_tcp_packet_matches_scapy(
    src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
    ident: int, ttl: int, payload: bytes, ts: tuple[int, int] | None, mss: int | None,
    wscale: int | None, sack: bool,
) -> None:  # fmt: skip
    opts = encode_options(TcpOptions(mss, wscale, sack, ts), bool(flags & TcpFlags.SYN))
    ours = ipv4_tcp_packet(
        ipv4_to_int(src), ipv4_to_int(dst), sport, dport, seq, ack, flags, window, opts,
        payload, ident, ttl,
    )  # fmt: skip
    theirs = IP(src=src, dst=dst, id=ident, flags="DF", ttl=ttl) / TCP(
        sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=window,
        options=scapy_options(opts),
    )  # fmt: skip
    if payload:
        theirs = theirs / Raw(payload)
    assert ours == bytes(theirs)
    # the slower, layered builders agree with the fast one
    seg = build_tcp_segment(
        ipv4_to_int(src), ipv4_to_int(dst), sport, dport, seq, ack, flags, window, opts, payload
    )
    assert (
        build_ipv4(
            ipv4_to_int(src).to_bytes(4, "big"),
            ipv4_to_int(dst).to_bytes(4, "big"),
            6,
            seg,
            ident,
            ttl,
        )
        == ours
    )
    # a correct checksum sums to zero
    assert internet_checksum(ours[:20]) == 0


def test_sequence_numbers_advance_and_acks_track_the_peer() -> None:
    packets = example_packets()
    client = packets[0]
    c_isn, s_isn = client.seq, packets[1].seq
    assert client.flags == TcpFlags.SYN and packets[1].flags == TcpFlags.SYN | TcpFlags.ACK
    assert packets[1].ack == (c_isn + 1) % 2**32
    sent = {True: 1, False: 1}
    for p in packets[2:]:
        from_client = p.src.name == "client_browser"
        rel_seq = (p.seq - (c_isn if from_client else s_isn)) % 2**32
        assert rel_seq == sent[from_client], p
        rel_ack = (p.ack - (s_isn if from_client else c_isn)) % 2**32
        assert rel_ack == sent[not from_client]
        sent[from_client] += len(p.payload) + (1 if p.flags & TcpFlags.FIN else 0)
    # every message is exactly one data segment and they are all distinct sequence ranges
    data = [p for p in packets if p.payload]
    assert [p.msg_id for p in data] == [str(i) for i in range(1, 11)]
    assert [p.ts_ns for p in packets] == sorted(p.ts_ns for p in packets)
    # handshake just before the first message
    assert packets[2].ts_ns < data[0].ts_ns


def test_long_message_is_segmented_at_mss_and_acked() -> None:
    a, b = Endpoint("10.0.0.2", 40000, "a"), Endpoint("10.0.0.1", 7878, "b")
    text = bytes(range(256)) * 20  # 5120 bytes
    packets = build_conversations([AppMessage(a, b, text, 10**18)], BuildOptions(mss=1000))
    data = [p for p in packets if p.payload]
    assert [len(p.payload) for p in data] == [988] * 5 + [180]
    assert b"".join(p.payload for p in data) == text
    assert all(not p.flags & TcpFlags.PSH for p in data[:-1]) and data[-1].flags & TcpFlags.PSH
    assert all(len(p.datagram) <= 20 + 20 + 12 + 988 for p in data)


def test_ip_identification_counts_per_host() -> None:
    packets = build_conversations(
        load_messages(EXAMPLE_CSV, parse_hosts("client_browser=10.0.0.2,web_server=10.0.0.1"))
    )
    for host in ("10.0.0.2", "10.0.0.1"):
        ids = [parse_ipv4(p.datagram).ident for p in packets if p.src.ip == host]
        assert ids == [(ids[0] + i) % 65536 for i in range(len(ids))]
    assert all(parse_ipv4(p.datagram).dont_fragment for p in packets)


def test_written_pcap_reads_back_in_scapy_with_times() -> None:
    packets = example_packets()
    buf = io.BytesIO()
    write_capture(buf, packets, LinkOptions("raw"))
    read = rdpcap(io.BytesIO(buf.getvalue()))
    assert [bytes(r) for r in read] == [p.datagram for p in packets]
    assert [round(float(r.time) * 1e6) for r in read] == [p.ts_ns // 1000 for p in packets]


def test_csv_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(MessageFileError, match="missing column"):
        parse_messages("a,b\n1,2\n")
    header = "msg_id,app_protocol,src_app,dst_app,src_port,dst_port,message,timestamp\n"
    with pytest.raises(MessageFileError, match="line 2: src_port 'x'"):
        parse_messages(header + "1,HTTP,a,b,x,80,hi,0\n")
    with pytest.raises(MessageFileError, match="out of range"):
        parse_messages(header + "1,HTTP,a,b,70000,80,hi,0\n")
    with pytest.raises(MessageFileError, match="timestamp"):
        parse_messages(header + "1,HTTP,a,b,1,80,hi,soon\n")
    with pytest.raises(MessageFileError, match="same address and port"):
        parse_messages(header + "1,HTTP,a,b,80,80,hi,0\n")
    with pytest.raises(MessageFileError, match="not an IPv4"):
        parse_hosts("a=1.2.3")
    with pytest.raises(MessageFileError, match="cannot read"):
        load_messages(tmp_path / "absent.csv")
