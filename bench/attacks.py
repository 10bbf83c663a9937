"""Attacks on `parlour serve`, run the way a hostile user would, with the figures issue 10 asks
for (one command; starts real server processes on 127.0.0.1 with the default Argon2 cost).

    python bench/attacks.py                 # every scenario
    python bench/attacks.py kill9 --rounds 8
    python bench/attacks.py storm --clients 300
    python bench/attacks.py hostile --duration 20
    python bench/attacks.py fuzz --frames 300000

kill9    clients send with the library (idempotent client ids, reconnect, resend) while the
         server is killed with SIGKILL and restarted every few seconds; afterwards the whole
         history is read back: acknowledged messages lost, and messages stored twice.
         Goal: 0 and 0.
storm    N library clients, spread over loopback addresses (N/10 per address), logged in; the
         server is killed and restarted; how many are back (logged in again) and when.
         Goal: all 300 within 30 s.
hostile  a well-behaved client sends and pings while 10 hostile connections send garbage
         (5) and flood reads (5): its p50/p99 request latency, against the same client alone
         in the same run (the baseline). Goal: p99 <= 50 ms.
fuzz     a few hundred thousand hostile frames over every request type (valid requests
         mutated: wrong types, huge numbers, deep nesting, odd Unicode, missing fields) from a
         few connections that reconnect when closed; tracebacks in the server's log, and the
         server's RSS before and after. Goal: 0 tracebacks, RSS bounded.

Results: docs/benchmarks/attacks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from parlour.client import Backoff, Client, ConnectionState, ServerError  # noqa: E402
from parlour.protocol import REQUEST_TYPES, ErrorCode  # noqa: E402

ADMIN_PASSWORD = "attack-admin-password"
PASSWORD = "attack-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """`parlour serve` in a subprocess (stderr to a log file), restartable on one port."""

    data_dir: Path
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "parlour",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--web-port",
                "0",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=REPO,
        )
        self.starts += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tracebacks(self) -> int:
        return self.log_path.read_text(errors="replace").count("Traceback")


def server(tmp: Path, **settings: str) -> ServerProcess:
    env = dict(os.environ)
    env.update(
        {
            "PARLOUR_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "PARLOUR_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(REPO / "src"),
        }
    )
    env.update({f"PARLOUR_{k.upper()}": v for k, v in settings.items()})
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    return ServerProcess(data, free_port(), env, tmp / "server.log")


def source(i: int, per: int = 10) -> tuple[str, int]:
    """A loopback source address: `per` clients on each of 127.0.1.x."""
    return (f"127.0.1.{1 + i // per}", 0)


# ------------------------------------------------------------------------------------ kill9


@dataclass
class Kill9Result:
    rounds: int
    clients: int
    acked: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    send_errors: int = 0


async def kill9(rounds: int, clients: int, interval: float) -> Kill9Result:
    result = Kill9Result(rounds, clients)
    with tempfile.TemporaryDirectory(prefix="parlour-attack-") as tmp:
        srv = server(Path(tmp), rate="200", burst="200")
        srv.start()
        backoff = Backoff(base=0.05, maximum=1.0)
        users = [
            Client("127.0.0.1", srv.port, backoff=backoff, local_addr=source(i))
            for i in range(clients)
        ]
        acked: dict[str, int] = {}
        stop = asyncio.Event()
        try:
            for i, c in enumerate(users):
                await c.connect()
                await c.signup(f"k{i}", PASSWORD)
                await c.join("general")

            async def talk(i: int, c: Client) -> None:
                n = 0
                while not stop.is_set():
                    text = f"k{i}-{n}"
                    try:
                        ack = await c.send("general", text)
                        acked[text] = ack.seq
                    except (ServerError, OSError, TimeoutError, ConnectionError) as exc:
                        result.send_errors += 1
                        if isinstance(exc, ServerError) and exc.code == "rate_limited":
                            await asyncio.sleep(0.05)
                    except Exception:
                        result.send_errors += 1
                        await asyncio.sleep(0.05)
                    n += 1

            talkers = [asyncio.create_task(talk(i, c)) for i, c in enumerate(users)]
            for _ in range(rounds):
                await asyncio.sleep(interval)
                await asyncio.to_thread(srv.kill9)
                await asyncio.to_thread(srv.start)
            await asyncio.sleep(interval)
            stop.set()
            await asyncio.gather(*talkers, return_exceptions=True)
            reader = Client("127.0.0.1", srv.port)
            await reader.connect()
            await reader.login("admin", ADMIN_PASSWORD)
            await reader.join("general")
            texts: list[str] = []
            seqs: list[int] = []
            before: int | None = None
            while True:
                page = await reader.history("general", before=before, limit=500)
                texts[:0] = [m.text or "" for m in page.messages]
                seqs[:0] = [m.seq for m in page.messages]
                if not page.has_more or not page.messages:
                    break
                before = page.messages[0].seq
            await reader.close()
        finally:
            stop.set()
            for c in users:
                with contextlib.suppress(Exception):
                    await c.close()
            srv.stop()
    result.acked = len(acked)
    result.stored = len(texts)
    counts: dict[str, int] = {}
    for t in texts:
        counts[t] = counts.get(t, 0) + 1
    result.duplicated = sum(n - 1 for n in counts.values() if n > 1)
    result.lost = sum(1 for t in acked if t not in counts)
    result.out_of_order = sum(1 for a, b in itertools.pairwise(seqs) if b != a + 1)
    return result


# ------------------------------------------------------------------------------------ storm


@dataclass
class StormResult:
    clients: int
    back: int = 0
    all_back_after: float | None = None
    p50: float = 0.0
    p99: float = 0.0
    refused_busy: int = 0
    #: the last state of each client that did not come back (state: detail -> how many)
    stuck: dict[str, int] = field(default_factory=dict)


async def storm(clients: int, deadline: float) -> StormResult:
    result = StormResult(clients)
    with tempfile.TemporaryDirectory(prefix="parlour-attack-") as tmp:
        srv = server(Path(tmp))
        srv.start()
        killed = [False]
        restarted = [0.0]
        back_at: dict[int, float] = {}  # when each client was logged in again (perf_counter)
        all_back = asyncio.Event()

        last: dict[int, str] = {}
        stuck_states: dict[int, str] = {}

        def watcher(i: int) -> Callable[[ConnectionState, str], None]:
            def on_state(state: ConnectionState, detail: str) -> None:
                last[i] = f"{state.value}: {detail}"
                if "server_busy" in detail:
                    result.refused_busy += 1
                # a client may be back before `srv.start` returns: count from the kill
                if killed[0] and state is ConnectionState.CONNECTED and i not in back_at:
                    back_at[i] = time.perf_counter()
                    if len(back_at) == clients:
                        all_back.set()

            return on_state

        users = [
            Client("127.0.0.1", srv.port, on_state=watcher(i), local_addr=source(i))
            for i in range(clients)
        ]
        try:
            sem = asyncio.Semaphore(20)

            async def setup(i: int, c: Client) -> None:
                async with sem:
                    await c.connect()
                    await c.signup(f"s{i}", PASSWORD)

            await asyncio.gather(*(setup(i, c) for i, c in enumerate(users)))
            killed[0] = True
            await asyncio.to_thread(srv.kill9)
            await asyncio.to_thread(srv.start)
            restarted[0] = time.perf_counter()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_back.wait(), deadline)
            stuck_states = dict(last)  # before the clients are closed below
        finally:
            for c in users:
                with contextlib.suppress(Exception):
                    await c.close()
            srv.stop()
    # seconds after the restarted server was listening (0: back by then)
    times = sorted(max(0.0, t - restarted[0]) for t in back_at.values())
    result.back = len(times)
    for i in range(clients):
        if i not in back_at:
            what = stuck_states.get(i, "no state change")
            result.stuck[what] = result.stuck.get(what, 0) + 1
    if len(times) == clients:
        result.all_back_after = times[-1]
    if times:
        result.p50 = times[len(times) // 2]
        result.p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
    return result


# ------------------------------------------------------------------------------------ hostile


@dataclass
class HostileResult:
    label: str
    requests: int = 0
    latencies: list[float] = field(default_factory=list)
    hostile_frames: int = 0
    #: the server's CPU seconds per wall second while the good client measured
    server_cores: float = 0.0

    def pct(self, p: float) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")


async def _garbage(
    port: int, i: int, stop: asyncio.Event, counter: list[int], rng: random.Random
) -> None:
    """Garbage as fast as the server takes it, reconnecting at once when closed, from an
    address of its own (127.0.2.x: an attacker is not the good client's neighbour)."""
    pieces = [b"{", b"}", b"[", b'"', b"\\", b"\xff", b"NaN", b"9" * 40, b'{"id":1}', b"\n"]
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(f"127.0.2.{1 + i}", 0)
            )
        except OSError:
            await asyncio.sleep(0.05)
            continue
        drain = asyncio.create_task(reader.read(-1))
        try:
            while not stop.is_set() and not writer.is_closing() and not drain.done():
                junk = b"".join(rng.choice(pieces) for _ in range(2000)) + b"\n"
                writer.write(junk)
                counter[0] += junk.count(b"\n")
                await writer.drain()
        except (ConnectionError, RuntimeError, OSError):
            pass
        finally:
            writer.close()
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
        await asyncio.sleep(0.01)


