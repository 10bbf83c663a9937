"""Fan-out benchmark for `parlour serve` (one command; starts the servers as subprocesses).

    python bench/fanout.py                     # both modes with the issue's targets
    python bench/fanout.py fanout --members 100 --senders 10 --rate 10000 --duration 10
    python bench/fanout.py idle --connections 10000
    python bench/fanout.py fanout --baseline git:HEAD~1   # against a committed version
    python bench/fanout.py capacity --rates 2000,4000,6000,8000,10000 --baseline git:HEAD~1

Every figure is printed side by side with a *baseline* measured in the same run with the same
load generator, and their ratio. The default baseline, ``ceiling``, is a minimal asyncio (uvloop)
fan-out server in this file: it speaks just enough of the protocol (hello/signup/join/ping/send),
encodes each event once and writes it to every member, with no storage, no validation and no
limits. It is what one Python process on this machine can do at best, so parlour/ceiling says how
much the real server's durability and checks cost. ``git:REF`` runs the server of another commit
(a temporary ``git worktree``), ``path:DIR`` the server of another checkout, ``none`` skips
the baseline. The two runs are sequential, so compare them on an otherwise idle machine (the
header prints the load average) and repeat: figures move by tens of percent between runs.

fanout: N members in one room, S of them send at a fixed total rate (open loop: the offered rate
does not slow down when the server does). Every message carries its send time. The load
generator is made as cheap as possible because it shares the two cores with the server: raw
sockets, counting members only count newlines, senders count replies with ``bytes.count``, and
only a few probe members pull the send times out of what they receive (one regular-expression
call per chunk) to measure latency. Its own CPU time is printed next to the server's.

Prints acknowledged/s and deliveries/s over the time it really took (sending plus catching up),
the catch-up time after the offered load stopped, lost (acknowledged messages some member never
got, among members still connected), members cut off as slow consumers (the generator did
not read fast enough), p50/p99/max latency (send to receipt, probes), server CPU and RSS per
connection.

idle: M logged-in connections that do nothing; prints server RSS growth per connection (it
includes the core's session state and the user records created by the sign-ups).

capacity: the fan-out run at each offered rate of ``--rates`` (a fresh server each time, for
both parlour and the baseline), and the highest rate each sustains with p99 latency at most
``--p99-limit`` ms, nothing lost, no error and no member cut off: the capacity.

The server runs with the rate limit lifted and cheap Argon2 parameters (so that sign-ups do not
dominate setup). Results: docs/benchmarks/chat.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ADMIN_PASSWORD = "bench-admin-password"
PASSWORD = "bench-password"
ROOM = "general"
REPO = Path(__file__).resolve().parent.parent


def raise_nofile_limit() -> int:
    """Raise this process's open-file limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


# ---------------------------------------------------------------------------- servers


@dataclass
class Server:
    label: str
    proc: subprocess.Popen[bytes]
    port: int
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the server process, all threads."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / ticks, int(fields[12]) / ticks

    def syscalls(self) -> tuple[int, int]:
        """(read-like, write-like) system calls of the server process so far (/proc/PID/io)."""
        io = dict(
            line.split(": ")
            for line in Path(f"/proc/{self.proc.pid}/io").read_text().splitlines()
            if ": " in line
        )
        return int(io["syscr"]), int(io["syscw"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fn in self.cleanup:
            fn()


@contextlib.contextmanager
def git_checkout(ref: str) -> Iterator[Path]:
    """A temporary worktree of ``ref`` (its ``src`` goes first on the server's PYTHONPATH)."""
    where = Path(tempfile.mkdtemp(prefix="parlour-bench-ref-"))
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), ref],
        check=True,
        capture_output=True,
    )
    try:
        yield where
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(where)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(where, ignore_errors=True)


def _wait_listening(proc: subprocess.Popen[bytes]) -> int:
    assert proc.stdout is not None
    for raw in proc.stdout:
        found = re.search(r"listening on tcp://[^:]+:(\d+)", raw.decode())
        if found:
            return int(found.group(1))
    raise RuntimeError("server did not start")


