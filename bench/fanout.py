"""Fan-out benchmark for `parlour serve` (one command; starts the server as a subprocess).

    python bench/fanout.py                     # both modes with the issue's targets
    python bench/fanout.py fanout --members 100 --senders 10 --rate 10000 --duration 10
    python bench/fanout.py idle --connections 10000

fanout: N members in one room, S of them send at a fixed total rate (open loop: the offered
rate does not slow down when the server does). Every message carries its send time; a few
"probe" members and the senders parse what they receive to measure latency, the others only
count lines (so the load generator keeps up). Prints acknowledged/s, deliveries/s, lost
(acknowledged messages some member never got), p50/p99/max latency, server RSS per connection.

idle: M logged-in connections that do nothing; prints server RSS per connection (RSS growth
from before the first connection, divided by M; it includes the core's session state).

The server runs with the rate limit lifted and cheap Argon2 parameters (so that sign-ups do
not dominate setup). Results: docs/benchmarks/chat.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ADMIN_PASSWORD = "bench-admin-password"
PASSWORD = "bench-password"
ROOM = "general"


# ---------------------------------------------------------------------------- the server


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: tempfile.TemporaryDirectory[str]

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.data_dir.cleanup()


def start_server(max_connections: int, synchronous: str, extra: list[str]) -> Server:
    data_dir = tempfile.TemporaryDirectory(prefix="parlour-bench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
    env.update(
        PARLOUR_ADMIN_PASSWORD=ADMIN_PASSWORD,
        PARLOUR_ARGON2_TIME_COST="1",
        PARLOUR_ARGON2_MEMORY_KIB="64",
        PARLOUR_SQLITE_SYNCHRONOUS=synchronous,
        PARLOUR_SEND_QUEUE_MAX=str(8 << 20),
    )
    cmd = [
        sys.executable, "-m", "parlour", "serve", "--port", "0", "--data-dir", data_dir.name,
        "--rate", "1000000", "--burst", "1000000", "--duplicate-login", "allow",
        "--max-connections", str(max_connections), "--idle-timeout", "600",
        "--log-level", os.environ.get("BENCH_SERVER_LOG", "WARNING"), *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    for raw in proc.stdout:
        found = re.search(r"listening on tcp://[^:]+:(\d+)", raw.decode())
        if found:
            port = int(found.group(1))
            break
    else:
        raise RuntimeError("server did not start")
    return Server(proc, port, data_dir)


# ---------------------------------------------------------------------------- clients


class Conn(asyncio.Protocol):
    """A member connection. During setup every line is parsed; during the run a counting
    member only counts newlines, a parsing member (probe/sender) measures latency."""

    def __init__(self, parse: bool) -> None:
        self.parse = parse
        self.setup = True
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.lines = 0
        self.messages = 0
        self.acks = 0
        self.errors = 0
        self.latencies: list[float] = []
        self.closed = asyncio.Event()
        self.next_id = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def data_received(self, data: bytes) -> None:
        if not self.setup and not self.parse:
            self.lines += data.count(b"\n")
            return
        buf = self.buf + data if self.buf else data
        lines = buf.split(b"\n")
        self.buf = lines.pop()
        if self.setup:
            for line in lines:
                if not line.startswith(b'{"type":"event"'):
                    self.replies.put_nowait(json.loads(line))
            return
        now = time.time()
        for line in lines:
            if line.startswith(b'{"type":"event","event":"message"'):
                self.messages += 1
                start = line.find(b'"text":"') + 8
                self.latencies.append(now - float(line[start : line.find(b" ", start)]))
            elif b'"type":"ok"' in line:
                self.acks += 1
            elif b'"type":"error"' in line:
                self.errors += 1

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def request(self, type: str, **fields: Any) -> dict[str, Any]:
        rid = self.next_id
        self.next_id += 1
        self.write(json.dumps({"id": rid, "type": type, **fields}).encode() + b"\n")
        reply = await asyncio.wait_for(self.replies.get(), 60)
        if reply.get("type") != "ok":
            raise RuntimeError(f"{type} failed: {reply}")
        data: dict[str, Any] = reply["data"]
        return data

    def start_run(self) -> None:
        self.setup = False
        self.buf = b""
        self.lines = self.messages = self.acks = self.errors = 0
        self.latencies.clear()

    @property
    def received(self) -> int:
        return self.messages if self.parse else self.lines


async def open_member(port: int, name: str, parse: bool, join: bool) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Conn(parse), "127.0.0.1", port)
    await conn.request("hello", version=1)
    await conn.request("signup", username=name, password=PASSWORD)
    if join:
        await conn.request("join", room=ROOM, limit=1)
    return conn


async def open_many(port: int, names: list[str], parse: list[bool], join: bool) -> list[Conn]:
    out: list[Conn] = []
    batch = 200
    for i in range(0, len(names), batch):
        out += await asyncio.gather(
            *(
                open_member(port, n, p, join)
                for n, p in zip(names[i : i + batch], parse[i : i + batch], strict=True)
            )
        )
    return out


# ---------------------------------------------------------------------------- fan-out mode


@dataclass
class FanoutResult:
    members: int
    senders: int
    offered_rate: float
    duration: float
    sent: int = 0
    acked: int = 0
    errors: int = 0
    deliveries: int = 0
    expected: int = 0
    lost: int = 0
    latencies: list[float] = field(default_factory=list)
    rss_per_conn_kib: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    def report(self) -> str:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

        return "\n".join(
            [
                f"fan-out: {self.members} members, {self.senders} senders, "
                f"{self.offered_rate:,.0f} msg/s offered for {self.duration:g}s",
                f"  messages sent         {self.sent:,}",
                f"  acknowledged/s        {self.acked / self.duration:,.0f}"
                f"  ({self.acked:,} acked, {self.errors} errors)",
                f"  deliveries/s          {self.deliveries / self.duration:,.0f}"
                f"  ({self.deliveries:,} of {self.expected:,} expected)",
                f"  lost                  {self.lost:,}",
                f"  latency p50/p99/max   {pct(0.50):.1f} / {pct(0.99):.1f} / "
                f"{(lat[-1] * 1000 if lat else float('nan')):.1f} ms"
                f"  ({len(lat):,} samples)",
                f"  server CPU            {self.server_cpu / self.duration:.2f} cores"
                f"  (load generator {self.client_cpu / self.duration:.2f} cores)",
                f"  server RSS/connection {self.rss_per_conn_kib:.1f} KiB",
            ]
        )


async def fanout(
    members: int, senders: int, rate: float, duration: float, probes: int, synchronous: str
) -> FanoutResult:
    server = start_server(members + 64, synchronous, [])
    try:
        rss0 = server.rss_kib()
        names = [f"m{i}" for i in range(members)]
        parse = [i < senders + probes for i in range(members)]
        conns = await open_many(server.port, names, parse, join=True)
        # a round trip on every connection: all setup events (joins) have arrived
        await asyncio.gather(*(c.request("ping") for c in conns))
        rss1 = server.rss_kib()
        for c in conns:
            c.start_run()
        sender_conns = conns[:senders]
        result = FanoutResult(members, senders, rate, duration)
        result.rss_per_conn_kib = (rss1 - rss0) / members
        pad = "x" * 40
        cpu0 = server.cpu_seconds()
        ccpu0 = time.process_time()
        start = time.perf_counter()
        sent = 0
        trace = bool(os.environ.get("BENCH_TRACE"))
        if trace:
            print(f"  server pid {server.proc.pid}", flush=True)
        next_trace = 0.0
        while True:
            elapsed = time.perf_counter() - start
            if elapsed >= duration:
                break
            due = int(rate * elapsed) - sent
            if due > 0:
                now = time.time()
                per: list[list[bytes]] = [[] for _ in sender_conns]
                for k in range(due):
                    n = sent + k
                    per[n % senders].append(
                        b'{"id":%d,"type":"send","room":"%s","text":"%.6f %s","client_id":"b%d"}\n'
                        % (n, ROOM.encode(), now, pad.encode(), n)
                    )
                for conn, frames in zip(sender_conns, per, strict=True):
                    if frames:
                        assert conn.transport is not None
                        conn.transport.writelines(frames)
                sent += due
            if trace and elapsed >= next_trace:
                next_trace += 0.5
                acked_now = sum(c.acks for c in sender_conns)
                probe = conns[senders] if len(conns) > senders else conns[0]
                print(
                    f"  t={elapsed:5.2f}s sent={sent} acked={acked_now} "
                    f"probe_got={probe.received} counted0={conns[-1].received}",
                    flush=True,
                )
            await asyncio.sleep(0.001)
        result.sent = sent
        # drain: wait until every member has what was acknowledged, or nothing moves for 5 s
        last, still = -1, time.perf_counter()
        while True:
            acked = sum(c.acks for c in sender_conns)
            total = sum(c.received for c in conns)
            if acked + sum(c.errors for c in sender_conns) >= sent and total >= acked * members:
                break
            if total != last:
                last, still = total, time.perf_counter()
            elif time.perf_counter() - still > 5:
                break
            await asyncio.sleep(0.05)
        result.server_cpu = server.cpu_seconds() - cpu0
        result.client_cpu = time.process_time() - ccpu0
        result.acked = sum(c.acks for c in sender_conns)
        result.errors = sum(c.errors for c in sender_conns)
        result.expected = result.acked * members
        result.deliveries = sum(c.received for c in conns)
        result.lost = sum(max(0, result.acked - c.received) for c in conns)
        for c in conns[: senders + probes]:
            result.latencies += c.latencies
        for c in conns:
            if c.transport is not None:
                c.transport.close()
        return result
    finally:
        server.stop()


# ---------------------------------------------------------------------------- idle mode


async def idle(connections: int, synchronous: str) -> str:
    server = start_server(connections + 64, synchronous, [])
    try:
        await asyncio.sleep(0.5)
        rss0 = server.rss_kib()
        t0 = time.perf_counter()
        names = [f"idle{i}" for i in range(connections)]
        conns = await open_many(server.port, names, [False] * connections, join=False)
        setup = time.perf_counter() - t0
        await asyncio.sleep(1.0)
        rss1 = server.rss_kib()
        per = (rss1 - rss0) / connections
        for c in conns:
            if c.transport is not None:
                c.transport.close()
        return "\n".join(
            [
                f"idle: {connections:,} logged-in connections (set up in {setup:.1f}s)",
                f"  server RSS            {rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB",
                f"  server RSS/connection {per:.2f} KiB",
            ]
        )
    finally:
        server.stop()


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", choices=["all", "fanout", "idle"], default="all")
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10000.0, help="total messages/s offered")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--probes", type=int, default=5, help="members measuring latency")
    parser.add_argument("--connections", type=int, default=10000, help="idle mode")
    parser.add_argument("--sync", choices=["full", "normal"], default="full")
    args = parser.parse_args()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run

    print(f"parlour fan-out benchmark  ({os.cpu_count()} CPUs, sqlite synchronous={args.sync})")
    if args.mode in ("all", "fanout"):
        result = run(
            fanout(args.members, args.senders, args.rate, args.duration, args.probes, args.sync)
        )
        print(result.report())
    if args.mode in ("all", "idle"):
        print(run(idle(args.connections, args.sync)))


if __name__ == "__main__":
    main()
