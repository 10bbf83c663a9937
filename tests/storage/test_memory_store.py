"""The in-memory store passes the shared Store conformance suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_conformance import StoreConformance, StoreFactory

from parlour.core.ports import Store
from parlour.storage.memory import MemoryStore


@pytest.fixture
def store_factory() -> StoreFactory:
    def make(tmp_path: Path) -> Store:
        return MemoryStore()

    return make


class TestMemoryStore(StoreConformance):
    durable = False
