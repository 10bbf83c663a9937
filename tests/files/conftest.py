"""Fixtures of the files tests: a real server (SQLite in tmp_path) and an HTTP session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from files_helpers import start_server

from parlour.server.app import ChatServer


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ChatServer]:
    srv = await start_server(tmp_path / "data")
    yield srv
    await srv.stop(grace=1.0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
