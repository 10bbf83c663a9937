"""Helpers of the web tests (imported by name): a raw WebSocket chat client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ws_raw import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, client_frame, handshake, read_frame

if TYPE_CHECKING:
    from parlour.server.app import ChatServer

__all__ = ["TIMEOUT", "ServerFactory", "WsClient"]

TIMEOUT = 15.0
ServerFactory = Callable[..., Awaitable["ChatServer"]]


class WsClient:
    """A raw WebSocket connection speaking the chat protocol: requests matched by id, events
    and every frame kept in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.frames: list[tuple[int, bytes]] = []  # (opcode, payload) of every frame received
        self.events: deque[dict[str, Any]] = deque()
        self.unmatched: list[dict[str, Any]] = []
        self.answer_pings = True
        self.pings = 0
        self._waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._next = 1
        self._changed = asyncio.Event()
        self.closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        origin: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        rcvbuf: int | None = None,
        read: bool = True,
    ) -> WsClient:
        sock = None
        if rcvbuf is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf)
        else:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ssl_context, limit=1 << 22
            )
        try:
            await asyncio.wait_for(
                handshake(reader, writer, f"127.0.0.1:{port}", origin=origin), TIMEOUT
            )
        except BaseException:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            raise
        client = cls(reader, writer)
        if read:
            client.start_reading()
        return client

    def start_reading(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                _, opcode, payload = await read_frame(self.reader)
                self.frames.append((opcode, payload))
                if opcode == OP_PING:
                    self.pings += 1
                    if self.answer_pings:
                        self.writer.write(client_frame(OP_PONG, payload))
                elif opcode == OP_TEXT:
                    frame = json.loads(payload)
                    if frame.get("type") == "event":
                        self.events.append(frame)
                    else:
                        fut = self._waiting.pop(frame.get("id"), None)
                        if fut is not None and not fut.done():
                            fut.set_result(frame)
                        else:
                            self.unmatched.append(frame)
                elif opcode == OP_CLOSE:
                    break
                self._changed.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            self._changed.set()

    @property
    def close_codes(self) -> list[int]:
        return [int.from_bytes(p[:2], "big") for op, p in self.frames if op == OP_CLOSE]

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.writer.write(client_frame(opcode, payload, fin=fin))

    def send(self, type: str, **fields: Any) -> asyncio.Future[dict[str, Any]]:
        rid = self._next
        self._next += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        self.send_frame(OP_TEXT, json.dumps({"id": rid, "type": type, **fields}).encode())
        return fut

    async def ok(self, type: str, **fields: Any) -> dict[str, Any]:
        reply = await asyncio.wait_for(self.send(type, **fields), TIMEOUT)
        assert reply["type"] == "ok", reply
        data: dict[str, Any] = reply["data"]
        return data

    async def signup(self, name: str, password: str = "password-123") -> dict[str, Any]:
        await self.ok("hello", version=1)
        return await self.ok("signup", username=name, password=password)

    async def wait_for(self, predicate: Any) -> None:
        async def loop() -> None:
            while not predicate():
                if self.closed.is_set():
                    raise AssertionError("closed while waiting")
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), TIMEOUT)

    async def event(self, name: str) -> dict[str, Any]:
        await self.wait_for(lambda: any(e["event"] == name for e in self.events))
        found = next(e for e in self.events if e["event"] == name)
        self.events.remove(found)
        return found

    async def wait_closed(self) -> None:
        await asyncio.wait_for(self.closed.wait(), TIMEOUT)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
