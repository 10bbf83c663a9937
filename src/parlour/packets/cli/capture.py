"""``parlour packets capture``: record live traffic (AF_PACKET) to pcap/pcapng."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Literal

import click

from parlour.packets.capture.live import CaptureError, CaptureLimits, LiveCapture, capture_to_file
from parlour.packets.cli.options import capture_format_options

__all__ = ["capture"]


@click.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Capture file to write (.pcapng → pcapng, anything else → pcap).",
)
@click.option(
    "-i",
    "--interface",
    default="lo",
    show_default=True,
    help="Interface to listen on; 'any' for all of them (Linux cooked headers).",
)
@click.option(
    "-p",
    "--port",
    type=click.IntRange(1, 65535),
    help="Keep only TCP segments to or from this port (BPF filter in the kernel).",
)
@click.option("-c", "--count", type=click.IntRange(min=1), help="Stop after this many packets.")
@click.option(
    "-s",
    "--seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop after this many seconds.",
)
@capture_format_options
@click.option("-q", "--quiet", is_flag=True, help="Do not print the start line.")
def capture(
    output: Path,
    interface: str,
    port: int | None,
    count: int | None,
    seconds: float | None,
    fmt: Literal["pcap", "pcapng"] | None,
    nanosecond: bool,
    quiet: bool,
) -> None:
    """Record traffic on an interface (default: loopback) to a capture file; needs root.

    Stops after --count packets, after --seconds, or on Ctrl-C; the file is complete in
    every case. Example: parlour packets capture --port 7878 -o chat.pcap --seconds 30
    """
    limits = CaptureLimits(count, seconds)
    what = f"TCP port {port} on {interface}" if port else f"all traffic on {interface}"
    bounds = [f"{count} packets" if count else "", f"{seconds:g} s" if seconds else ""]
    until = " or ".join(b for b in bounds if b) or "Ctrl-C"

    def on_ready(cap: LiveCapture) -> None:
        def on_signal(sig: int, _frame: FrameType | None) -> None:
            cap.stop(
                "interrupted" if sig == signal.SIGINT else "terminated"
            )  # run() writes what is queued, then returns: the file stays complete

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if not quiet:
            click.echo(f"capturing {what} to {output} until {until} (Ctrl-C stops)", err=True)

    live = not quiet and sys.stderr.isatty()
    counted = [0, 0, 0.0]  # packets, bytes, when the line was last drawn

    def on_packet(_ts_ns: int, frame: bytes) -> None:
        counted[0] += 1
        counted[1] += len(frame)
        now = time.monotonic()
        if now - counted[2] >= 0.25:  # a live count on a terminal, redrawn 4 times a second
            counted[2] = now
            click.echo(f"\r  {counted[0]} packets, {counted[1]} bytes", err=True, nl=False)

    try:
        report = capture_to_file(
            output,
            interface=interface,
            port=port,
            limits=limits,
            fmt=fmt,
            nanosecond=nanosecond,
            ready=on_ready,
            on_packet=on_packet if live else None,
        )
    except CaptureError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if live and counted[0]:
        click.echo("\r\033[K", err=True, nl=False)  # clear the live count
    click.echo(f"{report} → {output}", err=True)
