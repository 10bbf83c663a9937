"""Real loopback traffic for the tshark agreement corpus.

Run as root inside a network namespace of its own (the test does it with ``unshare --net``)::

    unshare --net python tests/packets/realtraffic.py OUTDIR [SCENARIO ...]

Nothing here is crafted: the kernel's TCP/IP stack talks to itself over the namespace's own
loopback interface while :class:`~parlour.packets.capture.live.LiveCapture` records it with
AF_PACKET, as tcpdump would. Scenarios (one capture file each, ``OUTDIR/NAME.pcap``):

``web``
    lo as it comes (MTU 65536): an HTTP/1.1 server (``http.server``) serving a 3 MB file, a 404,
    a JSON document and a page over one keep-alive connection, the same JSON over IPv6, a
    refused connection, a receiver that stops reading (zero window, probes, window update),
    an idle connection with TCP keep-alives, UDP to closed ports (ICMP and ICMPv6 port
    unreachable) and pings. Also recorded with a 128-byte snap length (``web-snap128``).
``web1500``
    the HTTP exchanges again with an Ethernet-sized MTU (1500): thousands of segments.
``loss``
    the 3 MB download with MTU 1500 through a token-bucket qdisc with a short queue on lo,
    which drops what does not fit: retransmissions, duplicate ACKs with SACK blocks, fast
    retransmissions, lost segments.
``browse`` (not in the test corpus; ``bench/packets.py analyze`` uses it)
    60 browsing sessions (pages, JSON, small and 300 kB files, 404s, some over IPv6), refused
    connections, pings, UDP to closed ports, then 10 downloads over the lossy link.

The namespace dies with the process, so nothing (qdisc, MTU) outlives the run, and the host's
interfaces are never touched: the script refuses to run in the initial network namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import http.server
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from parlour.packets.capture.live import CaptureLimits, LiveCapture

SCENARIOS = ("web", "web1500", "loss")
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _SIOCSIFMTU, _IFF_UP = 0x8913, 0x8914, 0x8922, 0x1
BIG = 3 * 1024 * 1024


def in_own_namespace() -> bool:
    """True when this process has a network namespace its parent does not share (``unshare
    --net`` made it): the scenarios change lo's MTU and qdisc, which must not leak."""
    try:
        return os.readlink("/proc/self/ns/net") != os.readlink(f"/proc/{os.getppid()}/ns/net")
    except OSError:
        return False


