"""End-to-end fixtures: an in-process server on 127.0.0.1:0 and raw-socket clients.

Every test that connects through the ``connect`` / ``user`` fixtures runs three times: over the
NDJSON door, over a second TCP door with the test-only length-prefixed wire, and over the
WebSocket door of the server's web listener (``framing``). The tests are the same; only the
bytes on the socket differ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import (
    ADMIN_PASSWORD,
    FRAMINGS,
    PASSWORD,
    ClientFactory,
    FakeClock,
    ServerFactory,
    Wire,
)

from parlour.core.passwords import Argon2Hasher
from parlour.protocol.testing import LengthPrefixedWire
from parlour.server.app import ChatServer
from parlour.server.config import Settings
from parlour.transports.tcp import TcpListener


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=FRAMINGS)
def framing(request: pytest.FixtureRequest) -> str:
    """The wire the test's clients speak (see the module docstring)."""
    return str(request.param)


@pytest.fixture
def doors() -> dict[int, int]:
    """Server port (NDJSON door) -> the port of the same server's door for the framing (the
    length-prefixed TCP door, or the web listener for the WebSocket door)."""
    return {}


@pytest.fixture
async def make_server(
    tmp_path: Path, clock: FakeClock, framing: str, doors: dict[int, int]
) -> AsyncIterator[ServerFactory]:
    servers: list[ChatServer] = []
    listeners: list[TcpListener] = []

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
        if framing == "length-prefixed":
            max_frame = settings.max_frame
            door = TcpListener(
                server.endpoint,
                "127.0.0.1",
                0,
                ssl_context=server.listener.ssl_context,
                wire_factory=lambda _: LengthPrefixedWire(max_frame),
            )
            [(_, port)] = await door.start()
            doors[server.port] = port
            listeners.append(door)
        elif framing == "websocket":
            assert server.web is not None
            doors[server.port] = server.web.addresses[0][1]
        return server

    yield make
    for door in listeners:
        await door.stop_accepting()
    for server in servers:
        await server.stop(grace=2)
    for door in listeners:
        await door.wait_closed()


@pytest.fixture
async def server(make_server: ServerFactory) -> ChatServer:
    return await make_server()


@pytest.fixture
async def connect(
    server: ChatServer, framing: str, doors: dict[int, int]
) -> AsyncIterator[ClientFactory]:
    clients: list[Wire] = []

    async def make(port: int | None = None, **kwargs: Any) -> Wire:
        port = port if port is not None else server.port
        if framing != "ndjson":
            port = doors[port]
        wire = await Wire.connect(port, framing=framing, **kwargs)
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
