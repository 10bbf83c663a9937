"""One client (or the relay) of the network-namespace test, run inside a namespace.

Talks to the test over stdin/stdout, one JSON object per line:

* ``relay``: starts a relay on HOST, prints ``{"relay": [host, port]}``, runs until stdin ends.
* ``peer``: starts a transfer manager on 0.0.0.0, prints ``{"address": [host, port]}``, reads one
  command (``send`` or ``receive`` with the transfer's id, key, peers, relay, file), prints
  ``{"observed": ...}`` when the relay reports this side's address, and ``{"result": ...}`` at
  the end. Lines ``{"peer": [host, port]}`` read meanwhile are added as peer endpoints.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from parlour.p2p.connection import RelayInfo, TransferConfig
from parlour.p2p.files import FileOffer
from parlour.p2p.manager import TransferManager
from parlour.p2p.relay_udp import RelayServer


def say(obj: object) -> None:
    print(json.dumps(obj), flush=True)


async def lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def relay(secret: bytes, host: str) -> None:
    server = await RelayServer.start(secret, host=host)
    say({"relay": list(server.address)})
    reader = await lines()
    await reader.read()
    server.close()


async def peer() -> None:
    cfg = TransferConfig(direct_timeout=2.0, idle_timeout=5.0, connect_timeout=15.0)
    manager = TransferManager(config=cfg)
    await manager.start("0.0.0.0", 0)
    say({"address": list(manager.address)})
    reader = await lines()
    cmd = json.loads(await reader.readline())
    offer = FileOffer(cmd["name"], cmd["size"], bytes.fromhex(cmd["sha256"]))
    tid, key = bytes.fromhex(cmd["tid"]), bytes.fromhex(cmd["key"])
    peers = [(h, p) for h, p in cmd["peers"]]
    info = RelayInfo(tuple(cmd["relay"]), bytes.fromhex(cmd["ticket"]))  # type: ignore[arg-type]
    if cmd["role"] == "send":
        handle = manager.send_file(
            Path(cmd["path"]), offer, transfer_id=tid, key=key, peers=peers, relay=info
        )
    else:
        handle = manager.accept_file(
            offer, Path(cmd["path"]), transfer_id=tid, key=key, peers=peers, relay=info
        )

    async def watch() -> None:
        await handle.relay_bound.wait()
        assert handle.observed is not None
        say({"observed": list(handle.observed)})

    async def more_peers() -> None:
        while line := await reader.readline():
            handle.add_peer(tuple(json.loads(line)["peer"]))  # type: ignore[arg-type]

    tasks = [asyncio.ensure_future(watch()), asyncio.ensure_future(more_peers())]
    result = await handle.wait()
    for t in tasks:
        t.cancel()
    say(
        {
            "result": {
                "ok": result.ok,
                "message": result.message,
                "via_relay": result.via_relay,
                "path": list(handle.path) if handle.path else None,
                "file": str(result.path) if result.path else None,
            }
        }
    )
    await manager.close()


if __name__ == "__main__":
    if sys.argv[1] == "relay":
        asyncio.run(relay(bytes.fromhex(sys.argv[2]), sys.argv[3]))
    else:
        asyncio.run(peer())
