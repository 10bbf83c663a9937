"""parlour.client against a real server: a request bigger than the server's frame limit is
refused before it is sent (the server would close the connection, and a retried send would be
resent after every reconnect, forever)."""

from __future__ import annotations

import asyncio

import pytest
from cli_helpers import PASSWORD, LiveServer

from parlour.client import Client, ServerError
from parlour.protocol import ErrorCode


async def test_oversize_send_fails_fast_and_keeps_the_connection(live: LiveServer) -> None:
    async with Client("127.0.0.1", live.port) as client:
        await client.signup("alice", PASSWORD)
        await client.join("general")
        with pytest.raises(ServerError) as caught:
            await asyncio.wait_for(client.send("general", "x" * 70_000), 30)
        assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
        assert caught.value.extra == {"max_frame": 65536}
        assert client.reconnects == 0 and client.connected
        ack = await client.send("general", "still fine")
        assert ack.seq == 1
