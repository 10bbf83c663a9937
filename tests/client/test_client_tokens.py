"""The client library logs in again with its session token, over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from parlour.client import Backoff, Client
from parlour.server.testing import ChatTestServer

FAST = Backoff(base=0.01, maximum=0.05)


@pytest.fixture
async def server() -> AsyncIterator[ChatTestServer]:
    async with ChatTestServer() as srv:
        await srv.add_user("alice", "alice-password")
        yield srv


async def back(client: Client, server: ChatTestServer, logins: int) -> None:
    await server.wait_for(lambda: len(server.requests_of("login")) >= logins)
    await asyncio.wait_for(client.ping(), 5)
    assert client.connected


async def test_a_reconnect_uses_the_token_not_the_password(server: ChatTestServer) -> None:
    async with Client("127.0.0.1", server.port, backoff=FAST) as alice:
        session = await alice.login("alice", "alice-password")
        assert session.token is not None and session.token_expires is not None
        server.disconnect_all()
        await back(alice, server, 2)
        again = server.requests_of("login")[-1]
        assert again["token"] == session.token and "password" not in again
        assert alice.session is not None and alice.session.token == session.token


async def test_a_revoked_token_falls_back_to_the_password(server: ChatTestServer) -> None:
    async with Client("127.0.0.1", server.port, backoff=FAST) as alice:
        first = await alice.login("alice", "alice-password")
        server.revoke_tokens("alice")
        server.disconnect_all()
        await back(alice, server, 3)
        token_try, password_try = server.requests_of("login")[-2:]
        assert token_try.get("token") == first.token
        assert password_try.get("password") == "alice-password"
        assert alice.session is not None and alice.session.token not in (None, first.token)


async def test_an_application_logs_in_with_a_kept_token(server: ChatTestServer) -> None:
    async with Client("127.0.0.1", server.port) as first:
        token = (await first.login("alice", "alice-password")).token
    assert token is not None
    async with Client("127.0.0.1", server.port, backoff=FAST) as later:
        session = await later.login("alice", token=token)
        assert session.username == "alice" and session.token == token
        await later.logout()  # revokes it
    async with Client("127.0.0.1", server.port) as after:
        with pytest.raises(Exception) as info:
            await after.login("alice", token=token)
        assert getattr(info.value, "code", None) == "bad_credentials"
    with pytest.raises(ValueError):
        await Client("127.0.0.1", server.port).login("alice")
