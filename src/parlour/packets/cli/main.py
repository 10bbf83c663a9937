"""``parlour packets``: build, send, capture and analyse TCP/IP packets."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click

from parlour.packets.build.conversation import (
    ANOMALIES,
    DEFAULT_START_NS,
    BuildOptions,
    BuiltPacket,
    build_conversations,
)
from parlour.packets.build.messages import (
    FRAMINGS,
    MAX_TS_NS,
    MessageFileError,
    load_messages,
    parse_hosts,
    read_hosts_file,
)
from parlour.packets.build.writers import LinkOptions, frame_for, write_capture_file
from parlour.packets.cli.capture import capture
from parlour.packets.cli.options import capture_format_options
from parlour.packets.wire.addresses import parse_mac
from parlour.packets.wire.hexdump import hexdump
from parlour.packets.wire.tcp import flags_text

__all__ = ["packets"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def packets() -> None:
    """Packet lab: build TCP/IP captures from messages, send, capture and analyse them."""


def _hosts(spec: str | None, hosts_file: Path | None) -> dict[str, str]:
    hosts: dict[str, str] = {}
    if hosts_file is not None:
        hosts.update(read_hosts_file(hosts_file))
    if spec:
        hosts.update(parse_hosts(spec))
    return hosts


def _macs(items: tuple[str, ...]) -> dict[str, bytes]:
    macs: dict[str, bytes] = {}
    for item in items:
        name, sep, mac = item.partition("=")
        if not sep:
            raise click.BadParameter(
                f"{item!r}: expected NAME=aa:bb:cc:dd:ee:ff", param_hint="--mac"
            )
        try:
            macs[name.strip()] = parse_mac(mac.strip())
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--mac") from None
    return macs


def _summary(p: BuiltPacket, isns: dict[tuple[int, str, int], int], t0: int) -> str:
    """Wireshark-style one-liner with relative sequence numbers (ISNs learnt from the SYNs)."""
    mine = isns.setdefault((p.stream, p.src.ip, p.src.port), p.seq)
    peer = isns.get((p.stream, p.dst.ip, p.dst.port))
    ack = f" Ack={(p.ack - peer) & 0xFFFFFFFF}" if p.flags & 0x10 and peer is not None else ""
    return (
        f"{(p.ts_ns - t0) / 1e9:.6f}  {p.src.name or p.src.ip}:{p.src.port} → "
        f"{p.dst.name or p.dst.ip}:{p.dst.port}  [{flags_text(p.flags)}] "
        f"Seq={(p.seq - mine) & 0xFFFFFFFF}{ack} Len={len(p.payload)}"
    )


@packets.command()
@click.argument("messages_csv", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Capture to write (.pcap or .pcapng).",
)
@click.option(
    "--hosts",
    "hosts_spec",
    metavar="NAME=IP,...",
    help="Map application names to IPv4 addresses (default 127.0.0.1).",
)
@click.option(
    "--hosts-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File with one NAME=IP per line.",
)
@click.option(
    "--link",
    type=click.Choice(["raw", "ethernet"]),
    default="raw",
    show_default=True,
    help="Link layer of the capture.",
)
@click.option(
    "--mac",
    "macs",
    multiple=True,
    metavar="NAME=MAC",
    help="MAC for a host name or address (Ethernet link); repeatable.",
)
@capture_format_options
@click.option(
    "--framing",
    type=click.Choice(FRAMINGS),
    default="auto",
    show_default=True,
    help="How messages end on the wire (auto: HTTP rows get CRLF CRLF, chat rows LF).",
)
@click.option("--unescape", is_flag=True, help=r"Interpret \r \n \t \xNN escapes in messages.")
@click.option("--mss", type=int, default=1460, show_default=True, help="Maximum segment size.")
@click.option(
    "--start",
    type=click.FloatRange(0, MAX_TS_NS / 1e9),
    default=DEFAULT_START_NS / 1e9,
    show_default=True,
    help="Epoch seconds that relative CSV timestamps count from.",
)
@click.option(
    "--anomaly",
    "anomaly",
    metavar="NAME[,NAME]",
    default="",
    help="Get every message wrong on purpose, to see what tshark makes of it: "
    + ", ".join(ANOMALIES)
    + " (the CSV's anomaly column does it for one row).",
)
@click.option(
    "--new-connection-after",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="A silence this long closes a connection; the next message opens a new one on the "
    "same ports (0: never).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed for initial sequence numbers and IP identifications.",
)
@click.option("--hexdump", "show_hex", is_flag=True, help="Print every packet as a hex dump.")
@click.option("--explain", is_flag=True, help="Narrate every packet in plain words.")
@click.option("--send", is_flag=True, help="Send the packets on a raw socket to loopback (root).")
@click.option(
    "--replay",
    metavar="HOST:PORT|loopback",
    help="Replay the client side of every connection over real TCP connections to a "
    "listener, or 'loopback': play both sides over real connections on 127.0.0.1 with the "
    "CSV's ports.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Replay this many times faster than the CSV timestamps.",
)
def build(
    messages_csv: Path,
    output: Path | None,
    hosts_spec: str | None,
    hosts_file: Path | None,
    link: Literal["raw", "ethernet"],
    macs: tuple[str, ...],
    fmt: Literal["pcap", "pcapng"] | None,
    nanosecond: bool,
    framing: str,
    unescape: bool,
    mss: int,
    start: float,
    anomaly: str,
    new_connection_after: float,
    seed: int,
    show_hex: bool,
    explain: bool,
    send: bool,
    replay: str | None,
    speed: float,
) -> None:  # fmt: skip
    """Turn MESSAGES_CSV into correct TCP conversations and write them as a capture.

    \b
    Columns: msg_id, app_protocol, src_app, dst_app, src_port, dst_port, message,
    timestamp (seconds from --start, or epoch seconds).
    Example: parlour packets build examples/http_messages.csv -o http.pcap --hexdump
    """
    if not (output or show_hex or explain or send or replay):
        raise click.UsageError(
            "nothing to do: give -o FILE, --hexdump, --explain, --send or --replay"
        )
    try:
        hosts = _hosts(hosts_spec, hosts_file)
        messages = load_messages(
            messages_csv, hosts, start_ns=round(start * 1e9), unescape=unescape,
            framing=framing, anomaly=anomaly.strip(),
        )  # fmt: skip
        if not messages:
            raise click.ClickException(f"{messages_csv} has no messages (only a header)")
        gap = round(new_connection_after * 1e9) if new_connection_after else None
        built = build_conversations(
            messages, BuildOptions(mss=mss, seed=seed), new_connection_after_ns=gap
        )
    except (MessageFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    link_opts = LinkOptions(link, _macs(macs))
    if output is not None:
        try:
            n = write_capture_file(output, built, link_opts, fmt, nanosecond=nanosecond)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        m = len(messages)
        click.echo(
            f"wrote {n} packet{'s' * (n != 1)} ({m} message{'s' * (m != 1)}) to {output}",
            err=True,
        )
    if show_hex or explain:
        from parlour.packets.analyze.explain import explain_built

        notes = explain_built(built) if explain else None
        isns: dict[tuple[int, str, int], int] = {}
        t0 = built[0].ts_ns if built else 0
        for i, p in enumerate(built):
            if notes is not None:
                click.echo(f"{i + 1:>4}  {notes[i]}")
            if show_hex:
                if notes is None:
                    click.echo(f"{i + 1:>4}  {_summary(p, isns, t0)}")
                click.echo(hexdump(frame_for(p, link_opts)))
                click.echo()
    if send:
        from parlour.packets.capture.rawsend import RawSocketError, send_packets

        try:
            sent = send_packets(
                [p.datagram for p in built], times_ns=[p.ts_ns for p in built], speed=speed
            )
        except RawSocketError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"sent {sent} packets on a raw socket", err=True)
    if replay:
        from parlour.packets.capture.replay import (
            LOOPBACK,
            ReplayError,
            replay_loopback,
            replay_messages,
        )

        try:
            if replay == LOOPBACK:
                report = replay_loopback(messages, speed=speed)
            else:
                report = replay_messages(messages, replay, speed=speed)
        except ReplayError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(report, err=True)


packets.add_command(capture)

from parlour.packets.cli.analyze import analyze_command  # noqa: E402

packets.add_command(analyze_command)