async def _reader_flood(port: int, i: int, stop: asyncio.Event, counter: list[int]) -> None:
    c = Client("127.0.0.1", port, reconnect=False, local_addr=source(100 + i, 1))
    await c.connect()
    await c.signup(f"flood{i}", PASSWORD)
    await c.join("general")
    conn: Any = c
    while not stop.is_set():
        for kind, fields in (
            ("history", {"room": "general", "limit": 500}),
            ("since", {"ts": 0, "limit": 500}),
            ("who", {"since": 3600}),
        ):
            with contextlib.suppress(ServerError):
                await conn.request(kind, **fields)
            counter[0] += 1
    await c.close()


def _attack_process(port: int, count: int, seconds: float, pipe: Any) -> None:
    """The hostile connections, in a process of their own, for `seconds`; sends "started"
    once they run, then how many frames and requests they sent."""

    async def attack() -> int:
        stop = asyncio.Event()
        counter = [0]
        rng = random.Random(1)
        tasks = [
            asyncio.create_task(
                _garbage(port, i, stop, counter, rng)
                if i % 2 == 0
                else _reader_flood(port, i, stop, counter)
            )
            for i in range(count)
        ]
        pipe.send("started")
        await asyncio.sleep(seconds)
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return counter[0]

    pipe.send(run(attack))


