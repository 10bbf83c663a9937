"""TLS through the fast lane: the engine terminates TLS itself (OpenSSL), relays simple
requests natively, and hands everything else to the Python relay through a socket pair
that carries the decrypted stream (docs/design/proxy-tls.md).

Real handshakes on 127.0.0.1 with certificates from the test CA. The module runs in both
data planes, so every shape here is also checked against the Python relay (uvloop's SSL);
the few tests about the engine's own state say so and skip on the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from proxy_helpers import BackendFactory, ProxyFactory
from raw_backend import TIMEOUT, RawBackend, RawBackendFactory, Req, get, ok, read_response
from test_proxy_fastlane_engine import (
    LiveProxy,
    chaos_answer,
    chaos_stream,
    check_backend,
    check_responses,
)
from test_proxy_tls import tls_client, tls_config
from tls_helpers import Certs, client_context

from parlour.proxy.config import ProxyConfig
from parlour.proxy.control import ProxySettings
from parlour.proxy.fastlane import native_module
from parlour.proxy.runtime import ProxyRuntime
from parlour.proxy.tls import CertSpec, TlsConfig, TlsError

MODULE = native_module()[0]
# the engine terminates TLS (built with OpenSSL); else TLS listeners use the Python relay
ENGINE_TLS = bool(getattr(MODULE, "TLS", False))


def engine_only(data_plane: str) -> None:
    if data_plane != "fast_lane" or not ENGINE_TLS:
        pytest.skip("about the engine's own TLS state")


def client_hello() -> bytes:
    """The first flight of a real TLS client (a ClientHello record)."""
    ctx = client_context(None)
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def req(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def test_simple_requests_stay_in_the_engine_over_tls(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory, data_plane: str
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki))
    ctx = client_context(pki.ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    async with tls_client(rt.listen_port or 0, ctx) as (r, w):
        assert w.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        for i in range(5):
            w.write(req(f"/{i}"))
            got = await read_response(r)
            assert (got.status, got.body) == (200, b"a")
        if data_plane == "fast_lane" and ENGINE_TLS:
            assert rt.fast_lane is not None and rt.fast_lane.clients == 1
            assert not rt.upstreams.conns  # nothing handed to the Python relay
    assert [h["X-Forwarded-Proto"] for h in a.headers] == ["https"] * 5


async def test_pipelined_requests_with_an_upload_in_the_middle(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory, data_plane: str
) -> None:
    """GETs (the engine's), then a POST: the connection moves to the Python relay in the
    middle of the pipeline, and every answer comes back in order."""
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki))
    async with tls_client(rt.listen_port or 0, client_context(pki.ca)) as (r, w):
        w.write(req("/1") + req("/2") + post("/echo", b"hello") + req("/3"))
        bodies = [(await read_response(r)).body for _ in range(4)]
        assert bodies == [b"a", b"a", b"hello", b"a"]
        if data_plane == "fast_lane" and ENGINE_TLS:
            assert rt.fast_lane is not None and rt.fast_lane.clients == 0
            assert len(rt.upstreams.conns) == 1  # the relay has it (counted once)
        w.write(req("/4"))  # the same connection, through the pair, goes on
        assert (await read_response(r)).body == b"a"
    assert [h["X-Forwarded-Proto"] for h in a.headers] == ["https"] * 5
    assert [h["X-Forwarded-For"] for h in a.headers] == ["127.0.0.1"] * 5


async def test_large_bodies_both_ways(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki))
    async with tls_client(rt.listen_port or 0, client_context(pki.ca)) as (r, w):
        w.write(req("/big?n=3000000"))  # 3 MB download, relayed by the engine
        got = await read_response(r)
        assert (got.status, len(got.body)) == (200, 3_000_000)
        w.write(post("/echo", b"to the pair"))  # the connection moves to the relay
        assert (await read_response(r)).body == b"to the pair"
        w.write(req("/big?n=2000000"))  # a download through the pair
        got = await read_response(r)
        assert (got.status, len(got.body)) == (200, 2_000_000)
        body = bytes(range(256)) * 8000  # 2 MB upload through the pair, echoed back
        w.write(post("/echo", body))
        echoed = await read_response(r)
        assert (echoed.status, echoed.body) == (200, body)
    assert a.bodies == [b"to the pair", body]


async def test_connection_close_ends_with_a_clean_tls_close(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory
) -> None:
    """Answers with `Connection: close` end in close_notify: the client reads a clean end
    of stream, both from the engine and from the relay behind the pair."""
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki))
    port, ctx = rt.listen_port or 0, client_context(pki.ca)
    close = "Connection: close\r\n"
    for request in (req("/", close), post("/echo", b"x", close)):
        async with tls_client(port, ctx) as (r, w):
            w.write(request)
            assert (await read_response(r)).status == 200
            assert await asyncio.wait_for(r.read(), TIMEOUT) == b""


async def test_websocket_over_tls_through_the_pair(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki))
    url = f"wss://127.0.0.1:{rt.listen_port}/ws"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, ssl=client_context(pki.ca)) as ws,
    ):
        for text in ("one", "two" * 10000):
            await ws.send_str(text)
            msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
            assert msg.data == f"a:{text}"


POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nPOISON!"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_bytes_past_a_response_never_answer_the_next_request_over_tls(
    pki: Certs, raw_backends: RawBackendFactory, proxy: ProxyFactory, method: str
) -> None:
    """Issue 11 point 1 over TLS: a backend sends bytes past its Content-Length; they
    must not become the answer to the client's next pipelined request."""

    def answer(got: Req) -> bytes:
        if got.url == b"/extra":
            return ok(b"hello") + POISON
        return ok(got.url)

    a = await raw_backends("a", answer)
    rt = await proxy([a.spec], tls=tls_config(pki))
    first = req("/extra") if method == "GET" else post("/extra", b"A")
    async with tls_client(rt.listen_port or 0, client_context(pki.ca)) as (r, w):
        w.write(first + req("/second") + req("/third", "Connection: close\r\n"))
        answers = [await read_response(r) for _ in range(3)]
        rest = await asyncio.wait_for(r.read(), TIMEOUT)
    assert [(x.status, x.body) for x in answers] == [
        (200, b"hello"),
        (200, b"/second"),
        (200, b"/third"),
    ]
    assert rest == b""
    (extra_conn,) = [x.conn for x in a.requests if x.url == b"/extra"]
    assert extra_conn.nreq == 1


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",  # a handshake record that is no ClientHello
        b"\x17\x03\x03\x00\x10" + b"\x00" * 16,  # application data before any handshake
        bytes(range(256)) * 4,
    ],
    ids=["plain-http", "bad-hello", "early-data-record", "binary"],
)
async def test_garbage_instead_of_a_client_hello_is_closed_without_an_answer(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory, garbage: bytes
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki))
    port = rt.listen_port or 0
    async with tls_client(port, client_context(pki.ca)) as (gr, gw):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(garbage)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        writer.close()
        gw.write(req("/"))  # an established connection is not disturbed
        assert (await read_response(gr)).status == 200
    assert len(a.seen) == 1


