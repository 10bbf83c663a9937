"""Load-shaped attacks over real sockets (issue 10): slow consumers are told why; a flood of
password work neither delays nor blocks a normal login."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

import pytest
from e2e_helpers import PASSWORD, ClientFactory, ServerFactory, Wire

from parlour.server.app import ChatServer
from parlour.server.config import Settings

SLOW = 8


async def _slow_member(port: int, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A member with a tiny receive window that stops reading after joining."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    # a small reader buffer: the member really reads the socket slowly (the default would
    # take megabytes off the socket at once and stop reading it while they are consumed)
    reader, writer = await asyncio.open_connection(sock=sock, limit=8192)
    writer.write(
        b'{"id":1,"type":"hello","version":1}\n'
        + json.dumps({"id": 2, "type": "signup", "username": name, "password": PASSWORD}).encode()
        + b'\n{"id":3,"type":"join","room":"general"}\n'
    )
    return reader, writer


async def _read_slowly(reader: asyncio.StreamReader) -> list[dict[str, object]]:
    """Read everything at about 40 KB/s (a slow link), until the server closes: the backlog
    ahead of the reason takes longer than the old 5-second grace to read."""
    data = bytearray()
    while chunk := await reader.read(4096):
        data += chunk
        await asyncio.sleep(0.1)  # pacing: a slow reader, not synchronisation
    return [json.loads(line) for line in data.splitlines()]


async def test_slow_consumers_are_cut_off_and_told_why(
    make_server: ServerFactory, connect: ClientFactory, framing: str
) -> None:
    """Before: 0 of 20 cut-off clients received the `slow_consumer` reason (the connection
    was aborted 5 s after the cut-off while they were still reading what came before it)."""
    if framing != "ndjson":
        pytest.skip("raw NDJSON members; one run is enough for this slow test")
    srv = await make_server(send_queue_max=262144, rate=1e6, burst=1_000_000, tick_interval=0.2)
    slow = [await _slow_member(srv.port, f"slow{i}") for i in range(SLOW)]
    sender = await connect(srv.port)
    await sender.signup("sender", PASSWORD)
    await sender.ok("join", room="general")
    text = "z" * 3000
    sent = 0
    while srv.endpoint.hub.stats.slow_consumers < SLOW:
        assert sent < 20000, "the slow members were never cut off"
        await asyncio.gather(
            *(
                sender.ok("send", room="general", text=text, client_id=f"s{sent + i}")
                for i in range(20)
            )
        )
        sender.drain_events()
        sent += 20
    frames = await asyncio.wait_for(
        asyncio.gather(*(_read_slowly(reader) for reader, _ in slow)), 60
    )
    for got in frames:
        last = got[-1]
        assert last.get("event") == "disconnect" and last["code"] == "slow_consumer", last
        assert "fast enough" in str(last["reason"])
    for _, writer in slow:
        writer.close()
    await sender.ok("ping")  # the sender was never affected


class GatedHasher:
    """Argon2 stand-in: every call waits for `gate` once armed, and the order of the calls is
    recorded (by password)."""

    def __init__(self) -> None:
        self.armed = False
        self.gate = threading.Event()
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def _wait(self, password: str) -> None:
        if self.armed and not self.gate.wait(30):
            raise AssertionError("the test never opened the gate")
        with self._lock:
            self.calls.append(password)

    def hash(self, password: str) -> str:
        self._wait(password)
        return "plain$" + password

    def verify(self, hash: str, password: str) -> bool:
        self._wait(password)
        return hash == "plain$" + password

    def needs_rehash(self, hash: str) -> bool:
        return False


async def test_a_signup_flood_neither_delays_nor_blocks_a_normal_login(
    tmp_path: Path, framing: str
) -> None:
    """Before: 100 unauthenticated connections sending `signup` made a normal login take
    19.9 s (one unbounded queue, served in arrival order, including the work of clients that
    had given up)."""
    if framing != "ndjson":
        pytest.skip("one run is enough")
    hasher = GatedHasher()
    settings = Settings(port=0, data_dir=tmp_path / "data", admin_password="admin-password")
    srv = await ChatServer.start(settings, password_hasher=hasher, tick_interval=0.2)
    flood: list[Wire] = []
    others: list[Wire] = []
    try:
        owner = await Wire.connect(srv.port)
        others.append(owner)
        await owner.signup("owner", PASSWORD)
        await owner.ok("logout")
        hasher.armed = True
        for _ in range(40):
            w = await Wire.connect(srv.port, source="127.0.0.6")
            await w.hello()
            flood.append(w)
        pending = [
            w.send("signup", username=f"flood{i}", password=f"pw-{i:04d}-x")
            for i, w in enumerate(flood)
        ]
        await asyncio.sleep(0)
        busy = [await f for f in pending[32:]]  # beyond the address's share: refused at once
        assert {r["code"] for r in busy} == {"server_busy"} and all(
            r["retry_after"] >= 1 for r in busy
        )
        for w in flood[16:32]:  # half of the queued flood gives up: its work is dropped
            await w.close()
        login = owner.send("login", username="owner", password=PASSWORD)
        hasher.gate.set()
        assert (await asyncio.wait_for(login, 30))["type"] == "ok"
        await asyncio.wait_for(asyncio.gather(*pending[:16]), 30)
        # served round robin: the owner's check ran right after the jobs already running
        assert hasher.calls.index(PASSWORD) <= 3
        # the work of the 16 that gave up was never done (at most the ones already running)
        assert sum(1 for c in hasher.calls if c.startswith("pw-")) <= 16 + 2
    finally:
        hasher.gate.set()
        for w in flood + others:
            await w.close()
        await srv.stop(grace=2)
