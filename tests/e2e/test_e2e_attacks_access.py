"""Attacks on accounts and connection slots over real sockets (issue 10). Other client
addresses are other loopback addresses (127.0.0.2, 127.0.0.3, ...)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from e2e_helpers import PASSWORD, ClientFactory, FakeClock, ServerFactory, Wire, WireError

from parlour.server.app import ChatServer

UserFactory = Callable[..., Awaitable[Wire]]


async def test_three_wrong_passwords_from_elsewhere_do_not_lock_the_owner_out(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server()
    owner = await connect(srv.port)
    await owner.signup("bob", PASSWORD)
    await owner.ok("logout")
    attacker = await connect(srv.port, source="127.0.0.2")
    await attacker.hello()
    codes = [
        (await attacker.error("login", username="bob", password=f"guess-{i}"))["code"]
        for i in range(4)
    ]
    assert codes == ["bad_credentials", "bad_credentials", "locked_out", "locked_out"]
    # the owner, from their own address, logs in at once (before: locked out for good by
    # three wrong passwords a minute)
    await owner.ok("login", username="bob", password=PASSWORD)


async def test_guessing_unknown_names_locks_the_guesser_not_the_victims_counter(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server()
    owner = await connect(srv.port)
    await owner.signup("victim", PASSWORD)
    attacker = await connect(srv.port, source="127.0.0.3")
    await attacker.hello()
    codes = [
        (await attacker.error("login", username=f"nobody{i}", password="x-guess-x"))["code"]
        for i in range(25)
    ]
    assert codes[:19] == ["bad_credentials"] * 19 and set(codes[19:]) == {"locked_out"}
    # no more guesses for the victim from that address (before: evicting the victim's
    # counter gave 29 real guesses in 25 s)
    err = await attacker.error("login", username="victim", password="a-real-guess")
    assert err["code"] == "locked_out" and err["retry_after"] > 0
    await owner.ok("ping")


async def test_a_wrong_old_password_in_passwd_is_throttled_too(user: UserFactory) -> None:
    bob = await user("bob")
    codes = [
        (await bob.error("passwd", old_password=f"wrong-{i}", new_password="new-password-1"))[
            "code"
        ]
        for i in range(4)
    ]
    assert codes == ["bad_credentials", "bad_credentials", "locked_out", "locked_out"]


@pytest.mark.parametrize("policy", ["allow", "replace", "reject"])
async def test_a_silently_dead_connection_does_not_lock_its_owner_out(
    make_server: ServerFactory, connect: ClientFactory, clock: FakeClock, policy: str
) -> None:
    """Before: under the default policy the owner waited for the idle timeout (91 s)."""
    server = await make_server(duplicate_login=policy)
    alice, dead = await connect(server.port), await connect(server.port)
    await alice.signup("alice", PASSWORD)
    await dead.signup("bob", PASSWORD)
    await alice.ok("join", room="general")
    await dead.ok("join", room="general")
    alice.drain_events()
    # `dead`'s network went away without a FIN: the server still holds its session, which
    # sends nothing more (under `reject` it is refused while alive: two heartbeats)
    if policy == "reject":
        clock.advance(2 * server.settings.heartbeat + 1)
    again = await connect(server.port)
    await again.login("bob", PASSWORD)
    if policy != "allow":
        bye = await dead.event("disconnect")
        assert bye["code"] == "logged_out" and "logged in again" in bye["reason"]
    await again.ok("send", room="general", text="back", client_id="b1")
    assert (await alice.event("message"))["text"] == "back"
    assert [e for e in alice.drain_events() if e["event"] == "presence"] == []


async def test_one_address_cannot_take_every_connection_slot(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server(max_connections_per_address=3)
    hogs = [await connect(srv.port, source="127.0.0.4") for _ in range(3)]
    for hog in hogs:
        await hog.hello()
    refused = await connect(srv.port, source="127.0.0.4")
    await refused.wait_closed()
    assert [f["code"] for f in refused.unmatched] == ["server_full"]
    assert "your address" in refused.unmatched[0]["message"]
    other = await connect(srv.port, source="127.0.0.5")  # everyone else still gets in
    await other.hello()


async def test_a_connection_that_does_not_log_in_is_closed_whatever_it_sends(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server(login_timeout=1.0, tick_interval=0.1)
    slow = await connect(srv.port)
    await slow.hello()
    dripping = asyncio.create_task(_drip(slow))  # a byte at a time keeps no deadline away
    bye = await slow.event("disconnect")
    dripping.cancel()
    assert bye["code"] == "idle_timeout" and "logged in" in bye["reason"]
    good = await connect(srv.port)
    await good.signup("quick", PASSWORD)
    await good.ok("ping")


async def _drip(wire: Wire) -> None:
    """Bytes of a frame that never ends (slowloris)."""
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        if wire.framing == "length-prefixed":
            wire.writer.write((1000).to_bytes(4, "big"))  # a frame of 1000 bytes, never sent
        elif wire.framing == "websocket":  # a masked text frame of 1000 bytes, never sent
            wire.writer.write(bytes((0x81, 0x80 | 126)) + (1000).to_bytes(2, "big") + bytes(4))
        while not wire.closed.is_set():
            wire.writer.write(b" ")
            await asyncio.sleep(0.05)


async def test_connections_still_in_their_tls_handshake_take_slots(
    make_server: ServerFactory, self_signed_cert: tuple[Path, Path]
) -> None:
    cert, key = self_signed_cert
    srv = await make_server(
        tls_cert=cert, tls_key=key, max_connections=2, max_connections_per_address=0
    )
    # two connections that never send a ClientHello
    stuck = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(2)]
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, OSError)):
        reader, _writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", srv.port, ssl=ctx), 10
        )
        await reader.read(1)  # the handshake may "succeed" locally before the abort arrives
        raise ConnectionError("not refused")
    for _, w in stuck:
        w.close()
    # once they are gone, their slots are free again
    for _ in range(50):
        try:
            wire = await Wire.connect(srv.port, ssl_context=ctx)
        except (ssl.SSLError, ConnectionError, OSError):
            await asyncio.sleep(0.1)
            continue
        await wire.hello()
        await wire.close()
        break
    else:
        raise AssertionError("slots never freed")


async def test_history_with_strangers_keeps_nothing_in_memory(
    server: ChatServer, user: UserFactory
) -> None:
    """Before: every `history {"peer": X}` created a conversation never evicted."""
    probe = await user("probe")
    names = [f"u{i}" for i in range(30)]
    for name in names:
        w = await user(name)
        await w.close()
    before = len(server.service.state.convs)
    for name in names:
        page = await probe.ok("history", peer=name)
        assert page["messages"] == [] and page["has_more"] is False
    assert len(server.service.state.convs) == before


async def test_reads_are_rate_limited(make_server: ServerFactory, connect: ClientFactory) -> None:
    srv = await make_server(read_rate=5.0, read_burst=10)
    reader = await connect(srv.port)
    await reader.signup("reader", PASSWORD)
    await reader.ok("join", room="general")
    codes = [(await reader.request("history", room="general"))["type"] for _ in range(15)]
    assert codes.count("ok") >= 8 and codes[-1] == "error"  # the join took one token
    err = await reader.error("since", ts=0)
    assert err["code"] == "rate_limited" and err["retry_after"] > 0
    await reader.ok("ping")  # heartbeats are never limited
    with contextlib.suppress(WireError):
        await reader.close()
