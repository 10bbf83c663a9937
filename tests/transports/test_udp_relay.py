"""The chat server's UDP door over real sockets on 127.0.0.1: endpoint probes answered only
for tokens the core knows (with the address it saw), bounded, never amplified; the relay's
tickets; and where `parlour serve` puts it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator

import pytest

from parlour.core.needs import RelayTickets
from parlour.p2p.relay import ticket_for
from parlour.p2p.wire import PROBE_LEN, parse_probed, parse_relay_bound, probe, relay_bind
from parlour.server.app import ChatServer
from parlour.server.config import Settings
from parlour.server.testing import PlainHasher
from parlour.storage.memory import MemoryStore
from parlour.storage.reads import InlineReads
from parlour.transports.needs import NeedRunner
from parlour.transports.udp_relay import ChatRelay, public_address

TIMEOUT = 10
SECRET = b"relay-secret-for-tests-0123456789"


class Inbox(asyncio.DatagramProtocol):
    """A client's UDP socket: what arrives goes into a queue."""

    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait((data, addr))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    async def next(self) -> bytes:
        data, _ = await asyncio.wait_for(self.got.get(), TIMEOUT)
        return data


class Counting(ChatRelay):
    """Signals when it has taken `expected` datagrams (so a test knows all were handled)."""

    expected = 0
    taken = 0
    all_taken: asyncio.Event

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        super().datagram_received(data, addr)
        self.taken += 1
        if self.taken == self.expected:
            self.all_taken.set()


@pytest.fixture
async def client() -> AsyncIterator[Inbox]:
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(Inbox, local_addr=("127.0.0.1", 0))
    yield inbox
    transport.close()


async def open_relay(tokens: dict[bytes, object], **kw: object) -> Counting:
    seen: dict[bytes, tuple[str, int]] = {}

    def observe(token: bytes, addr: tuple[str, int]) -> bool:
        if token not in tokens or seen.setdefault(token, addr) != addr:
            return False
        tokens[token] = addr
        return True

    relay = await Counting.open(SECRET, observe, host="127.0.0.1", port=0, **kw)  # type: ignore[arg-type]
    relay.all_taken = asyncio.Event()
    return relay


async def test_a_probe_is_answered_with_the_address_it_came_from(client: Inbox) -> None:
    token = b"T" * 16
    tokens: dict[bytes, object] = {token: None}
    relay = await open_relay(tokens)
    try:
        relay.expected = 3
        client.send(probe(b"U" * 16), relay.address)  # nobody holds it: no answer
        client.send(b"\x1a" + token, relay.address)  # too short: malformed
        client.send(probe(token), relay.address)
        answer = await client.next()
        await asyncio.wait_for(relay.all_taken.wait(), TIMEOUT)
        got = parse_probed(answer)
        assert got.token == token and got.observed == client.address == tokens[token]
        assert len(answer) <= PROBE_LEN  # never more than the probe: no amplification
        assert relay.probe_stats.answered == 1
        assert relay.probe_stats.unknown == 1 and relay.probe_stats.malformed == 1
        assert client.got.empty()
    finally:
        relay.close()


async def test_a_flood_of_probes_is_cut_at_the_bucket(client: Inbox) -> None:
    token = b"T" * 16
    relay = await open_relay({token: None}, probe_rate=0.001)
    relay._probes = type(relay._probes)(3, 0.001)  # a burst of 3, next to no refill
    try:
        relay.expected = 20
        for _ in range(20):
            client.send(probe(token), relay.address)
        await asyncio.wait_for(relay.all_taken.wait(), TIMEOUT)
        assert relay.probe_stats.answered == 3
        assert relay.probe_stats.rate_limited == 17
        for _ in range(3):
            assert parse_probed(await client.next()).token == token
        assert client.got.empty()
    finally:
        relay.close()


