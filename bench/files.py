"""Benchmark files in chat: upload and download of one big file on loopback (issue 13).

Side by side in the same run, on the same file (random bytes, `--size`, default 1 GiB):

* **socket copy -> disk**: the file sent over a plain TCP socket (`sendfile`) to a receiver
  process that writes it to a file and fsyncs it: the floor of an upload;
* **parlour upload**: `parlour serve` (a separate process, SQLite) takes the file as one tus
  `PATCH` (sent with `sendfile` too): it writes, hashes (SHA-256), fsyncs and moves it into
  the blob store before it answers `204`;
* **socket copy -> discard**: the file sent over a plain socket to a receiver that drops it:
  the floor of a download;
* **parlour download**: `GET /files/<id>` of the uploaded file, read and dropped;
* **nginx download**: nginx (one worker, `sendfile on`) serving the same file, read and
  dropped by the same client.

Prints MB/s of each, the ratios (goal: parlour >= 0.8x the socket copy), the server's CPU
seconds per upload and per download (MiB per CPU-second: a figure the machine's load does not
move), the server's RSS
sampled every 50 ms while it works (it must stay bounded: files are streamed, never held
whole), the machine's CPU count and load average (the machine may be shared).

    .venv/bin/python bench/files.py [--size 1G] [--rounds 1]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARLOUR = [sys.executable, "-m", "parlour"]
ADMIN_PASSWORD = "bench-files-admin-pw"
MiB = 1024 * 1024

RECEIVER = r"""
import os, socket, sys
mode, path = sys.argv[1], sys.argv[2]
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
buf = bytearray(1 << 20); view = memoryview(buf); total = 0
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if mode == "disk" else None
while True:
    n = conn.recv_into(buf)
    if not n:
        break
    total += n
    if fd is not None:
        os.write(fd, view[:n])
if fd is not None:
    os.fsync(fd); os.close(fd)
conn.sendall(b"done %d\n" % total)
conn.close()
"""


def parse_size(text: str) -> int:
    found = re.fullmatch(r"(\d+)([kKmMgG]?)", text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1G, 256M, 1000000)")
    scale = {"": 1, "k": 1024, "m": MiB, "g": 1024 * MiB}[found.group(2).lower()]
    return int(found.group(1)) * scale


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_source(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left > 0:
            chunk = os.urandom(min(8 * MiB, left))
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def mbps(size: int, seconds: float) -> float:
    return size / MiB / seconds if seconds > 0 else 0.0


# ------------------------------------------------------------------ baselines


def socket_copy(source: Path, mode: str, target: Path) -> float:
    """Seconds to send `source` over a plain loopback socket to a receiver process that
    writes it to `target` and fsyncs ("disk") or drops it ("discard")."""
    proc = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, mode, str(target)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as sock, source.open("rb") as f:
            started = time.perf_counter()
            sock.sendfile(f)
            sock.shutdown(socket.SHUT_WR)
            answer = sock.makefile("rb").readline()
            elapsed = time.perf_counter() - started
        assert answer.startswith(b"done"), answer
        return elapsed
    finally:
        proc.wait(timeout=60)
        target.unlink(missing_ok=True)


# ------------------------------------------------------------------ HTTP on raw sockets


def http_request(
    port: int, head: str, body: Path | None = None, *, sink: bool = False
) -> tuple[int, dict[str, str], int, float]:
    """One HTTP/1.1 request on a fresh connection: (status, headers, body bytes, seconds from
    the first byte sent to the last byte received). The request body goes with `sendfile`;
    the response body is read into a buffer and dropped."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.perf_counter()
        sock.sendall(head.encode())
        if body is not None:
            with body.open("rb") as f:
                sock.sendfile(f)
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        data = b""
        while b"\r\n\r\n" not in data:
            n = sock.recv_into(buf)
            if not n:
                raise ConnectionError(f"closed before the response head: {data!r}")
            data += bytes(view[:n])
        raw_head, _, rest = data.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        got = len(rest)
        while got < length:
            n = sock.recv_into(buf)
            if not n:
                raise ConnectionError(f"closed after {got} of {length} bytes")
            got += n
        elapsed = time.perf_counter() - started
        return status, headers, got, elapsed


