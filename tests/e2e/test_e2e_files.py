"""File-transfer brokering over real sockets, on every door (NDJSON, length-prefixed,
WebSocket): the UDP probe that tells the server a client's address, an offer and its grant
(the same id and key to both sides, each other's endpoints, tickets the relay accepts), and
the end of the offer."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable

from e2e_helpers import FakeClock, Wire

from parlour.p2p.wire import parse_probed, parse_relay_bound, probe, relay_bind
from parlour.server.app import ChatServer

UserFactory = Callable[..., Awaitable[Wire]]
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
TIMEOUT = 10


class Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)

    async def ask(self, data: bytes, to: tuple[str, int]) -> bytes:
        assert self.transport is not None
        self.transport.sendto(data, to)
        return await asyncio.wait_for(self.got.get(), TIMEOUT)


async def udp() -> Udp:
    _, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        Udp, local_addr=("127.0.0.1", 0)
    )
    return proto


def token_of(data: dict[str, object]) -> bytes:
    text = str(data["token"])
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_probe_offer_grant_and_end(
    server: ChatServer, user: UserFactory, clock: FakeClock
) -> None:
    relay = server.relay
    assert relay is not None
    alice, bob = await user("alice"), await user("bob")
    a_sock, b_sock = await udp(), await udp()
    try:
        # each client tells the relay where its transfer socket is, with its own token
        probed = await alice.ok("file_probe")
        assert probed["relay"] == {"host": None, "port": relay.address[1]}
        a_token = token_of(probed)
        seen = parse_probed(await a_sock.ask(probe(a_token), relay.address))
        assert seen.token == a_token and seen.observed == a_sock.address
        b_token = token_of(await bob.ok("file_probe"))
        # alice's token sent from bob's socket (copied off the path) moves nothing and gets
        # no answer; bob's own probe right after it is answered
        assert b_sock.transport is not None
        b_sock.transport.sendto(probe(a_token), relay.address)
        seen = parse_probed(await b_sock.ask(probe(b_token), relay.address))
        assert seen.token == b_token and b_sock.got.empty()
        assert relay.probe_stats.unknown == 1

        offer = await alice.ok(
            "file_offer",
            to="bob",
            filename="notes.txt",
            size=12,
            sha256=SHA,
            endpoints=[{"host": "192.0.2.10", "port": 4000}],
        )
        event = await bob.event("file_offer", offer=offer["offer"])
        assert (event["from"], event["filename"], event["size"]) == ("alice", "notes.txt", 12)
        assert event["expires"] == offer["expires"]
        assert 590 < offer["expires"] - clock() <= 600  # p2p_offer_ttl, on the server's clock
        grant = await bob.ok("file_accept", offer=offer["offer"])
        accepted = await alice.event("file_accepted", offer=offer["offer"])
        assert accepted["transfer"] == grant["transfer"] and accepted["key"] == grant["key"]
        host_a, port_a = a_sock.address
        host_b, port_b = b_sock.address
        assert grant["peers"] == [
            {"host": host_a, "port": port_a},
            {"host": "192.0.2.10", "port": 4000},
        ]
        assert accepted["peers"] == [{"host": host_b, "port": port_b}]
        # the tickets open the relay for this transfer, each side its own
        tid = bytes.fromhex(grant["transfer"])
        for sock, side, row in ((a_sock, 0, accepted["relay"]), (b_sock, 1, grant["relay"])):
            ticket = base64.b64decode(row["ticket"])
            bound = parse_relay_bound(await sock.ask(relay_bind(tid, side, ticket), relay.address))
            assert bound.transfer_id == tid and bound.observed == sock.address

        await alice.ok("file_done", offer=offer["offer"])
        ended = await bob.event("file_ended", offer=offer["offer"])
        assert (ended["reason"], ended["by"]) == ("done", "alice")
        assert (await bob.error("file_accept", offer=offer["offer"]))["code"] == "unknown_offer"
    finally:
        for sock in (a_sock, b_sock):
            if sock.transport is not None:
                sock.transport.close()


async def test_offers_expire_on_the_servers_clock(
    server: ChatServer, user: UserFactory, clock: FakeClock
) -> None:
    alice, bob = await user("alice"), await user("bob")
    offer = await alice.ok("file_offer", to="bob", filename="a", size=1, sha256=SHA)
    await bob.event("file_offer", offer=offer["offer"])
    clock.advance(601)
    ended = await alice.event("file_ended", offer=offer["offer"])
    assert ended["reason"] == "expired" and ended["by"] is None
    assert (await bob.event("file_ended", offer=offer["offer"]))["reason"] == "expired"
