"""Packet lab benchmark: ``parlour packets analyze`` vs tshark on 1,000,000 packets of real traffic.

    sudo python bench/packets.py analyze                   # record, replicate to 1M, compare
    sudo python bench/packets.py analyze --packets 200000  # smaller
    python bench/packets.py analyze --capture FILE.pcap    # an existing capture

The capture: real loopback traffic recorded in a network namespace of its own
(``tests/packets/realtraffic.py browse``: 60 browsing sessions over HTTP/1.1 — pages, JSON,
small and 300 kB files, 404s, some over IPv6 — refused connections, pings, UDP to closed
ports, then ten downloads over a lossy rate-limited link; about 19,500 packets) replicated
until it holds the asked number of packets: every copy gets its own loopback addresses
(127.x.y.1, fd00::x:y), so its conversations are new ones, and later timestamps; IP and
transport checksums are recomputed. Without root (or without ``unshare``/``tc``) the script
says so and stops: ``--capture`` takes any capture instead.

Both tools then read the capture once, side by side in the same run, writing the same
per-packet fields to a file — number, time, source, destination, protocol, length, Info,
``tcp.stream`` and the TCP analysis flags:

* parlour: ``parlour packets analyze CAPTURE --format csv``
* tshark: ``tshark -n -r CAPTURE -T fields -e frame.number -e frame.time_relative
  -e _ws.col.Source -e _ws.col.Destination -e _ws.col.Protocol -e frame.len -e _ws.col.Info
  -e tcp.stream -e tcp.analysis.flags`` (TCP analysis is on by default)

Wall time and peak resident memory (the child's ``ru_maxrss``) are measured for each, in
alternating rounds; the Protocol and Info columns of the two outputs are then compared row by
row (they must agree). Results: docs/benchmarks/packets-analyze.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from parlour.packets.files.pcap import PcapWriter
from parlour.packets.files.records import Record
from parlour.packets.files.stream import CaptureStream
from parlour.packets.wire.linktypes import network_payload

ROOT = Path(__file__).resolve().parents[1]
TRAFFIC = ROOT / "tests" / "packets" / "realtraffic.py"
TSHARK_FIELDS = (
    "frame.number", "frame.time_relative", "_ws.col.Source", "_ws.col.Destination",
    "_ws.col.Protocol", "frame.len", "_ws.col.Info", "tcp.stream", "tcp.analysis.flags",
)  # fmt: skip
_M = 0xFFFF


@dataclass
class Run:
    """One timed run of one tool."""

    tool: str
    wall: float
    cpu: float
    max_rss_mb: float


def record_traffic(where: Path) -> Path:
    """Record the ``browse`` scenario (root, unshare and tc needed)."""
    missing = [tool for tool in ("unshare", "tc") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        raise SystemExit(
            "recording real traffic needs root and "
            + (", ".join(missing) if missing else "unshare/tc")
            + ": run with sudo, or give a capture with --capture FILE"
        )
    subprocess.run(
        ["unshare", "--net", sys.executable, str(TRAFFIC), str(where), "browse"],
        check=True, timeout=600,
    )  # fmt: skip
    return where / "browse.pcap"


def _fold(n: int) -> int:
    while n >> 16:
        n = (n & _M) + (n >> 16)
    return n


def _words(raw: bytes) -> int:
    return sum(struct.unpack(f"!{len(raw) // 2}H", raw))


class _Template:
    """A frame with what must change per copy: where its addresses and checksums are."""

    __slots__ = ("ck_ip", "ck_l4", "data", "l3", "ts", "v6", "wire")

    def __init__(self, rec: Record) -> None:
        self.data = rec.data
        self.ts = rec.ts_ns
        self.wire = rec.wire_len
        self.l3 = -1
        self.v6 = False
        self.ck_ip = self.ck_l4 = -1
        off, et = network_payload(rec.linktype, rec.data)
        d = rec.data
        if et == 0x0800 and len(d) >= off + 20 and d[off] >> 4 == 4:
            self.l3 = off
            hl = (d[off] & 0x0F) * 4
            self.ck_ip = off + 10
            proto = d[off + 9]
            frag = int.from_bytes(d[off + 6 : off + 8], "big") & 0x3FFF
            if not frag and proto in (6, 17):
                self.ck_l4 = off + hl + (16 if proto == 6 else 6)
        elif et == 0x86DD and len(d) >= off + 40:
            self.l3 = off
            self.v6 = True
            nxt = d[off + 6]
            self.ck_l4 = off + 40 + {6: 16, 17: 6, 58: 2}.get(nxt, -(10**6))
        if self.ck_l4 + 2 > len(d) or (self.ck_l4 >= 0 and rec.wire_len != len(d)):
            self.ck_l4 = -1  # cut by the snap length: the checksum cannot be made right


def _fix_checksum(buf: bytearray, pos: int, delta: int) -> None:
    """RFC 1624: adjust the checksum at *pos* for a ones'-complement change of *delta*."""
    old = int.from_bytes(buf[pos : pos + 2], "big")
    if old == 0 and pos >= 0:
        return  # no checksum (UDP)
    new = ~_fold((~old & _M) + delta) & _M
    buf[pos : pos + 2] = new.to_bytes(2, "big")


