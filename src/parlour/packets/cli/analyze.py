"""``parlour packets analyze``: a Wireshark-like view of a capture, in the terminal.

Thin adapter over :mod:`parlour.packets.analyze`: the capture is read and analysed packet by
packet (:func:`~parlour.packets.analyze.dissect.iter_analysis`) and every row is written as
soon as it is made — plain aligned columns, CSV or JSON — so a capture of any size is shown in
constant memory; a rich table is drawn on a terminal when the list is short. ``--explain`` and
``--plot`` look at whole conversations and keep the analysis in memory. A capture that ends in
the middle of a packet is shown up to its last complete packet, then reported (exit status 2,
like tshark).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import click

from parlour.packets.analyze.dissect import Analysis, PacketAnalysis, analyze, iter_analysis
from parlour.packets.analyze.filters import FilterError, PacketFilter, parse_filters
from parlour.packets.analyze.follow import Follower, StreamChunk, missing_text
from parlour.packets.analyze.tcp_analysis import Conversation, Direction, endpoint_text
from parlour.packets.files.records import CaptureFormatError

__all__ = ["analyze_command", "packet_row", "render_plain_packets"]

#: above this many rows the terminal gets plain aligned lines, printed as they are made
RICH_MAX_ROWS = 5000
#: bytes of followed data kept per conversation when several are followed at once
FOLLOW_KEEP = 64 * 1024 * 1024
PACKET_COLUMNS = ("No.", "Time", "Source", "Destination", "Protocol", "Length", "Info")
#: → is client to server, ← server to client; durations per direction and overall
CONVERSATION_COLUMNS = (
    "Stream", "Client", "Server", "Packets →", "Bytes →", "Duration →", "Packets ←", "Bytes ←",
    "Duration ←", "Start", "Duration", "Initial RTT",
)  # fmt: skip


def _secs(ns: int | None) -> str:
    return "" if ns is None else f"{ns / 1e9:.6f}"


def packet_row(pa: PacketAnalysis) -> tuple[str, ...]:
    """The Wireshark packet-list columns of one packet, as text."""
    p = pa.packet
    return (
        str(p.number), _secs(pa.time_rel_ns), p.src or "", p.dst or "", pa.protocol,
        str(p.wire_len), pa.info,
    )  # fmt: skip


def conversation_row(c: Conversation) -> tuple[str, ...]:
    return (
        str(c.stream), endpoint_text(c.client), endpoint_text(c.server),
        str(c.to_server.packets), str(c.to_server.bytes), _secs(c.to_server.duration_ns),
        str(c.to_client.packets), str(c.to_client.bytes), _secs(c.to_client.duration_ns),
        _secs(c.start_rel_ns), _secs(c.duration_ns), _secs(c.handshake_rtt_ns),
    )  # fmt: skip


def _quote(value: str) -> str:
    """A CSV field as the csv module's minimal quoting writes it."""
    if '"' in value or "," in value or "\n" in value or "\r" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def _csv_row(pa: PacketAnalysis) -> str:
    """One packet as a CSV line (what ``csv.writer`` writes, five times faster)."""
    p = pa.packet
    t = pa.tcp
    flags = pa.flags
    return (
        f"{p.number},{pa.time_rel_ns / 1e9:.6f},{_quote(p.src or '')},{_quote(p.dst or '')},"
        f"{_quote(pa.protocol)},{p.wire_len},{_quote(pa.info)},{'' if t is None else t.stream},"
        f"{_quote(';'.join(flags)) if flags else ''}\n"
    )


def _plain(row: Sequence[str]) -> str:
    no, t, src, dst, proto, length, info = row
    return f"{no:>6} {t:>11} {src:>15} → {dst:<15} {proto:<8} {length:>6} {info}"


