"""WebSocket upgrade tunnelling, TCP (L4) mode and PROXY protocol."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from proxy_helpers import BackendFactory, ProxyFactory

from parlour.proxy.control import BackendSpec
from parlour.proxy.proxy_protocol import V2_SIGNATURE, proxy_header


async def test_websocket_through_proxy(backends: BackendFactory, proxy: ProxyFactory) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(f"http://127.0.0.1:{rt.listen_port}/ws") as ws,
    ):
        for i in range(5):
            await ws.send_str(f"hello {i}")
            assert await asyncio.wait_for(ws.receive_str(), 5) == f"a:hello {i}"
    assert rt.backends()[0].requests == 1


async def test_websocket_tunnel_idle_timeout(backends: BackendFactory, proxy: ProxyFactory) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], tunnel_timeout_s=0.3)
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(f"http://127.0.0.1:{rt.listen_port}/ws", autoping=False) as ws,
    ):
        await ws.send_str("x")
        assert await asyncio.wait_for(ws.receive_str(), 5) == "a:x"
        msg = await asyncio.wait_for(ws.receive(), 5)  # the proxy closes the idle tunnel
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE)
    assert rt.backends()[0].active_conns == 0


@contextlib.asynccontextmanager
async def echo_server(tag: bytes, seen: list[bytes] | None = None) -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if seen is not None:
                    seen.append(data)
                writer.write(tag + data)
                await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(srv.wait_closed(), 2)


async def test_tcp_mode_relays_and_balances(proxy: ProxyFactory) -> None:
    async with echo_server(b"A:") as pa, echo_server(b"B:") as pb:
        rt = await proxy([BackendSpec("127.0.0.1", pa), BackendSpec("127.0.0.1", pb)], mode="tcp")
        tags = []
        for i in range(4):
            reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
            writer.write(b"ping%d" % i)
            data = await asyncio.wait_for(reader.readexactly(7), 5)
            tags.append(data[:2])
            assert data[2:] == b"ping%d" % i
            writer.write_eof()  # half close: the echo server ends, the proxy closes
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        assert sorted(tags) == [b"A:", b"A:", b"B:", b"B:"]
        snaps = rt.backends()
        assert sum(s.total_conns for s in snaps) == 4
        assert all(s.active_conns == 0 for s in snaps)


async def test_tcp_mode_large_transfer_with_flow_control(proxy: ProxyFactory) -> None:
    async with echo_server(b"") as pa:
        rt = await proxy([BackendSpec("127.0.0.1", pa)], mode="tcp", buffer_size=4096)
        reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
        blob = bytes(range(256)) * 4096  # 1 MiB

        async def send() -> None:
            writer.write(blob)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        got = await asyncio.wait_for(reader.read(-1), 10)
        await sender
        writer.close()
        assert got == blob


async def test_tcp_mode_all_down_closes(proxy: ProxyFactory) -> None:
    rt = await proxy([BackendSpec("127.0.0.1", 9)], mode="tcp", retry_limit=0)
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_proxy_protocol_header_sent_first(proxy: ProxyFactory, version: str) -> None:
    seen: list[bytes] = []
    async with echo_server(b"", seen) as pa:
        rt = await proxy([BackendSpec("127.0.0.1", pa)], mode="tcp", proxy_protocol=version)
        reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
        local = writer.get_extra_info("sockname")
        writer.write(b"hi")
        expected = proxy_header(version, (local[0], local[1]), ("127.0.0.1", rt.listen_port or 0))  # type: ignore[arg-type]
        got = await asyncio.wait_for(reader.readexactly(len(expected) + 2), 5)
        writer.close()
        assert got == expected + b"hi"
        if version == "v1":
            assert got.startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 ")
        else:
            assert got.startswith(V2_SIGNATURE + b"\x21\x11\x00\x0c")


def test_proxy_header_v6_and_mixed() -> None:
    assert proxy_header("v1", ("::1", 5), ("::1", 6)) == b"PROXY TCP6 ::1 ::1 5 6\r\n"
    v2 = proxy_header("v2", ("::1", 5), ("::1", 6))
    assert v2[12:16] == b"\x21\x21\x00\x24" and len(v2) == 16 + 36
    assert proxy_header("v1", ("::1", 5), ("127.0.0.1", 6)) == b"PROXY UNKNOWN\r\n"


async def test_tcp_mode_measures_connect_to_first_byte(proxy: ProxyFactory) -> None:
    """One response-time sample per backend connection, taken at the backend's first byte
    (a greeting here); a backend that never speaks gives none."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            while await reader.read(65536):
                writer.write(b"more\n")  # later bytes are not samples
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    greeter = await asyncio.start_server(greet, "127.0.0.1", 0)
    quiet = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        g = BackendSpec("127.0.0.1", greeter.sockets[0].getsockname()[1])
        q = BackendSpec("127.0.0.1", quiet.sockets[0].getsockname()[1])
        rt = await proxy([g], mode="tcp")
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
            assert await asyncio.wait_for(reader.readline(), 5) == b"hello\n"
            writer.write(b"x")
            assert await asyncio.wait_for(reader.readline(), 5) == b"more\n"
            writer.close()
        backend = rt.pool.find(g.id)
        assert backend is not None and len(backend.latencies_ms) == 3
        (snap,) = rt.backends()
        assert snap.p50_ms is not None and snap.p99_ms is not None
        assert 0 < snap.p50_ms <= snap.p99_ms
        assert abs(snap.p50_ms - round(snap.p50_ms)) > 1e-9  # perf_counter, not loop ms

        rt2 = await proxy([q], mode="tcp")
        reader, writer = await asyncio.open_connection("127.0.0.1", rt2.listen_port)
        writer.write(b"x")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        (snap,) = rt2.backends()
        assert snap.total_conns == 1 and snap.p50_ms is None and snap.p99_ms is None
    finally:
        for srv in (greeter, quiet):
            srv.close()