def start_parlour(label: str, max_connections: int, synchronous: str, src: Path | None) -> Server:
    data_dir = tempfile.TemporaryDirectory(prefix="parlour-bench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
    env.update(
        PARLOUR_ADMIN_PASSWORD=ADMIN_PASSWORD,
        PARLOUR_ARGON2_TIME_COST="1",
        PARLOUR_ARGON2_MEMORY_KIB="64",
        PARLOUR_SQLITE_SYNCHRONOUS=synchronous,
        PARLOUR_SEND_QUEUE_MAX=str(8 << 20),
    )
    if src is not None:
        env["PYTHONPATH"] = str(src / "src")
    cmd = [
        sys.executable, "-m", "parlour", "serve", "--port", "0", "--data-dir", data_dir.name,
        "--rate", "1000000", "--burst", "1000000", "--duplicate-login", "allow",
        "--max-connections", str(max_connections), "--idle-timeout", "600",
        "--log-level", os.environ.get("BENCH_SERVER_LOG", "WARNING"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    return Server(label, proc, _wait_listening(proc), [data_dir.cleanup])


def start_ceiling() -> Server:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "ceiling-server"], stdout=subprocess.PIPE
    )
    return Server("ceiling", proc, _wait_listening(proc))


class _CeilingProtocol(asyncio.Protocol):
    """The ceiling baseline: a room fan-out with nothing but JSON in and out. Events of one
    loop iteration are joined once and written to every member in one call (the best case
    of write coalescing); replies go straight to their sender."""

    room: dict[int, asyncio.Transport] = {}  # noqa: RUF012 - one room for the whole process
    pending: list[bytes] = []  # noqa: RUF012
    seq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buf = b""
        self.key = id(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.room.pop(self.key, None)

    @classmethod
    def flush(cls) -> None:
        blob = b"".join(cls.pending)
        cls.pending.clear()
        for t in cls.room.values():
            t.write(blob)

    def data_received(self, data: bytes) -> None:
        lines = (self.buf + data).split(b"\n")
        self.buf = lines.pop()
        cls = type(self)
        for line in lines:
            rq = json.loads(line)
            kind, rid = rq.get("type"), rq.get("id")
            data_out: dict[str, Any] = {}
            if kind == "join":
                self.room[self.key] = self.transport
            elif kind == "send":
                cls.seq += 1
                now = time.time()
                event = {"type": "event", "event": "message", "data": {
                    "room": ROOM, "seq": cls.seq, "ts": now, "sender": "m0",
                    "text": rq["text"], "edited": False, "deleted": False,
                    "client_id": rq["client_id"],
                }}  # fmt: skip
                if not cls.pending:
                    asyncio.get_running_loop().call_soon(cls.flush)
                cls.pending.append((json.dumps(event, separators=(",", ":")) + "\n").encode())
                data_out = {"room": ROOM, "seq": cls.seq, "ts": now}
            reply = {"type": "ok", "id": rid, "data": data_out}
            self.transport.write((json.dumps(reply, separators=(",", ":")) + "\n").encode())


async def ceiling_server() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_CeilingProtocol, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"ceiling fan-out server listening on tcp://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    import signal

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


# ---------------------------------------------------------------------------- clients

_TS = re.compile(rb'"text":"(\d+\.\d+) ')


class Conn(asyncio.Protocol):
    """A member connection. During setup every line is parsed; during the run a member only
    counts newlines, a sender also counts its replies and a probe extracts the send times it
    sees (both over whole lines only, so nothing is missed at a chunk boundary)."""

    def __init__(self, sender: bool, probe: bool) -> None:
        self.sender = sender
        self.probe = probe
        self.setup = True
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.lines = 0
        self.acks = 0
        self.errors = 0
        self.last_data = 0.0
        self.latencies: list[float] = []
        self.next_id = 1
        self.lost_connection = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_connection = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.setup:
            self.lines += data.count(b"\n")
            self.last_data = time.perf_counter()
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
                self.latencies += [now - float(t) for t in _TS.findall(buf, 0, cut)]
            return
        buf = self.buf + data if self.buf else data
        lines = buf.split(b"\n")
        self.buf = lines.pop()
        for line in lines:
            if not line.startswith(b'{"type":"event"'):
                self.replies.put_nowait(json.loads(line))

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def request(self, type: str, **fields: Any) -> dict[str, Any]:
        while True:
            rid = self.next_id
            self.next_id += 1
            self.write(json.dumps({"id": rid, "type": type, **fields}).encode() + b"\n")
            reply = await asyncio.wait_for(self.replies.get(), 120)
            if reply.get("code") in ("server_busy", "unavailable"):
                # a crowd of sign-ups from one address fills its share of the Argon2 queue
                await asyncio.sleep(float(reply.get("retry_after") or 1.0))
                continue
            if reply.get("type") != "ok":
                raise RuntimeError(f"{type} failed: {reply}")
            data: dict[str, Any] = reply["data"]
            return data

    def start_run(self) -> None:
        self.setup = False
        self.buf = b""
        self.lines = self.acks = self.errors = 0
        self.latencies.clear()

    @property
    def messages(self) -> int:
        return self.lines - self.acks - self.errors


async def open_member(port: int, name: str, sender: bool, probe: bool, join: bool) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Conn(sender, probe), "127.0.0.1", port)
    await conn.request("hello", version=1)
    await conn.request("signup", username=name, password=PASSWORD)
    if join:
        await conn.request("join", room=ROOM, limit=1)
    return conn


async def open_many(
    port: int, names: list[str], senders: list[bool], probes: list[bool], join: bool
) -> list[Conn]:
    out: list[Conn] = []
    batch = 200
    for i in range(0, len(names), batch):
        out += await asyncio.gather(
            *(
                open_member(port, n, k, p, join)
                for n, k, p in zip(
                    names[i : i + batch],
                    senders[i : i + batch],
                    probes[i : i + batch],
                    strict=True,
                )
            )
        )
    return out


# ---------------------------------------------------------------------------- fan-out mode


@dataclass
class FanoutResult:
    label: str
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
    cut_off: int = 0  # members the server disconnected (slow consumers: they did not keep up)
    elapsed: float = 0.0  # from the first send to the last delivery
    catch_up: float = 0.0  # from the end of sending to the last delivery
    latencies: list[float] = field(default_factory=list)
    rss_per_conn_kib: float = 0.0
    server_cpu: float = 0.0
    server_sys: float = 0.0
    server_reads: int = 0
    server_writes: int = 0
    client_cpu: float = 0.0

    def pct(self, p: float) -> float:
        lat = self.latencies
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    def rows(self) -> list[tuple[str, float, str]]:
        """(name, value, format) rows; higher is better for none of them implicitly."""
        return [
            ("acknowledged/s", self.acked / self.elapsed, ",.0f"),
            ("deliveries/s", self.deliveries / self.elapsed, ",.0f"),
            ("catch-up after load (s)", self.catch_up, ".2f"),
            ("lost", float(self.lost), ",.0f"),
            ("members cut off (slow)", float(self.cut_off), ",.0f"),
            ("errors", float(self.errors), ",.0f"),
            ("latency p50 (ms)", self.pct(0.50), ".1f"),
            ("latency p99 (ms)", self.pct(0.99), ".1f"),
            ("latency max (ms)", self.pct(1.0), ".1f"),
            ("server CPU (cores)", self.server_cpu / self.elapsed, ".2f"),
            ("server CPU/message (us)", self.server_cpu / max(1, self.acked) * 1e6, ".1f"),
            ("  of which kernel (%)", 100 * self.server_sys / max(1e-9, self.server_cpu), ".0f"),
            ("server read calls/message", self.server_reads / max(1, self.acked), ".2f"),
            ("server write calls/message", self.server_writes / max(1, self.acked), ".2f"),
            ("load generator CPU (cores)", self.client_cpu / self.elapsed, ".2f"),
            ("server RSS/connection (KiB)", self.rss_per_conn_kib, ".1f"),
        ]


async def fanout(
    server: Server, members: int, senders: int, rate: float, duration: float, probes: int
) -> FanoutResult:
    rss0 = server.rss_kib()
    names = [f"m{i}" for i in range(members)]
    sending = [i < senders for i in range(members)]
    probe = [senders <= i < senders + probes for i in range(members)]
    conns = await open_many(server.port, names, sending, probe, join=True)
    # a round trip on every connection: all setup events (joins) have arrived
    await asyncio.gather(*(c.request("ping") for c in conns))
    rss1 = server.rss_kib()
    for c in conns:
        c.start_run()
    sender_conns = conns[:senders]
    result = FanoutResult(server.label, members, senders, rate, duration)
    result.rss_per_conn_kib = (rss1 - rss0) / members
    pad = b"x" * 40
    room = ROOM.encode()
    user0, sys0 = server.cpu_times()
    reads0, writes0 = server.syscalls()
    ccpu0 = time.process_time()
    start = time.perf_counter()
    sent = 0
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
                    % (n, room, now, pad, n)
                )
            for conn, frames in zip(sender_conns, per, strict=True):
                if frames:
                    assert conn.transport is not None
                    conn.transport.writelines(frames)
            sent += due
        await asyncio.sleep(0.001)
    sent_end = time.perf_counter()
    result.sent = sent
    # catch up: wait until every member has what was acknowledged, or nothing moves for 10 s
    last, still = -1, time.perf_counter()
    while True:
        acked = sum(c.acks for c in sender_conns)
        errors = sum(c.errors for c in sender_conns)
        total = sum(c.messages for c in conns)
        live = [c for c in conns if not c.lost_connection]
        if acked + errors >= sent and all(c.messages >= acked for c in live):
            break
        if total != last:
            last, still = total, time.perf_counter()
        elif time.perf_counter() - still > 10:
            break
        await asyncio.sleep(0.01)
    end = max([sent_end] + [c.last_data for c in conns])
    user1, sys1 = server.cpu_times()
    result.server_cpu = user1 - user0 + sys1 - sys0
    result.server_sys = sys1 - sys0
    reads1, writes1 = server.syscalls()
    result.server_reads, result.server_writes = reads1 - reads0, writes1 - writes0
    result.client_cpu = time.process_time() - ccpu0
    result.elapsed = end - start
    result.catch_up = end - sent_end
    result.acked = sum(c.acks for c in sender_conns)
    result.errors = sum(c.errors for c in sender_conns)
    result.expected = result.acked * members
    result.deliveries = sum(c.messages for c in conns)
    # a member the server cut off as a slow consumer would resume after reconnecting; what it
    # missed is not counted as lost, the cut-off is reported on its own line
    live = [c for c in conns if not c.lost_connection]
    result.cut_off = len(conns) - len(live)
    result.lost = sum(max(0, result.acked - c.messages) for c in live)
    for c in conns:
        result.latencies += c.latencies
    result.latencies.sort()
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return result


