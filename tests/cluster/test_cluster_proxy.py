"""Three `parlour serve` processes on PostgreSQL and Redis behind `parlour proxy` (TCP mode
for the chat port, HTTP mode for the web port, health checks on each node): users on
different nodes talk in rooms and DMs and see one order; the duplicate-login policy, bans,
blocks and presence hold across nodes; the web port reaches the nodes through the HTTP proxy.

Needs PostgreSQL and Redis (tests/cluster_services.py): a fresh database and key prefix for
the module; skipped, saying why, when they do not answer.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from cluster_helpers import PASSWORD, close_all, eventually, recording_client, tally

from cluster_services import REDIS_URL, fresh_database, fresh_prefix, require_redis
from parlour.client import Client, ServerError

pytestmark = [pytest.mark.cluster, pytest.mark.asyncio(loop_scope="module")]

ADMIN = "admin-password-1"

#: cheap Argon2, no per-address limits (every client comes from the proxy's address), and
#: the `replace` policy for a second login
SERVE = [
    "--rate", "100000", "--burst", "100000", "--duplicate-login", "replace",
    "--log-level", "INFO",
]  # fmt: skip
ENV = {
    "PARLOUR_ARGON2_TIME_COST": "1",
    "PARLOUR_ARGON2_MEMORY_KIB": "64",
    "PARLOUR_MAX_CONNECTIONS_PER_ADDRESS": "0",
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    require_redis()
    from parlour.server.cluster_cli import LocalCluster

    with fresh_database() as make_db:
        local = LocalCluster(
            store=make_db(),
            bus=REDIS_URL,
            nodes=3,
            prefix=fresh_prefix(),
            work_dir=Path(tmp_path_factory.mktemp("cluster")),
            admin_password=ADMIN,
            serve_args=SERVE,
            env=ENV,
        )
        try:
            await local.start()
            yield local
        finally:
            await local.stop()


async def test_users_on_three_nodes_see_one_order(cluster: object) -> None:
    from parlour.server.cluster_cli import LocalCluster

    assert isinstance(cluster, LocalCluster)
    clients: list[Client] = []
    recs = []
    try:
        # through the proxy (round robin: every third lands on the same node) and directly
        ports = [cluster.proxy_port] * 3 + cluster.node_ports
        for i, port in enumerate(ports):
            c, rec = await recording_client(port)
            await c.signup(f"order{i}", PASSWORD)
            await c.join("general")
            clients.append(c)
            recs.append(rec)
        acks = await asyncio.gather(
            *(c.send("general", f"{i}-{k}") for k in range(25) for i, c in enumerate(clients))
        )
        acked = {a.seq for a in acks}
        assert len(acked) == len(acks) == 150
        assert max(acked) - min(acked) + 1 == 150  # one gap-free range
        await eventually(
            lambda: all(set(r.room.get("general", [])) >= acked for r in recs), "every delivery"
        )
        t = tally(acked, [[s for s in r.room["general"] if s in acked] for r in recs])
        print("three nodes behind the proxy:", t)
        assert (t.lost, t.duplicated, t.out_of_order) == (0, 0, 0)
        # DMs between users on different nodes, in order on both sides
        a, b = clients[3], clients[4]  # node1 and node2, directly
        for k in range(5):
            await a.dm("order4", f"a{k}")
            await b.dm("order3", f"b{k}")
        await eventually(lambda: len(recs[4].dm.get("order3", [])) == 10, "DMs on node 2")
        await eventually(lambda: len(recs[3].dm.get("order4", [])) == 10, "DMs on node 1")
        assert recs[4].dm["order3"] == recs[3].dm["order4"] == list(range(1, 11))
    finally:
        await close_all(clients)


async def test_presence_blocks_bans_and_second_logins_across_nodes(cluster: object) -> None:
    from parlour.server.cluster_cli import LocalCluster

    assert isinstance(cluster, LocalCluster)
    n1, n2, n3 = cluster.node_ports
    dana, drec = await recording_client(n1)
    eve, erec = await recording_client(n2)
    admin, _ = await recording_client(n3)
    extra: list[Client] = []
    try:
        await dana.signup("dana", PASSWORD)
        await eve.signup("eve", PASSWORD)
        await admin.login("admin", ADMIN)
        for c in (dana, eve):
            await c.join("random")
        # presence: dana (node 1) sees eve (node 2) online, and offline when she leaves
        assert {u.username for u in await dana.who()} >= {"eve", "dana", "admin"}
        # blocks: dana blocks eve on node 1; eve's messages do not reach dana on node 1
        await dana.block("eve")
        hidden = await eve.send("random", "hidden from dana")
        seen = await dana.send("random", "visible")
        await eventually(lambda: seen.seq in erec.room.get("random", []), "eve sees dana")
        await eventually(lambda: seen.seq in drec.room.get("random", []), "dana sees hers")
        assert hidden.seq in erec.room["random"] and hidden.seq not in drec.room["random"]
        # second login of eve on node 3 (`replace`): her session on node 2 ends
        eve2, _ = await recording_client(n3, reconnect=False)
        extra.append(eve2)
        await eve2.login("eve", PASSWORD)
        reason = await asyncio.wait_for(eve.wait_closed(), 10)
        assert "logged in again" in reason
        # a ban on node 3 ends eve's session there and keeps her out everywhere
        started = asyncio.get_running_loop().time()
        await admin.ban("eve", reason="testing")
        await asyncio.wait_for(eve2.wait_closed(), 5)
        assert asyncio.get_running_loop().time() - started < 1.0
        for port in (n1, n2):
            again = Client("127.0.0.1", port, reconnect=False)
            extra.append(again)
            await again.connect()
            with pytest.raises(ServerError) as info:
                await again.login("eve", PASSWORD)
            assert info.value.code == "banned"
        for _ in range(100):  # the session counts reach node 1 over the bus
            if "eve" not in {u.username for u in await dana.who()}:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("eve still online for dana")
    finally:
        await close_all([dana, eve, admin, *extra])


async def test_the_web_port_reaches_every_node_through_the_http_proxy(cluster: object) -> None:
    from parlour.server.cluster_cli import LocalCluster

    assert isinstance(cluster, LocalCluster)
    assert cluster.web_proxy_port is not None
    url = f"http://127.0.0.1:{cluster.web_proxy_port}/"

    def fetch() -> tuple[int, bytes]:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()

    for _ in range(3):  # round robin over the three nodes' web listeners
        status, body = await asyncio.to_thread(fetch)
        assert status == 200 and b"<html" in body.lower()


async def test_uploads_and_downloads_through_the_proxy_reach_any_node(
    cluster: object, tmp_path: Path
) -> None:
    """A file goes up in several tus PATCHes through the round-robin HTTP proxy — each may
    land on another node — and comes down through it: the nodes share the files directory
    and the key that signs file tokens."""
    import hashlib
    import os

    from parlour.server.cluster_cli import LocalCluster

    assert isinstance(cluster, LocalCluster) and cluster.web_proxy_port is not None
    web = f"http://127.0.0.1:{cluster.web_proxy_port}/"
    data = os.urandom(1_200_000)
    src = tmp_path / "spread.bin"
    src.write_bytes(data)
    up = Client("127.0.0.1", cluster.proxy_port, state_dir=tmp_path / "up", files_url=web)
    down = Client("127.0.0.1", cluster.proxy_port, state_dir=tmp_path / "down", files_url=web)
    try:
        for c, name in ((up, "filer1"), (down, "filer2")):
            await c.connect()
            await c.signup(name, PASSWORD)
            await c.join("general")
        up.server_files.chunk_size = 256 * 1024  # five PATCHes, spread over the nodes
        sent = await up.upload(src, room="general", caption="spread")
        assert sent.attachment is not None
        saved = []
        for _ in range(3):  # three downloads: three nodes in turn
            saved.append(await down.download(sent.attachment["id"], tmp_path / "got"))
        for path in saved:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        await close_all([up, down])