async def test_client_that_aborts_mid_handshake(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki))
    port = rt.listen_port or 0
    hello = client_hello()
    for cut in (0, 5, len(hello) // 2, len(hello)):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(hello[:cut])
        await writer.drain()
        writer.transport.abort()  # (a reset, no goodbye)
    async with tls_client(port, client_context(pki.ca)) as (r, w):
        w.write(req("/"))
        assert (await read_response(r)).status == 200


async def test_a_handshake_that_never_ends_is_timed_out(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory, data_plane: str
) -> None:
    """client_timeout_s bounds the handshake (the relay: ssl_handshake_timeout)."""
    engine_only(data_plane)
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki), client_timeout_s=5.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port or 0)
    try:
        writer.write(client_hello()[:20])  # and then nothing
        await writer.drain()
        assert rt.fast_lane is not None
        MODULE._skew_clock(6.0)  # (time moves for the engine only: no sleeping)
        try:
            # the sweep may run before the engine saw the connection: sweep until closed
            async def closed() -> bytes:
                while True:
                    rt.fast_lane.sweep()  # type: ignore[union-attr]
                    try:
                        return await asyncio.wait_for(reader.read(), 0.2)
                    except TimeoutError:
                        continue
                    except ConnectionResetError:  # (closed before it read the bytes)
                        return b""

            assert await asyncio.wait_for(closed(), TIMEOUT) == b""
        finally:
            MODULE._skew_clock(-6.0)
    finally:
        writer.close()


async def test_the_connection_limit_is_told_over_tls(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory
) -> None:
    """A client over max_connections gets its 503 once the handshake is done, readable."""
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki), max_connections=1)
    port, ctx = rt.listen_port or 0, client_context(pki.ca)
    async with tls_client(port, ctx) as (r, w):
        w.write(req("/"))
        assert (await read_response(r)).status == 200
        async with tls_client(port, ctx) as (r2, _):
            refused = await read_response(r2)
            assert refused.status == 503
            assert await asyncio.wait_for(r2.read(), TIMEOUT) == b""


async def test_reload_keeps_connections_in_the_pair_too(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory, data_plane: str
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki))
    port, ctx = rt.listen_port or 0, client_context(pki.ca)
    async with tls_client(port, ctx) as (r, w), tls_client(port, ctx) as (r2, w2):
        w.write(post("/echo", b"in the pair"))
        assert (await read_response(r)).body == b"in the pair"
        w2.write(req("/"))
        assert (await read_response(r2)).body == b"a"
        await rt.reload()
        for _ in range(2):
            w.write(post("/echo", b"still"))
            assert (await read_response(r)).body == b"still"
            w2.write(req("/"))
            assert (await read_response(r2)).body == b"a"


async def test_requests_dribbled_in_tiny_records(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory
) -> None:
    """A head split over many TLS records (and reads) is handed over mid-head; what
    follows reaches the relay through the pair in order."""
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki))
    async with tls_client(rt.listen_port or 0, client_context(pki.ca)) as (r, w):
        data = req("/dribbled") + post("/echo", b"0123456789") + req("/after")
        for i in range(len(data)):
            w.write(data[i : i + 1])
            await w.drain()
        bodies = [(await read_response(r)).body for _ in range(3)]
    assert bodies == [b"a", b"0123456789", b"a"]
    assert [seen.path for seen in a.seen] == ["/dribbled", "/echo", "/after"]


