"""Plain-words narration of TCP packets ("client opens the connection: SYN, seq 0 ...")."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from parlour.packets.analysis import Analysis, endpoint_text, retransmitted
from parlour.packets.appdecode import chat_line_count, describe_payload
from parlour.packets.conversation import BuiltPacket
from parlour.packets.ipv4 import parse_ipv4
from parlour.packets.tcp import TcpFlags, TcpOptions, decode_options, parse_tcp

__all__ = ["Story", "explain_analysis", "explain_built", "narrate"]

SYN, ACK, FIN, RST, PSH = (int(f) for f in (TcpFlags.SYN, TcpFlags.ACK, TcpFlags.FIN,
                                            TcpFlags.RST, TcpFlags.PSH))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Story:
    """What the narrator needs to know about one TCP segment."""

    stream: int
    src: str
    dst: str
    flags: int
    rel_seq: int
    rel_ack: int
    seglen: int
    window: int
    options: TcpOptions
    payload: bytes
    analysis: tuple[str, ...] = ()
    #: decoded application text when the caller reassembled the stream itself
    app: tuple[str, str] | None = None
    app_known: bool = False
    #: the data is the start or middle of a chat line another segment completes
    partial_line: bool = False


def _offers(o: TcpOptions) -> str:
    parts = []
    if o.mss is not None:
        parts.append(f"MSS {o.mss}")
    if o.wscale is not None:
        parts.append(f"window scale {o.wscale} (×{1 << min(o.wscale, 14)})")
    if o.sack_permitted:
        parts.append("SACK permitted")
    if o.timestamps is not None:
        parts.append("timestamps")
    return (", offering " + ", ".join(parts)) if parts else ""


def narrate(stories: Sequence[Story]) -> list[str]:
    """One sentence per packet, tracking each stream's handshake and teardown."""
    out: list[str] = []
    fins: dict[int, set[str]] = {}
    synack_seen: dict[int, bool] = {}
    established: dict[int, bool] = {}
    for s in stories:
        f = s.flags
        closed = fins.setdefault(s.stream, set())
        if f & RST:
            text = f"{s.src} resets the connection (RST, seq {s.rel_seq}): {s.dst} must stop"
        elif f & SYN and not f & ACK:
            text = f"{s.src} opens a connection to {s.dst}: SYN, seq 0{_offers(s.options)}"
        elif f & SYN:
            synack_seen[s.stream] = True
            text = (
                f"{s.dst} answers with SYN-ACK: seq 0, ack {s.rel_ack} (acknowledges the SYN)"
                f"{_offers(s.options)}"
            ).replace(f"{s.dst} answers", f"{s.src} answers")
        elif f & FIN:
            other = "also closes" if closed else "closes"
            closed.add(s.src)
            text = f"{s.src} {other} its side: FIN, ACK, seq {s.rel_seq}, ack {s.rel_ack}" + (
                " (it will send nothing more)" if len(closed) == 1 else ""
            )
        elif s.seglen:
            decoded = s.app if s.app_known else describe_payload(s.payload)
            what = f"{decoded[0]} {decoded[1]!r}" if decoded else f"{s.seglen} bytes of data"
            if not decoded and s.partial_line:
                what += " (part of a chat line a later segment completes)"
            flag = "PSH, ACK" if f & PSH else "ACK"
            text = (
                f"{s.src} sends {s.seglen} bytes to {s.dst} ({flag}), seq {s.rel_seq}, "
                f"next seq {s.rel_seq + s.seglen}, ack {s.rel_ack}: {what}"
            )
        elif synack_seen.get(s.stream) and not established.get(s.stream):
            established[s.stream] = True
            text = (
                f"{s.src} completes the three-way handshake: ACK, seq {s.rel_seq}, ack "
                f"{s.rel_ack}; the connection is established"
            )
        elif len(closed) == 2:
            text = f"{s.src} acknowledges the last FIN (ack {s.rel_ack}); the connection is closed"
        else:
            text = (
                f"{s.src} acknowledges all bytes before {s.rel_ack} from {s.dst} "
                f"(ACK, no data, window {s.window})"
            )
        if s.analysis:
            text += f"  [{', '.join(s.analysis)}]"
        out.append(text)
    return out


