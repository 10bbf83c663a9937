"""The SQLite store passes the shared Store conformance suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_conformance import StoreConformance, StoreFactory

from parlour.core.ports import Store
from parlour.storage.sqlite import SqliteStore


@pytest.fixture
def store_factory() -> Iterator[StoreFactory]:
    opened: list[SqliteStore] = []

    def make(tmp_path: Path) -> Store:
        store = SqliteStore.open(tmp_path / "data")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


class TestSqliteStore(StoreConformance):
    durable = True
