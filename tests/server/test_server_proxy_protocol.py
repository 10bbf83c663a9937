"""The PROXY protocol port over real sockets: a connection from a trusted proxy names its
client in a PROXY header, and that address is the one every per-address protection counts
(connection slots, login lockouts); the header may be followed by TLS; connections from
anyone else, or without a good header, are closed before they cost anything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from parlour.proxy.proxy_protocol import proxy_header
from parlour.server.app import ChatServer
from parlour.server.config import ConfigError, Settings, load_settings
from parlour.server.testing import PlainHasher
from parlour.transports.proxy_header import networks
from parlour.transports.websocket import forwarded_client

TIMEOUT = 10
PASSWORD = "password-123"


class Line:
    """A raw NDJSON connection (requests numbered, replies read in order)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.n = reader, writer, 0

    async def ask(self, type: str, **fields: Any) -> dict[str, Any]:
        self.n += 1
        self.writer.write(json.dumps({"id": self.n, "type": type, **fields}).encode() + b"\n")
        await self.writer.drain()
        while True:
            reply = await self.next()
            if reply.get("type") in ("ok", "error"):
                return reply

    async def next(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
        assert line, "connection closed"
        got: dict[str, Any] = json.loads(line)
        return got

    async def closed(self) -> bool:
        """Whether the server closed the connection (it is closed here too)."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        except ConnectionError:
            rest = b""
        self.close()
        return rest == b""

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def server(**overrides: Any) -> AsyncIterator[ChatServer]:
    base: dict[str, Any] = {"proxy_port": 0, "trusted_proxies": ("127.0.0.1/32",), "web": False}
    settings = Settings(
        port=0,
        host="127.0.0.1",
        store="memory",
        admin_password="admin-password-1",
        **{**base, **overrides},
    )
    srv = await ChatServer.start(settings, password_hasher=PlainHasher())
    try:
        yield srv
    finally:
        await srv.stop(grace=1.0)


def proxy_port(srv: ChatServer) -> int:
    [(_, port)] = srv.listener.proxy_addresses
    return port


async def through_proxy(
    srv: ChatServer,
    client: str,
    version: str = "v2",
    tls: ssl.SSLContext | None = None,
) -> Line:
    """A connection as the proxy makes it for `client`: the header, then (TLS and) chat."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port(srv))
    here = "::1" if ":" in client else "127.0.0.1"  # (the proxy's side, same family)
    writer.write(proxy_header(version, (client, 40000), (here, 7878)))  # type: ignore[arg-type]
    await writer.drain()
    if tls is not None:
        await writer.start_tls(tls, server_hostname="localhost")
    return Line(reader, writer)


async def test_slots_are_counted_per_client_named_in_the_header() -> None:
    async with server(max_connections_per_address=1) as srv:
        first = await through_proxy(srv, "203.0.113.1")
        assert (await first.ask("hello", version=1))["type"] == "ok"
        again = await through_proxy(srv, "203.0.113.1", version="v1")
        refused = await again.next()
        assert (refused["type"], refused["code"]) == ("error", "server_full")
        assert "your address" in refused["message"] and await again.closed()
        other = await through_proxy(srv, "2001:db8::7")  # another client, the same proxy
        assert (await other.ask("hello", version=1))["type"] == "ok"
        # the proxy's own address was never counted: a direct client from it still gets in
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        direct = Line(r, w)
        hello = await direct.ask("hello", version=1)
        assert hello["type"] == "ok", hello
        for line in (first, other, direct):
            line.close()


async def test_a_guesser_behind_the_proxy_locks_out_only_itself() -> None:
    async with server(address_lockout_attempts=3) as srv:
        owner = await through_proxy(srv, "198.51.100.20")
        await owner.ask("hello", version=1)
        assert (await owner.ask("signup", username="bob", password=PASSWORD))["type"] == "ok"
        owner.close()
        guesser = await through_proxy(srv, "198.51.100.66")
        await guesser.ask("hello", version=1)
        codes = [
            (await guesser.ask("login", username=f"nobody{i}", password="guess-guess"))["code"]
            for i in range(4)
        ]
        assert codes[-1] == "locked_out"
        # before: every client behind the proxy shared its address, and with it the lockout
        owner = await through_proxy(srv, "198.51.100.20")
        await owner.ask("hello", version=1)
        assert (await owner.ask("login", username="bob", password=PASSWORD))["type"] == "ok"
        owner.close()
        guesser.close()


async def test_tls_after_the_header(self_signed_cert: tuple[Path, Path]) -> None:
    cert, key = self_signed_cert
    async with server(tls_cert=cert, tls_key=key) as srv:
        ctx = ssl.create_default_context(cafile=str(cert))
        line = await through_proxy(srv, "192.0.2.44", tls=ctx)
        assert (await line.ask("hello", version=1))["type"] == "ok"
        line.close()


@pytest.mark.parametrize(
    "first_bytes",
    [
        b'{"id":1,"type":"ping"}\n',  # no header: not through the proxy
        b"PROXY TCP4 nonsense\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ],
)
async def test_a_connection_without_a_good_header_is_closed(first_bytes: bytes) -> None:
    async with server() as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port(srv))
        writer.write(first_bytes)
        line = Line(reader, writer)
        assert await line.closed()
        assert srv.listener.bad_headers == 1
        line.close()


async def test_only_trusted_proxies_may_connect() -> None:
    async with server(trusted_proxies=("10.9.9.9/32",)) as srv:
        line = await through_proxy(srv, "203.0.113.1")
        assert await line.closed()
        assert srv.listener.untrusted == 1
        line.close()


def test_the_settings() -> None:
    env = {"PARLOUR_PROXY_PORT": "7900", "PARLOUR_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"}
    s = load_settings(env=env)
    assert s.proxy_port == 7900 and s.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8")
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_settings(env={"PARLOUR_PROXY_PORT": "7900"})
    with pytest.raises(ConfigError, match="not an IP address"):
        load_settings(env={"PARLOUR_TRUSTED_PROXIES": "proxy.example.org"})


# ------------------------------------------------------------------ the web listener


def test_the_client_in_x_forwarded_for() -> None:
    ours = networks(["127.0.0.1", "10.0.0.0/8"])
    assert forwarded_client("203.0.113.9", ours) == "203.0.113.9"
    # what the client put in front is its own word: the right-most stranger is the client
    assert forwarded_client("1.1.1.1, 203.0.113.9, 10.0.0.5", ours) == "203.0.113.9"
    assert forwarded_client("[2001:db8::1]", ours) == "2001:db8::1"
    assert forwarded_client("10.0.0.5, 127.0.0.1", ours) is None  # only our own hops
    assert forwarded_client("1.1.1.1, garbage", ours) is None


async def _websocket_hello(port: int, forwarded: str | None) -> dict[str, Any]:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{port}/ws", headers=headers) as ws,
    ):
        await ws.send_str(json.dumps({"id": 1, "type": "hello", "version": 1}))
        while True:
            got: dict[str, Any] = json.loads(await asyncio.wait_for(ws.receive_str(), TIMEOUT))
            if got.get("type") in ("ok", "error"):
                return got


