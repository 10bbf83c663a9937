"""TCP mode: a client that half-closes right after its request still gets the reply
(issue 11, must fix 3: `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | socat -t2 - TCP:...` printed
nothing through the proxy).

uvloop reports the client's EOF again when reading resumes (the proxy pauses reading
while it connects to the backend), and the relay counted EOFs rather than remembering
which side had sent one: the second report looked like "both sides done" and closed the
connection before the backend answered. So the tests run the proxy on uvloop (as
`parlour proxy` does) as well as on asyncio's own loop, with real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from parlour.proxy.config import ProxyConfig
from parlour.proxy.control import BackendSpec, ProxySettings
from parlour.proxy.runtime import ProxyRuntime
from parlour.proxy.tcp_relay import TcpClient

TIMEOUT = 10.0
REQUEST = b"GET / HTTP/1.0\r\n\r\n"
REPLY = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"

Runner = Callable[[Coroutine[Any, Any, None]], None]
LOOPS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A backend that reads one request head, answers it and closes (HTTP/1.0 style)."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(REPLY)
        await writer.drain()
    writer.close()


async def half_close_exchange(port: int) -> bytes:
    """Send REQUEST, shut the sending side at once (socat/`nc -N`), read to the end."""
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    try:
        await loop.sock_sendall(sock, REQUEST)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), TIMEOUT):
            out += chunk
        return out
    finally:
        sock.close()


async def start_proxy(backend_port: int, **settings: Any) -> ProxyRuntime:
    cfg = ProxyConfig(
        mode="tcp",
        listen_port=0,
        admin_port=None,
        settings=ProxySettings(health_interval_s=60.0, **settings),
        backends=(BackendSpec("127.0.0.1", backend_port, max_conns=1),),
    )
    rt = ProxyRuntime(cfg)
    await rt.start()
    return rt


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_half_close_while_waiting_for_the_backend_still_gets_the_reply(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's request and FIN both arrive before its backend connection exists (it
    waits for a max_conns slot), so reading is resumed after the EOF."""
    eofs: asyncio.Queue[None] = asyncio.Queue()
    original = TcpClient.eof_received

    def spy(self: TcpClient) -> bool:
        eofs.put_nowait(None)
        return original(self)

    monkeypatch.setattr(TcpClient, "eof_received", spy)

    async def main() -> None:
        backend = await asyncio.start_server(answer_then_close, "127.0.0.1", 0)
        rt = await start_proxy(backend.sockets[0].getsockname()[1], queue_timeout_s=TIMEOUT)
        try:
            port = rt.listen_port or 0
            # the first client holds the backend's only slot (no request yet)
            holder_r, holder_w = await asyncio.open_connection("127.0.0.1", port)
            second = asyncio.create_task(half_close_exchange(port))
            await asyncio.wait_for(eofs.get(), TIMEOUT)  # its request and FIN are in
            holder_w.close()  # the slot frees: the waiting client connects now
            assert await asyncio.wait_for(second, TIMEOUT) == REPLY
            with contextlib.suppress(ConnectionError):
                await holder_r.read()
        finally:
            await rt.stop(drain_timeout_s=1.0)
            backend.close()
            await backend.wait_closed()

    LOOPS[loop](main())


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_half_close_gets_the_reply(loop: str) -> None:
    async def main() -> None:
        backend = await asyncio.start_server(answer_then_close, "127.0.0.1", 0)
        rt = await start_proxy(backend.sockets[0].getsockname()[1])
        try:
            for _ in range(5):
                assert await half_close_exchange(rt.listen_port or 0) == REPLY
        finally:
            await rt.stop(drain_timeout_s=1.0)
            backend.close()
            await backend.wait_closed()

    LOOPS[loop](main())
