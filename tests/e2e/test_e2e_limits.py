"""Sections 2 and 10 over real sockets with the real core: frame errors, rate limit, slow
reader, max connections, idle timeout; Argon2 stays off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from collections.abc import Awaitable, Callable

from e2e_helpers import PASSWORD, ClientFactory, ServerFactory, Wire, WireError

from parlour.protocol import ErrorCode
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


async def test_every_kind_of_bad_request_gets_a_clear_error_and_the_connection_goes_on(
    user: UserFactory,
) -> None:
    alice, bob = await user("alice"), await user("bob")
    await alice.ok("join", room="general")
    await bob.ok("join", room="general")
    bob.send_raw(b'{"id": 1, "type": "ping", "x": "\xff\xfe"}\n')  # not UTF-8
    bob.send_raw(b'{"id": 2, "type": NaN}\n')  # not JSON
    bob.send_raw(b"[" * 5000 + b"]" * 5000 + b"\n")  # nested too deeply for the parser
    bob.send_raw(b'"just a string"\n')  # JSON but not an object
    await bob.roundtrip()
    assert [f["code"] for f in bob.unmatched] == [
        "invalid_utf8",
        "invalid_json",
        "invalid_json",
        "bad_frame",
    ]
    assert all(f["id"] is None and f["message"] for f in bob.unmatched)
    cases: list[tuple[dict[str, object], str, str | None]] = [
        ({"type": "shout", "text": "x"}, "unknown_type", None),
        ({"type": "send", "room": "general", "text": "x"}, "missing_field", "client_id"),
        ({"type": "send", "room": "general", "text": 5, "client_id": "c"}, "invalid_field", "text"),
        ({"type": "join", "room": "no such room!"}, "invalid_field", "room"),
        ({"type": "history", "room": "general", "limit": 0}, "invalid_field", "limit"),
        ({"type": "join", "room": "nowhere"}, "unknown_room", None),
        ({"type": "room_create", "room": "x"}, "forbidden", None),
        ({"type": "delete", "room": "general", "seq": 99}, "message_not_found", None),
    ]
    for fields, code, field in cases:
        reply = await bob.request(**fields)  # type: ignore[arg-type]
        assert reply["type"] == "error" and reply["code"] == code, (fields, reply)
        assert reply["message"] and (field is None or reply["field"] == field), reply
    no_id = json.dumps({"type": "ping"}).encode() + b"\n"
    bob.send_raw(no_id)
    await bob.roundtrip()
    assert bob.unmatched[-1]["code"] == "missing_field" and bob.unmatched[-1]["field"] == "id"
    # bob's connection still works, and alice never noticed
    await bob.ok("send", room="general", text="still fine", client_id="b1")
    assert (await alice.event("message"))["text"] == "still fine"


async def test_pipelined_requests_get_exactly_one_reply_each_in_order(user: UserFactory) -> None:
    alice = await user("alice")
    requests: list[tuple[str, dict[str, object]]] = [
        ("ping", {}),
        ("rooms", {}),
        ("join", {"room": "general"}),
        ("bogus", {}),
        ("send", {"room": "general", "text": "p1", "client_id": "p1"}),
        ("who", {}),
        ("history", {"room": "general", "limit": 0}),
        ("send", {"room": "general", "text": "p2", "client_id": "p2"}),
        ("blocks", {}),
    ]
    futures, arrived = alice.send_many(requests)  # back to back in one write
    replies = await asyncio.wait_for(asyncio.gather(*futures), 15)
    await alice.roundtrip()
    first = replies[0]["id"]
    assert arrived == [first + i for i in range(len(requests))]  # in request order
    expected = ["ok"] * 3 + ["error"] + ["ok"] * 2 + ["error"] + ["ok"] * 2
    assert [r["type"] for r in replies] == expected
    assert [r["data"]["seq"] for r in (replies[4], replies[7])] == [1, 2]
    assert not alice.unmatched  # nothing but the one reply per request


async def test_max_message_length(make_server: ServerFactory, connect: ClientFactory) -> None:
    srv = await make_server(max_message=100)
    c = await connect(srv.port)
    await c.signup("alice", PASSWORD)
    await c.ok("join", room="general")
    await c.ok("send", room="general", text="y" * 100, client_id="fits")
    err = await c.error("send", room="general", text="y" * 101, client_id="long")
    assert err["code"] == "text_too_long" and err["max_text"] == 100 and "100" in err["message"]
    err = await c.error("dm", to="admin", text="y" * 101, client_id="long-dm")
    assert err["code"] == "text_too_long"


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
    assert all(r["retry_after"] > 0 and "retry in" in r["message"] for r in limited)
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
    assert "fast enough" in frames[-1]["reason"]
    writer.close()
    await fast.roundtrip()
    await sender.roundtrip()

    # the room goes on without it ...
    for i in range(sent, sent + 30):
        await sender.ok("send", room="general", text=f"after {i}", client_id=f"s{i}")
    sent += 30
    # ... and the slow client reconnects and resumes: it gets exactly what it missed, in order
    joined = next(f for f in frames if f.get("id") == 3)
    seen = [f["seq"] for f in frames if f.get("event") == "message"]
    assert seen == list(range(joined["data"]["last_seq"] + 1, len(seen) + 1))
    last_seen = seen[-1] if seen else joined["data"]["last_seq"]
    back = await connect(srv.port)
    reply = await back.login("slow", PASSWORD, resume={"rooms": {"general": last_seen}})
    got: list[int] = []
    while True:
        await back.roundtrip()
        got += [e["seq"] for e in back.drain_events("message")]
        if not reply.get("truncated"):
            break
        reply = await back.ok("sync", resume={"rooms": {"general": got[-1]}, "dms": {}})
    assert got == list(range(last_seen + 1, sent + 1)) and len(got) >= 30


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
    # over WebSocket the server pings quiet connections and a pong is life: `quiet` is a peer
    # that went away (it answers no ping), as a silent TCP client is
    quiet = await connect(srv.port, answer_pings=False)
    chatty = await connect(srv.port)
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
    before = server.needs.hashed
    c = await connect()
    await c.signup("alice", PASSWORD)
    await c.ok("passwd", old_password=PASSWORD, new_password="another-password")
    await c.ok("logout")
    d = await connect()
    await d.hello()
    await d.error("login", username="alice", password="wrong-password")
    await d.ok("login", username="alice", password="another-password")
    # sign-up, passwd (verify + hash), the failed and the good login: 5 jobs in the pool
    assert server.needs.hashed - before == 5
    assert server.needs.queued == 0


async def test_long_absence_catches_up_in_parts_without_tripping_the_send_queue(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server(send_queue_max=65536, rate=1000.0, burst=1000)
    alice, bob = await connect(srv.port), await connect(srv.port)
    await alice.signup("alice", PASSWORD)
    await bob.signup("bob", PASSWORD)
    await alice.ok("join", room="general")
    await bob.ok("join", room="general")
    await bob.ok("logout")
    text = "w" * 3000
    total = 150  # ~900 KB: far more than one catch-up or the 64 KiB send queue
    for start in range(0, total, 50):
        acks = await asyncio.gather(
            *(
                alice.send("send", room="general", text=text, client_id=f"w{i}")
                for i in range(start, start + 50)
            )
        )
        assert all(a["type"] == "ok" for a in acks)
    reply = await bob.ok(
        "login", username="bob", password=PASSWORD, resume={"rooms": {"general": 0}}
    )
    got: list[int] = []
    rounds = 1
    while True:
        await bob.roundtrip()
        got += [e["seq"] for e in bob.drain_events("message")]
        if not reply.get("truncated"):
            break
        rounds += 1
        reply = await bob.ok("sync", resume={"rooms": {"general": got[-1]}, "dms": {}})
    assert got == list(range(1, total + 1))
    assert rounds > 1 and srv.endpoint.hub.stats.slow_consumers == 0


async def test_random_garbage_gets_documented_errors_and_others_keep_chatting(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server(max_frame=4096, burst=100)
    alice, bob = await connect(srv.port), await connect(srv.port)
    await alice.signup("alice", PASSWORD)
    await bob.signup("bob", PASSWORD)
    await alice.ok("join", room="general")
    await bob.ok("join", room="general")
    rng = random.Random(2)
    pieces = [
        b"\xff\xfe",
        b"{",
        b"}",
        b"[",
        b'"',
        b"\\",
        b"\r",
        b"\n",
        b"\x00",
        b"NaN",
        b'{"id":1,"type":"send"}',
        b'{"id":"x","type":"join","room":5}',
        b'{"type":"ping"}',
        "é€😀".encode(),
        b"9" * 50,
    ]
    for round_ in range(20):
        mallory = await connect(srv.port)
        await mallory.hello()
        junk = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 300)))
        if round_ % 5 == 4:
            junk += b"z" * 5000  # one line over the frame limit
        mallory.send_raw(junk + b"\n")
        with contextlib.suppress(WireError):
            await mallory.roundtrip()  # everything before it was answered (or it was closed)
        frames = list(mallory.unmatched) + [
            f for f in mallory.drain_events() if f["event"] == "disconnect"
        ]
        documented = {c.value for c in ErrorCode}
        assert all(f["code"] in documented for f in frames), frames
        if round_ % 5 == 4:
            assert frames[-1]["code"] == "frame_too_large"
        await mallory.close()
        ack = await alice.ok("send", room="general", text=f"r{round_}", client_id=f"r{round_}")
        assert (await bob.event("message", seq=ack["seq"]))["text"] == f"r{round_}"
