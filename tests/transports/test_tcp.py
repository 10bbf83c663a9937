"""TCP adapter over real sockets on 127.0.0.1 with a stand-in core."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from fakes import EchoService

from parlour.storage.memory import MemoryStore
from parlour.transports.endpoint import Endpoint, EndpointLimits
from parlour.transports.hub import Hub
from parlour.transports.pipeline import InlineWriter
from parlour.transports.tcp import TcpListener

TIMEOUT = 10


@dataclass
class Server:
    endpoint: Endpoint
    listener: TcpListener
    service: EchoService
    port: int


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, obj: dict[str, Any] | bytes) -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode() + b"\n"
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
        assert line, "connection closed"
        result: dict[str, Any] = json.loads(line)
        return result

    async def closed(self) -> bool:
        rest = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        return rest == b""

    def close(self) -> None:
        self.writer.close()


async def start(**limits: Any) -> Server:
    service = EchoService()
    writer = InlineWriter(MemoryStore().apply)
    writer.start()
    endpoint = Endpoint(
        service,
        writer,
        Hub(send_queue_max=limits.pop("send_queue_max", 1 << 20)),
        limits=EndpointLimits(**limits),
    )
    endpoint.start()
    listener = TcpListener(endpoint, "127.0.0.1", 0)
    [(_, port)] = await listener.start()
    return Server(endpoint, listener, service, port)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = await start()
    yield srv
    await srv.listener.stop_accepting()
    await srv.endpoint.shutdown(grace=2)
    await srv.listener.wait_closed()


_open: list[Client] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _open:
        client = _open.pop()
        client.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(client.writer.wait_closed(), TIMEOUT)


async def connect(port: int) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    client = Client(reader, writer)
    _open.append(client)
    return client


def send_req(i: int, text: str = "hi") -> dict[str, Any]:
    return {"id": i, "type": "send", "room": "general", "text": text, "client_id": f"c{i}"}


async def test_requests_get_replies_and_fan_out(server: Server) -> None:
    a, b = await connect(server.port), await connect(server.port)
    await a.send({"id": 1, "type": "ping"})
    assert (await a.recv())["data"] == {"type": "ping"}
    await b.send({"id": 1, "type": "ping"})
    await b.recv()
    for i in range(1, 21):
        await a.send(send_req(i, f"m{i}"))
    got_a = [await a.recv() for _ in range(40)]
    got_b = [await b.recv() for _ in range(20)]
    assert [f["id"] for f in got_a if f["type"] == "ok"] == list(range(1, 21))
    assert [f["seq"] for f in got_b] == list(range(1, 21))
    a.close()
    b.close()


async def test_invalid_json_gets_error_and_connection_goes_on(server: Server) -> None:
    a, b = await connect(server.port), await connect(server.port)
    await a.send(b"{not json\n")
    err = await a.recv()
    assert err["type"] == "error" and err["code"] == "invalid_json" and err["id"] is None
    await a.send(b"\xff\xfe\n")
    assert (await a.recv())["code"] == "invalid_utf8"
    await a.send({"id": 5, "type": "nope"})
    err = await a.recv()
    assert (err["id"], err["code"]) == (5, "unknown_type")
    await a.send({"id": 6, "type": "send", "room": "general"})
    assert (await a.recv())["code"] == "missing_field"
    await a.send(send_req(7))
    assert (await a.recv())["id"] == 7
    assert (await b.recv())["event"] == "message"
    a.close()
    b.close()


async def test_oversize_frame_closes_only_that_connection() -> None:
    srv = await start(max_frame=1024)
    try:
        a, b = await connect(srv.port), await connect(srv.port)
        await a.send(b"x" * 5000)
        err = await a.recv()
        assert err["code"] == "frame_too_large"
        bye = await a.recv()
        assert (bye["event"], bye["code"]) == ("disconnect", "frame_too_large")
        assert await a.closed()
        await b.send(send_req(1))
        assert (await b.recv())["id"] == 1
        b.close()
    finally:
        await srv.listener.stop_accepting()
        await srv.endpoint.shutdown(grace=2)


async def test_max_connections_rejects_with_server_full() -> None:
    srv = await start(max_connections=2)
    try:
        a, b = await connect(srv.port), await connect(srv.port)
        await a.send({"id": 1, "type": "ping"})
        await a.recv()
        await b.send({"id": 1, "type": "ping"})
        await b.recv()
        c = await connect(srv.port)
        err = await c.recv()
        assert (err["type"], err["code"]) == ("error", "server_full")
        assert await c.closed()
        seen = len(srv.service.disconnected)
        a.close()
        await a.writer.wait_closed()
        # a slot is free again once the server has seen the close
        await asyncio.wait_for(srv.service.disconnects(seen + 1), 5)
        assert len(srv.endpoint) == 1
        d = await connect(srv.port)
        await d.send({"id": 2, "type": "ping"})
        assert (await d.recv())["id"] == 2
        b.close()
        d.close()
    finally:
        await srv.listener.stop_accepting()
        await srv.endpoint.shutdown(grace=2)


async def test_idle_connection_is_closed_with_reason() -> None:
    srv = await start(idle_timeout=0.3, tick_interval=0.05)
    try:
        a = await connect(srv.port)
        bye = await a.recv()
        assert (bye["event"], bye["code"]) == ("disconnect", "idle_timeout")
        assert await a.closed()
    finally:
        await srv.listener.stop_accepting()
        await srv.endpoint.shutdown(grace=2)


async def connect_small_window(port: int) -> Client:
    """A client with a tiny receive buffer, so the kernel cannot absorb much for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    # a small StreamReader limit: asyncio stops reading the socket once 8 KiB are buffered
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    client = Client(reader, writer)
    _open.append(client)
    return client


