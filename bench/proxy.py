"""Benchmark `parlour proxy` against HAProxy and nginx with wrk (same run, same backends).

Two backends (nginx serving a small static response when nginx is installed, else a tiny
asyncio backend), then wrk at fixed concurrency against: the backend directly, parlour
proxy (1 worker and --workers 2), HAProxy (one thread) and nginx (one worker) when
installed. Prints req/s, p50/p99 and each proxy's ratio to HAProxy, and where the CPU
went: each proxy's CPU time per request (its own processes, from /proc), and the share
of the machine taken by wrk and by the backends. With --rounds N every target is run N
times, interleaved, and the median round is reported (the machine may be shared).

With --tls every proxy terminates TLS with the same self-signed certificate (made with
the openssl CLI for the run) and wrk speaks HTTPS to it; the backends stay plain HTTP
(the usual TLS offload). The direct run is then left out; --python-relay adds parlour
with --no-fast-lane (TLS in uvloop's SSL and the Python relay, the path before the fast
lane terminated TLS) to the same rounds.

    .venv/bin/python bench/proxy.py [--duration 10] [--connections 50] [--threads 2]
                                    [--rounds 3] [--tls]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARLOUR = [sys.executable, "-m", "parlour"]

TINY_BACKEND = r"""
import asyncio, sys
try:
    import uvloop
except ImportError:
    uvloop = None
BODY = b"hello from backend\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t; self.buf = b""
    def data_received(self, d):
        self.buf += d
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.t.write(RESP)
async def main(port):
    srv = await asyncio.get_running_loop().create_server(P, "127.0.0.1", port, backlog=1024)
    await srv.serve_forever()
(uvloop.run if uvloop else asyncio.run)(main(int(sys.argv[1])))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


@contextlib.contextmanager
def process(cmd: list[str], port: int, **kw: object) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finally
    p = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=log,
        start_new_session=True,
        **kw,  # type: ignore[call-overload]
    )
    try:
        try:
            wait_port(port)
        except RuntimeError:
            log.seek(0)
            sys.stderr.write(f"{' '.join(cmd)} did not start:\n{log.read().decode()[-2000:]}\n")
            raise
        yield p
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        log.close()


def limits(connections: int) -> int:
    """Connection limits for the baselines: room for every client and a pooled upstream
    connection each, on both sides (the defaults would throttle them at -c2000)."""
    return max(4096, 4 * connections)


def nginx_backends(tmp: Path, ports: list[int], conns: int) -> list[str]:
    servers = "".join(
        f"server {{ listen 127.0.0.1:{p}; access_log off; keepalive_requests 100000;\n"
        f"  location / {{ default_type text/plain; return 200 'hello from backend\\n'; }} }}\n"
        for p in ports
    )
    conf = tmp / "backends.conf"
    conf.write_text(
        f"worker_processes 1; worker_rlimit_nofile {conns + 64}; pid {tmp}/backends.pid;\n"
        f"error_log {tmp}/backends.err; events {{ worker_connections {conns}; }}\n"
        f"http {{ client_body_temp_path {tmp}; proxy_temp_path {tmp};\n{servers}}}\n"
    )
    return ["nginx", "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"]


@dataclass(frozen=True)
class Cert:
    """The certificate every TLS target uses (--tls)."""

    cert: Path
    key: Path
    both: Path  # certificate then key, one file (HAProxy's crt)


def make_cert(tmp: Path) -> Cert:
    cert, key, both = tmp / "bench.pem", tmp / "bench.key", tmp / "bench-both.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-keyout", str(key),
            "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    both.write_text(cert.read_text() + key.read_text())
    return Cert(cert, key, both)


def nginx_proxy(
    tmp: Path, port: int, backends: list[int], conns: int, tls: Cert | None = None
) -> list[str]:
    ups = "".join(f"server 127.0.0.1:{p};" for p in backends)
    conf = tmp / "proxy-nginx.conf"
    listen = f"127.0.0.1:{port}" + (" ssl" if tls else "")
    ssl = (
        f"ssl_certificate {tls.cert}; ssl_certificate_key {tls.key}; "
        "ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:S:1m;\n"
        if tls
        else ""
    )
    conf.write_text(
        f"worker_processes 1; worker_rlimit_nofile {conns + 64}; pid {tmp}/proxy-nginx.pid;\n"
        f"error_log {tmp}/proxy-nginx.err; events {{ worker_connections {conns}; }}\n"
        f"http {{ client_body_temp_path {tmp}; proxy_temp_path {tmp}; access_log off;\n"
        f"upstream be {{ {ups} keepalive {max(64, conns // 4)}; }}\n"
        f"server {{ listen {listen}; {ssl}location / {{ proxy_pass http://be;\n"
        "proxy_http_version 1.1; proxy_set_header Connection ''; } } }\n"
    )
    return ["nginx", "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"]