async def hostile(duration: float, hostile_count: int) -> tuple[HostileResult, HostileResult]:
    results = []
    for label, attack in (("alone", False), ("under attack", True)):
        result = HostileResult(label)
        with tempfile.TemporaryDirectory(prefix="parlour-attack-") as tmp:
            srv = server(Path(tmp), max_connections_per_address="0")
            srv.start()
            counter = [0]
            try:
                good = Client("127.0.0.1", srv.port)
                await good.connect()
                await good.signup("good", PASSWORD)
                await good.join("general")
                for i in range(200):  # something to read (at the rate the server allows)
                    while True:
                        try:
                            await good.send("general", f"history {i} " + "x" * 200)
                            break
                        except ServerError as exc:
                            if exc.code is not ErrorCode.RATE_LIMITED:
                                raise
                            await asyncio.sleep(float(exc.extra.get("retry_after", 0.05)))
                attacker = None
                if attack:  # in a process of its own: it must not starve this measuring loop
                    ctx = multiprocessing.get_context("spawn")
                    parent, child = ctx.Pipe()
                    attacker = ctx.Process(
                        target=_attack_process,
                        args=(srv.port, hostile_count, duration + 2.0, child),
                        daemon=True,
                    )
                    attacker.start()
                    await asyncio.to_thread(parent.recv)  # the attackers are connected
                # let the attack get going (and the good client's rate bucket refill after
                # filling the history, in both runs)
                await asyncio.sleep(1.0)
                cpu0, wall0 = srv.cpu_seconds(), time.perf_counter()
                end = time.perf_counter() + duration
                n = 0
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    if n % 2:
                        await good.ping()
                    else:
                        await good.send("general", f"good {n}")
                    result.latencies.append(time.perf_counter() - t0)
                    n += 1
                    await asyncio.sleep(0.05)  # 10 messages/s: well within the rate limit
                result.server_cores = (srv.cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
                result.requests = n
                await good.close()
                if attacker is not None:
                    counter[0] = await asyncio.to_thread(parent.recv)
                    attacker.join(10)
            finally:
                srv.stop()
            result.hostile_frames = counter[0]
        results.append(result)
    return results[0], results[1]


# ------------------------------------------------------------------------------------ fuzz


def _hostile_value(rng: random.Random) -> Any:
    choices: list[Callable[[], Any]] = [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.randint(-(2**70), 2**70),
        lambda: int("9" * rng.randint(20, 400)),
        lambda: rng.choice([1e308, -1e308, 1e-320, 0.0, -0.0]),
        lambda: (
            "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 40)))
            .encode("utf-8", "replace")
            .decode("utf-8", "replace")
        ),
        lambda: "a" * rng.randint(0, 5000),
        lambda: "\n\r\t\x00\u2028" * rng.randint(1, 5),
        lambda: [rng.randint(0, 9)] * rng.randint(0, 50),
        lambda: {"rooms": {"general": rng.randint(-5, 2**60)}, "dms": {"x": "y"}},
        lambda: {"a": {"b": {"c": [1, [2, [3]]]}}},
        lambda: rng.choice(["general", "admin", "..", "a" * 33, "", "é"]),
    ]
    return rng.choice(choices)()


def fuzz_frame(rng: random.Random, rid: int) -> bytes:
    kind = rng.choice(sorted(REQUEST_TYPES))
    cls: Any = REQUEST_TYPES[kind]
    frame: dict[str, Any] = {"id": rid, "type": kind}
    for name, _, _ in cls._FIELDS:
        if rng.random() < 0.8:
            frame[name] = _hostile_value(rng)
    if rng.random() < 0.05:
        frame["id"] = _hostile_value(rng)
    if rng.random() < 0.02:
        frame["type"] = _hostile_value(rng)
    try:
        return json.dumps(frame, ensure_ascii=rng.random() < 0.5).encode() + b"\n"
    except (ValueError, TypeError):
        return b'{"id":1,"type":"ping"}\n'


@dataclass
class FuzzResult:
    frames: int = 0
    connections: int = 0
    tracebacks: int = 0
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    still_serving: bool = False


async def fuzz(frames: int, connections: int) -> FuzzResult:
    result = FuzzResult()
    with tempfile.TemporaryDirectory(prefix="parlour-attack-") as tmp:
        srv = server(Path(tmp), max_connections_per_address="0", log_level="INFO")
        srv.start()
        try:
            setup = Client("127.0.0.1", srv.port)
            await setup.connect()
            await setup.signup("fuzzer", PASSWORD)
            await setup.close()
            result.rss_before_kib = srv.rss_kib()
            per = frames // connections

            async def worker(w: int) -> None:
                rng = random.Random(w)
                sent = 0
                hello = b'{"id":0,"type":"hello","version":1}\n'
                login = json.dumps(
                    {"id": -1, "type": "login", "username": "fuzzer", "password": PASSWORD}
                ).encode()
                while sent < per:
                    result.connections += 1
                    try:
                        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
                    except OSError:
                        await asyncio.sleep(0.05)
                        continue
                    drain = asyncio.create_task(reader.read(-1))
                    try:
                        writer.write(hello + login + b"\n" if w % 2 else hello)
                        while sent < per and not drain.done() and not writer.is_closing():
                            batch = b"".join(fuzz_frame(rng, sent + i) for i in range(50))
                            writer.write(batch)
                            sent += 50
                            await writer.drain()
                    except (ConnectionError, RuntimeError, OSError):
                        pass
                    finally:
                        writer.close()
                        drain.cancel()
                        await asyncio.gather(drain, return_exceptions=True)

            await asyncio.gather(*(worker(w) for w in range(connections)))
            result.frames = per * connections
            await asyncio.sleep(1.0)
            result.rss_after_kib = srv.rss_kib()
            check = Client("127.0.0.1", srv.port)
            await check.connect()
            await check.login("fuzzer", PASSWORD)
            result.still_serving = (await check.ping()) > 0
            await check.close()
        finally:
            srv.stop()
            result.tracebacks = srv.tracebacks()
    return result


# ------------------------------------------------------------------------------------ main


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main())
    return uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "mode", nargs="?", choices=["all", "kill9", "storm", "hostile", "fuzz"], default="all"
    )
    parser.add_argument("--rounds", type=int, default=8, help="kill9: kills")
    parser.add_argument("--interval", type=float, default=3.0, help="kill9: seconds between")
    parser.add_argument("--talkers", type=int, default=10, help="kill9: sending clients")
    parser.add_argument("--clients", type=int, default=300, help="storm: clients")
    parser.add_argument("--deadline", type=float, default=60.0, help="storm: seconds to wait")
    parser.add_argument("--duration", type=float, default=15.0, help="hostile: seconds")
    parser.add_argument("--hostile", type=int, default=10, help="hostile: connections")
    parser.add_argument("--frames", type=int, default=300_000, help="fuzz: frames")
    parser.add_argument("--connections", type=int, default=8, help="fuzz: at once")
    args = parser.parse_args()
    print(f"parlour attacks ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f})")
    if args.mode in ("all", "kill9"):
        k = run(lambda: kill9(args.rounds, args.talkers, args.interval))
        print(
            f"kill9: {k.rounds} SIGKILLs under load from {k.clients} clients: acknowledged"
            f" {k.acked:,}, stored {k.stored:,}; lost {k.lost}, duplicated {k.duplicated},"
            f" out of order {k.out_of_order} (send errors retried by the client:"
            f" {k.send_errors})",
            flush=True,
        )
    if args.mode in ("all", "storm"):
        s = run(lambda: storm(args.clients, args.deadline))
        when = f"{s.all_back_after:.1f} s" if s.all_back_after is not None else "not all"
        print(
            f"storm: {s.back}/{s.clients} clients logged in again after a SIGKILL and restart;"
            f" all back after {when} (p50 {s.p50:.1f} s, p99 {s.p99:.1f} s);"
            f" server_busy answers on the way: {s.refused_busy}",
            flush=True,
        )
        for what, n in sorted(s.stuck.items(), key=lambda kv: -kv[1]):
            print(f"  not back: {n} x {what}", flush=True)
    if args.mode in ("all", "hostile"):
        alone, attacked = run(lambda: hostile(args.duration, args.hostile))
        print(
            f"hostile: a client's request latency, alone vs with {args.hostile} hostile"
            f" connections ({attacked.hostile_frames:,} hostile frames/requests sent):"
        )
        for r in (alone, attacked):
            print(
                f"  {r.label:<14} {r.requests:>6} requests  p50 {r.pct(0.5):6.1f} ms"
                f"  p99 {r.pct(0.99):6.1f} ms  max {r.pct(1.0):6.1f} ms"
                f"  (mean {statistics.fmean(r.latencies) * 1000:.1f} ms;"
                f" server {r.server_cores:.2f} cores)",
                flush=True,
            )
    if args.mode in ("all", "fuzz"):
        f = run(lambda: fuzz(args.frames, args.connections))
        print(
            f"fuzz: {f.frames:,} hostile frames over {f.connections:,} connections:"
            f" {f.tracebacks} tracebacks in the server log; RSS {f.rss_before_kib / 1024:.1f}"
            f" -> {f.rss_after_kib / 1024:.1f} MiB; still serving: {f.still_serving}",
            flush=True,
        )


if __name__ == "__main__":
    main()
