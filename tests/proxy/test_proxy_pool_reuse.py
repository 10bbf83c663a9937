"""Idle upstream pools follow the concurrency, in both data planes: after n requests were
in flight on a backend at once, n connections are kept (max_idle_upstream is a floor)."""

from __future__ import annotations

import asyncio
import contextlib

from proxy_helpers import ProxyFactory

from parlour.proxy.control import BackendSpec

TIMEOUT = 10.0


class HoldingBackend:
    """Answers nothing until `release` is called; records which connection got what."""

    def __init__(self) -> None:
        self.held: list[asyncio.StreamWriter] = []
        self.carrying: set[int] = set()  # ids of connections that carried a request
        self.changed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await reader.readuntil(b"\r\n\r\n")  # bodiless GETs only
                self.carrying.add(id(writer))
                self.held.append(writer)
                self.changed.set()
        writer.close()

    async def until_held(self, n: int) -> None:
        async def wait() -> None:
            while len(self.held) < n:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), TIMEOUT)

    def release(self) -> None:
        for w in self.held:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.held.clear()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_pool_keeps_as_many_connections_as_were_in_flight(proxy: ProxyFactory) -> None:
    backend = HoldingBackend()
    port = await backend.start()
    try:
        rt = await proxy([BackendSpec("127.0.0.1", port)], max_idle_upstream=1, health_kind="tcp")
        n = 4
        conns = [await asyncio.open_connection("127.0.0.1", rt.listen_port or 0) for _ in range(n)]
        try:
            for wave in range(2):
                for i, (_, writer) in enumerate(conns):
                    writer.write(f"GET /{wave}/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                await backend.until_held(n)
                backend.release()
                for reader, _ in conns:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\nok"), TIMEOUT)
                    assert head.startswith(b"HTTP/1.1 200")
                # the second wave went over the first wave's connections
                assert len(backend.carrying) == n
        finally:
            for _, writer in conns:
                writer.close()
    finally:
        await backend.stop()
