"""Sections 2 and 10 over real sockets with the real core: frame errors, rate limit, slow
reader, max connections, idle timeout; Argon2 stays off the event loop."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable

from e2e_helpers import PASSWORD, ClientFactory, ServerFactory, Wire

from parlour.server.app import ChatServer

UserFactory = Callable[..., Awaitable[Wire]]


async def test_oversize_frame_and_invalid_json_while_others_chat(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server(max_frame=16384)
    alice, bob = await connect(srv.port), await connect(srv.port)
    await alice.signup("alice", PASSWORD)
    await bob.signup("bob", PASSWORD)
    await alice.ok("join", room="general")
    await bob.ok("join", room="general")

    bob.send_raw(b"{this is not json}\n")
    bob.send_raw(b'["an array"]\n')
    await bob.roundtrip()
    codes = [f["code"] for f in bob.unmatched]
    assert codes == ["invalid_json", "bad_frame"]
    assert all(f["id"] is None and f["message"] for f in bob.unmatched)
    await alice.ok("send", room="general", text="still here", client_id="a1")
    assert (await bob.event("message"))["text"] == "still here"

    bob.send_raw(b'{"id": 9, "type": "send", "text": "' + b"x" * 20000 + b'"}\n')
    bye = await bob.event("disconnect")
    assert bye["code"] == "frame_too_large"
    assert [f["code"] for f in bob.unmatched][-1] == "frame_too_large"
    await bob.wait_closed()
    await alice.ok("send", room="general", text="unaffected", client_id="a2")
    assert (await alice.event("message", client_id="a2"))["text"] == "unaffected"


async def test_rate_limit_triggers_with_retry_after(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server(rate=5.0, burst=5)
    c = await connect(srv.port)
    await c.signup("alice", PASSWORD)
    await c.ok("join", room="general")
    replies = await asyncio.gather(
        *(c.send("send", room="general", text=f"m{i}", client_id=f"c{i}") for i in range(20))
    )
    limited = [r for r in replies if r["type"] == "error"]
    assert limited and all(r["code"] == "rate_limited" for r in limited)
    assert all(r["retry_after"] > 0 for r in limited)
    assert 5 <= sum(r["type"] == "ok" for r in replies) < 20


async def test_slow_reader_is_cut_off_without_hurting_others(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server(send_queue_max=65536, rate=1000.0, burst=1000)
    # the slow client: a tiny receive window and a reader that stops after 8 KiB
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(b'{"id":1,"type":"hello","version":1}\n')
    writer.write(
        json.dumps({"id": 2, "type": "signup", "username": "slow", "password": PASSWORD}).encode()
        + b'\n{"id":3,"type":"join","room":"general"}\n'
    )
    fast, sender = await connect(srv.port), await connect(srv.port)
    await fast.signup("fast", PASSWORD)
    await sender.signup("sender", PASSWORD)
    await fast.ok("join", room="general")
    await sender.ok("join", room="general")

    text = "z" * 3000
    sent = 0
    # keep chatting until the server gives up on `slow` (its kernel buffers fill first)
    while srv.endpoint.hub.stats.slow_consumers == 0:
        assert sent < 5000, "the slow reader was never cut off"
        acks = await asyncio.gather(
            *(
                sender.send("send", room="general", text=text, client_id=f"s{i}")
                for i in range(sent, sent + 10)
            )
        )
        assert all(a["type"] == "ok" for a in acks)
        for _ in range(10):
            await fast.event("message")
        sender.drain_events()
        sent += 10
    assert srv.endpoint.hub.stats.slow_consumers == 1
    rest = await asyncio.wait_for(reader.read(), 15)
    frames = [json.loads(line) for line in rest.splitlines()]
    assert frames[-1]["event"] == "disconnect" and frames[-1]["code"] == "slow_consumer"
    writer.close()
    await fast.roundtrip()
    await sender.roundtrip()


async def test_max_connections(make_server: ServerFactory, connect: ClientFactory) -> None:
    srv = await make_server(max_connections=2)
    a, b = await connect(srv.port), await connect(srv.port)
    await a.hello()
    await b.hello()
    c = await connect(srv.port)
    await c.wait_closed()
    assert [f["code"] for f in c.unmatched] == ["server_full"]
    await a.hello()  # the others are fine


async def test_idle_connection_times_out(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server(idle_timeout=0.5, heartbeat=0.2, tick_interval=0.1)
    quiet, chatty = await connect(srv.port), await connect(srv.port)
    await quiet.hello()
    await chatty.hello()
    waiter = asyncio.create_task(quiet.event("disconnect"))
    while not waiter.done():
        await chatty.ok("ping")  # heartbeats keep this one alive
        await asyncio.wait([waiter], timeout=0.1)
    assert waiter.result()["code"] == "idle_timeout"
    await quiet.wait_closed()
    await chatty.ok("ping")


async def test_argon2_runs_off_the_event_loop(server: ChatServer, connect: ClientFactory) -> None:
    before = server.hasher.computed_inline
    c = await connect()
    await c.signup("alice", PASSWORD)
    await c.ok("passwd", old_password=PASSWORD, new_password="another-password")
    await c.ok("logout")
    d = await connect()
    await d.hello()
    await d.error("login", username="alice", password="wrong-password")
    await d.ok("login", username="alice", password="another-password")
    assert server.hasher.computed_inline == before
    assert server.hasher.precomputed >= 4
