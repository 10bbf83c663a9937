"""`parlour proxy --mode tcp` in front of two real Parlour chat nodes (the line protocol)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from proxy_helpers import ProxyFactory

from parlour.core.passwords import Argon2Hasher
from parlour.proxy.control import BackendSpec
from parlour.server.app import ChatServer
from parlour.server.config import Settings


async def _ping(port: int) -> tuple[dict[str, object], asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(json.dumps({"id": 7, "type": "ping"}).encode() + b"\n")
    while True:
        frame = json.loads(await asyncio.wait_for(reader.readline(), 10))
        if frame.get("id") == 7:
            return frame, writer


async def test_tcp_mode_fronts_chat_nodes(tmp_path: Path, proxy: ProxyFactory) -> None:
    nodes = [
        await ChatServer.start(
            Settings(port=0, data_dir=tmp_path / f"node{i}", admin_password="admin-password-1"),
            password_hasher=Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1),
        )
        for i in range(2)
    ]
    writers: list[asyncio.StreamWriter] = []
    try:
        rt = await proxy([BackendSpec("127.0.0.1", n.port) for n in nodes], mode="tcp")
        for _ in range(4):
            reply, writer = await _ping(rt.listen_port or 0)
            writers.append(writer)
            assert reply.get("type") == "ok", reply
        # one long-lived client connection per balancing decision: 2 per node
        assert sorted(s.active_conns for s in rt.backends()) == [2, 2]
    finally:
        for w in writers:
            w.close()
        for n in nodes:
            await n.stop(grace=2)
