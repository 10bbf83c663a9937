"""Helpers for the packet lab tests: tshark runner, scapy conversions, paths."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from parlour.packets.analyze.dissect import analyze
from parlour.packets.analyze.tcp_analysis import TSHARK_FIELDS

TSHARK = shutil.which("tshark")
EXAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "http_messages.csv"

TsharkFields = Callable[..., list[list[str]]]

FLAG_FIELDS = sorted(set(TSHARK_FIELDS.values()))
#: per frame: tcp.stream, tcp.len, every analysis flag, then Protocol and Info (Info last: it
#: may contain the separator)
ROW_FIELDS = ("tcp.stream", "tcp.len", *FLAG_FIELDS, "_ws.col.Protocol", "_ws.col.Info")
_SEP = "\x01"


def tshark_rows(path: Path) -> list[list[str]]:
    """tshark's reading of *path* (default preferences): one row of :data:`ROW_FIELDS` per
    frame, each flag as "1" or ""."""
    assert TSHARK is not None
    cmd = [TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", f"separator={_SEP}",
           "-E", "occurrence=a"]  # fmt: skip
    for name in ROW_FIELDS:
        cmd += ["-e", name]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    # a cut file: tshark shows every complete packet, then fails with status 2
    assert proc.returncode == 0 or "cut short" in proc.stderr, proc.stderr
    rows = [line.split(_SEP, len(ROW_FIELDS) - 1) for line in proc.stdout.split("\n")[:-1]]
    # tshark gives "1" or the generated field's text for a flag: compare presence
    return [[*r[:2], *("1" if v else "" for v in r[2:-2]), *r[-2:]] for r in rows]


def our_rows(path: Path) -> tuple[list[list[str]], str | None]:
    """Parlour's reading of *path*, as :func:`tshark_rows` gives tshark's, and the problem
    the capture file has (None when it is whole)."""
    result = analyze(path)
    rows = []
    for pa in result.packets:
        t = pa.tcp
        flags = {TSHARK_FIELDS[f] for f in (t.analysis if t else ())}
        rows.append([
            "" if t is None else str(t.stream), "" if t is None else str(t.seglen),
            *("1" if name in flags else "" for name in FLAG_FIELDS), pa.protocol, pa.info,
        ])  # fmt: skip
    return rows, result.problem


def compare_rows(
    mine: list[list[str]], theirs: list[list[str]]
) -> list[tuple[int, dict[str, tuple[str, str]]]]:
    """``(frame number, {field: (ours, tshark's)})`` for every frame read differently."""
    assert len(mine) == len(theirs)
    out = []
    for number, (ours, reference) in enumerate(zip(mine, theirs, strict=True), 1):
        if ours != reference:
            diff = {
                f: (a, b) for f, a, b in zip(ROW_FIELDS, ours, reference, strict=True) if a != b
            }
            out.append((number, diff))
    return out


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
