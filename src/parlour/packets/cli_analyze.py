"""``parlour packets analyze``: a Wireshark-like view of a capture, in the terminal.

Thin adapter: read the file, :func:`~parlour.packets.decode.decode_capture`,
:func:`~parlour.packets.analysis.analyze`, then render (rich table on a terminal, plain
columns when piped, JSON or CSV), follow streams, narrate or plot.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import click

from parlour.packets.analysis import (
    Analysis,
    Conversation,
    Direction,
    PacketAnalysis,
    analyze,
    endpoint_text,
    follow,
)
from parlour.packets.decode import decode_capture
from parlour.packets.filters import FilterError, PacketFilter, parse_filters
from parlour.packets.records import CaptureFormatError

__all__ = ["analyze_command", "packet_row", "render_plain_packets"]

#: above this many rows the terminal gets plain aligned lines, printed as they are made
RICH_MAX_ROWS = 5000
PACKET_COLUMNS = ("No.", "Time", "Source", "Destination", "Protocol", "Length", "Info")
#: → is client to server, ← server to client; durations per direction and overall
CONVERSATION_COLUMNS = (
    "Stream", "Client", "Server", "Packets →", "Bytes →", "Duration →", "Packets ←", "Bytes ←",
    "Duration ←", "Start", "Duration", "Initial RTT",
)  # fmt: skip


def _secs(ns: int | None) -> str:
    return "" if ns is None else f"{ns / 1e9:.6f}"


def _info(pa: PacketAnalysis) -> str:
    text = pa.info
    p = pa.packet
    if p.ip_checksum_ok is False:
        text += " [bad IP checksum]"
    if p.tcp_checksum_ok is False:
        text += " [bad TCP checksum]"
    return text


def packet_row(pa: PacketAnalysis) -> tuple[str, ...]:
    """The Wireshark packet-list columns of one packet, as text."""
    p = pa.packet
    return (
        str(p.number),
        _secs(pa.time_rel_ns),
        p.src or "",
        p.dst or "",
        pa.protocol,
        str(p.wire_len),
        _info(pa),
    )


def _endpoint(ep: tuple[str, int]) -> str:
    return endpoint_text(ep)


def conversation_row(c: Conversation) -> tuple[str, ...]:
    return (
        str(c.stream), _endpoint(c.client), _endpoint(c.server), str(c.to_server.packets),
        str(c.to_server.bytes), _secs(c.to_server.duration_ns), str(c.to_client.packets),
        str(c.to_client.bytes), _secs(c.to_client.duration_ns), _secs(c.start_rel_ns),
        _secs(c.duration_ns), _secs(c.handshake_rtt_ns),
    )  # fmt: skip


def render_plain_packets(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Aligned columns like ``tshark``'s one-line summaries."""
    out = []
    for no, t, src, dst, proto, length, info in rows:
        out.append(f"{no:>6} {t:>11} {src:>15} → {dst:<15} {proto:<8} {length:>6} {info}")
    return out


def _plain_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return lines


def _direction_json(d: Direction) -> dict[str, Any]:
    return {
        "packets": d.packets, "bytes": d.bytes, "payload_bytes": d.payload,
        "start": None if d.start_rel_ns is None else d.start_rel_ns / 1e9,
        "duration": d.duration_ns / 1e9,
    }  # fmt: skip


def conversation_json(c: Conversation) -> dict[str, Any]:
    return {
        "stream": c.stream,
        "client": {"address": c.client[0], "port": c.client[1]},
        "server": {"address": c.server[0], "port": c.server[1]},
        "to_server": _direction_json(c.to_server),
        "to_client": _direction_json(c.to_client),
        "packets": c.packets,
        "bytes": c.bytes,
        "start": c.start_rel_ns / 1e9,
        "duration": c.duration_ns / 1e9,
        "initial_rtt": None if c.handshake_rtt_ns is None else c.handshake_rtt_ns / 1e9,
    }