# ---------------------------------------------------------------------------- idle mode


@dataclass
class IdleResult:
    label: str
    connections: int
    setup: float
    rss0: int
    rss1: int

    def rows(self) -> list[tuple[str, float, str]]:
        return [
            ("setup time (s)", self.setup, ".1f"),
            ("server RSS before (MiB)", self.rss0 / 1024, ".1f"),
            ("server RSS after (MiB)", self.rss1 / 1024, ".1f"),
            ("server RSS/connection (KiB)", (self.rss1 - self.rss0) / self.connections, ".2f"),
        ]


async def idle(server: Server, connections: int) -> IdleResult:
    await asyncio.sleep(0.5)
    rss0 = server.rss_kib()
    t0 = time.perf_counter()
    names = [f"idle{i}" for i in range(connections)]
    conns = await open_many(
        server.port, names, [False] * connections, [False] * connections, join=False
    )
    setup = time.perf_counter() - t0
    await asyncio.sleep(1.0)
    rss1 = server.rss_kib()
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return IdleResult(server.label, connections, setup, rss0, rss1)


# ---------------------------------------------------------------------------- hot-path mode


async def hotpath(members: int, senders: int, messages: int, synchronous: str) -> str:
    """The server's own CPU per message, in process and without sockets: the composed server
    (codec, core, pipeline, SQLite group commit, hub) fed send frames directly. CPU time is
    that of all threads of this process, so a busy machine slows it down but barely changes it.
    """
    from parlour.server.app import ChatServer
    from parlour.server.config import load_settings
    from parlour.transports.testing import CountingTransport

    with tempfile.TemporaryDirectory(prefix="parlour-hot-") as data:
        settings = load_settings(
            env={
                "PARLOUR_DATA_DIR": data,
                "PARLOUR_PORT": "0",
                "PARLOUR_SQLITE_SYNCHRONOUS": synchronous,
                "PARLOUR_ARGON2_TIME_COST": "1",
                "PARLOUR_ARGON2_MEMORY_KIB": "64",
                "PARLOUR_RATE": "1000000",
                "PARLOUR_BURST": "1000000",
                "PARLOUR_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "PARLOUR_LOG_LEVEL": "WARNING",
            }
        )
        server = await ChatServer.start(settings)
        endpoint = server.endpoint
        try:
            conns = []
            for i in range(members):
                t = CountingTransport()  # counts the bytes written, keeps none
                # one address per member: the fair password pool and the per-address limits
                # treat many sign-ups from one address as one client
                conn = endpoint.open(t, f"127.0.{i // 250}.{i % 250 + 1}:{10000 + i}")
                assert conn is not None
                conns.append((conn, t))
                endpoint.received(
                    conn,
                    b'{"id":1,"type":"hello","version":1}\n'
                    b'{"id":2,"type":"signup","username":"h%d","password":"%s"}\n'
                    b'{"id":3,"type":"join","room":"%s","limit":1}\n'
                    % (i, PASSWORD.encode(), ROOM.encode()),
                )
            while endpoint.pipeline.in_flight or any(c.busy for c in endpoint._conns.values()):
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            sent = 0
            chunk = 20  # frames per read, as a busy socket would deliver them
            wall0, cpu0 = time.perf_counter(), time.process_time()
            while sent < messages:
                for conn, _ in conns[:senders]:
                    frames = b"".join(
                        b'{"id":%d,"type":"send","room":"%s","text":"%.6f %s","client_id":"h%d"}\n'
                        % (n, ROOM.encode(), time.time(), b"x" * 40, n)
                        for n in range(sent, sent + chunk)
                    )
                    endpoint.received(conn, frames)
                    sent += chunk
                await asyncio.sleep(0)
                while endpoint.pipeline.in_flight > 2000:
                    await asyncio.sleep(0.001)
            await endpoint.pipeline.drained()
            await asyncio.sleep(0)
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0
            delivered = sum(t.written for _, t in conns)
        finally:
            await server.stop()
    return (
        f"hot path: {members} members, {senders} senders, {messages:,} messages, in process:"
        f" {cpu / messages * 1e6:.1f} us CPU per message ({messages / wall:,.0f} messages/s"
        f" wall, {delivered / 1e6:.0f} MB delivered)"
    )


