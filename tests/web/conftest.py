"""Fixtures of the web tests: a real server (memory store, instant password hashing) with its
web listener on 127.0.0.1:0, and raw WebSocket connections to it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from web_helpers import ServerFactory, WsClient

from parlour.server.app import ChatServer
from parlour.server.config import Settings
from parlour.server.testing import PlainHasher


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    servers: list[ChatServer] = []

    async def make(**overrides: Any) -> ChatServer:
        tick = overrides.pop("tick_interval", 0.2)
        settings = dataclasses.replace(
            Settings(
                port=0,
                store="memory",
                admin_password="admin-password-1",
                rate=1000.0,
                burst=1000,
                log_level="WARNING",
            ),
            **overrides,
        )
        server = await ChatServer.start(settings, password_hasher=PlainHasher(), tick_interval=tick)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop(grace=2)


@pytest.fixture
async def clients() -> AsyncIterator[list[WsClient]]:
    opened: list[WsClient] = []
    yield opened
    for c in opened:
        await c.close()
