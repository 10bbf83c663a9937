from __future__ import annotations

import asyncio
import contextlib
import io

import aiohttp
import pytest
from proxy_helpers import BackendFactory, ProxyFactory, raw_exchange

from parlour.proxy.control import BackendSpec


async def get_text(s: aiohttp.ClientSession, port: int, path: str = "/", **kw: object) -> str:
    async with s.get(f"http://127.0.0.1:{port}{path}", **kw) as r:  # type: ignore[arg-type]
        assert r.status == 200, await r.text()
        return await r.text()


async def test_round_robin_headers_and_via(backends: BackendFactory, proxy: ProxyFactory) -> None:
    a, b = await backends("a"), await backends("b")
    rt = await proxy([a.spec, b.spec])
    async with aiohttp.ClientSession() as s:
        got = [await get_text(s, rt.listen_port or 0) for _ in range(10)]
    assert got.count("a") == 5 and got.count("b") == 5
    h = a.headers[0]
    assert h["X-Forwarded-For"] == "127.0.0.1"
    assert h["X-Forwarded-Proto"] == "http"
    assert h["X-Forwarded-Host"].startswith("127.0.0.1:")
    assert h["Via"] == "1.1 parlour"


async def test_untrusted_forwarded_headers_are_replaced(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "Via": "1.1 other"}
    async with aiohttp.ClientSession() as s:
        await get_text(s, rt.listen_port or 0, headers=spoof)
        rt.update_settings(trust_forwarded=True)
        await get_text(s, rt.listen_port or 0, headers=spoof)
    assert a.headers[0]["X-Forwarded-For"] == "127.0.0.1"
    assert a.headers[0]["X-Forwarded-Proto"] == "http"
    assert a.headers[0]["Via"] == "1.1 other, 1.1 parlour"
    assert a.headers[1]["X-Forwarded-For"] == "6.6.6.6, 127.0.0.1"
    assert a.headers[1]["X-Forwarded-Proto"] == "https"


