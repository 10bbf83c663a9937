"""A failure while handling or dispatching one request must not stall anything else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from fakes import EchoService, RecordingWriter

from parlour.core.needs import ReadRoom
from parlour.core.outcome import ConnId, Outcome
from parlour.core.ports import StoreUnavailable
from parlour.core.writes import Audit
from parlour.protocol import Ok, Reply
from parlour.server.testing import PlainHasher
from parlour.storage.memory import MemoryStore
from parlour.storage.reads import InlineReads
from parlour.transports.endpoint import Endpoint
from parlour.transports.hub import Hub
from parlour.transports.needs import NeedRunner
from parlour.transports.pipeline import InlineWriter, Pipeline
from parlour.transports.tcp import TcpListener

TIMEOUT = 10


class ClosingWriter(InlineWriter):
    """Refuses (like the SQLite writer after ``close``) any batch whose text is ``boom``, and
    fails (like PostgreSQL while it is down) any batch whose text is ``down``."""

    def submit(self, writes: Sequence[Any]) -> asyncio.Future[Any]:
        if any(isinstance(w, Audit) and w.reason == "boom" for w in writes):
            raise RuntimeError("the store writer is closed")
        if any(isinstance(w, Audit) and w.reason == "down" for w in writes):
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            fut.set_exception(StoreUnavailable("PostgreSQL unavailable: connection refused"))
            return fut
        return super().submit(writes)


class NeedyEchoService(EchoService):
    """Every `send` first needs a store read (like signup/login needing Argon2): it takes the
    endpoint's asynchronous needs path before it is answered."""

    def handle(self, conn: ConnId, request: Any, now: float, answers: Any = None) -> Outcome:
        if request.TYPE == "send" and not answers:
            return Outcome(needs=(ReadRoom("general", None, None, 1),))
        return super().handle(conn, request, now, answers)