# ------------------------------------------------------------------ the parlour server


class RssSampler:
    """VmRSS of a process every `interval` seconds, in a thread, while running."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError, RuntimeError):
                self.samples.append(self.rss_kib())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    web_port: int

    @classmethod
    def start(cls, data_dir: Path, size: int) -> Server:
        port, web_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
        env.update(
            PARLOUR_ADMIN_PASSWORD=ADMIN_PASSWORD,
            PARLOUR_ARGON2_TIME_COST="1",
            PARLOUR_ARGON2_MEMORY_KIB="64",
        )
        proc = subprocess.Popen(
            [
                *PARLOUR, "serve", "--port", str(port), "--web-port", str(web_port),
                "--data-dir", str(data_dir), "--log-level", "WARNING",
                "--max-file-size", str(size), "--user-quota", str(4 * size),
            ],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("Press Ctrl+C"):
                break
        else:
            raise RuntimeError("parlour serve did not start")
        return cls(proc, port, web_port)

    def token(self) -> str:
        """A file token of the admin, over the chat protocol (NDJSON)."""
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            f = sock.makefile("rwb")

            def ask(obj: dict[str, object]) -> dict[str, object]:
                f.write(json.dumps(obj).encode() + b"\n")
                f.flush()
                while True:
                    frame: dict[str, object] = json.loads(f.readline())
                    if frame.get("type") != "event":
                        return frame

            ask({"id": 1, "type": "hello", "version": 1})
            ask({"id": 2, "type": "login", "username": "admin", "password": ADMIN_PASSWORD})
            reply = ask({"id": 3, "type": "file_token"})
            data = reply["data"]
            assert isinstance(data, dict)
            return str(data["token"])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parlour_round(
    server: Server, token: str, source: Path, size: int
) -> tuple[float, float, float, float, list[int]]:
    """(upload seconds, download seconds, the server's CPU seconds for each, RSS samples)."""
    auth = f"Authorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
    host = f"Host: 127.0.0.1:{server.web_port}\r\n"
    status, headers, _, _ = http_request(
        server.web_port,
        f"POST /files/uploads HTTP/1.1\r\n{host}{auth}Upload-Length: {size}\r\n"
        "Upload-Metadata: filename YmlnLmJpbg==\r\nContent-Length: 0\r\n\r\n",
    )
    assert status == 201, status
    location = headers["location"]
    pid = server.proc.pid
    with RssSampler(pid) as rss:
        cpu0 = cpu_seconds(pid)
        status, headers, _, up = http_request(
            server.web_port,
            f"PATCH {location} HTTP/1.1\r\n{host}{auth}Upload-Offset: 0\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {size}\r\n\r\n",
            source,
        )
        assert status == 204 and headers["upload-offset"] == str(size), (status, headers)
        cpu1 = cpu_seconds(pid)
        file_id = location.rsplit("/", 1)[1]
        status, _, got, down = http_request(
            server.web_port, f"GET /files/{file_id} HTTP/1.1\r\n{host}{auth}\r\n", sink=True
        )
        assert status == 200 and got == size, (status, got)
        cpu2 = cpu_seconds(pid)
    return up, down, cpu1 - cpu0, cpu2 - cpu1, rss.samples


# ------------------------------------------------------------------ nginx


@contextlib.contextmanager
def nginx(root: Path, tmp: Path) -> Iterator[int | None]:
    if shutil.which("nginx") is None:
        yield None
        return
    port = free_port()
    conf = tmp / "files-nginx.conf"
    conf.write_text(
        f"worker_processes 1; pid {tmp}/files-nginx.pid; error_log {tmp}/files-nginx.err;\n"
        "events { worker_connections 64; }\n"
        "http { access_log off; sendfile on; tcp_nopush on;\n"
        f"  client_body_temp_path {tmp}/nginx-body; proxy_temp_path {tmp}/nginx-proxy;\n"
        f"  fastcgi_temp_path {tmp}/nginx-fcgi; uwsgi_temp_path {tmp}/nginx-uwsgi;\n"
        f"  scgi_temp_path {tmp}/nginx-scgi;\n"
        f"  server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n"
    )
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("nginx did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------------ main


@dataclass
class Figures:
    copy_disk: list[float] = field(default_factory=list)
    upload: list[float] = field(default_factory=list)
    copy_discard: list[float] = field(default_factory=list)
    download: list[float] = field(default_factory=list)
    nginx: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    upload_cpu: list[float] = field(default_factory=list)
    download_cpu: list[float] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (a disk)")
    args = parser.parse_args()
    size: int = args.size
    load0 = os.getloadavg()
    print(
        f"parlour files benchmark: {size / MiB:.0f} MiB, {args.rounds} round(s), "
        f"{os.cpu_count()} CPUs, load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="parlour-bench-files-", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "www" / "big.bin"
        source.parent.mkdir()
        t0 = time.perf_counter()
        want = make_source(source, size)
        # nginx's worker runs as another user: let it read the file
        for p in (tmp, source.parent):
            p.chmod(0o755)
        source.chmod(0o644)
        print(f"source written in {time.perf_counter() - t0:.1f} s (sha256 {want[:16]}...)")
        figures = Figures()
        server = Server.start(tmp / "data", size)
        try:
            idle_rss = RssSampler(server.proc.pid).rss_kib()
            token = server.token()
            with nginx(source.parent, tmp) as nginx_port:
                for _ in range(args.rounds):
                    figures.copy_disk.append(socket_copy(source, "disk", tmp / "copy.bin"))
                    up, down, up_cpu, down_cpu, samples = parlour_round(server, token, source, size)
                    figures.upload.append(up)
                    figures.download.append(down)
                    figures.upload_cpu.append(up_cpu)
                    figures.download_cpu.append(down_cpu)
                    figures.rss += samples
                    figures.copy_discard.append(socket_copy(source, "discard", tmp / "x"))
                    if nginx_port is not None:
                        status, _, got, secs = http_request(
                            nginx_port,
                            f"GET /big.bin HTTP/1.1\r\nHost: 127.0.0.1:{nginx_port}\r\n\r\n",
                        )
                        assert status == 200 and got == size, (status, got)
                        figures.nginx.append(secs)
            blob = tmp / "data" / "files" / "blobs" / want[:2] / want[2:4] / want
            assert blob.stat().st_size == size, "the stored blob is not the source"
        finally:
            server.stop()
    load1 = os.getloadavg()

    def show(name: str, secs: list[float], base: list[float] | None = None) -> None:
        if not secs:
            print(f"  {name:<28} (not run)")
            return
        rate = mbps(size, statistics.median(secs))
        line = f"  {name:<28} {rate:9.1f} MiB/s"
        if base:
            line += f"  {rate / mbps(size, statistics.median(base)):.2f}x"
        runs = ", ".join(f"{mbps(size, x):.0f}" for x in secs)
        print(f"{line}   (median; runs: {runs})")

    print("upload (MiB/s; ratio to the socket copy -> disk):")
    show("socket copy -> disk", figures.copy_disk)
    show("parlour tus PATCH", figures.upload, figures.copy_disk)
    print("download (MiB/s; ratio to the socket copy -> discard):")
    show("socket copy -> discard", figures.copy_discard)
    show("parlour GET /files/<id>", figures.download, figures.copy_discard)
    show("nginx GET (1 worker)", figures.nginx, figures.copy_discard)
    if figures.download and figures.nginx:
        ratio = statistics.median(figures.nginx) / statistics.median(figures.download)
        print(f"  parlour / nginx download: {ratio:.2f}x")
    for what, cpu in (("upload", figures.upload_cpu), ("download", figures.download_cpu)):
        secs = statistics.median(cpu)
        print(
            f"server CPU per {what}: {secs:.2f} s ({size / MiB / secs:.0f} MiB per CPU-second,"
            " all threads; does not depend on the machine's load)"
        )
    peak = max(figures.rss) if figures.rss else 0
    print(
        f"server RSS: idle {idle_rss / 1024:.1f} MiB, peak while transferring "
        f"{peak / 1024:.1f} MiB ({len(figures.rss)} samples; the file is {size / MiB:.0f} MiB)"
    )
    print(f"load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
