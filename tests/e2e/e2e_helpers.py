"""Shared helpers of the end-to-end tests (imported by name; conftest.py holds only fixtures).

``Wire`` is a small raw-socket client: exact bytes in, parsed frames out. It speaks each of
the server's wires: NDJSON (``framing="ndjson"``, the TCP door's), the test-only
length-prefixed wire (``framing="length-prefixed"``, ``parlour.protocol.testing``) and the
WebSocket door's (``framing="websocket"``: one JSON object per masked text frame, after the
HTTP upgrade on the web listener; a raw client from tests/ws_raw.py), so that the same
end-to-end tests run over every door unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from parlour.protocol.testing import frame as lp_frame
from ws_raw import OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, client_frame, handshake, read_frame

if TYPE_CHECKING:
    from parlour.server.app import ChatServer

__all__ = [
    "ADMIN_PASSWORD",
    "FRAMINGS",
    "PASSWORD",
    "TIMEOUT",
    "ClientFactory",
    "FakeClock",
    "ServerFactory",
    "Wire",
    "WireError",
]

TIMEOUT = 15.0
#: the wires a test client can speak (the server has a door for each in the e2e fixtures)
FRAMINGS = ("ndjson", "length-prefixed", "websocket")
ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "password-123"


class FakeClock:
    """Wall time plus an offset the test can advance (lockouts, bans, windows)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


ServerFactory = Callable[..., Awaitable["ChatServer"]]
ClientFactory = Callable[..., Awaitable["Wire"]]


class WireError(AssertionError):
    pass


