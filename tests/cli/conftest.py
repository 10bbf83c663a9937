"""Fixtures for `parlour chat` end-to-end tests (helpers in cli_helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cli_helpers import ChatProcess, LiveServer


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A real chat server on 127.0.0.1 (port 0), restartable on the same port."""
    srv = LiveServer(tmp_path / "data")
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def chats() -> AsyncIterator[list[ChatProcess]]:
    """Chat subprocesses to kill at the end (append what you start)."""
    started: list[ChatProcess] = []
    yield started
    for chat in started:
        chat.kill()
        await chat.proc.wait()
