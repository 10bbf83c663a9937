"""File transfers through the client library: the real chat server (ChatTestServer, with its
UDP relay) brokers, the files go between two clients over real UDP on 127.0.0.1.

Covered: a direct transfer (nothing through the server), two at once each way, a declined,
a cancelled and an expired offer, an offer from a blocked sender, the relay fallback when the
direct path is blocked, and an interrupted transfer resumed by accepting the same offer again
from a new session."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from parlour.client import (
    Client,
    ServerError,
    TransferOptions,
    UnknownOffer,
)
from parlour.p2p import TransferConfig, TransferManager
from parlour.p2p.testing import FilteredManager as Filtered
from parlour.p2p.wire import Kind
from parlour.protocol import EventName, FileOfferEvent
from parlour.server.testing import ChatTestServer
from transfer_helpers import TIMEOUT, finished, next_event

PW = "password-1"
#: a short direct-path wait, so the relay-fallback test does not idle 3 s
FAST = TransferConfig(direct_timeout=1.0)


@pytest.fixture
async def server() -> AsyncIterator[ChatTestServer]:
    async with ChatTestServer(p2p_offer_ttl=60.0) as srv:
        for name in ("alice", "bob", "carol"):
            await srv.add_user(name, PW)
        yield srv


def options(tmp: Path, name: str, **kw: Any) -> TransferOptions:
    return TransferOptions(bind="127.0.0.1", downloads=tmp / f"downloads-{name}", **kw)


@contextlib.asynccontextmanager
async def user(server: ChatTestServer, name: str, tmp: Path, **kw: Any) -> AsyncIterator[Client]:
    client = Client("127.0.0.1", server.port, transfers=options(tmp, name, **kw))
    await client.connect()
    try:
        await client.login(name, PW)
        yield client
    finally:
        await client.close()


def make_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- tests


async def test_a_direct_transfer_never_touches_the_server(
    server: ChatTestServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "holiday.mp4", 3_000_000)
    async with user(server, "alice", tmp_path) as alice, user(server, "bob", tmp_path) as bob:
        notices: list[str] = []
        sending = await alice.offer_file("bob", src, on_notice=notices.append)
        assert (sending.direction, sending.peer, sending.state) == ("send", "bob", "offered")
        offered = await next_event(bob, EventName.FILE_OFFER)
        assert isinstance(offered, FileOfferEvent)
        assert (offered.sender, offered.filename, offered.size) == ("alice", "holiday.mp4", 3e6)
        assert offered.sha256 == digest(src) and offered.offer == sending.offer
        incoming = bob.files.incoming[offered.offer]
        reports: list[float] = []
        receiving = await bob.accept(incoming.number, on_progress=lambda p: reports.append(p.done))
        got, sent = await finished(receiving), await finished(sending)
        assert got.ok and sent.ok and got.message == "verified"
        assert got.path == tmp_path / "downloads-bob" / "alice" / "holiday.mp4"
        assert digest(got.path) == digest(src)
        assert not got.via_relay and not sent.via_relay
        assert reports and reports[-1] == 3_000_000
        assert "bob accepted" in notices
        # both ends reported their socket; the relay saw them (probes) but carried nothing
        relay = server.server.relay  # type: ignore[union-attr]
        assert relay is not None
        assert alice.files.observed == (await alice.files.manager()).address
        assert relay.probe_stats.answered == 2
        assert relay.relay.stats.forwarded == 0
        # the server forgets the offer once the file is verified (file_done)
        ended = await next_event(alice, EventName.FILE_ENDED, sending.offer)
        assert ended["reason"] == "done"
        await server.wait_for(lambda: not server.server.service.offers.by_id)  # type: ignore[union-attr]


async def test_the_observed_endpoint_alone_gives_a_direct_path(
    server: ChatTestServer, tmp_path: Path
) -> None:
    """Neither client reports an address: the peers only know what the relay observed from
    the probes (what crosses a NAT), and that is enough for a direct transfer."""
    src = make_file(tmp_path / "x.bin", 500_000)
    async with (
        user(server, "alice", tmp_path, report_local=False) as alice,
        user(server, "bob", tmp_path, report_local=False) as bob,
    ):
        sending = await alice.offer_file("bob", src)
        assert server.requests_of("file_offer")[-1].get("endpoints") is None
        offered = await next_event(bob, EventName.FILE_OFFER)
        receiving = await bob.accept(offered["offer"])
        got, sent = await finished(receiving), await finished(sending)
        assert got.ok and sent.ok and not got.via_relay
        relay = server.server.relay  # type: ignore[union-attr]
        assert relay is not None and relay.relay.stats.forwarded == 0


async def test_two_transfers_at_once_each_way(server: ChatTestServer, tmp_path: Path) -> None:
    files = {
        name: make_file(tmp_path / name, size)
        for name, size in (("a1.bin", 2_000_000), ("a2.bin", 1_500_000))
    }
    back = {
        name: make_file(tmp_path / name, size)
        for name, size in (("b1.bin", 1_800_000), ("b2.bin", 900_000))
    }
    async with user(server, "alice", tmp_path) as alice, user(server, "bob", tmp_path) as bob:
        outgoing = [await alice.offer_file("bob", p) for p in files.values()]
        outgoing += [await bob.offer_file("alice", p) for p in back.values()]
        for who, expected in ((bob, files), (alice, back)):
            while len(who.files.incoming) < len(expected):
                await next_event(who, EventName.FILE_OFFER)
        incoming = [await bob.accept(o.offer) for o in list(bob.files.incoming.values())]
        incoming += [await alice.accept(o.offer) for o in list(alice.files.incoming.values())]
        assert len({t.offer for t in incoming}) == 4
        results = await asyncio.gather(*(finished(t) for t in outgoing + incoming))
        assert all(r.ok for r in results), results
        for name, path in files.items():
            assert digest(tmp_path / "downloads-bob" / "alice" / name) == digest(path)
        for name, path in back.items():
            assert digest(tmp_path / "downloads-alice" / "bob" / name) == digest(path)


async def test_a_declined_offer(server: ChatTestServer, tmp_path: Path) -> None:
    src = make_file(tmp_path / "x.bin", 1000)
    async with user(server, "alice", tmp_path) as alice, user(server, "bob", tmp_path) as bob:
        sending = await alice.offer_file("bob", src)
        offered = await next_event(bob, EventName.FILE_OFFER)
        await bob.decline(offered["offer"])
        result = await finished(sending)
        assert not result.ok and result.reason == "declined"
        assert "declined by bob" in result.message
        assert offered["offer"] not in bob.files.incoming
        with pytest.raises(UnknownOffer):
            await bob.accept(offered["offer"])
        assert not (tmp_path / "downloads-bob").exists()


async def test_a_withdrawn_offer_reaches_the_receiver(
    server: ChatTestServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "x.bin", 1000)
    async with user(server, "alice", tmp_path) as alice, user(server, "bob", tmp_path) as bob:
        sending = await alice.offer_file("bob", src)
        await next_event(bob, EventName.FILE_OFFER)
        await alice.cancel(sending.number)
        result = await finished(sending)
        assert not result.ok and result.reason == "cancelled"
        ended = await next_event(bob, EventName.FILE_ENDED, sending.offer)
        assert (ended["reason"], ended["by"]) == ("cancelled", "alice")
        assert not bob.files.incoming


async def test_an_expired_offer(tmp_path: Path) -> None:
    async with ChatTestServer(p2p_offer_ttl=1.0) as server:
        await server.add_user("alice", PW)
        await server.add_user("bob", PW)
        src = make_file(tmp_path / "x.bin", 1000)
        async with user(server, "alice", tmp_path) as alice, user(server, "bob", tmp_path) as bob:
            sending = await alice.offer_file("bob", src)
            await next_event(bob, EventName.FILE_OFFER)
            result = await finished(sending)
            assert not result.ok and result.reason == "expired"
            ended = await next_event(bob, EventName.FILE_ENDED, sending.offer)
            assert ended["reason"] == "expired" and ended["by"] is None
            assert not bob.files.incoming


async def test_an_offer_to_someone_offline_is_refused(
    server: ChatTestServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "x.bin", 10)
    async with user(server, "alice", tmp_path) as alice:
        with pytest.raises(ServerError) as info:
            await alice.offer_file("bob", src)
        assert info.value.code == "user_offline"
        assert not alice.files.transfers


async def test_a_blocked_sender_never_reaches_the_blocker(tmp_path: Path) -> None:
    async with ChatTestServer(p2p_offer_ttl=1.0) as server:
        for name in ("alice", "bob", "carol"):
            await server.add_user(name, PW)
        src = make_file(tmp_path / "x.bin", 1000)
        async with (
            user(server, "alice", tmp_path) as alice,
            user(server, "bob", tmp_path) as bob,
            user(server, "carol", tmp_path) as carol,
        ):
            await bob.block("alice")
            sending = await alice.offer_file("bob", src)  # answered like any offer
            assert sending.state == "offered"
            # carol's DM is handled after the offer: if the offer had been delivered, bob
            # would have got it first
            await carol.dm("bob", "marker")
            seen: list[str] = []
            async for event in bob.events():
                seen.append(event.name.value)
                if event.name is EventName.DM:
                    break
            assert "file_offer" not in seen and not bob.files.incoming
            with pytest.raises(ServerError) as info:
                await bob.request("file_accept", offer=sending.offer)
            assert info.value.code == "unknown_offer"
            result = await finished(sending)  # for alice: an ignored offer
            assert not result.ok and result.reason == "expired"


async def test_the_relay_carries_it_when_the_direct_path_is_blocked(
    server: ChatTestServer, tmp_path: Path
) -> None:
    relay = server.server.relay  # type: ignore[union-attr]
    assert relay is not None
    only_relay = relay.address

    def firewall(data: memoryview, addr: tuple[str, int]) -> bool:
        return addr == only_relay  # everything else (the peer itself) is filtered

    walls: list[Filtered] = []

    def factory() -> TransferManager:
        walls.append(Filtered(firewall, config=FAST))
        return walls[-1]

    src = make_file(tmp_path / "big.bin", 2_000_000)
    async with (
        # alice reports a port nobody listens on and nothing of her own
        user(
            server,
            "alice",
            tmp_path,
            manager_factory=factory,
            report_local=False,
            extra_endpoints=(("127.0.0.1", 9),),
        ) as alice,
        user(server, "bob", tmp_path, manager_factory=factory) as bob,
    ):
        notices: list[str] = []
        sending = await alice.offer_file("bob", src, on_notice=notices.append)
        offered = await next_event(bob, EventName.FILE_OFFER)
        receiving = await bob.accept(offered["offer"], on_notice=notices.append)
        got, sent = await finished(receiving), await finished(sending)
        assert got.ok and sent.ok, (got, sent)
        assert got.via_relay and sent.via_relay
        assert digest(got.path) == digest(src)  # type: ignore[arg-type]
        assert any("trying the relay" in n for n in notices), notices
        assert relay.relay.stats.forwarded_bytes > 2_000_000
        assert sum(w.dropped for w in walls) > 0  # the direct attempts really were blocked


async def test_an_interrupted_transfer_resumes_when_accepted_again(
    server: ChatTestServer, tmp_path: Path
) -> None:
    size = 6_000_000
    src = make_file(tmp_path / "movie.mkv", size)
    cut = asyncio.Event()
    taken = 0

    def cable(data: memoryview, addr: tuple[str, int]) -> bool:
        """Carries the first 800 file datagrams, then nothing (the cable is pulled)."""
        nonlocal taken
        if data[0] == Kind.SEALED and addr != server.server.relay.address:  # type: ignore[union-attr]
            taken += 1
            if taken > 800:
                cut.set()
                return False
        return not cut.is_set()

    async with user(server, "alice", tmp_path) as alice:
        notices: list[str] = []
        async with user(server, "bob", tmp_path, manager_factory=lambda: Filtered(cable)) as bob:
            sending = await alice.offer_file("bob", src, on_notice=notices.append)
            offered = await next_event(bob, EventName.FILE_OFFER)
            first = await bob.accept(offered["offer"])
            await asyncio.wait_for(cut.wait(), TIMEOUT)
        # bob's client went away mid-transfer (closed: its partial file is kept)
        broken = await finished(first)
        assert not broken.ok and 0 < broken.bytes < size
        async with user(server, "bob", tmp_path) as bob_again:
            # a new session is shown the offer again, and accepting it resumes
            again = await next_event(bob_again, EventName.FILE_OFFER, sending.offer)
            resumed = await bob_again.accept(again["offer"])
            got, sent = await finished(resumed), await finished(sending)
        assert got.ok and sent.ok, (got, sent)
        assert 0 < got.resumed_bytes < size and got.resumed_bytes == broken.bytes
        assert sent.attempts == 2
        assert digest(got.path) == digest(src)  # type: ignore[arg-type]
        assert any("may accept again to resume" in n for n in notices), notices
        leftovers = [p.name for p in (tmp_path / "downloads-bob" / "alice").iterdir()]
        assert leftovers == ["movie.mkv"]  # the partial file and its record are gone
