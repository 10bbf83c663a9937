"""One connection's flood does not stall the others (issue 10): requests are handled at most
`batch` per connection per turn of the event loop, and a connection sending too much invalid
input is closed."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from fakes import EchoService

from parlour.core.outcome import ConnId, Outcome
from parlour.protocol import Error
from parlour.storage.memory import MemoryStore
from parlour.transports.endpoint import Endpoint, EndpointLimits
from parlour.transports.hub import Hub
from parlour.transports.pipeline import InlineWriter
from parlour.transports.testing import FakeTransport


class OrderService(EchoService):
    """Records the order in which the core saw requests."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[tuple[ConnId, object]] = []

    def handle(self, conn: ConnId, request: Any, now: float, answers: Any = None) -> Outcome:
        self.order.append((conn, request.id))
        return super().handle(conn, request, now, answers)


def _endpoint(**limits: Any) -> tuple[Endpoint, OrderService]:
    service = OrderService()
    writer = InlineWriter(MemoryStore().apply)
    writer.start()
    endpoint = Endpoint(service, writer, Hub(), limits=EndpointLimits(**limits))
    endpoint.start()
    return endpoint, service


async def _settle(endpoint: Endpoint) -> None:
    for _ in range(100):
        await asyncio.sleep(0)


async def test_a_flood_on_one_connection_does_not_hold_up_another() -> None:
    endpoint, service = _endpoint(batch=64, max_in_flight=10_000)
    a = endpoint.open(FakeTransport(("127.0.0.2", 1)), "127.0.0.2:1")
    b = endpoint.open(FakeTransport(("127.0.0.3", 1)), "127.0.0.3:1")
    assert a is not None and b is not None
    flood = b"".join(b'{"id":%d,"type":"ping"}\n' % i for i in range(2000))
    endpoint.received(a, flood)  # one 40 KB read: 2000 requests
    endpoint.received(b, b'{"id":"b","type":"ping"}\n')
    await _settle(endpoint)
    handled_before_b = service.order.index((b, "b"))
    assert handled_before_b <= 64  # before: all 2000 of a's were handled first
    assert [rid for conn, rid in service.order if conn == a] == list(range(2000))  # in order


async def test_too_much_invalid_input_closes_the_connection() -> None:
    endpoint, _ = _endpoint(max_errors=100, error_window=10.0)
    t = FakeTransport(("127.0.0.2", 1))
    conn = endpoint.open(t, "127.0.0.2:1")
    assert conn is not None
    endpoint.received(conn, b"not json\n" * 150)
    await _settle(endpoint)
    frames = [json.loads(line) for line in bytes(t.out).splitlines()]
    errors = [f for f in frames if f.get("type") == "error"]
    assert 100 <= len(errors) <= 101
    assert frames[-1]["event"] == "disconnect" and frames[-1]["code"] == "too_many_errors"
    assert t.closing


async def test_an_address_closed_for_garbage_waits_before_it_may_connect_again() -> None:
    now = [1000.0]
    service = OrderService()
    writer = InlineWriter(MemoryStore().apply)
    writer.start()
    endpoint = Endpoint(
        service,
        writer,
        Hub(),
        limits=EndpointLimits(max_errors=10, abuse_cooldown=10.0),
        clock=lambda: now[0],
    )
    endpoint.start()
    first = endpoint.open(FakeTransport(("127.0.0.2", 1)), "127.0.0.2:1")
    assert first is not None
    endpoint.received(first, b"not json\n" * 20)
    await _settle(endpoint)
    again = FakeTransport(("127.0.0.2", 2))
    assert endpoint.open(again, "127.0.0.2:2") is None  # refused at once, nothing read
    refused = json.loads(bytes(again.out))
    assert refused["code"] == "too_many_errors" and 0 < refused["retry_after"] <= 10
    assert again.closing
    assert endpoint.open(FakeTransport(("127.0.0.3", 1)), "127.0.0.3:1") is not None  # others
    now[0] += 10.5
    assert endpoint.open(FakeTransport(("127.0.0.2", 3)), "127.0.0.2:3") is not None  # later
    off, _ = _endpoint(max_errors=10, abuse_cooldown=0)
    c = off.open(FakeTransport(("127.0.0.4", 1)), "127.0.0.4:1")
    assert c is not None
    off.received(c, b"not json\n" * 20)
    await _settle(off)
    assert off.open(FakeTransport(("127.0.0.4", 2)), "127.0.0.4:2") is not None


async def test_a_client_that_ignores_rate_limiting_is_closed() -> None:
    """Requests in flight when the first refusal left count once; a client that keeps sending
    as it is refused, wait after wait, is closed."""

    class Limited(OrderService):
        def handle(self, conn: ConnId, request: Any, now: float, answers: Any = None) -> Outcome:
            super().handle(conn, request, now, answers)
            return Outcome(reply=Error(request.id, "rate_limited", "wait", {"retry_after": 0.1}))

    service = Limited()
    writer = InlineWriter(MemoryStore().apply)
    writer.start()
    endpoint = Endpoint(service, writer, Hub(), limits=EndpointLimits(max_errors=20))
    endpoint.start()
    clock = [1000.0]
    endpoint._loop_time = lambda: clock[0]  # type: ignore[method-assign]
    t = FakeTransport(("127.0.0.5", 1))
    conn = endpoint.open(t, "127.0.0.5:1")
    assert conn is not None
    # a burst of 60 all refused within one wait: one error (a client with many in flight)
    endpoint.received(conn, b"".join(b'{"id":%d,"type":"ping"}\n' % i for i in range(60)))
    await _settle(endpoint)
    assert not t.closing
    # then a request each time the wait ends and is refused again: one error per wait
    for i in range(60, 80):
        clock[0] += 0.11
        endpoint.received(conn, b'{"id":%d,"type":"ping"}\n' % i)
        await _settle(endpoint)
    frames = [json.loads(line) for line in bytes(t.out).splitlines()]
    assert frames[-1]["event"] == "disconnect" and frames[-1]["code"] == "too_many_errors"
    assert t.closing


async def test_a_closed_connection_is_logged_with_its_user(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Named(OrderService):
        def session_user(self, conn: ConnId) -> str | None:
            return "carol"

    service = Named()
    writer = InlineWriter(MemoryStore().apply)
    writer.start()
    endpoint = Endpoint(service, writer, Hub())
    endpoint.start()
    conn = endpoint.open(FakeTransport(("127.0.0.9", 4)), "127.0.0.9:4")
    assert conn is not None
    caplog.set_level(logging.INFO, logger="parlour.transports")
    endpoint.lost(conn, "closed")
    (record,) = [r for r in caplog.records if r.getMessage() == "connection closed"]
    fields = record.fields  # type: ignore[attr-defined]
    assert (fields["user"], fields["peer"], fields["reason"]) == ("carol", "127.0.0.9:4", "closed")