def replicate(base: list[Record], n_packets: int, out: Path) -> int:
    """Copies of *base*, each on its own addresses and later in time, until *n_packets*.

    The base capture's loopback checksums are partial (the kernel leaves them to a NIC); they
    are made right once, then adjusted per copy for the new addresses."""
    templates = [_Template(r) for r in base]
    _make_right(templates)
    span = base[-1].ts_ns - base[0].ts_ns + 1_000_000_000
    v4_old = socket.inet_aton("127.0.0.1")
    v6_old = socket.inet_pton(socket.AF_INET6, "::1")
    old4 = _words(v4_old) * 2
    old6 = _words(v6_old) * 2
    written = 0
    with open(out, "wb") as f:
        writer = PcapWriter(f, base[0].linktype)
        copy = 0
        while written < n_packets:
            a4 = bytes((127, 1 + copy // 250, copy % 250, 1))
            a6 = socket.inet_pton(socket.AF_INET6, f"fd00::{copy + 1:x}:1")
            d4 = (_words(a4) * 2 - old4) % _M
            d6 = (_words(a6) * 2 - old6) % _M
            shift = copy * span
            for t in templates:
                if written >= n_packets:
                    break
                buf = bytearray(t.data)
                if t.l3 >= 0 and not t.v6:
                    if buf[t.l3 + 12 : t.l3 + 16] == v4_old:
                        buf[t.l3 + 12 : t.l3 + 16] = a4
                        buf[t.l3 + 16 : t.l3 + 20] = a4
                        _fix_checksum(buf, t.ck_ip, d4)
                        if t.ck_l4 >= 0:
                            _fix_checksum(buf, t.ck_l4, d4)
                elif t.v6 and buf[t.l3 + 8 : t.l3 + 24] == v6_old:
                    buf[t.l3 + 8 : t.l3 + 24] = a6
                    buf[t.l3 + 24 : t.l3 + 40] = a6
                    if t.ck_l4 >= 0:
                        _fix_checksum(buf, t.ck_l4, d6)
                writer.write(t.ts + shift, bytes(buf), t.wire)
                written += 1
            copy += 1
    return written


def _make_right(templates: list[_Template]) -> None:
    """Compute the real TCP/UDP/ICMPv6 checksums of the base frames (from the bytes)."""
    for t in templates:
        if t.ck_l4 < 0:
            continue
        d = bytearray(t.data)
        off = t.l3
        if t.v6:
            plen = int.from_bytes(d[off + 4 : off + 6], "big")
            seg_start = off + 40
            seg = d[seg_start : seg_start + plen]
            pseudo = _words(bytes(d[off + 8 : off + 40])) + plen + d[off + 6]
        else:
            hl = (d[off] & 0x0F) * 4
            total = int.from_bytes(d[off + 2 : off + 4], "big")
            seg_start = off + hl
            seg = d[seg_start : off + total]
            pseudo = _words(bytes(d[off + 12 : off + 20])) + len(seg) + d[off + 9]
        pos = t.ck_l4 - seg_start
        seg[pos : pos + 2] = b"\0\0"
        raw = bytes(seg) + (b"\0" if len(seg) % 2 else b"")
        value = ~_fold(_words(raw) + pseudo) & _M
        if value == 0 and d[off + 9 if not t.v6 else off + 6] == 17:
            value = _M
        d[t.ck_l4 : t.ck_l4 + 2] = value.to_bytes(2, "big")
        t.data = bytes(d)


def _measure(cmd: list[str], out: Path) -> Run:
    with open(out, "wb") as f:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed with status {status}")
    return Run(Path(cmd[0]).name, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def ours_cmd(capture: Path) -> list[str]:
    return [sys.executable, "-m", "parlour", "packets", "analyze", str(capture), "--format", "csv"]


def tshark_cmd(capture: Path) -> list[str]:
    tshark = shutil.which("tshark")
    if tshark is None:
        raise SystemExit("tshark is not installed (apt-get install tshark)")
    cmd = [tshark, "-n", "-r", str(capture), "-T", "fields", "-E", "separator=\x01"]
    for name in TSHARK_FIELDS:
        cmd += ["-e", name]
    return cmd


def compare(ours: Path, theirs: Path) -> tuple[int, int, list[str]]:
    """``(rows, rows that differ in Protocol or Info, the first few differences)``."""
    rows = differ = 0
    examples: list[str] = []
    with open(ours, newline="", encoding="utf-8") as a, open(theirs, encoding="utf-8") as b:
        reader = csv.reader(a)
        next(reader)
        for mine, line in zip(reader, b, strict=True):
            rows += 1
            ref = line.rstrip("\n").split("\x01")
            if (mine[4], mine[6]) != (ref[4], ref[6]):
                differ += 1
                if len(examples) < 5:
                    examples.append(f"{mine[0]}: {mine[4]} {mine[6]!r} / {ref[4]} {ref[6]!r}")
    return rows, differ, examples


def _lines(runs: list[Run], count: int) -> Iterator[str]:
    best = {}
    for r in runs:
        if r.tool not in best or r.wall < best[r.tool].wall:
            best[r.tool] = r
    ours = best["python" if "python" in best else next(iter(best))]
    theirs = best["tshark"]
    yield "| tool | wall s (best) | CPU s | packets/s | peak RSS MB |"
    yield "| --- | ---: | ---: | ---: | ---: |"
    for r in (ours, theirs):
        name = "parlour packets analyze" if r is ours else "tshark -T fields"
        yield (
            f"| {name} | {r.wall:.2f} | {r.cpu:.2f} | {count / r.wall:,.0f} | {r.max_rss_mb:,.0f} |"
        )
    yield ""
    yield (
        f"parlour is {theirs.wall / ours.wall:.2f}× tshark's speed (goal ≥ 3×), peak RSS "
        f"{ours.max_rss_mb:,.0f} MB (goal ≤ 300 MB); all rounds: "
        + ", ".join(f"{r.tool} {r.wall:.1f} s" for r in runs)
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000, help="packets in the capture")
    ap.add_argument("--capture", type=Path, help="use this capture instead of recording one")
    ap.add_argument("--rounds", type=int, default=2, help="alternating timed rounds per tool")
    ap.add_argument("--keep", type=Path, help="keep the capture and outputs in this directory")
    args = ap.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="parlour-bench-analyze-")
    where = args.keep or Path(tmp.name)
    where.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(
        f"packets analyze bench: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    if args.capture is not None:
        capture = args.capture
        count = sum(1 for _ in CaptureStream(capture))
    else:
        base_path = record_traffic(where)
        base = list(CaptureStream(base_path))
        capture = where / "analyze-bench.pcap"
        count = replicate(base, args.packets, capture)
        print(
            f"recorded {len(base):,} packets of real traffic, replicated to {count:,} "
            f"({capture.stat().st_size / 1e6:,.0f} MB): {capture}",
            flush=True,
        )
    runs: list[Run] = []
    for _ in range(args.rounds):
        for make, name in ((ours_cmd, "ours"), (tshark_cmd, "tshark")):
            run = _measure(make(capture), where / f"{name}.out")
            runs.append(run)
            print(f"  {run.tool}: {run.wall:.2f} s, peak RSS {run.max_rss_mb:,.0f} MB", flush=True)
    rows, differ, examples = compare(where / "ours.out", where / "tshark.out")
    for line in _lines(runs, count):
        print(line)
    print(f"Protocol and Info agree on {rows - differ:,} of {rows:,} rows")
    for ex in examples:
        print("  differs:", ex)
    tmp.cleanup()


if __name__ == "__main__":
    main()