def packet_json(pa: PacketAnalysis) -> dict[str, Any]:
    p = pa.packet
    out: dict[str, Any] = {
        "number": p.number,
        "time": pa.time_rel_ns / 1e9,
        "epoch_ns": p.ts_ns,
        "source": p.src,
        "destination": p.dst,
        "protocol": pa.protocol,
        "length": p.wire_len,
        "captured_length": p.cap_len,
        "info": _info(pa),
        "flags": list(pa.flags),
    }
    if pa.tcp is not None:
        t = pa.tcp
        out["tcp"] = {
            "stream": t.stream, "sport": t.sport, "dport": t.dport, "flags": t.flags,
            "seq": t.rel_seq, "ack": t.rel_ack, "raw_seq": t.seq, "raw_ack": t.ack,
            "len": t.seglen, "window": t.window,
        }  # fmt: skip
    elif p.udp_ports is not None:
        out["udp"] = {"sport": p.udp_ports[0], "dport": p.udp_ports[1], "len": len(p.payload)}
    if pa.app is not None:
        out["app"] = {"protocol": pa.app[0], "text": pa.app[1]}
    if p.ip_checksum_ok is not None or p.tcp_checksum_ok is not None:
        out["checksums"] = {"ip_ok": p.ip_checksum_ok, "tcp_ok": p.tcp_checksum_ok}
    if p.problem:
        out["problem"] = p.problem
    if p.comment:
        out["comment"] = p.comment
    return out


def _printable(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "." for ch in text)


def _follow_lines(analysis: Analysis, conv: Conversation) -> list[str]:
    client, server = _endpoint(conv.client), _endpoint(conv.server)
    lines = [f"=== Follow TCP stream {conv.stream}: {client} ↔ {server} ==="]
    for chunk in follow(analysis, conv.stream):
        arrow = f"{client} → {server}" if chunk.from_client else f"{server} → {client}"
        if chunk.text is not None:
            lines.append(f"[{_secs(chunk.time_rel_ns)}] {arrow}: {chunk.text}")
        else:
            lines.append(f"[{_secs(chunk.time_rel_ns)}] {arrow} ({len(chunk.data)} bytes)")
            body = _printable(chunk.data).rstrip("\n")
            lines.extend("    " + line for line in body.split("\n"))
    lines.append("")
    return lines


def _follow_json(analysis: Analysis, conv: Conversation) -> dict[str, Any]:
    return {
        "stream": conv.stream,
        "chunks": [
            {
                "number": c.number,
                "time": c.time_rel_ns / 1e9,
                "from": "client" if c.from_client else "server",
                "data": None if c.text is not None else c.data.decode("utf-8", "replace"),
                "text": c.text,
            }
            for c in follow(analysis, conv.stream)
        ],
    }


