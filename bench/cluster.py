"""Scale-out benchmark: one node on SQLite, one node on PostgreSQL + Redis, and three nodes on
PostgreSQL + Redis behind `parlour proxy` with the members spread over them — side by side in
one run, at offered rates stepped up to saturation.

    python bench/cluster.py                                   # capacity, the issue's setup
    python bench/cluster.py capacity --rates 1000,2000,4000 --duration 8
    python bench/cluster.py chaos --duration 120              # the long chaos runs
    python bench/cluster.py capacity --configs pg1,pg3        # some configurations only

capacity: 100 members in one room, 10 of them send at a fixed total rate (open loop), every
message carries its send time and the index of the sender's node; a few *probe* members on
every node pull the send times out of what they receive. Per configuration and rate it
prints acknowledged/s, deliveries/s, p50/p99 latency (send to receipt), the same for
deliveries that crossed nodes (sender and receiver on different nodes), lost messages, CPU
of the chat nodes per message, and PostgreSQL's and Redis' CPU per message. Capacity is the
highest offered rate a configuration sustains with nothing lost, no error, no member cut off
and p99 at most --p99-limit ms. From the CPU per message measured here it prints a
projection of what N nodes on N machines would carry (docs/benchmarks/cluster.md).

chaos: the chaos runs of tests/cluster/test_cluster_chaos.py, longer (kill -9 of a node
every few seconds, Redis restarted, PostgreSQL restarted, each under load on a PostgreSQL and
a Redis of their own), with the counts: acknowledged messages lost, duplicated, out of order.

Needs PostgreSQL and Redis (PARLOUR_TEST_POSTGRES, PARLOUR_TEST_REDIS as in the tests; each
run makes its own database and key prefix). Results: docs/benchmarks/cluster.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [
    str(REPO / "src"),
    str(REPO / "tests"),
    str(REPO / "tests" / "cluster"),
    str(REPO / "bench"),
]

from fanout import raise_nofile_limit  # noqa: E402

from cluster_services import PG_DSN, REDIS_URL, fresh_database, fresh_prefix  # noqa: E402
from parlour.server.cluster_cli import LocalCluster, Proc, free_port  # noqa: E402

ADMIN_PASSWORD = "bench-admin-password"
PASSWORD = "bench-password"
ROOM = "general"
ENV = {
    "PARLOUR_ARGON2_TIME_COST": "1",
    "PARLOUR_ARGON2_MEMORY_KIB": "64",
    "PARLOUR_SEND_QUEUE_MAX": str(8 << 20),
    "PARLOUR_MAX_CONNECTIONS_PER_ADDRESS": "0",
    "PARLOUR_SQLITE_SYNCHRONOUS": "full",
}
SERVE = [
    "--rate", "1000000", "--burst", "1000000", "--max-connections", "20000",
    "--idle-timeout", "600", "--log-level", os.environ.get("BENCH_SERVER_LOG", "WARNING"),
]  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def pids_named(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def service_cpu(names: tuple[str, ...]) -> float:
    """CPU seconds of every process of the machine's service (postgres, redis-server): the
    shared servers, so other work on them counts too (see the header's load average)."""
    return sum(cpu_seconds(p) for n in names for p in pids_named(n))


# ---------------------------------------------------------------------------- deployments


@dataclass
class Deployment:
    label: str
    ports: list[int]  # where members connect (one per node, or the proxy): member k -> k % n
    node_pids: Callable[[], list[int]]
    stop: Callable[[], Any]
    nodes: int
    proxy_pids: Callable[[], list[int]] = lambda: []


@contextlib.asynccontextmanager
async def sqlite_node(work: Path) -> AsyncIterator[Deployment]:
    port = free_port()
    argv = [
        sys.executable, "-m", "parlour", "serve", "--port", str(port), "--web", "false",
        "--data-dir", str(work / "sqlite"), *SERVE,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
    env.update(ENV, PARLOUR_ADMIN_PASSWORD=ADMIN_PASSWORD, PYTHONPATH=str(REPO / "src"))
    proc = Proc(
        "sqlite", argv, env, work / "sqlite.log", re.compile(r"listening on tcp://([^:]+):(\d+)")
    )
    await proc.start()

    def pids() -> list[int]:
        return [proc.process.pid] if proc.process is not None else []

    try:
        yield Deployment("1 node, SQLite", [port], pids, proc.stop, 1)
    finally:
        await proc.stop()


@contextlib.asynccontextmanager
async def pg_nodes(work: Path, n: int, direct: bool = False) -> AsyncIterator[Deployment]:
    with fresh_database() as make_db:
        local = LocalCluster(
            store=make_db(),
            bus=REDIS_URL,
            nodes=n,
            prefix=fresh_prefix(),
            work_dir=work / f"pg{n}",
            web=False,
            admin_password=ADMIN_PASSWORD,
            serve_args=SERVE,
            env=ENV,
        )
        await local.start()

        def pids() -> list[int]:
            return [p.process.pid for p in local.node_procs if p.process is not None]

        def proxy_pids() -> list[int]:
            return [p.process.pid for p in local.proxies if p.process is not None]

        if n == 1:
            label = "1 node, PostgreSQL + Redis"
        elif direct:
            label = f"{n} nodes, no proxy"
        else:
            label = f"{n} nodes behind the proxy"
        # members connect through the proxy (round robin: spread over the nodes), or
        # straight to the nodes (member k to node k % n: what the nodes cost without the
        # proxy's relaying); one node is reached directly, like the SQLite node
        ports = local.node_ports if direct or n == 1 else [local.proxy_port]
        try:
            yield Deployment(label, ports, pids, local.stop, n, proxy_pids)
        finally:
            await local.stop()


# ---------------------------------------------------------------------------- load

_PROBE = re.compile(rb'"text":"(\d+\.\d+) n(\d+) ')
#: a send: its text starts with the send time and the sender's node (probes read both)
_FRAME = b'{"id":%d,"type":"send","room":"general","text":"%.6f n%d %s","client_id":"b%d"}\n'


class Member(asyncio.Protocol):
    """A member connection: counts message lines; probes also take each message's send
    time and sender's node."""

    def __init__(self, sender: bool, probe: bool) -> None:
        self.sender = sender
        self.probe = probe
        self.setup = True
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.lines = self.acks = self.errors = 0
        self.node = -1
        self.latencies: list[tuple[float, bool]] = []
        self.next_id = 1
        self.lost_connection = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_connection = True

    def data_received(self, data: bytes) -> None:
        if not self.setup:
            self.lines += data.count(b"\n")
            if not (self.sender or self.probe):
                return
            buf = self.buf + data if self.buf else data
            cut = buf.rfind(b"\n") + 1
            self.buf = buf[cut:]
            if self.sender:
                self.acks += buf.count(b'"type":"ok"', 0, cut)
                self.errors += buf.count(b'"type":"error"', 0, cut)
            if self.probe:
                now = time.time()
                for ts, node in _PROBE.findall(buf, 0, cut):
                    self.latencies.append((now - float(ts), int(node) != self.node))
            return
        buf = self.buf + data if self.buf else data
        lines = buf.split(b"\n")
        self.buf = lines.pop()
        for line in lines:
            if not line.startswith(b'{"type":"event"'):
                self.replies.put_nowait(json.loads(line))

    async def request(self, type: str, **fields: Any) -> dict[str, Any]:
        for _ in range(60):
            rid = self.next_id
            self.next_id += 1
            assert self.transport is not None
            self.transport.write(json.dumps({"id": rid, "type": type, **fields}).encode() + b"\n")
            reply = await asyncio.wait_for(self.replies.get(), 120)
            if reply.get("code") in ("server_busy", "unavailable"):
                await asyncio.sleep(float(reply.get("retry_after") or 1.0))
                continue
            if reply.get("type") != "ok":
                raise RuntimeError(f"{type} failed: {reply}")
            return cast(dict[str, Any], reply["data"])
        raise RuntimeError(f"{type}: the server stayed busy")


async def open_member(port: int, name: str, sender: bool, probe: bool) -> Member:
    loop = asyncio.get_running_loop()
    _, m = await loop.create_connection(lambda: Member(sender, probe), "127.0.0.1", port)
    hello = await m.request("hello", version=1)
    found = re.search(r"node(\d+)", str(hello.get("server", "")))
    m.node = int(found.group(1)) if found else 0
    await m.request("signup", username=name, password=PASSWORD)
    await m.request("join", room=ROOM, limit=1)
    return m


@dataclass
class Result:
    label: str
    rate: float
    sent: int = 0
    acked: int = 0
    errors: int = 0
    deliveries: int = 0
    lost: int = 0
    cut_off: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cross: list[float] = field(default_factory=list)
    node_cpu: float = 0.0
    proxy_cpu: float = 0.0
    pg_cpu: float = 0.0
    redis_cpu: float = 0.0
    nodes: int = 1

    @staticmethod
    def _pct(values: list[float], p: float) -> float:
        if not values:
            return float("nan")
        values = sorted(values)
        return values[min(len(values) - 1, int(p * len(values)))] * 1000

    @property
    def p99(self) -> float:
        return self._pct(self.latencies, 0.99)

    def rows(self) -> list[tuple[str, float, str]]:
        el = max(self.elapsed, 1e-9)
        return [
            ("acknowledged/s", self.acked / el, ",.0f"),
            ("deliveries/s", self.deliveries / el, ",.0f"),
            ("lost", float(self.lost), ",.0f"),
            ("errors", float(self.errors), ",.0f"),
            ("members cut off", float(self.cut_off), ",.0f"),
            ("latency p50 (ms)", self._pct(self.latencies, 0.5), ".1f"),
            ("latency p99 (ms)", self.p99, ".1f"),
            ("cross-node p50 (ms)", self._pct(self.cross, 0.5), ".1f"),
            ("cross-node p99 (ms)", self._pct(self.cross, 0.99), ".1f"),
            ("chat nodes CPU (cores)", self.node_cpu / el, ".2f"),
            ("node CPU/message (us)", self.node_cpu / max(1, self.acked) * 1e6, ".0f"),
            ("proxy CPU/message (us)", self.proxy_cpu / max(1, self.acked) * 1e6, ".0f"),
            ("PostgreSQL CPU/message (us)", self.pg_cpu / max(1, self.acked) * 1e6, ".0f"),
            ("Redis CPU/message (us)", self.redis_cpu / max(1, self.acked) * 1e6, ".0f"),
        ]


async def fanout(
    dep: Deployment, rate: float, duration: float, members: int, senders: int
) -> Result:
    names = [f"m{i}" for i in range(members)]
    conns: list[Member] = []
    for i in range(0, members, 50):
        conns += await asyncio.gather(
            *(
                open_member(dep.ports[k % len(dep.ports)], n, k < senders, k >= senders)
                for k, n in enumerate(names[i : i + 50], start=i)
            )
        )
    await asyncio.gather(*(c.request("ping") for c in conns))
    for c in conns:
        c.setup = False
        c.buf = b""
    sending = conns[:senders]
    res = Result(dep.label, rate, nodes=dep.nodes)
    cpu0 = sum(cpu_seconds(p) for p in dep.node_pids())
    proxy0 = sum(cpu_seconds(p) for p in dep.proxy_pids())
    pg0, rd0 = service_cpu(("postgres",)), service_cpu(("redis-server",))
    start = time.perf_counter()
    sent = 0
    pad = b"x" * 40
    while (elapsed := time.perf_counter() - start) < duration:
        due = int(rate * elapsed) - sent
        if due > 0:
            now = time.time()
            per: list[list[bytes]] = [[] for _ in sending]
            for k in range(due):
                n = sent + k
                s = n % senders
                per[s].append(_FRAME % (n + 1000, now, sending[s].node, pad, n))
            for conn, frames in zip(sending, per, strict=True):
                if frames and conn.transport is not None:
                    conn.transport.writelines(frames)
            sent += due
        await asyncio.sleep(0.001)
    res.sent = sent
    last, still = -1, time.perf_counter()
    while True:
        acked = sum(c.acks for c in sending)
        errors = sum(c.errors for c in sending)
        msgs = [c.lines - c.acks - c.errors for c in conns]
        live = [m for c, m in zip(conns, msgs, strict=True) if not c.lost_connection]
        if acked + errors >= sent and all(m >= acked for m in live):
            break
        total = sum(msgs)
        if total != last:
            last, still = total, time.perf_counter()
        elif time.perf_counter() - still > 15:
            break
        await asyncio.sleep(0.05)
    res.elapsed = time.perf_counter() - start
    res.node_cpu = sum(cpu_seconds(p) for p in dep.node_pids()) - cpu0
    res.proxy_cpu = sum(cpu_seconds(p) for p in dep.proxy_pids()) - proxy0
    res.pg_cpu = service_cpu(("postgres",)) - pg0
    res.redis_cpu = service_cpu(("redis-server",)) - rd0
    res.acked = sum(c.acks for c in sending)
    res.errors = sum(c.errors for c in sending)
    msgs = [c.lines - c.acks - c.errors for c in conns]
    res.deliveries = sum(msgs)
    res.cut_off = sum(1 for c in conns if c.lost_connection)
    res.lost = sum(
        max(0, res.acked - m) for c, m in zip(conns, msgs, strict=True) if not c.lost_connection
    )
    for c in conns:
        for lat, cross in c.latencies:
            res.latencies.append(lat)
            if cross:
                res.cross.append(lat)
        if c.transport is not None:
            c.transport.close()
    return res


# ---------------------------------------------------------------------------- modes

CONFIGS = {
    "sqlite": lambda work: sqlite_node(work),
    "pg1": lambda work: pg_nodes(work, 1),
    "pg3": lambda work: pg_nodes(work, 3),
    "pg3direct": lambda work: pg_nodes(work, 3, direct=True),
}


def print_table(results: list[Result]) -> None:
    labels = [r.label for r in results]
    width = max(16, *(len(x) for x in labels))
    print(f"  {'':32}" + "".join(f"{x:>{width + 2}}" for x in labels))
    for i, (name, _, _) in enumerate(results[0].rows()):
        cells = []
        for r in results:
            _, value, fmt = r.rows()[i]
            cells.append(f"{format(value, fmt):>{width + 2}}")
        print(f"  {name:32}" + "".join(cells))


async def capacity(args: argparse.Namespace) -> None:
    rates = [float(x) for x in args.rates.split(",")]
    configs = args.configs.split(",")
    best: dict[str, float] = {}
    per_rate: dict[float, list[Result]] = {}
    for rate in rates:
        results = []
        for name in configs:
            with tempfile.TemporaryDirectory(prefix="parlour-bench-cluster-") as tmp:
                async with CONFIGS[name](Path(tmp)) as dep:
                    r = await fanout(dep, rate, args.duration, args.members, args.senders)
            results.append(r)
            ok = r.lost == 0 and r.errors == 0 and r.cut_off == 0 and r.p99 <= args.p99_limit
            if ok:
                best[r.label] = max(best.get(r.label, 0.0), r.acked / r.elapsed)
        per_rate[rate] = results
        print(
            f"\noffered {rate:,.0f} msg/s for {args.duration:g} s, {args.members} members, "
            f"{args.senders} senders (load average {os.getloadavg()[0]:.2f})"
        )
        print_table(results)
        sys.stdout.flush()
    print(f"\ncapacity (nothing lost, p99 <= {args.p99_limit:g} ms), acknowledged msg/s:")
    for label, value in best.items():
        print(f"  {label:32} {value:>10,.0f}")
    project(per_rate, args.members, args.project_at)


def project(per_rate: dict[float, list[Result]], members: int, project_at: float) -> None:
    """CPU per message per node measured at the run offered nearest `project_at` (a rate
    the machine sustains, where commits are grouped as under real load) -> what N nodes
    carry."""
    rate = min(per_rate, key=lambda r: abs(r - project_at))
    chosen = per_rate[rate]
    by = {r.nodes: r for r in chosen if "PostgreSQL" in r.label or "behind" in r.label}
    one, three = by.get(1), by.get(3)
    if one is None or three is None or not one.acked or not three.acked:
        return
    c1 = one.node_cpu / one.acked  # one node: every send and every delivery
    c3 = three.node_cpu / three.acked  # three nodes: the same work, spread
    # per-node CPU per message = fixed (every node applies every message: bus, sequencer)
    # + shared (commit, fan-out to its members: divided by the nodes); from the two runs:
    # c1 = f + s, c3 = 3 f + s  (c3 counts the three nodes' CPU together)
    fixed = max(0.0, (c3 - c1) / 2)
    shared = max(1e-9, c1 - fixed)
    pg = one.pg_cpu / one.acked
    print(
        f"\nprojection from the run at {one.rate:,.0f} msg/s offered"
        " (N nodes, one core each, on N machines; PostgreSQL on its own):"
    )
    print(
        f"  per message: {shared * 1e6:.0f} us divided among the nodes, {fixed * 1e6:.0f} us on"
        f" every node, {pg * 1e6:.0f} us in PostgreSQL ({members} members)"
    )
    for n in (1, 2, 3, 5, 10, 20):
        node_limit = 1 / (fixed + shared / n)
        print(
            f"  {n:>3} nodes: {node_limit:>8,.0f} msg/s by the nodes' CPU"
            f" (PostgreSQL, one core: {1 / max(pg, 1e-9):,.0f} msg/s)"
        )


async def chaos(args: argparse.Namespace) -> None:
    from chaos import run_chaos

    from cluster_services import PrivatePostgres, PrivateRedis

    pg, redis_server = PrivatePostgres(), PrivateRedis()
    try:
        for name in args.faults.split(","):
            with fresh_database(pg.dsn) as make_db, tempfile.TemporaryDirectory() as tmp:
                local = LocalCluster(
                    store=make_db(),
                    bus=redis_server.url,
                    nodes=3,
                    prefix=fresh_prefix(),
                    work_dir=Path(tmp),
                    web=False,
                    admin_password=ADMIN_PASSWORD,
                    serve_args=SERVE,
                    env=ENV,
                    health_interval=0.25,
                )
                await local.start()
                try:

                    async def fault(n: int, name: str = name, local: LocalCluster = local) -> None:
                        if name == "kill":
                            i = n % local.nodes
                            await local.kill(i)
                            await asyncio.sleep(0.5)
                            await local.restart(i)
                        elif name == "redis":
                            await asyncio.to_thread(redis_server.stop)
                            await asyncio.sleep(2.0)
                            await asyncio.to_thread(redis_server.start)
                        else:
                            await asyncio.to_thread(pg.stop, True)
                            await asyncio.sleep(2.0)
                            await asyncio.to_thread(pg.start)

                    result = await run_chaos(
                        local.proxy_port,
                        fault,
                        clients=args.clients,
                        senders=args.senders_chaos,
                        rate=args.rate_each,
                        duration=args.duration,
                        every=args.every,
                        prefix=f"{name}-",
                    )
                    print(f"chaos ({name}): {result}")
                    sys.stdout.flush()
                finally:
                    await local.stop()
    finally:
        pg.close()
        redis_server.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", default="capacity", choices=["capacity", "chaos"])
    parser.add_argument("--rates", default="1000,2000,3000,5000")
    parser.add_argument("--configs", default="sqlite,pg1,pg3,pg3direct")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--p99-limit", type=float, default=50.0)
    parser.add_argument(
        "--project-at",
        type=float,
        default=3000.0,
        help="the offered rate whose CPU per message the projection uses (the nearest run)",
    )
    parser.add_argument("--faults", default="kill,redis,postgres", help="chaos mode")
    parser.add_argument("--clients", type=int, default=20, help="chaos mode")
    parser.add_argument("--senders-chaos", type=int, default=10, help="chaos mode")
    parser.add_argument("--rate-each", type=float, default=10.0, help="chaos mode, per sender")
    parser.add_argument(
        "--every", type=float, default=5.0, help="chaos mode: seconds between faults"
    )
    args = parser.parse_args()
    raise_nofile_limit()

    def stop(*_: object) -> None:  # SIGTERM: stop the servers and drop the databases first
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(
        f"parlour cluster benchmark ({os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}; PostgreSQL {PG_DSN.rsplit('@', 1)[-1]}, Redis {REDIS_URL})"
    )
    import uvloop

    uvloop.run(capacity(args) if args.mode == "capacity" else chaos(args))


if __name__ == "__main__":
    main()
