"""Packet lab benchmark: build+write and read+parse rates of `parlour.packets` vs dpkt and scapy.

    python bench/packets.py            # 1,000,000 packets (scapy: 20,000, scaled)
    python bench/packets.py --quick    # 100,000 packets (scapy: 2,000)
    python bench/packets.py --packets 300000 --scapy 5000
    sudo python bench/packets.py analyze   # analyze vs tshark on 1M packets of real traffic

Build: chat-like messages over several TCP flows become packets with
``build_conversations`` (handshake, data segments, ACKs, teardown; sequence numbers, options
and both checksums) and are written to a pcap with ``write_capture_file`` — the public API
the ``parlour packets build`` command uses. dpkt and scapy build *the same packets* (every
header field, the TCP options and the payload are handed to them, so they do less work: no
conversation logic) and write them to a pcap with their own writers; a sample of their bytes
is compared with ours, so the libraries are known to be doing the same job.

Parse: the capture written above is read back and decoded to TCP level with the public read
API (``parlour.packets.analyze.decode.decode_capture``), summing the TCP payload lengths; dpkt
(``pcap.Reader`` + ``ip.IP``) and scapy (``PcapReader``) do the same, and dpkt must arrive at
the same totals.

scapy is slow, so it runs on a smaller count and its time is scaled linearly to the full
count (its per-packet cost does not depend on the count). Every figure is measured in this
run, one after the other. All three are single-threaded Python, so rates and ratios are taken
from the process's CPU time, which other load on a shared machine barely moves; wall time is
printed too, with the load average in the header. Results: docs/benchmarks/packets.md.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import random
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from parlour.packets.build.conversation import (
    DEFAULT_START_NS,
    AppMessage,
    Endpoint,
    build_conversations,
)
from parlour.packets.build.writers import write_capture_file
from parlour.packets.files.reader import read_capture
from parlour.packets.files.records import Record

console = Console(stderr=True)
out = Console(width=110)
FLOWS = 8
WORDS = [
    "hello", "alice", "bob", "general", "random", "lunch", "deploy", "tests", "green", "coffee",
]  # fmt: skip
SAMPLE = 200


@dataclass
class Result:
    """Wall and CPU seconds of one library on one task; rates and ratios use CPU seconds."""

    name: str
    packets: int
    seconds: float
    cpu: float
    scaled_from: int | None = None

    @property
    def rate(self) -> float:
        return self.packets / self.cpu if self.cpu else float("inf")


def make_messages(n_packets: int, seed: int = 1) -> list[AppMessage]:
    """Chat lines over FLOWS connections sized so the build gives about *n_packets*.

    Each message becomes a data segment and an ACK; each flow adds 6 (handshake, teardown).
    """
    rng = random.Random(seed)
    n_msgs = max(FLOWS, (n_packets - 6 * FLOWS) // 2)
    server = Endpoint("10.0.0.1", 7878, "server")
    clients = [Endpoint(f"10.0.1.{2 + i}", 40000 + i, f"c{i}") for i in range(FLOWS)]
    out: list[AppMessage] = []
    t = DEFAULT_START_NS
    for i in range(n_msgs):
        c = clients[i % FLOWS]
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 16)))
        line = b'{"type":"send","room":"general","text":"%s","id":%d}\n' % (text.encode(), i)
        t += rng.randrange(200_000, 2_000_000)
        src, dst = (c, server) if i % 3 else (server, c)
        out.append(AppMessage(src, dst, line, t, str(i)))
    return out


@dataclass(frozen=True, slots=True)
class Spec:
    """Every field of one built packet, handed to dpkt/scapy so they build the same bytes."""

    ts: float
    src: bytes
    dst: bytes
    ident: int
    ttl: int
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    options: bytes
    payload: bytes


def specs(records: list[Record]) -> list[Spec]:
    """The fields of the raw-IPv4 frames we wrote (not timed)."""
    out = []
    for r in records:
        d = r.data
        ihl = (d[0] & 0x0F) * 4
        doff = (d[ihl + 12] >> 4) * 4
        field = partial(int.from_bytes, byteorder="big")
        out.append(
            Spec(
                r.ts_ns / 1e9, d[12:16], d[16:20], field(d[4:6]), d[8],
                field(d[ihl : ihl + 2]), field(d[ihl + 2 : ihl + 4]),
                field(d[ihl + 4 : ihl + 8]), field(d[ihl + 8 : ihl + 12]), d[ihl + 13],
                field(d[ihl + 14 : ihl + 16]), d[ihl + 20 : ihl + doff], d[ihl + doff :],
            )
        )  # fmt: skip
    return out


@contextmanager
def progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; the callback advances it (callers batch updates)."""
    with Progress(
        TextColumn("{task.description:<26}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as prog:
        task = prog.add_task(label, total=total)
        yield lambda n: prog.advance(task, n)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds of this process, and *fn*'s result."""
    gc.collect()
    t = time.perf_counter()
    c = time.process_time()
    value = fn()
    return time.perf_counter() - t, time.process_time() - c, value


# ------------------------------------------------------------------------------ build


def build_ours(msgs: list[AppMessage], path: Path) -> int:
    with progress("parlour: build + write", None):
        packets = build_conversations(msgs)
        write_capture_file(path, packets)
    return len(packets)


def build_dpkt(items: list[Spec], path: Path) -> list[bytes]:
    import dpkt

    sample: list[bytes] = []
    with open(path, "wb") as f, progress("dpkt: build + write", len(items)) as tick:
        writer = dpkt.pcap.Writer(f, linktype=101)
        for i, s in enumerate(items):
            tcp = dpkt.tcp.TCP(
                sport=s.sport, dport=s.dport, seq=s.seq, ack=s.ack,
                off=(20 + len(s.options)) >> 2, flags=s.flags, win=s.window,
                opts=s.options, data=s.payload,
            )  # fmt: skip
            ip = dpkt.ip.IP(src=s.src, dst=s.dst, id=s.ident, ttl=s.ttl, p=6, df=1, data=tcp)
            raw = bytes(ip)
            writer.writepkt(raw, ts=s.ts)
            if i < SAMPLE:
                sample.append(raw)
            if i & 0x3FFF == 0x3FFF:
                tick(0x4000)
    return sample


def scapy_options(raw: bytes) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind in (0, 1):
            out.append(("EOL" if kind == 0 else "NOP", None))
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
            tsval, tsecr = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big")
            out.append(("Timestamp", (tsval, tsecr)))
        i += length
    return out


def build_scapy(items: list[Spec], path: Path) -> list[bytes]:
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw
    from scapy.utils import PcapWriter

    sample: list[bytes] = []
    with progress("scapy: build + write", len(items)) as tick:
        writer = PcapWriter(str(path), linktype=101, sync=False)
        writer.write_header(None)
        for i, s in enumerate(items):
            pkt = IP(
                src=socket.inet_ntoa(s.src), dst=socket.inet_ntoa(s.dst), id=s.ident, ttl=s.ttl,
                flags="DF",
            ) / TCP(
                sport=s.sport, dport=s.dport, seq=s.seq, ack=s.ack, flags=s.flags,
                window=s.window, options=scapy_options(s.options),
            )  # fmt: skip
            if s.payload:
                pkt = pkt / Raw(s.payload)
            raw = bytes(pkt)
            sec = int(s.ts)
            writer.write_packet(raw, sec=sec, usec=round((s.ts - sec) * 1e6))
            if i < SAMPLE:
                sample.append(raw)
            if i & 0x3FF == 0x3FF:
                tick(0x400)
        writer.close()
    return sample


# ------------------------------------------------------------------------------ parse


def parse_ours(path: Path) -> tuple[int, int]:
    """(packets, TCP payload bytes) through the public read + decode API."""
    from parlour.packets.analyze.decode import decode_capture

    with progress("parlour: read + decode", None):
        table = decode_capture(path)
        if not hasattr(table, "tcp_headers"):  # only the per-packet objects
            return len(table), sum(p.seglen for p in table)
        payload_len = table.tcp_payload_len
        total = count = 0
        for i, header in enumerate(table.tcp_headers()):
            total += payload_len(header) if header is not None else table[i].seglen
            count += 1
        return count, total


def parse_dpkt(path: Path, expected: int) -> tuple[int, int]:
    import dpkt

    count = total = 0
    with open(path, "rb") as f, progress("dpkt: read + decode", expected) as tick:
        for _ts, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ip.IP(buf)
            tcp = ip.data
            total += len(tcp.data)
            count += 1
            if count & 0x3FFF == 0:
                tick(0x4000)
    return count, total


def parse_scapy(path: Path, expected: int) -> tuple[int, int]:
    from scapy.layers.inet import TCP
    from scapy.utils import PcapReader

    count = total = 0
    with progress("scapy: read + decode", expected) as tick, PcapReader(str(path)) as reader:
        for pkt in reader:
            total += len(bytes(pkt[TCP].payload))
            count += 1
            if count & 0x3FF == 0:
                tick(0x400)
    return count, total


# ------------------------------------------------------------------------------ main


def report(title: str, rows: list[Result], targets: dict[str, float]) -> None:
    ours = rows[0]
    table = Table(title=title)
    for col in ("library", "packets", "wall s", "CPU s", "packets/CPU-s", "parlour is", "target"):
        table.add_column(col, justify="left" if col == "library" else "right")
    for r in rows:
        note = f" (scaled from {r.scaled_from:,})" if r.scaled_from else ""
        ratio = "" if r is ours else f"{ours.rate / r.rate:,.1f}× faster"
        target = targets.get(r.name)
        mark = ""
        if target is not None:
            mark = f"≥{target:g}× " + ("met" if ours.rate / r.rate >= target else "MISSED")
        table.add_row(
            r.name + note,
            f"{r.packets:,}",
            f"{r.seconds:.2f}",
            f"{r.cpu:.2f}",
            f"{r.rate:,.0f}",
            ratio,
            mark,
        )
    out.print(table)


def _same(name: str, sample: list[bytes], ref: list[bytes]) -> None:
    if sample != ref[: len(sample)]:
        bad = next(i for i, (a, b) in enumerate(zip(sample, ref, strict=False)) if a != b)
        raise SystemExit(f"{name} built different bytes from parlour at packet {bad + 1}")
    console.print(f"[dim]{name}: the first {len(sample)} packets are byte-identical to ours[/]")


def main() -> None:
    if sys.argv[1:2] == ["analyze"]:  # analyze vs tshark: bench/packets_analyze.py
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from packets_analyze import main as analyze_main

        analyze_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000, help="packets to build and parse")
    ap.add_argument("--dpkt", type=int, default=None, help="packets for dpkt (default: all)")
    ap.add_argument("--scapy", type=int, default=20_000, help="packets for scapy (scaled)")
    ap.add_argument("--quick", action="store_true", help="100,000 packets, scapy 2,000")
    ap.add_argument("--no-scapy", action="store_true", help="skip scapy")
    ap.add_argument("--keep", type=Path, help="write the capture files to this directory")
    args = ap.parse_args()
    if args.quick:
        args.packets, args.scapy = 100_000, 2_000
    n_dpkt = min(args.dpkt or args.packets, args.packets)
    load = os.getloadavg()
    out.print(
        f"[bold]packets bench[/]: {args.packets:,} packets, dpkt {n_dpkt:,}, scapy "
        f"{0 if args.no_scapy else args.scapy:,} (scaled); Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    tmp = tempfile.TemporaryDirectory(prefix="parlour-bench-")
    where = args.keep or Path(tmp.name)
    where.mkdir(parents=True, exist_ok=True)
    ours_path, dpkt_path, scapy_path = (
        where / f"{name}.pcap" for name in ("parlour", "dpkt", "scapy")
    )

    msgs = make_messages(args.packets)
    secs, cpu, n = timed(partial(build_ours, msgs, ours_path))
    build_rows = [Result("parlour", n, secs, cpu)]
    del msgs
    recs = read_capture(ours_path)  # the reference packets for dpkt/scapy (not timed)
    ref_bytes = [r.data for r in recs[:SAMPLE]]
    k = min(args.scapy, n)
    items = specs(recs[: max(n_dpkt, 0 if args.no_scapy else k)])
    del recs

    secs, cpu, sample = timed(partial(build_dpkt, items[:n_dpkt], dpkt_path))
    _same("dpkt", sample, ref_bytes)
    build_rows.append(Result("dpkt", n_dpkt, secs, cpu))
    if not args.no_scapy:
        secs, cpu, sample = timed(partial(build_scapy, items[:k], scapy_path))
        _same("scapy", sample, ref_bytes)
        build_rows.append(Result("scapy", n, secs * n / k, cpu * n / k, scaled_from=k))
    del items
    report("build and write a pcap", build_rows, {"scapy": 100, "dpkt": 4})

    secs, cpu, (count, payload) = timed(partial(parse_ours, ours_path))
    parse_rows = [Result("parlour", count, secs, cpu)]
    secs, cpu, (dcount, dpayload) = timed(partial(parse_dpkt, ours_path, count))
    if (dcount, dpayload) != (count, payload):
        raise SystemExit(f"dpkt read {dcount} packets/{dpayload} bytes, we read {count}/{payload}")
    parse_rows.append(Result("dpkt", dcount, secs, cpu))
    if not args.no_scapy:
        secs, cpu, (scount, _) = timed(partial(parse_scapy, scapy_path, k))
        parse_rows.append(
            Result("scapy", count, secs * count / scount, cpu * count / scount, scaled_from=scount)
        )

    report("read and decode a pcap to TCP", parse_rows, {"dpkt": 5})
    out.print(
        f"capture: {ours_path.stat().st_size / 1e6:,.1f} MB, {count:,} packets, "
        f"{payload:,} TCP payload bytes"
    )
    tmp.cleanup()


if __name__ == "__main__":
    main()