def haproxy(
    tmp: Path, port: int, backends: list[int], conns: int, tls: Cert | None = None
) -> list[str]:
    servers = "".join(f"  server b{i} 127.0.0.1:{p}\n" for i, p in enumerate(backends))
    conf = tmp / "haproxy.cfg"
    bind = f"127.0.0.1:{port}" + (f" ssl crt {tls.both} ssl-min-ver TLSv1.2" if tls else "")
    conf.write_text(
        f"global\n  nbthread 1\n  maxconn {conns}\n"
        "defaults\n  mode http\n  timeout connect 3s\n  timeout client 30s\n"
        "  timeout server 30s\n  option http-keep-alive\n"
        f"frontend fe\n  bind {bind}\n  default_backend be\n"
        f"backend be\n  balance roundrobin\n  http-reuse always\n{servers}"
    )
    return ["haproxy", "-f", str(conf), "-db"]


def parlour(port: int, backends: list[int], workers: int, tls: Cert | None = None) -> list[str]:
    cmd = [*PARLOUR, "proxy", "--port", str(port), "--no-admin", "--workers", str(workers)]
    for p in backends:
        cmd += ["--backend", f"127.0.0.1:{p}"]
    if tls is not None:
        cmd += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    return cmd


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: str
    cpu_us_per_req: float = float("nan")  # the proxy's own CPU time per request
    wrk_cpu: float = float("nan")  # cores used by wrk during the run
    backend_cpu: float = float("nan")  # cores used by the backends during the run


TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by every live process in group `pgid`."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "pid (comm)": state ppid pgrp ...
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(
    name: str, port: int, args: argparse.Namespace, proxy_pgid: int | None, backend_pgids: list[int]
) -> Result:
    url = f"{'https' if args.tls else 'http'}://127.0.0.1:{port}/"
    # warm-up (pools, caches), then the measured run
    subprocess.run(["wrk", "-t1", "-c10", "-d1s", url], capture_output=True, check=False)
    cpu0 = group_cpu_s(proxy_pgid) if proxy_pgid else 0.0
    b0 = sum(group_cpu_s(g) for g in backend_pgids)
    started = time.monotonic()
    wrk = subprocess.Popen(
        [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--latency",
            url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert wrk.stdout is not None
    out = wrk.stdout.read()
    wrk.stdout.close()
    _, status, usage = os.wait4(wrk.pid, 0)  # rusage: wrk's own CPU time
    wrk.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - started
    cpu1 = group_cpu_s(proxy_pgid) if proxy_pgid else 0.0
    b1 = sum(group_cpu_s(g) for g in backend_pgids)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    # the latency distribution lines ("    50%    1.23ms"), not "+/- Stdev" columns
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    err = re.search(r"(Non-2xx or 3xx responses: \d+|Socket errors: .*)", out)
    wrk_cpu = (usage.ru_utime + usage.ru_stime) / elapsed
    return Result(
        name,
        rps,
        p50,
        p99,
        err.group(1) if err else "",
        cpu_us_per_req=(cpu1 - cpu0) / total * 1e6 if proxy_pgid and total else float("nan"),
        wrk_cpu=wrk_cpu,
        backend_cpu=(b1 - b0) / elapsed,
    )


def median_round(results: list[Result]) -> Result:
    return sorted(results, key=lambda r: r.rps)[len(results) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="runs per target (median shown)")
    ap.add_argument(
        "--python-relay",
        action="store_true",
        help="also run parlour proxy --no-fast-lane (the Python relay alone)",
    )
    ap.add_argument(
        "--tls",
        action="store_true",
        help="every proxy terminates TLS (same certificate); wrk speaks HTTPS",
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also run bench/proxy_floor.py (null uvloop relay, 1 and 2 processes)",
    )
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)")
        return 1
    have_nginx = shutil.which("nginx") is not None
    have_haproxy = shutil.which("haproxy") is not None
    runs: dict[str, list[Result]] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmpdir, contextlib.ExitStack() as stack:
        tmp = Path(tmpdir)
        bports = [free_port(), free_port()]
        backend_pgids: list[int] = []
        if have_nginx:
            conf = nginx_backends(tmp, bports, limits(args.connections))
            p = stack.enter_context(process(conf, bports[0]))
            backend_pgids.append(p.pid)
            backend_kind = "nginx (1 worker, static 19-byte body)"
        else:
            script = tmp / "backend.py"
            script.write_text(TINY_BACKEND)
            for port in bports:
                p = stack.enter_context(process([sys.executable, str(script), str(port)], port))
                backend_pgids.append(p.pid)
            backend_kind = "tiny asyncio backend"
        wait_port(bports[1])
        cert = make_cert(tmp) if args.tls else None
        if args.tls and args.floor:
            print("--tls: no null relay (it does not speak TLS)")
            args.floor = False
        targets: list[str] = [] if args.tls else ["direct (backend 1)"]
        if have_haproxy:
            targets.append("haproxy (nbthread 1)")
        if have_nginx:
            targets.append("nginx proxy (1 worker)")
        targets += ["parlour proxy (1 worker)", "parlour proxy (--workers 2)"]
        if args.python_relay:
            targets += ["parlour python relay (1 worker)", "parlour python relay (--workers 2)"]
        if args.floor:
            targets += ["null relay (1 process)", "null relay (2 processes)"]
        for round_no in range(args.rounds):
            for name in targets:
                if name.startswith("direct"):
                    result = run_wrk(name, bports[0], args, None, backend_pgids)
                    runs.setdefault(name, []).append(result)
                    continue
                port = free_port()
                if name.startswith("haproxy"):
                    cmd = haproxy(tmp, port, bports, limits(args.connections), cert)
                elif name.startswith("nginx"):
                    cmd = nginx_proxy(tmp, port, bports, limits(args.connections), cert)
                elif name.startswith("null relay"):
                    workers = ["--workers", "2"] if "2 processes" in name else []
                    cmd = [sys.executable, str(ROOT / "bench" / "proxy_floor.py"), *workers]
                    cmd += [str(port), *map(str, bports)]
                else:
                    cmd = parlour(port, bports, 2 if "workers 2" in name else 1, cert)
                    if "python relay" in name:
                        cmd.append("--no-fast-lane")
                with process(cmd, port, env=env) as proc:
                    result = run_wrk(name, port, args, proc.pid, backend_pgids)
                runs.setdefault(name, []).append(result)
                print(
                    f"round {round_no + 1}: {name}: {result.rps:.0f} req/s, "
                    f"p99 {result.p99_ms:.2f} ms",
                    file=sys.stderr,
                )
    results = [median_round(runs[name]) for name in targets]
    base = next((r for r in results if r.name.startswith("haproxy")), None)
    scheme = "HTTPS (every proxy terminates TLS, same certificate)" if args.tls else "HTTP"
    print(
        f"\nbackends: {backend_kind}; wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s over {scheme}; {os.cpu_count()} cores shared by wrk, backends "
        f"and proxy; median of {args.rounds} round(s); load average before: {load_before}\n"
    )
    print(
        f"{'target':30} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'rps/HAP':>7} "
        f"{'p99/HAP':>7} {'proxy CPU':>10} {'wrk':>5} {'backend':>7}"
    )
    print(
        f"{'':30} {'':>8} {'':>7} {'':>7} {'':>7} {'':>7} {'us/req':>10} {'cores':>5} {'cores':>7}"
    )
    for r in results:
        ratio = f"{r.rps / base.rps:7.2f}" if base else "      -"
        p99r = f"{r.p99_ms / base.p99_ms:7.2f}" if base else "      -"
        cpu = f"{r.cpu_us_per_req:10.1f}" if r.cpu_us_per_req == r.cpu_us_per_req else " " * 10
        print(
            f"{r.name:30} {r.rps:8.0f} {r.p50_ms:7.2f} {r.p99_ms:7.2f} {ratio} {p99r} "
            f"{cpu} {r.wrk_cpu:5.2f} {r.backend_cpu:7.2f} {r.errors}"
        )
    if args.rounds > 1:
        print("\nreq/s per round:")
        for name in targets:
            print(f"  {name:30} " + " ".join(f"{r.rps:8.0f}" for r in runs[name]))
        if base is not None:
            # the load of a shared machine drifts: ratios within a round (targets run back
            # to back) are steadier than ratios of medians taken from different rounds
            print("\nratio to HAProxy in the same round (median; per round):")
            hap = runs[base.name]
            for name in targets:
                if name == base.name:
                    continue
                rps = [r.rps / h.rps for r, h in zip(runs[name], hap, strict=True)]
                p99 = [r.p99_ms / h.p99_ms for r, h in zip(runs[name], hap, strict=True)]
                print(
                    f"  {name:30} req/s {statistics.median(rps):5.2f} "
                    f"({' '.join(f'{x:.2f}' for x in rps)}); "
                    f"p99 {statistics.median(p99):5.2f} ({' '.join(f'{x:.2f}' for x in p99)})"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