# ============================================================== chaos over TLS


class LiveTlsProxy(LiveProxy):
    """The engine tests' live proxy, terminating TLS."""

    def __init__(self, pki: Certs) -> None:
        super().__init__()
        self.pki = pki

    async def _start(self) -> None:
        self.backend = await RawBackend("chaos", chaos_answer).start()
        settings = ProxySettings(health_interval_s=60.0, client_timeout_s=1.0, idle_timeout_s=1.0)
        cfg = ProxyConfig(
            listen_port=0,
            admin_port=None,
            settings=settings,
            backends=(self.backend.spec,),
            tls=tls_config(self.pki),
        )
        self.rt = ProxyRuntime(cfg)
        await self.rt.start()
        assert self.rt.fast_lane is not None, "not in the fast lane"
        self.port = self.rt.listen_port or 0


def tls_exchange(port: int, ctx: ssl.SSLContext, pieces: list[bytes]) -> bytes:
    out = bytearray()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        try:
            for piece in pieces:
                s.sendall(piece)
        except OSError:
            pass  # the proxy closed already (a 400, a Connection: close)
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, ssl.SSLEOFError):
            pass  # a close too (with unread bytes from us)
        except TimeoutError:
            raise AssertionError(f"the proxy neither answered nor closed: {bytes(out)!r}") from None
    return bytes(out)


def test_chaos_streams_over_tls(pki: Certs, data_plane: str) -> None:
    """The engine tests' chaos streams (simple requests, others, mutations, garbage, cut
    anywhere) over TLS: well-formed answers, every simple request answered, the backend
    sees only valid heads, and the proxy stays well."""
    engine_only(data_plane)
    ctx = client_context(pki.ca)
    with LiveTlsProxy(pki) as live:
        assert live.backend is not None

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(chaos_stream())
        def check(stream: tuple[list[bytes], bool, int | None]) -> None:
            pieces, half_close, expected = stream
            out = tls_exchange(live.port, ctx, pieces)
            statuses = check_responses(out)
            if expected is not None and not half_close:  # (no half-close over TLS here)
                assert len(statuses) == expected and set(statuses) <= {200, 204}, out
            sanity = tls_exchange(live.port, ctx, [get("/ok0", b"Connection: close\r\n")])
            assert sanity.startswith(b"HTTP/1.1 200 OK\r\n") and sanity.endswith(b"4:0"), sanity
            assert live.backend is not None
            check_backend(live.backend)

        check()
        assert live.thread.is_alive()
        assert live.backend.requests


async def test_engine_refuses_a_bad_certificate_set_and_keeps_the_current_one(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory, data_plane: str
) -> None:
    """tls_load is all or nothing: a key of another certificate (or a missing file) is a
    ValueError naming the file, and new handshakes keep getting the current certificate;
    through ServerTls.reload it is a TlsError and nothing changes on the Python side."""
    engine_only(data_plane)
    a = await backends("a")
    cfg = tls_config(pki)
    rt = await proxy([a.spec], tls=cfg)
    assert rt.fast_lane is not None and rt.fast_lane.engine is not None and rt.tls is not None
    port, ctx = rt.listen_port or 0, client_context(pki.ca)
    async with tls_client(port, ctx) as conn:
        before = conn[1].get_extra_info("ssl_object").getpeercert(binary_form=True)
    other = pki.leaf("localhost", fresh=True)
    with pytest.raises(ValueError, match="does not belong"):
        rt.fast_lane.engine.tls_load(0x0303, [(cfg.default.cert, str(other.key))])
    with pytest.raises(ValueError, match="no-such-file"):
        rt.fast_lane.engine.tls_load(0x0303, [("/no-such-file.pem", cfg.default.key)])

    def broken(_: TlsConfig) -> None:
        raise TlsError("the engine says no")

    rt.tls.native = broken
    with pytest.raises(TlsError, match="the engine says no"):
        rt.tls.reload(TlsConfig(CertSpec(str(other.cert), str(other.key))))
    assert rt.tls.config is cfg
    async with tls_client(port, ctx) as conn:
        assert conn[1].get_extra_info("ssl_object").getpeercert(binary_form=True) == before
        conn[1].write(req("/"))
        assert (await read_response(conn[0])).status == 200


async def test_stop_closes_connections_in_the_pair(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory, data_plane: str
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki))
    async with tls_client(rt.listen_port or 0, client_context(pki.ca)) as (r, w):
        w.write(post("/echo", b"moved"))
        assert (await read_response(r)).body == b"moved"
        await rt.stop(drain_timeout_s=TIMEOUT)
        assert await asyncio.wait_for(r.read(), TIMEOUT) == b""  # (a clean TLS close)
        if data_plane == "fast_lane" and ENGINE_TLS:
            assert rt.fast_lane is None or not rt.fast_lane.busy
