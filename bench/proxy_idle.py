"""Memory per idle keep-alive client of `parlour proxy`: fast lane and Python relay side by side.

Starts a tiny backend and `parlour proxy` (one worker, no admin listener), opens a few
hundred warm-up connections, then N more that each make one request and stay open, and
prints the growth of the proxy's resident memory per idle client — once with the native
fast lane and once with `--no-fast-lane`.

    .venv/bin/python bench/proxy_idle.py [--clients 5000]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# the tiny backend and port helpers of the throughput benchmark (bench/ is on sys.path)
from proxy import ROOT, TINY_BACKEND, free_port, wait_port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_clients(port: int, n: int, keep: list[socket.socket]) -> None:
    fresh = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        fresh.append(s)
    for s in fresh:
        buf = b""
        while not buf.endswith(b"backend\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("the proxy closed a client")
            buf += chunk
    keep.extend(fresh)


def measure(backend_port: int, clients: int, extra: list[str]) -> float:
    port = free_port()
    cmd = [sys.executable, "-m", "parlour", "proxy", "--port", str(port), "--no-admin"]
    cmd += ["--backend", f"127.0.0.1:{backend_port}", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    keep: list[socket.socket] = []
    try:
        wait_port(port)
        open_clients(port, 200, keep)
        time.sleep(0.5)  # (let the warm-up settle before the first reading)
        before = rss_kib(proc.pid)
        open_clients(port, clients, keep)
        time.sleep(0.5)
        after = rss_kib(proc.pid)
        return (after - before) * 1024 / clients
    finally:
        for s in keep:
            s.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=5000)
    args = ap.parse_args()
    bport = free_port()
    backend = subprocess.Popen(
        [sys.executable, "-c", TINY_BACKEND, str(bport)], start_new_session=True
    )
    try:
        wait_port(bport)
        fast = measure(bport, args.clients, [])
        relay = measure(bport, args.clients, ["--no-fast-lane"])
    finally:
        os.killpg(backend.pid, signal.SIGTERM)
        backend.wait(10)
    print(f"{args.clients} idle keep-alive clients (RSS growth of the proxy process):")
    print(f"  fast lane      {fast:8.0f} bytes per client")
    print(f"  Python relay   {relay:8.0f} bytes per client   ({relay / fast:.1f}x the fast lane)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
