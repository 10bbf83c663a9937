"""Replies may be far larger than the server's request frame limit; the client takes them."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parlour.client import Client
from parlour.core.passwords import Argon2Hasher
from parlour.server.app import ChatServer
from parlour.server.config import Settings

PASSWORD = "correct horse"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ChatServer]:
    settings = dataclasses.replace(
        Settings(port=0, data_dir=tmp_path / "data", admin_password="admin-password-1"),
        rate=1e6,
        burst=1_000_000,
    )
    srv = await ChatServer.start(
        settings, password_hasher=Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    yield srv
    await srv.stop(grace=2)


async def test_client_join_and_history_bigger_than_the_request_limit(server: ChatServer) -> None:
    async with (
        Client("127.0.0.1", server.port, request_timeout=5) as alice,
        Client("127.0.0.1", server.port, request_timeout=5) as bob,
    ):
        assert alice.welcome is not None
        limit = alice.welcome.limits["max_frame"]
        await alice.signup("alice", PASSWORD)
        await alice.join("general")
        text = "é\u2028" * 1990  # long messages, escapes included: ~20 KB each on the wire
        for _ in range(20):
            await alice.send("general", text)
        await bob.signup("bob", PASSWORD)
        # the newest messages: ~400 KB, over the limit (a client that refused such a frame
        # would wait for the reply until its timeout, then reconnect and retry for ever)
        joined = await asyncio.wait_for(bob.join("general"), 30)
        assert len(joined.messages) == 20 and all(m.text == text for m in joined.messages)
        page = await bob.history("general", limit=20)
        assert len(page.messages) == 20
        assert 20 * len(text) > limit
        assert bob.reconnects == 0