async def test_the_relay_binds_with_the_tickets_it_hands_out(client: Inbox) -> None:
    relay = await open_relay({})
    try:
        tid = b"\x01" * 8
        sender, receiver = relay.tickets(tid)
        assert (sender, receiver) == (ticket_for(SECRET, tid, 0), ticket_for(SECRET, tid, 1))
        relay.expected = 2
        client.send(relay_bind(tid, 1, b"\x00" * 16), relay.address)  # a forged ticket
        client.send(relay_bind(tid, 1, receiver), relay.address)
        bound = parse_relay_bound(await client.next())
        assert bound.observed == client.address
        await asyncio.wait_for(relay.all_taken.wait(), TIMEOUT)
        assert relay.relay.stats.dropped_bad_ticket == 1
    finally:
        relay.close()


def test_public_addresses_drop_the_ipv4_mapping() -> None:
    assert public_address(("::ffff:192.0.2.7", 5)) == ("192.0.2.7", 5)
    assert public_address(("fe80::1%eth0", 5)) == ("fe80::1", 5)
    assert public_address(("2001:db8::0:1", 5)) == ("2001:db8::1", 5)


async def test_the_need_runner_mints_transfer_ids_with_the_relays_tickets() -> None:
    store = MemoryStore()
    asked: list[bytes] = []

    def tickets(tid: bytes) -> tuple[bytes, bytes]:
        asked.append(tid)
        return (b"s" + tid[1:] * 2 + b"s", b"r" + tid[1:] * 2 + b"r")

    runner = NeedRunner(PlainHasher(), InlineReads(store), tickets=tickets)
    try:
        need = RelayTickets("offer", 1)
        one = (await runner.satisfy(1, (need,)))[need]
        two = (await runner.satisfy(1, (need,)))[need]
        assert len(one[0]) == 8 and one[0] != two[0]  # a fresh id every time
        assert one[1:] == tickets(one[0]) and asked[:2] == [one[0], two[0]]
    finally:
        runner.close()


def _free_udp_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _serve(port: int, **settings: object) -> ChatServer:
    base = Settings(host="127.0.0.1", port=port, store="memory", log_level="WARNING", web=False)
    return await ChatServer.start(
        dataclasses.replace(base, **settings),  # type: ignore[arg-type]
        password_hasher=PlainHasher(),
    )


async def test_serve_puts_the_relay_on_the_chat_ports_number_or_a_free_one() -> None:
    # a port number free for UDP; the chat server takes it for TCP
    holder = _free_udp_port()
    port = holder.getsockname()[1]
    holder.close()
    try:
        server = await _serve(port)
    except OSError:
        pytest.skip("the port was taken meanwhile")
    try:
        assert server.relay is not None and server.relay.address == ("127.0.0.1", port)
        assert server.service._cx.cfg.file_relay == (None, port)
    finally:
        await server.stop()
    # the same number taken for UDP: the relay goes to a free one, the server still starts
    holder = _free_udp_port()
    port = holder.getsockname()[1]
    try:
        with contextlib.suppress(OSError):
            server = await _serve(port)
            try:
                assert server.relay is not None and server.relay.address[1] != port
                assert server.service._cx.cfg.file_relay == (None, server.relay.address[1])
            finally:
                await server.stop()
    finally:
        holder.close()


async def test_serve_without_the_relay_or_without_transfers() -> None:
    server = await _serve(0, p2p_relay=False)
    try:
        assert server.relay is None and server.service._cx.cfg.file_relay is None
        assert server.service._cx.cfg.file_transfers
    finally:
        await server.stop()
    server = await _serve(0, p2p=False, p2p_relay_public_host="chat.example.org")
    try:
        assert server.relay is None and not server.service._cx.cfg.file_transfers
    finally:
        await server.stop()
    server = await _serve(0, p2p_relay_public_host="chat.example.org")
    try:
        assert server.relay is not None
        assert server.service._cx.cfg.file_relay == ("chat.example.org", server.relay.address[1])
    finally:
        await server.stop()