def _print_rich(
    rows: Sequence[tuple[str, ...]], conv_rows: Sequence[tuple[str, ...]], show_packets: bool
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if show_packets:
        table = Table(show_lines=False, header_style="bold", box=None, pad_edge=False)
        for col in PACKET_COLUMNS:
            table.add_column(col, justify="right" if col in ("No.", "Time", "Length") else "left",
                             overflow="fold")  # fmt: skip
        for row in rows:
            style = "red" if "[TCP " in row[6] or "bad " in row[6] or "RST" in row[6] else None
            table.add_row(*row, style=style)
        console.print(table)
    if conv_rows:
        ct = Table(title="Conversations", header_style="bold", box=None)
        for col in ("#", "Client ↔ Server", "→ pkts/bytes/s", "← pkts/bytes/s", "Start",
                    "Duration", "Initial RTT"):  # fmt: skip
            ct.add_column(col, overflow="fold")
        for c in conv_rows:
            ct.add_row(c[0], f"{c[1]} ↔ {c[2]}", f"{c[3]}/{c[4]}/{c[5]}", f"{c[6]}/{c[7]}/{c[8]}",
                       *c[9:])  # fmt: skip
        console.print(ct)


def _select_conversations(
    analysis: Analysis, shown: Sequence[PacketAnalysis], flt: PacketFilter, stream: int | None
) -> list[Conversation]:
    if stream is not None:
        return [c for c in analysis.conversations if c.stream == stream]
    if not flt:
        return list(analysis.conversations)
    streams = {pa.tcp.stream for pa in shown if pa.tcp is not None}
    return [c for c in analysis.conversations if c.stream in streams]


@click.command("analyze")
@click.argument("capture", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="table: rich on a terminal, aligned text when piped.",
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="EXPR",
    help="KEY=VALUE[,VALUE] or KEY!=VALUE terms, all must match; keys host, src, dst, port, "
    "sport, dport, stream, proto, flag (e.g. 'port=7878 flag=retransmission,rst'). Repeatable.",
)
@click.option("--conversations", "only_convs", is_flag=True, help="Only the conversations table.")
@click.option("--follow", "do_follow", is_flag=True, help="Print each conversation's data.")
@click.option("--explain", is_flag=True, help="Narrate the conversations like a lab report.")
@click.option("--stream", type=int, metavar="N", help="Conversation for --follow/--explain/--plot.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.png",
    help="Draw the TCP sequence-number graph of --stream N (default: the largest).",
)
@click.option("--no-checksums", is_flag=True, help="Do not verify IPv4 and TCP checksums.")
def analyze_command(
    capture: Path,
    fmt: Literal["table", "json", "csv"],
    filters: tuple[str, ...],
    only_convs: bool,
    do_follow: bool,
    explain: bool,
    stream: int | None,
    plot: Path | None,
    no_checksums: bool,
) -> None:
    """Analyse CAPTURE (pcap or pcapng, as written by tshark, tcpdump, Wireshark or
    `parlour packets build`): packet list, conversations, TCP analysis flags like tshark's,
    decoded chat and HTTP lines."""
    try:
        flt = parse_filters(filters)
    except FilterError as exc:
        raise click.BadParameter(str(exc), param_hint="--filter") from None
    if fmt == "csv" and (do_follow or explain):
        raise click.UsageError("--follow and --explain print text: use --format table or json")
    try:
        table = decode_capture(capture)
    except CaptureFormatError as exc:
        raise click.ClickException(f"{capture}: {exc}") from None
    table.verify_checksums = not no_checksums
    result = analyze(table)
    if stream is not None and not any(c.stream == stream for c in result.conversations):
        n = len(result.conversations)
        raise click.BadParameter(
            f"no TCP conversation {stream} in {capture} (it has "
            + (f"0-{n - 1})" if n else "none)"),
            param_hint="--stream",
        )
    shown = [pa for pa in result.packets if flt(pa)] if flt else list(result.packets)
    convs = _select_conversations(result, shown, flt, stream)
    follow_convs = [c for c in convs if stream is None or c.stream == stream]
    plotted: Conversation | None = None
    if plot is not None:
        from parlour.packets.seqplot import PlotError, plot_sequence

        try:
            plotted = plot_sequence(result, stream, plot)
        except PlotError as exc:
            raise click.ClickException(str(exc)) from None
    if fmt == "json":
        doc: dict[str, Any] = {"capture": str(capture), "filter": str(flt) or None}
        if not only_convs:
            doc["packets"] = [packet_json(pa) for pa in shown]
        doc["conversations"] = [conversation_json(c) for c in convs]
        if do_follow:
            doc["follow"] = [_follow_json(result, c) for c in follow_convs]
        if explain:
            from parlour.packets.explain import explain_analysis

            doc["explain"] = explain_analysis(result, stream)
        click.echo(json.dumps(doc, ensure_ascii=False, indent=1))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if only_convs:
            writer.writerow(CONVERSATION_COLUMNS)
            writer.writerows(conversation_row(c) for c in convs)
        else:
            writer.writerow((*PACKET_COLUMNS, "Stream", "Flags"))
            for pa in shown:
                writer.writerow(
                    (*packet_row(pa), "" if pa.tcp is None else pa.tcp.stream, ";".join(pa.flags))
                )
        click.echo(buf.getvalue(), nl=False)
    else:
        rows = [] if only_convs else [packet_row(pa) for pa in shown]
        conv_rows = [conversation_row(c) for c in convs]
        if explain or do_follow:
            rows, conv_rows = [], []
        # rich on a terminal; plain lines when piped or when the list is long (streams)
        if sys.stdout.isatty() and (rows or conv_rows) and len(rows) <= RICH_MAX_ROWS:
            _print_rich(rows, conv_rows, not only_convs)
        else:
            for line in render_plain_packets(rows):
                click.echo(line)
            if conv_rows:
                if rows:
                    click.echo()
                click.echo("Conversations")
                for line in _plain_table(CONVERSATION_COLUMNS, conv_rows):
                    click.echo(line)
        if do_follow:
            for conv in follow_convs:
                for line in _follow_lines(result, conv):
                    click.echo(line)
        if explain:
            from parlour.packets.explain import explain_analysis

            for line in explain_analysis(result, stream):
                click.echo(line)
    if plotted is not None:
        click.echo(f"wrote the sequence graph of conversation {plotted.stream} to {plot}", err=True)