# ---------------------------------------------------------------------------- main


def side_by_side(
    title: str, ours: list[tuple[str, float, str]], base: list[tuple[str, float, str]] | None
) -> str:
    out = [title]
    if base is None:
        out += [f"  {name:<30} {value:>14{fmt}}" for name, value, fmt in ours]
        return "\n".join(out)
    out.append(f"  {'':<30} {'parlour':>14} {'baseline':>14} {'ratio':>8}")
    for (name, value, fmt), (_, bvalue, _) in zip(ours, base, strict=True):
        ratio = f"{value / bvalue:8.2f}" if bvalue else "       -"
        out.append(f"  {name:<30} {value:>14{fmt}} {bvalue:>14{fmt}} {ratio}")
    return "\n".join(out)


def run_loop(main: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    return uvloop.run(main)


def with_baseline(
    baseline: str, max_connections: int, sync: str, work: Callable[[Server], Any]
) -> tuple[Any, Any]:
    """Run ``work`` against parlour, then against the baseline server."""
    server = start_parlour("parlour", max_connections, sync, None)
    try:
        ours = run_loop(work(server))
    finally:
        server.stop()
    if baseline == "none":
        return ours, None
    if baseline == "ceiling":
        base = start_ceiling()
        try:
            return ours, run_loop(work(base))
        finally:
            base.stop()
    if baseline.startswith("path:"):
        where = Path(baseline.removeprefix("path:"))
        base = start_parlour(f"parlour@{where}", max_connections, sync, where)
        try:
            return ours, run_loop(work(base))
        finally:
            base.stop()
    ref = baseline.removeprefix("git:")
    with git_checkout(ref) as src:
        base = start_parlour(f"parlour@{ref}", max_connections, sync, src)
        try:
            return ours, run_loop(work(base))
        finally:
            base.stop()


def sustained(r: FanoutResult, p99_limit: float) -> bool:
    """Whether a fan-out run kept up: p99 within the limit, nothing lost, no error, no member
    cut off, and no backlog left when the offered load stopped (under a second)."""
    return (
        r.pct(0.99) <= p99_limit
        and r.lost == 0
        and r.errors == 0
        and r.cut_off == 0
        and r.acked >= r.sent
        and r.catch_up < 1.0
    )


def capacity(args: argparse.Namespace) -> None:
    rates = [float(x) for x in args.rates.split(",")]
    best: dict[str, float] = {}
    print(
        f"capacity: {args.members} members, {args.senders} senders, {args.duration:g}s per rate,"
        f" sustained = p99 <= {args.p99_limit:g} ms, nothing lost, no error, no cut-off"
    )
    print(f"  {'offered/s':>10}  {'server':<22} {'acked/s':>9} {'p50 ms':>8} {'p99 ms':>8} ok")
    for rate in rates:
        ours, base = with_baseline(
            args.baseline,
            args.members + 64,
            args.sync,
            lambda s, rate=rate: fanout(
                s, args.members, args.senders, rate, args.duration, args.probes
            ),
        )
        for r in (ours, base):
            if r is None:
                continue
            ok = sustained(r, args.p99_limit)
            if ok:
                best[r.label] = max(best.get(r.label, 0.0), rate)
            print(
                f"  {rate:>10,.0f}  {r.label:<22} {r.acked / r.elapsed:>9,.0f}"
                f" {r.pct(0.5):>8.1f} {r.pct(0.99):>8.1f} {'yes' if ok else 'no'}",
                flush=True,
            )
    for label, value in best.items():
        print(f"  capacity of {label}: {value:,.0f} messages/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "mode",
        nargs="?",
        choices=["all", "fanout", "idle", "hotpath", "capacity", "ceiling-server"],
        default="all",
    )
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10000.0, help="total messages/s offered")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--probes", type=int, default=3, help="members measuring latency")
    parser.add_argument("--connections", type=int, default=10000, help="idle mode")
    parser.add_argument("--messages", type=int, default=100000, help="hotpath mode")
    parser.add_argument("--sync", choices=["full", "normal"], default="full")
    parser.add_argument("--baseline", default="ceiling", help="ceiling (default), git:REF, or none")
    parser.add_argument("--rates", default="2000,4000,6000,8000,10000,12000", help="capacity mode")
    parser.add_argument("--p99-limit", type=float, default=50.0, help="capacity mode (ms)")
    args = parser.parse_args()
    nofile = raise_nofile_limit()
    if args.mode == "ceiling-server":
        run_loop(ceiling_server())
        return
    if args.mode == "hotpath":
        print(run_loop(hotpath(args.members, args.senders, args.messages, args.sync)))
        return
    needed = max(args.members, args.connections if args.mode != "fanout" else 0) + 64
    if nofile < needed:
        sys.exit(f"open-file limit {nofile} < {needed}: raise `ulimit -n` (hard limit)")

    print(
        f"parlour fan-out benchmark  ({os.cpu_count()} CPUs, sqlite synchronous={args.sync},"
        f" open-file limit {nofile}, baseline {args.baseline},"
        f" load average {os.getloadavg()[0]:.2f})"
    )
    if args.mode == "capacity":
        capacity(args)
        return
    if args.mode in ("all", "fanout"):
        ours, base = with_baseline(
            args.baseline,
            args.members + 64,
            args.sync,
            lambda s: fanout(s, args.members, args.senders, args.rate, args.duration, args.probes),
        )
        title = (
            f"fan-out: {args.members} members, {args.senders} senders, "
            f"{args.rate:,.0f} msg/s offered for {args.duration:g}s "
            f"(parlour sent {ours.sent:,}, acked {ours.acked:,}, delivered "
            f"{ours.deliveries:,} of {ours.expected:,}; {len(ours.latencies):,} latency samples)"
        )
        print(side_by_side(title, ours.rows(), base.rows() if base else None), flush=True)
    if args.mode in ("all", "idle"):
        ours, base = with_baseline(
            args.baseline,
            args.connections + 64,
            args.sync,
            lambda s: idle(s, args.connections),
        )
        title = f"idle: {args.connections:,} logged-in connections"
        print(side_by_side(title, ours.rows(), base.rows() if base else None), flush=True)


if __name__ == "__main__":
    main()
