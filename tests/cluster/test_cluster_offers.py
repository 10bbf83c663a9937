"""File offers between users on different nodes (in one process, on one store and an
in-process bus): the offer is made on the sender's node and answered on the receiver's —
accepted (the file goes directly between the clients and is verified), declined, withdrawn —
and every node forgets it at the end."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cluster_helpers import PASSWORD, eventually

from parlour.bus.memory import InProcessBus
from parlour.client import Client, TransferOptions, UnknownOffer
from parlour.core.ports import BusMessage
from parlour.protocol import EventName
from parlour.server.app import ChatServer
from parlour.server.config import Settings
from parlour.server.testing import PlainHasher
from parlour.storage.memory import MemoryStore
from transfer_helpers import finished, next_event


@pytest.fixture
async def two_nodes() -> AsyncIterator[list[ChatServer]]:
    async with cluster_of_two() as servers:
        yield servers


class LossyBus(InProcessBus):
    """An in-process bus that drops what is published while `drop` is set (what Redis
    pub/sub does to a node that is disconnected)."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = False

    def publish(self, message: BusMessage) -> None:
        if not self.drop:
            super().publish(message)


@contextlib.asynccontextmanager
async def cluster_of_two(bus: InProcessBus | None = None) -> AsyncIterator[list[ChatServer]]:
    store, bus = MemoryStore(), bus or InProcessBus()
    settings = Settings(
        port=0,
        store="memory",
        web=False,
        host="127.0.0.1",
        admin_password="admin-password-1",
        max_connections_per_address=0,
    )
    servers: list[ChatServer] = []
    try:
        for i in range(2):
            servers.append(
                await ChatServer.start(
                    settings,
                    password_hasher=PlainHasher(),
                    store=store,
                    bus=bus,
                    bus_node=f"n{i}",
                    core_overrides={"cluster": True},
                )
            )
        yield servers
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                await server.stop(grace=1.0)


@contextlib.asynccontextmanager
async def user(server: ChatServer, name: str, tmp: Path) -> AsyncIterator[Client]:
    options = TransferOptions(bind="127.0.0.1", downloads=tmp / f"downloads-{name}")
    client = Client("127.0.0.1", server.port, transfers=options)
    await client.connect()
    try:
        try:
            await client.login(name, PASSWORD)
        except Exception:
            await client.signup(name, PASSWORD)
        yield client
    finally:
        await client.close()


def offers(server: ChatServer) -> dict[str, object]:
    return server.service.offers.by_id  # type: ignore[return-value]


async def test_an_offer_made_on_one_node_is_accepted_on_another(
    two_nodes: list[ChatServer], tmp_path: Path
) -> None:
    a, b = two_nodes
    src = tmp_path / "report.pdf"
    src.write_bytes(os.urandom(1_500_000))
    async with user(a, "alice", tmp_path) as alice, user(b, "bob", tmp_path) as bob:
        sending = await alice.offer_file("bob", src)
        offered = await next_event(bob, EventName.FILE_OFFER)
        assert offered["offer"] == sending.offer
        assert sending.offer in offers(b)  # node 1 holds a copy: bob may answer there
        receiving = await bob.accept(offered["offer"])
        got, sent = await finished(receiving), await finished(sending)
        assert got.ok and sent.ok and got.message == "verified", (got, sent)
        assert got.path is not None
        assert (
            hashlib.sha256(got.path.read_bytes()).digest()
            == hashlib.sha256(src.read_bytes()).digest()
        )
        await eventually(lambda: not offers(a) and not offers(b), "both nodes forget it")


async def test_declined_and_withdrawn_across_nodes(
    two_nodes: list[ChatServer], tmp_path: Path
) -> None:
    a, b = two_nodes
    src = tmp_path / "x.bin"
    src.write_bytes(b"x" * 1000)
    async with user(a, "alice", tmp_path) as alice, user(b, "bob", tmp_path) as bob:
        # declined on bob's node: alice's node tells alice's offering session
        sending = await alice.offer_file("bob", src)
        offered = await next_event(bob, EventName.FILE_OFFER)
        await bob.decline(offered["offer"])
        result = await finished(sending)
        assert not result.ok and result.reason == "declined" and "bob" in result.message
        await eventually(lambda: not offers(a) and not offers(b), "both nodes forget it")
        with pytest.raises(UnknownOffer):
            await bob.accept(offered["offer"])
        # withdrawn on alice's node: bob hears it, and his node's copy is gone
        sending = await alice.offer_file("bob", src)
        await next_event(bob, EventName.FILE_OFFER, sending.offer)
        await alice.cancel(sending.number)
        ended = await next_event(bob, EventName.FILE_ENDED, sending.offer)
        assert (ended["reason"], ended["by"]) == ("cancelled", "alice")
        await eventually(lambda: not offers(b), "bob's node forgets it")


async def test_the_offers_of_a_node_that_dies_end_offline(
    two_nodes: list[ChatServer], tmp_path: Path
) -> None:
    a, b = two_nodes
    src = tmp_path / "x.bin"
    src.write_bytes(b"x" * 1000)
    async with user(a, "alice", tmp_path) as alice, user(b, "bob", tmp_path) as bob:
        sending = await alice.offer_file("bob", src)
        await next_event(bob, EventName.FILE_OFFER, sending.offer)
        assert b.cluster is not None  # as when node 0's registry key expires
        b.cluster._dispatch(b.service.node_gone("n0", b.cluster.clock()))
        ended = await next_event(bob, EventName.FILE_ENDED, sending.offer)
        assert (ended["reason"], ended["by"]) == ("offline", "alice")
        assert not offers(b)


async def test_an_offer_the_bus_lost_is_shared_again(tmp_path: Path) -> None:
    """Node 1 misses the offer (the bus drops it, as Redis does while a node is cut off);
    when node 1 reads the truth again it asks for the open offers, and bob may answer there."""
    bus = LossyBus()
    async with cluster_of_two(bus) as (a, b):
        src = tmp_path / "x.bin"
        src.write_bytes(os.urandom(200_000))
        async with user(a, "alice", tmp_path) as alice, user(b, "bob", tmp_path) as bob:
            bus.drop = True
            sending = await alice.offer_file("bob", src)
            bus.drop = False
            assert sending.offer not in offers(b) and sending.offer not in bob.files.incoming
            assert b.cluster is not None
            await b.cluster.resync()  # as after a reconnection to Redis, or a gap
            await next_event(bob, EventName.FILE_OFFER, sending.offer)  # bob hears it now
            assert sending.offer in offers(b)
            receiving = await bob.accept(sending.offer)
            got, sent = await finished(receiving), await finished(sending)
            assert got.ok and sent.ok, (got, sent)