async def test_slow_reader_is_cut_off_without_hurting_others() -> None:
    srv = await start(send_queue_max=64 * 1024)
    try:
        slow = await connect_small_window(srv.port)
        fast, sender = [await connect(srv.port) for _ in range(2)]
        for c in (slow, fast, sender):
            await c.send({"id": 0, "type": "ping"})
            await c.recv()
        # `slow` never reads; the others keep up. The sender keeps a window of 8 requests.
        text = "y" * 4000
        n, window = 1200, 8  # ~5 MB for each recipient, far over the 64 KiB queue

        async def drain(c: Client, count: int) -> int:
            got = 0
            while got < count:
                frame = await c.recv()
                if frame.get("event") == "message":
                    got += 1
            return got

        reader_task = asyncio.create_task(drain(fast, n))
        acks = 0
        for i in range(0, n, window):
            for j in range(i, i + window):
                await sender.send(send_req(j + 1, text))
            while acks < i + window:
                if (await sender.recv())["type"] == "ok":
                    acks += 1
        assert await asyncio.wait_for(reader_task, 60) == n
        assert srv.endpoint.hub.stats.slow_consumers == 1
        # the slow one finally reads: it finds the reason at the end, then EOF
        rest = await asyncio.wait_for(slow.reader.read(), TIMEOUT)
        frames = [json.loads(line) for line in rest.splitlines()]
        assert frames[-1]["code"] == "slow_consumer"
        assert len([f for f in frames if f.get("event") == "message"]) < n
    finally:
        await srv.listener.stop_accepting()
        await srv.endpoint.shutdown(grace=2)


async def test_shutdown_tells_clients_and_refuses_new_ones(server: Server) -> None:
    a = await connect(server.port)
    await a.send({"id": 1, "type": "ping"})
    await a.recv()
    await server.listener.stop_accepting()
    await server.endpoint.shutdown(grace=2)
    bye = await a.recv()
    assert (bye["event"], bye["code"]) == ("disconnect", "shutting_down")
    assert await a.closed()
    assert server.service.disconnected and len(server.endpoint) == 0


async def test_bursts_from_several_senders_keep_every_members_order(server: Server) -> None:
    """Pipelined bursts from three senders over real sockets: the hub joins consecutive room
    events into segments; every member must still see every event in sequence order, and each
    sender its own `ok` before the event of the same message."""
    clients = [await connect(server.port) for _ in range(4)]
    for c in clients:
        await c.send({"id": 0, "type": "ping"})
        await c.recv()
    per_sender = 200
    for c in clients[:3]:  # written back to back: they arrive in overlapping reads
        c.writer.write(
            b"".join(
                json.dumps(send_req(i, f"t{i}")).encode() + b"\n" for i in range(1, per_sender + 1)
            )
        )
    await asyncio.gather(*(c.writer.drain() for c in clients[:3]))
    total = 3 * per_sender
    for k, c in enumerate(clients):
        frames = [await c.recv() for _ in range(total + (per_sender if k < 3 else 0))]
        events = [f for f in frames if f.get("type") == "event"]
        assert [e["seq"] for e in events] == list(range(1, total + 1))
        if k < 3:
            replies = {f["id"]: n for n, f in enumerate(frames) if f.get("type") == "ok"}
            own = {e["client_id"]: n for n, e in enumerate(frames) if e.get("from") == f"c{k + 1}"}
            assert sorted(replies) == list(range(1, per_sender + 1))
            assert all(replies[i] < own[f"c{i}"] for i in range(1, per_sender + 1))
