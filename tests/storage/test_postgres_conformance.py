"""The PostgreSQL store passes the shared Store conformance suite (a fresh database per test).

Needs a PostgreSQL server: ``PARLOUR_TEST_POSTGRES`` (a DSN of a role allowed to create
databases; default ``postgresql://postgres@127.0.0.1:5432/test``). Skipped, saying why, when
none answers; `.ci/run` starts one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_conformance import StoreConformance, StoreFactory

from cluster_services import fresh_database
from parlour.core.ports import Store

pytest.importorskip("asyncpg", reason="the cluster extra (asyncpg) is not installed")

from parlour.storage.postgres import PostgresStore


@pytest.fixture
def store_factory() -> Iterator[StoreFactory]:
    opened: list[PostgresStore] = []
    databases: dict[Path, str] = {}
    with fresh_database() as make_db:

        def make(tmp_path: Path) -> Store:
            if tmp_path not in databases:  # the same directory: the same database (reopen)
                databases[tmp_path] = make_db()
            store = PostgresStore.open(databases[tmp_path], min_size=1, max_size=2)
            opened.append(store)
            return store

        yield make
        for store in opened:
            store.close()


class TestPostgresStore(StoreConformance):
    durable = True
