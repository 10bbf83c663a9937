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

ROOT = Path(__file__).resolve().parent.parent
BACKEND = """
import asyncio, sys
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t; self.buf = b""
    def data_received(self, d):
        self.buf += d
        while b"\\r\\n\\r\\n" in self.buf:
            _, self.buf = self.buf.split(b"\\r\\n\\r\\n", 1)
            self.t.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n")
async def main():
    server = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


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
        while not buf.endswith(b"ok\n"):
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
    backend = subprocess.Popen([sys.executable, "-c", BACKEND, str(bport)], start_new_session=True)
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