@pytest.mark.parametrize("believed", [True, False])
async def test_the_web_listener_counts_clients_a_trusted_proxy_names(believed: bool) -> None:
    proxies = ("127.0.0.1/32",) if believed else ("10.9.9.9/32",)
    async with server(
        web=True, web_port=0, max_connections_per_address=1, trusted_proxies=proxies
    ) as srv:
        assert srv.web is not None
        port = srv.web.addresses[0][1]
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                f"http://127.0.0.1:{port}/ws", headers={"X-Forwarded-For": "203.0.113.1"}
            ) as first,
        ):
            await first.send_str(json.dumps({"id": 1, "type": "hello", "version": 1}))
            assert json.loads(await first.receive_str())["type"] == "ok"
            same = await _websocket_hello(port, "203.0.113.1")
            other = await _websocket_hello(port, "203.0.113.2")
        assert same["code"] == "server_full"
        # believed: another client behind the proxy gets in; not believed: the header is
        # anyone's word, and the connection is the proxy's one address, already in use
        assert other["type"] == ("ok" if believed else "error")


def test_the_http_guard_does_not_limit_a_trusted_proxy_per_address() -> None:
    from parlour.transports.http_guard import HttpGuard

    guard = HttpGuard(max_connections=100, per_address=2, trusted_proxies=networks(["10.0.0.1"]))
    for address in ("10.0.0.1", "192.0.2.1"):
        for _ in range(2):
            guard._by_address[address] = guard._by_address.get(address, 0) + 1
    assert guard.admit("10.0.0.1") is None  # the proxy carries many clients
    assert guard.admit("192.0.2.1") is not None  # anyone else: two at most
