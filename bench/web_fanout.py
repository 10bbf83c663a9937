"""WebSocket fan-out against the TCP door, the shape of bench/fanout.py (one command).

    python bench/web_fanout.py                    # 100 members, 10 senders, 10,000 msg/s, 10 s
    python bench/web_fanout.py --rate 4000 --duration 5 --naive

N members in one room, S of them sending at a fixed total rate (open loop), each message
carrying its send time; a few probe members measure latency. The same load generator runs
three times against a fresh `parlour serve` each time:

* ``tcp`` — members on the TCP door (NDJSON): the baseline;
* ``websocket`` — members on the WebSocket door of the web listener: each event is encoded
  once as an unmasked WebSocket frame and the hub writes those bytes to every member's socket;
* ``send_str`` (with ``--naive``) — the WebSocket door as it would be written naively: a
  queue and a task per connection calling aiohttp's ``ws.send_str`` for every message to every
  recipient (the same server otherwise; this file patches the door in the server process).

The load generator is as cheap as it can be on both doors, and the same on both: members only
count occurrences of ``"event":"message"`` (carrying the last bytes of a chunk over, so a marker
split between two reads is counted once), senders count ``"type":"ok"``, probes pull the send
times out with one regular-expression pass per chunk (a send time counts as soon as it has
arrived whole, on both doors alike). WebSocket requests are masked with the
all-zero key (legal, and free: the payload is unchanged). Figures are printed side by side
with their ratio to the TCP door's; record results in docs/benchmarks/web.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout import (  # bench/ is not a package
    ADMIN_PASSWORD,
    PASSWORD,
    ROOM,
    FanoutResult,
    Server,
    raise_nofile_limit,
    run_loop,
)

MARK = b'"event":"message"'
OK = b'"type":"ok"'
_TS = re.compile(rb'"text":"(\d+\.\d+) ')


# ---------------------------------------------------------------------------- servers


def start_server(label: str, naive: bool, max_connections: int) -> tuple[Server, int]:
    """`parlour serve` (or the patched naive variant); returns it and its web port."""
    data = tempfile.TemporaryDirectory(prefix="parlour-webbench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
    env.update(
        PARLOUR_ADMIN_PASSWORD=ADMIN_PASSWORD,
        PARLOUR_ARGON2_TIME_COST="1",
        PARLOUR_ARGON2_MEMORY_KIB="64",
        PARLOUR_SEND_QUEUE_MAX=str(8 << 20),
    )
    args = [
        "serve", "--port", "0", "--web-port", "0", "--data-dir", data.name,
        "--rate", "1000000", "--burst", "1000000", "--duplicate-login", "allow",
        "--max-connections", str(max_connections), "--idle-timeout", "600",
        "--log-level", "WARNING",
    ]  # fmt: skip
    if naive:
        cmd = [sys.executable, str(Path(__file__).resolve()), "naive-server", *args]
    else:
        cmd = [sys.executable, "-m", "parlour", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    port = web = None
    for raw in proc.stdout:
        line = raw.decode()
        if found := re.search(r"listening on tcp://[^:]+:(\d+)", line):
            port = int(found.group(1))
        if found := re.search(r"Web client: http://[^:]+:(\d+)/", line):
            web = int(found.group(1))
        if line.startswith("Press Ctrl+C"):
            break
    if port is None or web is None:
        raise RuntimeError("server did not start")
    return Server(label, proc, port, [data.cleanup]), web


def naive_server(argv: list[str]) -> None:
    """`parlour serve` with the WebSocket door sending through ``ws.send_str`` per message per
    recipient (a queue and a sender task per connection): the design the door avoids."""
    from parlour.cli.main import main as parlour_main
    from parlour.protocol import encode
    from parlour.protocol.events import Event
    from parlour.protocol.replies import Reply
    from parlour.protocol.websocket import WebSocketWire
    from parlour.transports import websocket as door

    class NaiveKind:
        name = "naive-websocket"

        def encode_event(self, event: Event) -> bytes:
            return encode(event.to_wire())  # JSON + newline: each line becomes one send_str

    naive_kind = NaiveKind()

    class NaiveWire(WebSocketWire):
        @property
        def kind(self) -> Any:
            return naive_kind

        def encode_reply(self, reply: Reply) -> bytes:
            return encode(reply.to_wire())

    class NaiveTransport(door._WsTransport):
        __slots__ = ("_queue", "_sender")

        def __init__(self, ws: Any, raw: Any) -> None:
            super().__init__(ws, raw)
            self._queue: asyncio.Queue[str] = asyncio.Queue()
            self._sender = asyncio.ensure_future(self._send_all())

        async def _send_all(self) -> None:
            while True:
                text = await self._queue.get()
                try:
                    await self.ws.send_str(text)
                except Exception:
                    return

        def write(self, data: bytes) -> None:
            if not self._closing:
                for line in data.split(b"\n")[:-1]:
                    self._queue.put_nowait(line.decode())

        def writelines(self, chunks: Any) -> None:
            for chunk in chunks:
                self.write(chunk)

        def close(self) -> None:
            self._sender.cancel()
            super().close()

    door.WebSocketWire = NaiveWire  # type: ignore[misc]
    door._WsTransport = NaiveTransport  # type: ignore[misc]
    sys.argv = ["parlour", *argv]
    parlour_main()


# ---------------------------------------------------------------------------- clients


class Member(asyncio.Protocol):
    """A member on either door. Set-up frames are parsed; during the run only markers are
    counted (see the module docstring)."""

    def __init__(self, websocket: bool, sender: bool, probe: bool) -> None:
        self.websocket = websocket
        self.sender = sender
        self.probe = probe
        self.transport: asyncio.Transport | None = None
        self.setup = True
        self.buf = b""
        self.tail = b""
        self.upgraded = asyncio.get_running_loop().create_future()
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.messages = self.acks = self.errors = 0
        self.last_data = 0.0
        self.latencies: list[float] = []
        self.lost_connection = False
        self.next_id = 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.websocket:
            key = base64.b64encode(os.urandom(16)).decode()
            self.transport.write(
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
        else:
            self.upgraded.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_connection = True

    def data_received(self, data: bytes) -> None:
        if not self.setup:
            self.last_data = time.perf_counter()
            joined = self.tail + data
            self.messages += joined.count(MARK)
            if self.sender:
                self.acks += joined.count(OK)
                self.errors += joined.count(b'"type":"error"')
            self.tail = joined[-16:]
            if self.probe:
                # a send time is complete once its trailing space has arrived: take every one
                # in this chunk, and carry only what could be the start of the next one
                buf = self.buf + data
                now = time.time()
                end = 0
                for found in _TS.finditer(buf):
                    self.latencies.append(now - float(found.group(1)))
                    end = found.end()
                self.buf = buf[max(end, len(buf) - 64) :]
            return
        self.buf += data
        if not self.upgraded.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            assert b" 101 " in self.buf[:end], self.buf[:end]
            self.buf = self.buf[end + 4 :]
            self.upgraded.set_result(None)
        for frame in self._frames():
            if not frame.startswith(b'{"type":"event"'):
                self.replies.put_nowait(frame)

    def _frames(self) -> list[bytes]:
        out: list[bytes] = []
        if not self.websocket:
            lines = self.buf.split(b"\n")
            self.buf = lines.pop()
            return lines
        buf = self.buf
        while len(buf) >= 2:
            size, pos = buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, pos = struct.unpack_from(">H", buf, 2)[0], 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size, pos = struct.unpack_from(">Q", buf, 2)[0], 10
            if len(buf) < pos + size:
                break
            if buf[0] & 0x0F == 0x1:
                out.append(buf[pos : pos + size])
            buf = buf[pos + size :]
        self.buf = buf
        return out

    def frame(self, payload: bytes) -> bytes:
        if not self.websocket:
            return payload + b"\n"
        size = len(payload)
        if size < 126:
            header = bytes((0x81, 0x80 | size))
        else:
            header = struct.pack(">BBH", 0x81, 0x80 | 126, size)
        return header + b"\0\0\0\0" + payload  # the all-zero mask leaves the payload as it is

    async def request(self, type: str, **fields: Any) -> None:
        import json

        while True:  # set-up only: a busy server (the Argon2 pool is bounded) is waited for
            rid = self.next_id
            self.next_id += 1
            assert self.transport is not None
            body = json.dumps({"id": rid, "type": type, **fields}, separators=(",", ":"))
            self.transport.write(self.frame(body.encode()))
            reply = await asyncio.wait_for(self.replies.get(), 120)
            if b'"type":"ok"' in reply:
                return
            found = json.loads(reply)
            if found.get("code") not in ("server_busy", "rate_limited"):
                raise RuntimeError(f"{type} failed: {reply!r}")
            await asyncio.sleep(float(found.get("retry_after") or 0.5))

    def start_run(self) -> None:
        self.setup = False
        self.buf = self.tail = b""
        self.messages = self.acks = self.errors = 0
        self.latencies.clear()


async def open_member(port: int, websocket: bool, name: str, sender: bool, probe: bool) -> Member:
    loop = asyncio.get_running_loop()
    _, member = await loop.create_connection(
        lambda: Member(websocket, sender, probe), "127.0.0.1", port
    )
    await asyncio.wait_for(member.upgraded, 30)
    await member.request("hello", version=1)
    await member.request("signup", username=name, password=PASSWORD)
    await member.request("join", room=ROOM, limit=1)
    return member


async def fanout(
    server: Server, port: int, websocket: bool, members: int, senders: int, rate: float,
    duration: float, probes: int,
) -> FanoutResult:  # fmt: skip
    rss0 = server.rss_kib()
    conns: list[Member] = []
    for start in range(0, members, 50):
        conns += await asyncio.gather(
            *(
                open_member(port, websocket, f"m{i}", i < senders, senders <= i < senders + probes)
                for i in range(start, min(members, start + 50))
            )
        )
    for c in conns:
        await c.request("ping")  # every setup event has arrived before this reply
    rss1 = server.rss_kib()
    for c in conns:
        c.start_run()
    sending = conns[:senders]
    result = FanoutResult(server.label, members, senders, rate, duration)
    result.rss_per_conn_kib = (rss1 - rss0) / members
    user0, sys0 = server.cpu_times()
    reads0, writes0 = server.syscalls()
    ccpu0 = time.process_time()
    pad = b"x" * 40
    start = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - start) < duration:
        due = int(rate * elapsed) - sent
        if due > 0:
            now = time.time()
            per: list[list[bytes]] = [[] for _ in sending]
            for k in range(due):
                n = sent + k
                body = b'{"id":%d,"type":"send","room":"%s","text":"%.6f %s","client_id":"b%d"}' % (
                    n, ROOM.encode(), now, pad, n,
                )  # fmt: skip
                per[n % senders].append(sending[n % senders].frame(body))
            for conn, frames in zip(sending, per, strict=True):
                if frames and conn.transport is not None:
                    conn.transport.writelines(frames)
            sent += due
        await asyncio.sleep(0.001)
    sent_end = time.perf_counter()
    result.sent = sent
    last, still = -1, time.perf_counter()
    while True:
        acked = sum(c.acks for c in sending)
        errors = sum(c.errors for c in sending)
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
    reads1, writes1 = server.syscalls()
    result.server_cpu = user1 - user0 + sys1 - sys0
    result.server_sys = sys1 - sys0
    result.server_reads, result.server_writes = reads1 - reads0, writes1 - writes0
    result.client_cpu = time.process_time() - ccpu0
    result.elapsed = end - start
    result.catch_up = end - sent_end
    result.acked = sum(c.acks for c in sending)
    result.errors = sum(c.errors for c in sending)
    result.expected = result.acked * members
    result.deliveries = sum(c.messages for c in conns)
    live = [c for c in conns if not c.lost_connection]
    result.cut_off = len(conns) - len(live)
    result.lost = sum(max(0, result.acked - c.messages) for c in live)
    for c in conns:
        result.latencies += c.latencies
        if c.transport is not None:
            c.transport.close()
    result.latencies.sort()
    return result


def table(results: list[FanoutResult]) -> str:
    base = results[0].rows()
    head = f"  {'':<30}" + "".join(
        f" {r.label:>12}" + ("" if i == 0 else f" {'ratio':>6}") for i, r in enumerate(results)
    )
    out = [head]
    rows = [r.rows() for r in results]
    for k, (name, value, fmt) in enumerate(base):
        line = f"  {name:<30} {value:>12{fmt}}"
        for other in rows[1:]:
            v = other[k][1]
            ratio = f"{v / value:6.2f}" if value else "     -"
            line += f" {v:>12{fmt}} {ratio}"
        out.append(line)
    return "\n".join(out)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "naive-server":
        naive_server(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10000.0, help="total messages/s offered")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--probes", type=int, default=3)
    parser.add_argument("--naive", action="store_true", help="also run the send_str door")
    args = parser.parse_args()
    nofile = raise_nofile_limit()
    print(
        f"parlour WebSocket fan-out benchmark  ({os.cpu_count()} CPUs, open-file limit {nofile},"
        f" load average {os.getloadavg()[0]:.2f})",
        flush=True,
    )
    runs = [("tcp", False, False), ("websocket", True, False)]
    if args.naive:
        runs.append(("send_str", True, True))
    results: list[FanoutResult] = []
    for label, websocket, naive in runs:
        server, web_port = start_server(label, naive, args.members + 64)
        try:
            port = web_port if websocket else server.port
            results.append(
                run_loop(
                    fanout(
                        server,
                        port,
                        websocket,
                        args.members,
                        args.senders,
                        args.rate,
                        args.duration,
                        args.probes,
                    )
                )
            )
        finally:
            server.stop()
        print(f"  ({label}: load average {os.getloadavg()[0]:.2f} after the run)", flush=True)
    r = results[0]
    print(
        f"fan-out: {args.members} members, {args.senders} senders, {args.rate:,.0f} msg/s offered"
        f" for {args.duration:g}s (tcp sent {r.sent:,}, acked {r.acked:,}; ratios against tcp)"
    )
    print(table(results), flush=True)
    ws = results[1]
    tcp_rate = r.deliveries / r.elapsed
    ws_rate = ws.deliveries / ws.elapsed
    print(
        f"targets: websocket deliveries/s >= 0.8 x tcp: {ws_rate / tcp_rate:.2f} x;"
        f" lost {ws.lost}; p99 {ws.pct(0.99):.1f} ms (<= 50)"
    )


if __name__ == "__main__":
    main()