async def test_hop_by_hop_headers_removed(backends: BackendFactory, proxy: ProxyFactory) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    req = (
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n"
        b"X-Kept: yes\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    out = await raw_exchange(rt.listen_port or 0, req)
    assert out.count(b"HTTP/1.1 200") == 2
    h = {k.lower(): v for k, v in a.headers[0].items()}
    assert "x-secret" not in h and "keep-alive" not in h and "te" not in h
    assert "proxy-connection" not in h
    assert h["x-kept"] == "yes"


async def test_keep_alive_reuses_pooled_upstream(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
        for _ in range(20):
            assert await get_text(s, rt.listen_port or 0) == "a"
    snap = rt.backends()[0]
    assert snap.requests == 20
    assert snap.total_conns == 1  # one upstream connection served all 20
    assert rt.upstreams.counters.total_conns == 1  # and one client connection


async def test_stale_pooled_connection_is_retried_on_fresh_one(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    async with aiohttp.ClientSession() as s:
        assert await get_text(s, rt.listen_port or 0) == "a"
        # the backend restarts: pooled keep-alive connections die
        port = a.port
        await a.stop()
        await backends("a2", port)
        assert await get_text(s, rt.listen_port or 0) == "a2"
    assert rt.backends()[0].state == "up"


async def test_pipelined_responses_in_order(backends: BackendFactory, proxy: ProxyFactory) -> None:
    a, b = await backends("a"), await backends("b")
    rt = await proxy([a.spec, b.spec])
    req = (
        b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
        + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    out = await raw_exchange(rt.listen_port or 0, req)
    assert out.count(b"HTTP/1.1 200 OK") == 6
    seen = [r.path for r in a.seen] + [r.path for r in b.seen]
    assert sorted(seen) == sorted(["/0", "/1", "/2", "/3", "/4", "/last"])
    bodies = [part.rsplit(b"\r\n\r\n", 1)[-1][:1] for part in out.split(b"HTTP/1.1 ")[1:]]
    assert bodies == [b"a", b"b", b"a", b"b", b"a", b"b"]


async def test_streaming_chunked_post_both_ways(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], buffer_size=16384)
    blob = bytes(range(256)) * 8192  # 2 MiB

    async def gen():  # type: ignore[no-untyped-def]
        for i in range(0, len(blob), 100_000):
            yield blob[i : i + 100_000]

    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{rt.listen_port}/echo", data=gen()) as r:
            assert r.status == 200
            assert r.headers.get("Transfer-Encoding") == "chunked"
            assert await r.read() == blob
        async with s.post(f"http://127.0.0.1:{rt.listen_port}/echo", data=io.BytesIO(blob)) as r:
            assert await r.read() == blob
    assert a.bodies == [blob, blob]


async def test_large_response_with_content_length(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    url = f"http://127.0.0.1:{rt.listen_port}/big?n=3000000"
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.headers["Content-Length"] == "3000000"
        assert len(await r.read()) == 3_000_000
    assert rt.backends()[0].bytes_in > 3_000_000


async def test_head_request_and_http10(backends: BackendFactory, proxy: ProxyFactory) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    out = await raw_exchange(
        rt.listen_port or 0,
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    )
    first, second = out.split(b"HTTP/1.0 ")
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"\r\n\r\n")
    assert second.startswith(b"200") and second.endswith(b"a")


async def test_all_backends_down_gives_clear_503(
    proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # a port nobody listens on
    rt = await proxy([BackendSpec("127.0.0.1", 9)], retry_limit=1, health_fall=1)
    out = await raw_exchange(rt.listen_port or 0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 502") or out.startswith(b"HTTP/1.1 503")
    out = await raw_exchange(rt.listen_port or 0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert b"No backend server is available" in out
    assert rt.backends()[0].state == "down"
    assert "ALL BACKENDS ARE DOWN" in caplog.text


async def test_connect_failure_retries_other_backend(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([BackendSpec("127.0.0.1", 9), a.spec], retry_limit=2, health_fall=100)
    async with aiohttp.ClientSession() as s:
        got = [await get_text(s, rt.listen_port or 0) for _ in range(6)]
    assert got == ["a"] * 6
    dead = next(x for x in rt.backends() if x.port == 9)
    assert dead.connect_errors >= 1 and dead.retries >= 1


async def test_post_is_never_replayed(proxy: ProxyFactory) -> None:
    """A backend that reads the request then dies: the POST must not be sent again."""
    received: list[bytes] = []
    got_request = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readuntil(b"\r\n\r\n")
        received.append(data)
        got_request.set()
        writer.transport.abort()

    servers = [await asyncio.start_server(handler, "127.0.0.1", 0) for _ in range(2)]
    specs = [BackendSpec("127.0.0.1", srv.sockets[0].getsockname()[1]) for srv in servers]
    try:
        rt = await proxy(specs, retry_limit=3)
        out = await raw_exchange(
            rt.listen_port or 0,
            b"POST /pay HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok",
        )
        assert out.startswith(b"HTTP/1.1 502")
        assert len(received) == 1
    finally:
        for srv in servers:
            srv.close()
            with contextlib.suppress(Exception):
                await srv.wait_closed()


async def test_head_then_get_reuse_one_upstream_connection(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    """A response to HEAD has no body even with Content-Length: the upstream connection
    goes back to the pool and serves the GET that follows on the same client connection."""
    a = await backends("a")
    rt = await proxy([a.spec])
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
    try:
        writer.write(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 1\r\n" in head
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")  # not the HEAD's "body"
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"a"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    assert [r.method for r in a.seen] == ["HEAD", "GET"]
    (snap,) = rt.backends()
    assert snap.total_conns == 1 and snap.requests == 2


@pytest.mark.parametrize(
    ("extra", "reused"),
    [
        (b"Content-Length: 0\r\n\r\n", True),
        (b"Content-Length: 5\r\n\r\n", True),
        (b"\r\n", False),  # no length: llhttp would read to EOF, so not kept
        (b"Content-Length: 5\r\n\r\nhello", False),  # a body after all: not reused
    ],
)
async def test_head_response_framings(proxy: ProxyFactory, extra: bytes, reused: bool) -> None:
    """A raw backend answering HEAD with various framings, then GET with a body."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                if request.startswith(b"HEAD"):
                    writer.write(b"HTTP/1.1 200 OK\r\n" + extra)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        rt = await proxy([BackendSpec("127.0.0.1", srv.sockets[0].getsockname()[1])])
        out = await raw_exchange(
            rt.listen_port or 0,
            b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n"
            b"Connection: close\r\n\r\n",
        )
        first, second = out.split(b"HTTP/1.1 200 OK\r\n")[1:]
        assert first.endswith(b"\r\n\r\n") and second.endswith(b"\r\n\r\nok")
        (snap,) = rt.backends()  # (the server also sees the health checks' connections)
        assert snap.requests == 2 and snap.total_conns == (1 if reused else 2)
    finally:
        srv.close()
