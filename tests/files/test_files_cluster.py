"""Files with several nodes (in process, one store that assigns sequence numbers, an
in-process bus, one shared data directory): an upload through one node, the attachment
delivered and downloadable through another, its deletion seen everywhere."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from files_helpers import ADMIN_PASSWORD, PASSWORD, User, sha256_of, upload_bytes

from cluster_services import FlakyStore
from parlour.bus.memory import InProcessBus
from parlour.server.app import ChatServer
from parlour.server.config import Settings
from parlour.server.testing import PlainHasher
from parlour.storage.memory import MemoryStore


async def eventually_status(http: aiohttp.ClientSession, url: str, token: str, status: int) -> None:
    """Wait until `url` answers `status` (a fact crosses the in-process bus: no single
    event to wait on), polling every 20 ms for at most 5 s."""
    for _ in range(250):
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
            if r.status == status:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{url} never answered {status}")


async def test_upload_on_one_node_download_on_another(tmp_path: Path) -> None:
    store, bus = MemoryStore(), InProcessBus()
    base = Settings(
        port=0,
        web_port=0,
        store="memory",
        data_dir=tmp_path / "shared",  # the blob directory every node shares
        admin_password=ADMIN_PASSWORD,
        p2p_relay=False,
        secret_key="one key for every node of the test",
    )
    nodes = [
        await ChatServer.start(
            base,
            password_hasher=PlainHasher(),
            store=store,
            bus=bus,
            bus_node=f"n{i}",
            core_overrides={"cluster": True},
        )
        for i in range(2)
    ]
    try:
        async with aiohttp.ClientSession() as http:
            alice = await User.make(nodes[0], "alice", http)
            bob = await User.make(nodes[1], "bob", http)
            carol = await User.make(nodes[1], "carol", http)
            await alice.wire.ok("join", room="general")
            await bob.wire.ok("join", room="general")
            data = b"across nodes\n" * 100
            upload = await upload_bytes(alice, data, "x.txt")
            sent = await alice.wire.ok(
                "send", room="general", text="", client_id="x1", attachment=upload
            )
            event = await bob.wire.event("message", seq=sent["seq"])
            assert event["attachment"]["sha256"] == sha256_of(data)
            # bob's token is node 1's; node 1 decides with its own replica of the rooms
            got = await bob.get(f"/files/{upload}")
            assert got.status == 200 and await got.read() == data
            assert (await carol.get(f"/files/{upload}")).status == 403
            # nodes with the same secret_key accept each other's tokens (behind a load
            # balancer a client's HTTP requests reach any node)
            foreign = await http.get(
                bob.base + f"/files/{upload}", headers={"Authorization": f"Bearer {alice.token}"}
            )
            assert foreign.status == 200 and await foreign.read() == data
            # the same upload cannot be attached again through the other node either
            again = await alice.wire.error(
                "send", room="general", text="", client_id="x2", attachment=upload
            )
            assert again["code"] == "file_in_use"
            # a resend of the same message through another node (the reply was lost in a
            # failover) is the same message, not a second use of the file
            alice2 = await User.make(nodes[1], "alice", http, signup=False)
            resent = await alice2.wire.ok(
                "send", room="general", text="", client_id="x1", attachment=upload
            )
            assert resent["duplicate"] is True and resent["seq"] == sent["seq"]
            await alice2.close()
            # a password change on node 0 revokes the token on node 1 as well
            await alice.wire.ok("passwd", old_password=PASSWORD, new_password="new-pass-99")
            await eventually_status(http, bob.base + f"/files/{upload}", alice.token, 401)
            await alice.wire.ok("delete", room="general", seq=sent["seq"])
            deleted = await bob.wire.event("message_deleted", seq=sent["seq"])
            assert deleted["attachment"] is None
            assert (await bob.get(f"/files/{upload}")).status == 404
            for u in (alice, bob, carol):
                await u.close()
    finally:
        for node in nodes:
            await node.stop(grace=1.0)


async def test_a_send_the_store_did_not_take_can_be_sent_again(tmp_path: Path) -> None:
    """The database is down when a message with a file is committed: the client is told
    `unavailable`, and sending the same message again attaches the file (it was never
    attached); another message still may not reuse it."""
    store = FlakyStore()
    base = Settings(
        port=0,
        web_port=0,
        store="memory",
        data_dir=tmp_path / "shared",
        admin_password=ADMIN_PASSWORD,
        p2p_relay=False,
    )
    node = await ChatServer.start(
        base,
        password_hasher=PlainHasher(),
        store=store,
        bus=InProcessBus(),
        bus_node="n0",
        core_overrides={"cluster": True},
    )
    try:
        async with aiohttp.ClientSession() as http:
            alice = await User.make(node, "alice", http)
            await alice.wire.ok("join", room="general")
            upload = await upload_bytes(alice, b"kept\n" * 10, "x.txt")
            store.down = 1
            failed = await alice.wire.error(
                "send", room="general", text="", client_id="r1", attachment=upload
            )
            assert failed["code"] == "unavailable" and store.down == 0
            sent = await alice.wire.ok(
                "send", room="general", text="", client_id="r1", attachment=upload
            )
            assert sent["duplicate"] is False
            history = await alice.wire.ok("history", room="general")
            assert history["messages"][-1]["attachment"]["id"] == upload
            again = await alice.wire.error(
                "send", room="general", text="", client_id="r2", attachment=upload
            )
            assert again["code"] == "file_in_use"
            await alice.close()
    finally:
        await node.stop(grace=1.0)
