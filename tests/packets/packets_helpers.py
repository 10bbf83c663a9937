"""Helpers for the packet lab tests: tshark runner, scapy conversions, paths."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

TSHARK = shutil.which("tshark")
EXAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "http_messages.csv"

TsharkFields = Callable[..., list[list[str]]]


def run_tshark_fields(path: Path, *fields: str, extra: tuple[str, ...] = ()) -> list[list[str]]:
    assert TSHARK is not None
    cmd = [
        TSHARK, "-n", "-r", str(path),
        "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
        *extra, "-T", "fields", "-E", "separator=;", "-E", "occurrence=a",
    ]  # fmt: skip
    for f in fields:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return [line.split(";") for line in proc.stdout.splitlines()]


def scapy_options(raw: bytes) -> list[tuple[str, object]]:
    """Our TCP option bytes as the list scapy's TCP(options=...) takes, in the same order."""
    out: list[tuple[str, object]] = []
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 1:
            out.append(("NOP", None))
            i += 1
            continue
        if kind == 0:
            out.append(("EOL", None))
            i += 1
            continue
        length = raw[i + 1]
        body = raw[i + 2 : i + length]
        if kind == 2:
            out.append(("MSS", int.from_bytes(body, "big")))
        elif kind == 3:
            out.append(("WScale", body[0]))
        elif kind == 4:
            out.append(("SAckOK", b""))
        elif kind == 8:
            out.append(
                ("Timestamp", (int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big")))
            )
        elif kind == 5:
            vals = [int.from_bytes(body[j : j + 4], "big") for j in range(0, len(body), 4)]
            out.append(("SAck", tuple(vals)))
        else:
            raise AssertionError(f"unexpected option kind {kind}")
        i += length
    return out


def craft_capture(
    path: Path, segments: list[tuple[str, int, int, str, int, int, int]], ws: int | None = 7
) -> None:
    """Write a raw-IPv4 pcap of hand-placed segments.

    Each segment is ``(who, rel_seq, rel_ack, flags, length, window, dt_us)`` where *who* is
    ``"c"`` or ``"s"``, flags a string of ``SAFRP`` letters, *dt_us* microseconds after the
    previous segment. A leading handshake (with window scaling *ws*) is added.
    """
    from parlour.packets.files.pcap import PcapWriter
    from parlour.packets.wire.addresses import ipv4_to_int
    from parlour.packets.wire.packet import ipv4_tcp_packet
    from parlour.packets.wire.tcp import TcpOptions, encode_options

    ends = {"c": (ipv4_to_int("10.0.0.2"), 40000), "s": (ipv4_to_int("10.0.0.1"), 7878)}
    isn = {"c": 1000, "s": 5000}
    bits = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}
    t = 1_700_000_000 * 10**9
    frames: list[tuple[int, bytes]] = []
    syn_opts = encode_options(TcpOptions(mss=1460, wscale=ws, sack_permitted=True), True)
    hs = [
        ("c", 0, 0, "S", 0, 64240, 0),
        ("s", 0, 1, "SA", 0, 64240, 100),
        ("c", 1, 1, "A", 0, 502, 100),
    ]
    for n, (who, rseq, rack, fl, length, win, dt) in enumerate(hs + segments):
        other = "s" if who == "c" else "c"
        flags = sum(bits[ch] for ch in fl)
        src, sport = ends[who]
        dst, dport = ends[other]
        t += dt * 1000
        payload = bytes((65 + (rseq + i) % 26) for i in range(length))
        frames.append((
            t,
            ipv4_tcp_packet(
                src, dst, sport, dport, isn[who] + rseq, (isn[other] + rack) if "A" in fl else 0,
                flags, win, syn_opts if n < 2 else b"", payload, n + 1,
            ),
        ))  # fmt: skip
    with open(path, "wb") as f:
        PcapWriter(f, 101).write_many(frames)