def render_plain_packets(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Aligned columns like ``tshark``'s one-line summaries."""
    return [_plain(r) for r in rows]


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
        "info": pa.info,
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
        out["udp"] = {"sport": p.udp_ports[0], "dport": p.udp_ports[1], "len": p.seglen}
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


def _chunk_lines(conv: Conversation, chunk: StreamChunk) -> list[str]:
    client, server = endpoint_text(conv.client), endpoint_text(conv.server)
    arrow = f"{client} → {server}" if chunk.from_client else f"{server} → {client}"
    when = _secs(chunk.time_rel_ns)
    if chunk.missing:
        what = (
            f"[{chunk.missing} bytes cut by the snap length]" if chunk.snapped
            else missing_text(chunk.missing)
        )  # fmt: skip
        return [f"[{when}] {arrow}: {what}"]
    if chunk.text is not None:
        return [f"[{when}] {arrow}: {chunk.text}"]
    lines = [f"[{when}] {arrow} ({len(chunk.data)} bytes)"]
    body = _printable(chunk.data).rstrip("\n")
    lines.extend("    " + line for line in body.split("\n"))
    return lines


def _chunk_json(chunk: StreamChunk) -> dict[str, Any]:
    out: dict[str, Any] = {
        "number": chunk.number,
        "time": chunk.time_rel_ns / 1e9,
        "from": "client" if chunk.from_client else "server",
    }
    if chunk.missing:
        out["missing"] = chunk.missing
        if chunk.snapped:
            out["snapped"] = True
    elif chunk.text is not None:
        out["text"] = chunk.text
    else:
        out["data"] = chunk.data.decode("utf-8", "replace")
    return out


class _Out:
    """Rows written in batches: one ``click.echo`` per row costs more than analysing it."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)
        if len(self.parts) >= 4096:
            self.flush()

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def flush(self) -> None:
        if self.parts:
            click.echo("".join(self.parts), nl=False)
            self.parts.clear()


class _Follow:
    """Followers for the conversations being followed, fed as packets go by."""

    def __init__(self, stream: int | None) -> None:
        self.stream = stream
        self.followers: dict[int, Follower] = {}
        self.chunks: dict[int, list[StreamChunk]] = {}
        self.kept: dict[int, int] = {}
        self.dropped: dict[int, int] = {}

    def feed(self, pa: PacketAnalysis) -> None:
        t = pa.tcp
        if t is None or (self.stream is not None and t.stream != self.stream):
            return
        f = self.followers.get(t.stream)
        if f is None:
            if not t.seglen:
                return
            f = self.followers[t.stream] = Follower(t.stream, pa.app_kind == "chat")
            self.chunks[t.stream] = []
        self._keep(t.stream, f.feed(pa))

    def _keep(self, stream: int, chunks: list[StreamChunk]) -> None:
        kept = self.chunks[stream]
        for c in chunks:
            size = len(c.data) + len(c.text or "")
            if self.stream is None and self.kept.get(stream, 0) + size > FOLLOW_KEEP:
                self.dropped[stream] = self.dropped.get(stream, 0) + size
                continue
            self.kept[stream] = self.kept.get(stream, 0) + size
            kept.append(c)

    def finish(self) -> None:
        for stream, f in self.followers.items():
            self._keep(stream, f.finish())

    def json(self, convs: Sequence[Conversation]) -> list[dict[str, Any]]:
        return [
            {"stream": c.stream, "chunks": [_chunk_json(k) for k in self.chunks.get(c.stream, ())]}
            for c in convs
            if c.stream in self.followers
        ]

    def lines(self, conv: Conversation) -> Iterator[str]:
        client, server = endpoint_text(conv.client), endpoint_text(conv.server)
        yield f"=== Follow TCP stream {conv.stream}: {client} ↔ {server} ==="
        for chunk in self.chunks.get(conv.stream, ()):
            yield from _chunk_lines(conv, chunk)
        if self.dropped.get(conv.stream):
            yield (
                f"… {self.dropped[conv.stream]} more bytes not shown (follow this conversation "
                f"alone: --follow --stream {conv.stream})"
            )
        yield ""


def _print_rich(rows: Sequence[tuple[str, ...]], conv_rows: Sequence[tuple[str, ...]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if rows:
        table = Table(show_lines=False, header_style="bold", box=None, pad_edge=False)
        for col in PACKET_COLUMNS:
            table.add_column(col, justify="right" if col in ("No.", "Time", "Length") else "left",
                             overflow="fold")  # fmt: skip
        for row in rows:
            style = "red" if "[TCP " in row[6] or "RST" in row[6] else None
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
    convs: Sequence[Conversation], streams_shown: set[int], flt: PacketFilter, stream: int | None
) -> list[Conversation]:
    if stream is not None:
        return [c for c in convs if c.stream == stream]
    if not flt:
        return list(convs)
    return [c for c in convs if c.stream in streams_shown]


def _no_stream(capture: Path, stream: int, convs: Sequence[Conversation]) -> click.BadParameter:
    n = len(convs)
    return click.BadParameter(
        f"no TCP conversation {stream} in {capture} (it has " + (f"0-{n - 1})" if n else "none)"),
        param_hint="--stream",
    )


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
@click.option(
    "--direction",
    type=click.Choice(["both", "client", "server"]),
    default="both",
    show_default=True,
    help="--plot: the data the client sends, the server sends, or both (one panel each).",
)
@click.option(
    "--checksums",
    "checksums",
    is_flag=True,
    help="Verify IPv4 and TCP checksums, as tshark -o tcp.check_checksum:TRUE does (bad ones "
    "are flagged; the segment is not reassembled). Off by default, as in tshark.",
)
@click.option("--no-checksums", "no_checksums", is_flag=True, hidden=True)
def analyze_command(
    capture: Path,
    fmt: Literal["table", "json", "csv"],
    filters: tuple[str, ...],
    only_convs: bool,
    do_follow: bool,
    explain: bool,
    stream: int | None,
    plot: Path | None,
    direction: Literal["both", "client", "server"],
    checksums: bool,
    no_checksums: bool,
) -> None:
    """Analyse CAPTURE (pcap or pcapng, as written by tshark, tcpdump, Wireshark or
    `parlour packets build`): packet list, conversations, TCP analysis flags and the Info
    column like tshark's, decoded chat and HTTP."""
    try:
        flt = parse_filters(filters)
    except FilterError as exc:
        raise click.BadParameter(str(exc), param_hint="--filter") from None
    if fmt == "csv" and (do_follow or explain):
        raise click.UsageError("--follow and --explain print text: use --format table or json")
    verify = checksums and not no_checksums
    try:
        if explain or plot is not None:
            result = analyze(capture, verify)
            problem = _whole(capture, result, fmt, flt, only_convs, do_follow, explain, stream,
                             plot, direction)  # fmt: skip
        else:
            problem = _streaming(capture, fmt, flt, only_convs, do_follow, stream, verify)
    except CaptureFormatError as exc:
        raise click.ClickException(f"{capture}: {exc}") from None
    if problem:
        click.echo(
            f"parlour packets: {capture} {problem}; the packets before it are shown", err=True
        )
        raise click.exceptions.Exit(2)


def _streaming(
    capture: Path, fmt: str, flt: PacketFilter, only_convs: bool, do_follow: bool,
    stream: int | None, verify: bool,
) -> str | None:  # fmt: skip
    """Show the packets as they are analysed; returns the reading problem, if any."""
    gen = iter_analysis(capture, verify)
    follow = _Follow(stream) if do_follow else None
    show_packets = not only_convs and not do_follow
    streams_shown: set[int] = set()
    out = _Out()
    echo = out.line
    tty_rows: list[tuple[str, ...]] | None = (
        [] if fmt == "table" and sys.stdout.isatty() and show_packets else None
    )
    writer = csv.writer(out, lineterminator="\n")
    if fmt == "csv":
        if only_convs:
            writer.writerow(CONVERSATION_COLUMNS)
        else:
            writer.writerow((*PACKET_COLUMNS, "Stream", "Flags"))
    first_json = True
    if fmt == "json":
        echo('{"capture": ' + json.dumps(str(capture)) + ', "filter": '
             + json.dumps(str(flt) or None) + ',')  # fmt: skip
        if show_packets:
            echo(' "packets": [')
    summary: Analysis
    while True:
        try:
            pa = next(gen)
        except StopIteration as stop:
            summary = stop.value
            break
        if flt and not flt(pa):
            continue
        if pa.tcp is not None:
            streams_shown.add(pa.tcp.stream)
        if follow is not None:
            follow.feed(pa)
        if not show_packets:
            continue
        if fmt == "json":
            echo(("  " if first_json else " ,") + json.dumps(packet_json(pa), ensure_ascii=False))
            first_json = False
        elif fmt == "csv":
            out.write(_csv_row(pa))
        elif tty_rows is not None:
            tty_rows.append(packet_row(pa))
            if len(tty_rows) > RICH_MAX_ROWS:  # a long list: plain lines from here on
                for row in tty_rows:
                    echo(_plain(row))
                tty_rows = None
        else:
            echo(_plain(packet_row(pa)))
    convs = summary.conversations
    if stream is not None and not any(c.stream == stream for c in convs):
        raise _no_stream(capture, stream, convs)
    selected = _select_conversations(convs, streams_shown, flt, stream)
    if follow is not None:
        follow.finish()
    if fmt == "json":
        if show_packets:
            echo(" ],")
        out.write(' "conversations": ' + json.dumps([conversation_json(c) for c in selected]))
        if follow is not None:
            docs = follow.json(selected)
            out.write(',\n "follow": ' + json.dumps(docs, ensure_ascii=False))
        echo("\n}")
        out.flush()
        return summary.problem
    if fmt == "csv":
        if only_convs:
            writer.writerows(conversation_row(c) for c in selected)
        out.flush()
        return summary.problem
    conv_rows = [] if do_follow else [conversation_row(c) for c in selected]
    if tty_rows is not None:
        out.flush()
        _print_rich(tty_rows, conv_rows)
    elif conv_rows:
        if show_packets:
            echo()
        echo("Conversations")
        for line in _plain_table(CONVERSATION_COLUMNS, conv_rows):
            echo(line)
    if follow is not None:
        for conv in selected:
            if conv.stream in follow.followers:
                for line in follow.lines(conv):
                    echo(line)
    out.flush()
    return summary.problem


def _whole(
    capture: Path, result: Analysis, fmt: str, flt: PacketFilter, only_convs: bool,
    do_follow: bool, explain: bool, stream: int | None, plot: Path | None,
    direction: Literal["both", "client", "server"],
) -> str | None:  # fmt: skip
    """--explain and --plot: the whole analysis is in memory."""
    from parlour.packets.analyze.explain import explain_analysis

    convs = result.conversations
    if stream is not None and not any(c.stream == stream for c in convs):
        raise _no_stream(capture, stream, convs)
    if plot is not None:
        from parlour.packets.analyze.seqplot import PlotError, plot_sequence

        try:
            plotted = plot_sequence(result, stream, plot, direction)
        except PlotError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"wrote the sequence graph of conversation {plotted.stream} to {plot}", err=True)
    shown = [pa for pa in result.packets if flt(pa)] if flt else list(result.packets)
    streams_shown = {pa.tcp.stream for pa in shown if pa.tcp is not None}
    selected = _select_conversations(convs, streams_shown, flt, stream)
    follow = _Follow(stream) if do_follow else None
    if follow is not None:
        for pa in shown:
            follow.feed(pa)
        follow.finish()
    lines = explain_analysis(result, stream) if explain else []
    if fmt == "json":
        doc: dict[str, Any] = {"capture": str(capture), "filter": str(flt) or None}
        if not only_convs and not explain and not do_follow:
            doc["packets"] = [packet_json(pa) for pa in shown]
        doc["conversations"] = [conversation_json(c) for c in selected]
        if follow is not None:
            doc["follow"] = follow.json(selected)
        if explain:
            doc["explain"] = lines
        click.echo(json.dumps(doc, ensure_ascii=False, indent=1))
        return result.problem
    if follow is not None:
        for conv in selected:
            if conv.stream in follow.followers:
                for line in follow.lines(conv):
                    click.echo(line)
    for line in lines:
        click.echo(line)
    return result.problem