def setup_lo(mtu: int | None = None) -> None:
    """Bring the namespace's lo up (it starts down), optionally set its MTU, and make the
    kernel pick ports where tshark has no dissector registered (so tshark does not decode
    the test traffic as some other protocol by its port)."""
    Path("/proc/sys/net/ipv4/ip_local_port_range").write_text("32768 34899\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, _SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
        if mtu is not None:
            fcntl.ioctl(s, _SIOCSIFMTU, struct.pack("16si12x", b"lo", mtu))


class Recorder:
    """A LiveCapture on lo in a thread; ``stop()`` writes what is queued and closes."""

    def __init__(self, path: Path, snaplen: int = 262_144) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed in stop()
        self._cap = LiveCapture(
            self._file, interface="lo", limits=CaptureLimits(seconds=120), snaplen=snaplen
        )
        self._thread = threading.Thread(target=self._cap.run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._cap.stop()
        self._thread.join(30)
        self._cap.close()
        self._file.close()


def _content(tmp: Path) -> None:
    rng = random.Random(17)
    (tmp / "big.bin").write_bytes(rng.randbytes(BIG))
    doc = {"type": "report", "items": [{"id": i, "name": f"item {i}"} for i in range(150)]}
    (tmp / "data.json").write_text(json.dumps(doc))
    (tmp / "index.html").write_text("<!doctype html><title>lab</title><p>hello</p>\n")
    (tmp / "small.txt").write_text("a small text file\n" * 16)
    (tmp / "page.html").write_text(
        "<!doctype html><title>page</title>\n" + "<p>paragraph</p>\n" * 1200
    )
    (tmp / "medium.bin").write_bytes(rng.randbytes(300 * 1024))


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real server

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


@contextlib.contextmanager
def http_server(root: Path, host: str = "127.0.0.1") -> Iterator[int]:
    cls = _Server6 if ":" in host else http.server.ThreadingHTTPServer
    srv = cls((host, 0), partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def http_session(host: str, port: int, paths: list[str]) -> None:
    """GET each path over one keep-alive connection, reading every body in full."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        for path in paths:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
    finally:
        conn.close()


def refused(host: str = "127.0.0.1") -> None:
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]  # bound, not listening: the kernel answers RST
        with socket.socket() as c, contextlib.suppress(ConnectionRefusedError):
            c.connect((host, port))


def zero_window() -> None:
    """A receiver with a tiny buffer that stops reading: the sender fills the window, probes
    the zero window, and carries on when the receiver reads again."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(srv.getsockname())
        s, _ = srv.accept()
        with c, s:
            s.setblocking(False)
            data = b"z" * 200_000
            sent = 0
            with contextlib.suppress(BlockingIOError):
                while sent < len(data):
                    sent += s.send(data[sent:])
            time.sleep(0.7)  # shaping the traffic: the window stays shut across probes
            s.setblocking(True)
            done = threading.Thread(target=s.sendall, args=(data[sent:],))
            done.start()
            got = 0
            while got < len(data):
                got += len(c.recv(65536))
            done.join()


def keep_alive(idle_s: float = 2.3) -> None:
    """An idle connection with TCP keep-alive every second: probes and their ACKs."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        c = socket.create_connection(srv.getsockname())
        s, _ = srv.accept()
        with c, s:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
            c.sendall(b"hello\n")
            s.recv(100)
            time.sleep(idle_s)  # shaping the traffic: the kernel's keep-alive timer fires


def closed_udp(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    with socket.socket(family, socket.SOCK_DGRAM) as u:
        u.sendto(b"anyone there?", (host, port))
        u.settimeout(2)
        with contextlib.suppress(ConnectionRefusedError, TimeoutError):
            u.recv(100)  # the ICMP error comes back as ECONNREFUSED


def ping(host: str) -> None:
    v6 = ":" in host
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    with socket.socket(family, socket.SOCK_RAW, proto) as s:
        s.settimeout(2)
        for seq in (1, 2):
            body = struct.pack("!HH", 0x4242, seq) + b"parlour ping"
            head = struct.pack("!BBH", 128 if v6 else 8, 0, 0)
            if not v6:  # ICMPv6 checksums are filled in by the kernel
                csum = _checksum(head + body)
                head = struct.pack("!BBH", 8, 0, csum)
            s.sendto(head + body, (host, 0))
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:  # our own request comes back first on raw
                reply = s.recv(2048)
                icmp = reply if v6 else reply[(reply[0] & 0x0F) * 4 :]
                if icmp[0] == (129 if v6 else 0):
                    break


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data[: len(data) // 2 * 2]))
    if len(data) % 2:
        total += data[-1] << 8
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def scenario_web(out: Path, content: Path) -> None:
    setup_lo()
    full, snap = Recorder(out / "web.pcap"), Recorder(out / "web-snap128.pcap", snaplen=128)
    try:
        ka = threading.Thread(target=keep_alive)
        ka.start()
        with http_server(content) as port, http_server(content, "::1") as port6:
            http_session("127.0.0.1", port, ["/big.bin", "/missing", "/data.json", "/index.html"])
            http_session("::1", port6, ["/data.json", "/nothing-here"])
        refused()
        zero_window()
        closed_udp("127.0.0.1")
        closed_udp("::1")
        ping("127.0.0.1")
        ping("::1")
        ka.join()
    finally:
        full.stop()
        snap.stop()


def scenario_web1500(out: Path, content: Path) -> None:
    setup_lo(1500)
    # lo hands 64 kB GSO frames to the capture whatever its MTU; a token bucket too large to
    # ever drop anything splits them into MTU-sized segments, as a network card would
    _tbf("10gbit", "10kb", "100mb")
    rec = Recorder(out / "web1500.pcap")
    try:
        with http_server(content) as port:
            http_session("127.0.0.1", port, ["/big.bin", "/missing", "/data.json", "/index.html"])
        refused()
    finally:
        rec.stop()


def scenario_loss(out: Path, content: Path) -> None:
    setup_lo(1500)
    # a rate limit with a queue of about 16 segments: bursts beyond it are dropped
    _tbf("100mbit", "16kb", "24kb")
    rec = Recorder(out / "loss.pcap")
    try:
        with http_server(content) as port:
            http_session("127.0.0.1", port, ["/big.bin", "/data.json"])
    finally:
        rec.stop()


def scenario_browse(out: Path, content: Path) -> None:
    """Many browsing sessions (the benchmark's traffic): pages, JSON, small and larger files,
    404s, refused connections, pings and UDP to closed ports on an Ethernet-sized MTU; then a
    few downloads over a lossy link."""
    setup_lo(1500)
    _tbf("10gbit", "10kb", "100mb")
    rec = Recorder(out / "browse.pcap")
    paths = ["/", "/small.txt", "/data.json", "/page.html", "/medium.bin", "/missing"]
    try:
        with http_server(content) as port, http_server(content, "::1") as port6:
            for i in range(60):
                host, hport = ("::1", port6) if i % 5 == 4 else ("127.0.0.1", port)
                http_session(host, hport, paths)
                if i % 3 == 0:
                    refused()
                if i % 6 == 0:
                    closed_udp("127.0.0.1")
                    ping("127.0.0.1")
            _tbf("100mbit", "16kb", "24kb", "replace")
            for _ in range(10):
                http_session("127.0.0.1", port, ["/medium.bin", "/data.json"])
    finally:
        rec.stop()


def _tbf(rate: str, burst: str, limit: str, how: str = "add") -> None:
    tc = shutil.which("tc")
    if tc is None:
        raise SystemExit("this scenario needs tc (iproute2)")
    cmd = [tc, "qdisc", how, "dev", "lo", "root", "tbf", "rate", rate, "burst", burst, "limit",
           limit]  # fmt: skip
    subprocess.run(cmd, check=True)


RUNNERS: dict[str, Callable[[Path, Path], None]] = {
    "web": scenario_web,
    "web1500": scenario_web1500,
    "loss": scenario_loss,
    "browse": scenario_browse,
}


def main(argv: list[str]) -> None:
    if not in_own_namespace():
        raise SystemExit("run me in a network namespace of my own: unshare --net python ...")
    out = Path(argv[0])
    names = argv[1:] or list(SCENARIOS)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="parlour-web-") as tmp:
        content = Path(tmp)
        _content(content)
        for name in names:
            if len(names) > 1:
                # each scenario in a namespace of its own (lo's MTU and qdisc differ)
                subprocess.run(
                    ["unshare", "--net", sys.executable, __file__, str(out), name], check=True
                )
            else:
                RUNNERS[name](out, content)


if __name__ == "__main__":
    main(sys.argv[1:])