def explain_built(packets: Sequence[BuiltPacket]) -> list[str]:
    """Narrate packets made by :func:`~parlour.packets.conversation.build_conversations`."""
    isn: dict[tuple[int, str, int], int] = {}
    wscale: dict[tuple[int, str, int], int] = {}
    stories = []
    for p in packets:
        me = (p.stream, p.src.ip, p.src.port)
        peer = (p.stream, p.dst.ip, p.dst.port)
        ip = parse_ipv4(p.datagram)
        tcp = parse_tcp(p.datagram[ip.header_len :])
        opts = decode_options(tcp.options_raw)
        if p.flags & SYN:
            isn[me] = p.seq
            wscale[me] = opts.wscale or 0
        window = tcp.window if p.flags & SYN else tcp.window << wscale.get(me, 0)
        stories.append(
            Story(
                p.stream,
                p.src.name or f"{p.src.ip}:{p.src.port}",
                p.dst.name or f"{p.dst.ip}:{p.dst.port}",
                p.flags,
                (p.seq - isn.get(me, p.seq)) % 2**32,
                (p.ack - isn.get(peer, p.ack)) % 2**32 if p.flags & ACK else 0,
                len(p.payload),
                window,
                opts,
                p.payload,
            )
        )
    return narrate(stories)


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.3f} ms"


def explain_analysis(analysis: Analysis, stream: int | None = None) -> list[str]:
    """A lab-report narration of analysed TCP conversations: for each one a heading, one
    numbered sentence per packet (handshake, login, messages, teardown) and a summary."""
    out: list[str] = []
    for conv in analysis.conversations:
        if stream is not None and conv.stream != stream:
            continue
        client, server = endpoint_text(conv.client), endpoint_text(conv.server)
        names = {True: f"the client {client}", False: f"the server {server}"}
        out.append(f"Conversation {conv.stream}: client {client} ↔ server {server}")
        stories: list[Story] = []
        numbers: list[int] = []
        lines_sent = {True: 0, False: 0}
        chat_sides = {
            pa.tcp.from_client for pa in analysis.packets
            if pa.tcp is not None and pa.tcp.stream == conv.stream and pa.app
            and pa.app[0] == "Parlour"
        }  # fmt: skip
        anomalies: dict[str, int] = {}
        for pa in analysis.packets:
            t = pa.tcp
            if t is None or t.stream != conv.stream:
                continue
            if pa.app and pa.app[0] == "Parlour" and not retransmitted(t.analysis):
                lines_sent[t.from_client] += chat_line_count(pa.app[1])
                if t.from_client and pa.app[1].startswith(("login ", "signup ")):
                    user = pa.app[1].split()[1]
                    names[True] = f"{user} ({client})"
            for flag in pa.flags:
                anomalies[flag] = anomalies.get(flag, 0) + 1
            options = TcpOptions()
            if t.flags & SYN:
                with contextlib.suppress(ValueError):
                    options = decode_options(pa.packet.tcp_options)
            stories.append(
                Story(
                    conv.stream, names[t.from_client], names[not t.from_client], t.flags,
                    t.rel_seq, t.rel_ack, t.seglen, t.window, options, pa.packet.payload,
                    pa.flags, pa.app, True,
                    t.seglen > 0 and pa.app is None and t.from_client in chat_sides
                    and not retransmitted(t.analysis),
                )
            )  # fmt: skip
            numbers.append(pa.packet.number)
        for number, text in zip(numbers, narrate(stories), strict=True):
            out.append(f"{number:>6}  {text}")
        summary = [
            f"{conv.packets} packets in {_ms(conv.duration_ns)}",
            f"{conv.to_server.payload} bytes of data to the server, {conv.to_client.payload} back",
        ]
        if conv.handshake_rtt_ns is not None:
            summary.append(f"handshake round trip {_ms(conv.handshake_rtt_ns)}")
        if lines_sent[True] or lines_sent[False]:
            summary.append(
                f"{lines_sent[True]} chat lines from the client, {lines_sent[False]} from the "
                "server"
            )
        if anomalies:
            summary.append(
                "TCP analysis: " + ", ".join(f"{n}× {flag}" for flag, n in anomalies.items())
            )
        else:
            summary.append("no retransmissions, losses or resets")
        out.append("        Summary: " + "; ".join(summary) + ".")
        out.append("")
    return out