class Wire:
    """One connection. Replies are matched to requests by id; events queue up in order."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framing: str = "ndjson",
        answer_pings: bool = True,
        handshake_error: Exception | None = None,
    ) -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"unknown framing {framing!r}")
        self.reader = reader
        self.writer = writer
        self.framing = framing
        #: (websocket) answer the server's pings, as every WebSocket client must; a test of the
        #: idle timeout turns it off to be a peer that went away
        self.answer_pings = answer_pings
        #: (websocket) the opening handshake failed (the connection is closed from the start)
        self.handshake_error = handshake_error
        #: (websocket) close frames received: (code, reason)
        self.close_frames: list[tuple[int, str]] = []
        self.pings = 0
        self._next_id = 1
        self._waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.events: deque[dict[str, Any]] = deque()
        self.unmatched: deque[dict[str, Any]] = deque()  # replies with id null (frame errors)
        self._changed = asyncio.Event()
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        limit: int = 1 << 22,
        framing: str = "ndjson",
        source: str | None = None,
        answer_pings: bool = True,
    ) -> Wire:
        """A connection to 127.0.0.1:`port`, from the loopback address `source` when given
        (127.0.0.2, ...: another client address, for per-address limits)."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=ssl_context,
            limit=limit,
            local_addr=(source, 0) if source is not None else None,
        )
        failed: Exception | None = None
        if framing == "websocket":
            try:
                await asyncio.wait_for(handshake(reader, writer, f"127.0.0.1:{port}"), TIMEOUT)
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
                failed = exc  # e.g. plain text to a TLS port: a wire that is closed at once
        return cls(reader, writer, framing, answer_pings, failed)

    async def _next_frame(self) -> bytes | None:
        if self.handshake_error is not None:
            return None
        if self.framing == "ndjson":
            line = await self.reader.readline()
            return line or None
        if self.framing == "websocket":
            return await self._next_message()
        try:
            header = await self.reader.readexactly(4)
            return await self.reader.readexactly(int.from_bytes(header, "big"))
        except asyncio.IncompleteReadError:
            return None

    async def _next_message(self) -> bytes | None:
        """The next data message (pings answered, close frames recorded)."""
        parts: list[bytes] = []
        try:
            while True:
                fin, opcode, payload = await read_frame(self.reader)
                if opcode == OP_PING:
                    self.pings += 1
                    if self.answer_pings:
                        self.writer.write(client_frame(OP_PONG, payload))
                    continue
                if opcode == OP_PONG:
                    continue
                if opcode == OP_CLOSE:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    self.close_frames.append((code, payload[2:].decode()))
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        self.writer.write(client_frame(OP_CLOSE, payload[:2]))
                    return None
                if opcode not in (OP_TEXT, OP_CONT):
                    raise WireError(f"unexpected websocket opcode {opcode}")
                parts.append(payload)
                if fin:
                    return b"".join(parts)
        except asyncio.IncompleteReadError:
            return None

    def _frame(self, obj: dict[str, Any]) -> bytes:
        data = json.dumps(obj).encode()
        if self.framing == "ndjson":
            return data + b"\n"
        if self.framing == "websocket":
            return client_frame(OP_TEXT, data)
        return lp_frame(data)

    async def _read(self) -> None:
        try:
            while True:
                line = await self._next_frame()
                if line is None:
                    break
                frame = json.loads(line)
                if frame.get("type") == "event":
                    self.events.append(frame)
                else:
                    fut = self._waiting.pop(frame.get("id"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
                    else:
                        self.unmatched.append(frame)
                self._changed.set()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.closed.set()
            self._changed.set()
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(WireError("connection closed before the reply"))

    # ------------------------------------------------------------------ requests

    def send_raw(self, data: bytes) -> None:
        """Exact NDJSON bytes; with the length-prefixed framing every line the NDJSON wire
        would decode becomes one frame (blank lines, which NDJSON skips, are left out) — with the
        websocket framing one text frame, even when the line is not UTF-8 — so a test of bad
        input means the same on every wire."""
        if self.framing == "ndjson":
            self.writer.write(data)
            return
        lines = data.split(b"\n")
        for line in lines[:-1]:  # the part after the last newline is not a line yet
            if line[:-1] if line.endswith(b"\r") else line:
                self.writer.write(
                    client_frame(OP_TEXT, line) if self.framing == "websocket" else lp_frame(line)
                )

    def send(self, type: str, **fields: Any) -> asyncio.Future[dict[str, Any]]:
        rid = self._next_id
        self._next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        self.writer.write(self._frame({"id": rid, "type": type, **fields}))
        return fut

    def send_many(
        self, requests: list[tuple[str, dict[str, Any]]]
    ) -> tuple[list[asyncio.Future[dict[str, Any]]], list[Any]]:
        """Pipeline ``requests`` in one write; returns their futures and the ids in the order
        their replies arrived (filled in as they come)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[dict[str, Any]]] = []
        arrived: list[Any] = []
        data = bytearray()
        for type, fields in requests:
            rid = self._next_id
            self._next_id += 1
            fut: asyncio.Future[dict[str, Any]] = loop.create_future()
            fut.add_done_callback(lambda _, rid=rid: arrived.append(rid))
            self._waiting[rid] = fut
            futures.append(fut)
            data += self._frame({"id": rid, "type": type, **fields})
        self.writer.write(bytes(data))
        return futures, arrived

    async def request(self, type: str, **fields: Any) -> dict[str, Any]:
        return await asyncio.wait_for(self.send(type, **fields), TIMEOUT)

    async def ok(self, type: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(type, **fields)
        if reply["type"] != "ok":
            raise WireError(f"{type} failed: {reply}")
        data: dict[str, Any] = reply["data"]
        return data

    async def error(self, type: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(type, **fields)
        if reply["type"] != "error":
            raise WireError(f"{type} unexpectedly succeeded: {reply}")
        return reply

    async def hello(self) -> dict[str, Any]:
        return await self.ok("hello", version=1)

    async def login(self, user: str, password: str, **fields: Any) -> dict[str, Any]:
        await self.hello()
        return await self.ok("login", username=user, password=password, **fields)

    async def signup(self, user: str, password: str) -> dict[str, Any]:
        await self.hello()
        return await self.ok("signup", username=user, password=password)

    # ------------------------------------------------------------------ events

    async def event(self, name: str, **match: Any) -> dict[str, Any]:
        """The first queued event called ``name`` whose fields match (earlier others stay)."""

        def find() -> dict[str, Any] | None:
            for ev in self.events:
                if ev["event"] == name and all(ev.get(k) == v for k, v in match.items()):
                    self.events.remove(ev)
                    return ev
            return None

        async def wait() -> dict[str, Any]:
            while True:
                found = find()
                if found is not None:
                    return found
                if self.closed.is_set():
                    raise WireError(f"closed while waiting for {name} {match}: {list(self.events)}")
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(wait(), TIMEOUT)

    def drain_events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = [e for e in self.events if name is None or e["event"] == name]
        for e in out:
            self.events.remove(e)
        return out

    async def wait_closed(self) -> None:
        await asyncio.wait_for(self.closed.wait(), TIMEOUT)

    async def roundtrip(self) -> None:
        """Everything the server sent before the reply to this ping has arrived."""
        await self.ok("ping")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
