"""Chaos under load, short runs (the long ones: `python bench/cluster.py chaos`), each on a
cluster of three nodes behind the proxy with a PostgreSQL and a Redis of its own (throw-away
servers: restarting the machine's shared ones would disturb everything else using them):

* a node killed with SIGKILL every few seconds (and started again): its clients reconnect
  through the proxy to another node and resume;
* Redis restarted under load: the nodes deliver through PostgreSQL meanwhile and resync;
* PostgreSQL restarted under load: requests fail with `unavailable` (retried by the client
  library) while it is down; nothing acknowledged is lost.

Every run prints its counts and asserts 0 acknowledged messages lost, 0 duplicated and 0 out
of order, checked by sequence number at every receiver.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from chaos import run_chaos

from cluster_services import PrivatePostgres, PrivateRedis, fresh_database, fresh_prefix

pytestmark = [pytest.mark.cluster, pytest.mark.asyncio(loop_scope="module")]

SERVE = ["--rate", "100000", "--burst", "100000", "--log-level", "INFO"]
ENV = {
    "PARLOUR_ARGON2_TIME_COST": "1",
    "PARLOUR_ARGON2_MEMORY_KIB": "64",
    "PARLOUR_MAX_CONNECTIONS_PER_ADDRESS": "0",
    "PARLOUR_LOCKOUT_ATTEMPTS": "1000",
}


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    pytest.importorskip("asyncpg", reason="the cluster extra (asyncpg) is not installed")
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[PrivateRedis]:
    pytest.importorskip("redis", reason="the cluster extra (redis) is not installed")
    server = PrivateRedis()
    try:
        yield server
    finally:
        server.close()


@pytest_asyncio.fixture(loop_scope="module")
async def cluster(
    postgres: PrivatePostgres, redis_server: PrivateRedis, tmp_path: Path
) -> AsyncIterator[object]:
    from parlour.server.cluster_cli import LocalCluster

    with fresh_database(postgres.dsn) as make_db:
        local = LocalCluster(
            store=make_db(),
            bus=redis_server.url,
            nodes=3,
            prefix=fresh_prefix(),
            work_dir=tmp_path / "cluster",
            web=False,
            admin_password="admin-password-1",
            serve_args=SERVE,
            env=ENV,
            health_interval=0.25,
        )
        try:
            await local.start()
            yield local
        finally:
            await local.stop()


def check(name: str, result: object) -> None:
    print(f"chaos ({name}): {result}")
    from chaos import ChaosResult

    assert isinstance(result, ChaosResult)
    t = result.tally
    assert result.acked > 0 and result.faults > 0
    assert (t.lost, t.duplicated, t.out_of_order) == (0, 0, 0), str(result)


async def test_kill_9_a_node_every_few_seconds(cluster: object) -> None:
    from parlour.server.cluster_cli import LocalCluster

    assert isinstance(cluster, LocalCluster)

    async def fault(n: int) -> None:
        i = n % cluster.nodes
        await cluster.kill(i)
        await asyncio.sleep(0.5)
        await cluster.restart(i)

    result = await run_chaos(cluster.proxy_port, fault, duration=15.0, every=4.0, prefix="k9-")
    check("kill -9 of a node", result)


async def test_redis_restarted_under_load(cluster: object, redis_server: PrivateRedis) -> None:
    from parlour.server.cluster_cli import LocalCluster

    assert isinstance(cluster, LocalCluster)

    async def fault(n: int) -> None:
        await asyncio.to_thread(redis_server.stop)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(redis_server.start)

    result = await run_chaos(cluster.proxy_port, fault, duration=14.0, every=5.0, prefix="rd-")
    check("Redis restarted", result)


async def test_postgres_restarted_under_load(cluster: object, postgres: PrivatePostgres) -> None:
    from parlour.server.cluster_cli import LocalCluster

    assert isinstance(cluster, LocalCluster)

    async def fault(n: int) -> None:
        await asyncio.to_thread(postgres.stop, True)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(postgres.start)

    result = await run_chaos(cluster.proxy_port, fault, duration=14.0, every=6.0, prefix="pg-")
    check("PostgreSQL restarted", result)
    # while it was down, requests were answered `unavailable` (and sent again by the library)
    logs = "".join(p.read_text() for p in cluster.work_dir.glob("node*.log"))
    assert "store unavailable; outcome not delivered" in logs
    assert sum(result.failures.values()) == 0 or all(
        "unavailable" in why or "Closed" in why for why in result.failures
    ), result.failures
