"""The floor under `parlour proxy`'s CPU per request: a null relay on the same stack.

A uvloop Protocol pair that pairs every client connection with its own upstream
connection (round robin over the backends) and copies bytes both ways without parsing —
no HTTP, no pool, no statistics. Under wrk (keep-alive, one request in flight per
connection) it does exactly the syscalls and event-loop work a proxied request needs:
one read and one write per side. Its CPU time per request is what Python + uvloop + the
kernel cost before any proxy logic; `parlour proxy` cannot go below it.

    .venv/bin/python bench/proxy_floor.py [--workers N] PORT BACKEND_PORT [BACKEND_PORT ...]

With `--workers N` it forks N processes sharing the port with SO_REUSEPORT, as
`parlour proxy --workers N` does.

Run it in place of the proxy and measure with wrk and /proc (see docs/benchmarks/proxy.md).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import sys

import uvloop


class Up(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        t = self.client.transport
        if t is not None:
            t.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class Client(asyncio.Protocol):
    ports: itertools.cycle[int]

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.up: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect(next(self.ports)))

    async def _connect(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        up, _ = await loop.create_connection(lambda: Up(self), "127.0.0.1", port)
        self.up = up
        for data in self.early:
            up.write(data)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.up is None:
            self.early.append(data)
        else:
            self.up.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.up is not None:
            self.up.close()


async def main(port: int, backends: list[int], reuse_port: bool) -> None:
    Client.ports = itertools.cycle(backends)
    server = await asyncio.get_running_loop().create_server(
        Client, "127.0.0.1", port, backlog=1024, reuse_port=reuse_port
    )
    gc.freeze()  # as the proxy worker does
    await server.serve_forever()


if __name__ == "__main__":
    argv = sys.argv[1:]
    workers = 1
    if argv[:1] == ["--workers"]:
        workers, argv = int(argv[1]), argv[2:]
    for _ in range(workers - 1):
        if os.fork() == 0:
            break
    uvloop.run(main(int(argv[0]), [int(p) for p in argv[1:]], reuse_port=workers > 1))
