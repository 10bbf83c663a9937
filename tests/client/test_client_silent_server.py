"""A server that stops answering: the client gives up on the request, reconnects, and no
future is left with an unretrieved exception (asyncio would log it as an error)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from typing import Any

from parlour.client import Backoff, Client, ClientClosed, ConnectionLost


async def test_client_timeout_on_a_silent_server_leaves_no_unretrieved_future() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():  # answers hello, then nothing
            frame = json.loads(line)
            if frame["type"] == "hello":
                data = {"version": 1, "server": "silent", "limits": {}, "heartbeat_s": 30}
                reply = {"id": frame["id"], "type": "ok", "data": data}
                writer.write(json.dumps(reply).encode() + b"\n")
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    logged: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: logged.append(context))
    try:
        client = Client(
            "127.0.0.1", port, request_timeout=0.2, backoff=Backoff(base=0.01, maximum=0.02)
        )
        await client.connect()
        # each attempt times out, the connection is re-made (the server does answer hello)
        # and the request is sent again: give it a few rounds, then stop waiting
        with contextlib.suppress(ClientClosed, ConnectionLost, TimeoutError):
            await asyncio.wait_for(client.rooms(), 1.5)
        assert client.reconnects >= 2
        await client.close()
        del client
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
        server.close()
        await server.wait_closed()
    assert [c.get("message") for c in logged] == []
