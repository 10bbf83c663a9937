"""End-to-end fixtures: an in-process server on 127.0.0.1:0 and raw-socket clients."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import ADMIN_PASSWORD, PASSWORD, ClientFactory, FakeClock, ServerFactory, Wire

from parlour.core.passwords import Argon2Hasher
from parlour.server.app import ChatServer
from parlour.server.config import Settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_server(tmp_path: Path, clock: FakeClock) -> AsyncIterator[ServerFactory]:
    servers: list[ChatServer] = []

    async def make(**overrides: Any) -> ChatServer:
        tick = overrides.pop("tick_interval", 0.2)
        settings = dataclasses.replace(
            Settings(
                port=0,
                data_dir=tmp_path / f"data{len(servers)}",
                admin_password=ADMIN_PASSWORD,
            ),
            **overrides,
        )
        server = await ChatServer.start(
            settings,
            clock=clock,
            password_hasher=Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1),
            tick_interval=tick,
        )
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop(grace=2)


@pytest.fixture
async def server(make_server: ServerFactory) -> ChatServer:
    return await make_server()


@pytest.fixture
async def connect(server: ChatServer) -> AsyncIterator[ClientFactory]:
    clients: list[Wire] = []

    async def make(port: int | None = None, **kwargs: Any) -> Wire:
        wire = await Wire.connect(port if port is not None else server.port, **kwargs)
        clients.append(wire)
        return wire

    yield make
    for wire in clients:
        await wire.close()


@pytest.fixture
def user(connect: ClientFactory) -> Callable[..., Awaitable[Wire]]:
    """``await user("alice")``: a connection signed up (first time) or logged in as alice."""
    known: set[str] = set()

    async def make(name: str, password: str = PASSWORD, **login: Any) -> Wire:
        wire = await connect()
        if name == "admin":
            await wire.login("admin", ADMIN_PASSWORD, **login)
        elif name in known:
            await wire.login(name, password, **login)
        else:
            await wire.signup(name, password)
            known.add(name)
        return wire

    return make
