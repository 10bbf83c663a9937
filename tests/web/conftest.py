"""Fixtures of the web tests: a real server (memory store, instant password hashing) with its
web listener on 127.0.0.1:0, raw WebSocket connections to it, and one headless Chromium per
browser-test module."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from web_helpers import ServerFactory, WsClient

from parlour.server.app import ChatServer
from parlour.server.config import Settings
from parlour.server.testing import PlainHasher

if TYPE_CHECKING:
    from playwright.async_api import Browser


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


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Chromium for one module's browser tests (skipped where Playwright is missing)."""
    from browser_helpers import launch, playwright_api

    async with playwright_api.async_playwright() as pw:
        launched = await launch(pw)
        try:
            yield launched
        finally:
            await launched.close()