class Line:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, obj: dict[str, Any]) -> None:
        self.writer.write(json.dumps(obj).encode() + b"\n")
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT)

    async def recv(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
        assert line, "connection closed"
        frame: dict[str, Any] = json.loads(line)
        return frame


@pytest.fixture
async def served() -> AsyncIterator[tuple[Endpoint, int]]:
    store = MemoryStore()
    writer = ClosingWriter(store.apply)
    writer.start()
    needs = NeedRunner(PlainHasher(), InlineReads(store))
    endpoint = Endpoint(NeedyEchoService(), writer, Hub(), needs=needs)
    endpoint.start()
    listener = TcpListener(endpoint, "127.0.0.1", 0)
    [(_, port)] = await listener.start()
    yield endpoint, port
    await listener.stop_accepting()
    await endpoint.shutdown(grace=2)
    await listener.wait_closed()
    needs.close()


async def _connect(port: int) -> Line:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return Line(reader, writer)


def _send(i: int, text: str) -> dict[str, Any]:
    return {"id": i, "type": "send", "room": "general", "text": text, "client_id": f"c{i}"}


async def _until_reply(line: Line, rid: int) -> dict[str, Any]:
    while True:
        frame = await line.recv()
        if frame.get("id") == rid and frame["type"] in ("ok", "error"):
            return frame


async def test_refused_write_after_prepare_replies_internal_error_and_goes_on(
    served: tuple[Endpoint, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, port = served
    a, b = await _connect(port), await _connect(port)
    caplog.set_level(logging.ERROR)
    await a.send(_send(1, "boom"))
    await a.send(_send(2, "fine"))  # waits in the backlog behind the failing request
    first = await _until_reply(a, 1)
    assert (first["type"], first["code"]) == ("error", "internal_error")
    assert (await _until_reply(a, 2))["type"] == "ok"
    await b.send(_send(3, "other"))
    assert (await _until_reply(b, 3))["type"] == "ok"
    await a.send({"id": 4, "type": "ping"})
    assert (await _until_reply(a, 4))["type"] == "ok"
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    await a.close()
    await b.close()


async def test_an_unreachable_store_is_answered_unavailable_with_retry_after(
    served: tuple[Endpoint, int], caplog: pytest.LogCaptureFixture
) -> None:
    """The database is down: the request is answered `unavailable` with `retry_after`
    (nothing was done: the client library sends it again), no traceback is logged, and the
    next request goes through."""
    _, port = served
    a = await _connect(port)
    caplog.set_level(logging.WARNING)
    await a.send(_send(1, "down"))
    await a.send(_send(2, "fine"))
    first = await _until_reply(a, 1)
    assert (first["type"], first["code"]) == ("error", "unavailable")
    assert first["retry_after"] > 0 and "nothing was done" in first["message"]
    assert (await _until_reply(a, 2))["type"] == "ok"
    assert not any(r.exc_info for r in caplog.records)
    assert any("store unavailable" in r.getMessage() for r in caplog.records)
    await a.close()


async def test_unexpected_failure_applying_a_prepared_request_is_answered(
    served: tuple[Endpoint, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, port = served
    real_apply = endpoint.pipeline.apply
    failed: list[int] = []

    def apply(outcome: Outcome, conn: ConnId | None, done: Any = None) -> None:
        if outcome.writes and not failed:
            failed.append(1)
            raise RuntimeError("unexpected")
        real_apply(outcome, conn, done)

    monkeypatch.setattr(endpoint.pipeline, "apply", apply)
    a = await _connect(port)
    await a.send(_send(1, "x"))
    await a.send(_send(2, "y"))
    first = await _until_reply(a, 1)
    assert (first["type"], first["code"]) == ("error", "internal_error")
    assert (await _until_reply(a, 2))["type"] == "ok"
    await a.close()


class FlakyHub(Hub):
    """Fails to send any reply whose data says ``bad``."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[object] = []

    def reply(self, conn: ConnId, reply: Reply) -> None:
        assert isinstance(reply, Ok)
        if reply.data.get("bad"):
            raise ValueError("cannot encode")
        self.sent.append(reply.id)


async def test_one_failing_dispatch_does_not_hold_up_the_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = RecordingWriter()
    writer.start()
    hub = FlakyHub()
    pipeline = Pipeline(writer, hub)
    write = (Audit("u", "send", "general", "t", 0.0),)
    done: list[int] = []
    pipeline.apply(Outcome(reply=Ok(1, {}), writes=write), 1, lambda: done.append(1))
    pipeline.apply(Outcome(reply=Ok(2, {"bad": True})), 1, lambda: done.append(2))
    pipeline.apply(Outcome(reply=Ok(3, {})), 1, lambda: done.append(3))
    pipeline.apply(Outcome(reply=Ok(4, {})), 2, lambda: done.append(4))
    assert hub.sent == []  # all wait for the first commit
    caplog.set_level(logging.ERROR)
    writer.submitted[0][1].set_result(None)
    await asyncio.wait_for(pipeline.drained(), TIMEOUT)
    assert hub.sent == [1, 3, 4]
    assert done == [1, 2, 3, 4]
    assert pipeline.dispatch_failures == 1
    assert len(caplog.records) == 1


class _Sink:
    """The transport side of a hub peer: collects what is written."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def writelines(self, chunks: list[bytes]) -> None:
        self.data += b"".join(chunks)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


async def test_unencodable_reply_becomes_internal_error_and_later_replies_follow() -> None:
    writer = InlineWriter(MemoryStore().apply)
    writer.start()
    hub = Hub()
    sink = _Sink()
    hub.add(1, sink)  # type: ignore[arg-type]
    pipeline = Pipeline(writer, hub)
    pipeline.apply(Outcome(reply=Ok(1, {"x": object()})), 1)
    pipeline.apply(Outcome(reply=Ok(2, {})), 1)
    hub.flush()
    frames = [json.loads(line) for line in sink.data.splitlines()]
    assert [(f["id"], f["type"]) for f in frames] == [(1, "error"), (2, "ok")]
    assert frames[0]["code"] == "internal_error"
    assert pipeline.dispatch_failures == 1
