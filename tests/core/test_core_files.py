"""File-transfer brokering in the core: probes, offers, acceptance, the ends of an offer,
blocking, expiry, limits — sans-I/O, with the harness's deterministic random draws."""

from __future__ import annotations

import base64
from typing import Any

from core_harness import Harness, tickets_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parlour.core.config import CoreConfig
from parlour.core.outcome import ToConns, ToUsers
from parlour.protocol import Error, Event

SHA = "ab" * 32
RELAY = ("relay.example", 7878)


def harness(**config: Any) -> Harness:
    base: dict[str, Any] = {
        "rate_per_second": 1000.0,
        "rate_burst": 1000.0,
        "file_relay": RELAY,
        "duplicate_login": "allow",
    }
    base.update(config)
    return Harness(CoreConfig(**base))


def offer(h: Harness, conn: int, to: str = "bob", **fields: Any) -> dict[str, Any]:
    body = {"to": to, "filename": "holiday.mp4", "size": 1234, "sha256": SHA}
    body.update(fields)
    return h.ok(conn, "file_offer", **body)


def events(h: Harness, conn: int, name: str) -> list[Event]:
    return h.take(conn, name)


def test_a_probe_token_records_the_observed_endpoint_once() -> None:
    h = harness()
    alice = h.signup("alice")
    data = h.ok(alice, "file_probe")
    assert data["relay"] == {"host": "relay.example", "port": 7878}
    token = base64.urlsafe_b64decode(data["token"] + "==")
    assert len(token) == 16
    assert h.svc.udp_probe(token, ("198.51.100.7", 40001), h.now)
    assert h.svc.offers.observed[alice] == ("198.51.100.7", 40001)
    # the same datagram again (a retry) is fine; from elsewhere (copied off the path) it is not
    assert h.svc.udp_probe(token, ("198.51.100.7", 40001), h.now)
    assert not h.svc.udp_probe(token, ("203.0.113.9", 5000), h.now)
    assert h.svc.offers.observed[alice] == ("198.51.100.7", 40001)
    assert not h.svc.udp_probe(b"x" * 16, ("203.0.113.9", 5000), h.now)
    # a new token replaces the old one (the client's address changed)
    fresh = base64.urlsafe_b64decode(h.ok(alice, "file_probe")["token"] + "==")
    assert fresh != token
    assert not h.svc.udp_probe(token, ("198.51.100.7", 40001), h.now)
    assert h.svc.udp_probe(fresh, ("203.0.113.9", 5000), h.now)
    assert h.svc.offers.observed[alice] == ("203.0.113.9", 5000)
    # the session ends: token and endpoint go
    h.ok(alice, "logout")
    assert alice not in h.svc.offers.observed
    assert not h.svc.udp_probe(fresh, ("203.0.113.9", 5000), h.now)
    assert not h.svc.offers.probes


def test_without_a_relay_the_probe_says_so_and_grants_have_no_tickets() -> None:
    h = harness(file_relay=None)
    alice, bob = h.signup("alice"), h.signup("bob")
    assert h.ok(alice, "file_probe")["relay"] is None
    oid = offer(h, alice)["offer"]
    grant = h.ok(bob, "file_accept", offer=oid)
    assert grant["relay"] is None
    [accepted] = events(h, alice, "file_accepted")
    assert accepted["relay"] is None


def test_an_offer_reaches_every_session_of_the_target_and_only_them() -> None:
    h = harness()
    alice, bob, bob2, carol = h.signup("alice"), h.signup("bob"), h.login("bob"), h.signup("carol")
    data = offer(h, alice, endpoints=[{"host": "192.168.1.20", "port": 5000}])
    assert data["to"] == "bob"
    assert data["expires"] == h.now + CoreConfig().file_offer_ttl
    for conn in (bob, bob2):
        [ev] = events(h, conn, "file_offer")
        assert ev["offer"] == data["offer"]
        assert ev["from"] == "alice"
        assert (ev["filename"], ev["size"], ev["sha256"]) == ("holiday.mp4", 1234, SHA)
        assert ev["expires"] == data["expires"]
    assert events(h, carol, "file_offer") == []
    assert events(h, alice, "file_offer") == []
    # addressed logically, so that another node can resolve it (issue 16's bus)
    [delivery] = [d for d in h.outcomes[-1].deliveries if d.event.name == "file_offer"]
    assert delivery.address == ToUsers(("bob",))


def test_offers_need_an_online_existing_other_user_and_valid_fields() -> None:
    h = harness()
    alice = h.signup("alice")
    h.register("bob")
    err = h.err(alice, "file_offer", to="bob", filename="a", size=1, sha256=SHA)
    assert err.code == "user_offline" and err.extra["user"] == "bob"
    assert h.err(alice, "file_offer", to="ghost", filename="a", size=1, sha256=SHA).code == (
        "unknown_user"
    )
    assert h.err(alice, "file_offer", to="alice", filename="a", size=1, sha256=SHA).code == (
        "self_message"
    )
    for bad in (
        {"filename": "../etc/passwd"},
        {"filename": "a\x1b[2Jb"},
        {"filename": "x" * 256},
        {"size": -1},
        {"size": 2**48},
        {"sha256": "zz" * 32},
        {"endpoints": [{"host": "example.com", "port": 1}]},
        {"endpoints": [{"host": "10.0.0.1", "port": 0}]},
        {"endpoints": [{"host": "0.0.0.0", "port": 80}]},
        {"endpoints": [{"host": "10.0.0.1", "port": p} for p in range(1, 10)]},
    ):
        body: dict[str, Any] = {"to": "alice", "filename": "a", "size": 1, "sha256": SHA}
        body.update(bad)
        assert h.err(alice, "file_offer", **body).code == "invalid_field", bad


def test_accept_hands_both_sides_one_fresh_key_and_each_others_endpoints() -> None:
    h = harness()
    alice, bob = h.signup("alice"), h.signup("bob")
    for conn, addr in ((alice, ("198.51.100.1", 40000)), (bob, ("203.0.113.2", 50000))):
        token = base64.urlsafe_b64decode(h.ok(conn, "file_probe")["token"] + "==")
        assert h.svc.udp_probe(token, addr, h.now)
    oid = offer(h, alice, endpoints=[["192.168.1.20", 5000], ["198.51.100.1", 40000]])["offer"]
    events(h, bob, "file_offer")
    grant = h.ok(bob, "file_accept", offer=oid, endpoints=[{"host": "10.0.0.5", "port": 6000}])
    [accepted] = events(h, alice, "file_accepted")
    assert events(h, bob, "file_accepted") == []
    assert accepted["offer"] == grant["offer"] == oid and accepted["by"] == "bob"
    assert accepted["transfer"] == grant["transfer"] and accepted["key"] == grant["key"]
    tid = bytes.fromhex(grant["transfer"])
    assert len(tid) == 8 and len(base64.b64decode(grant["key"])) == 32
    # the receiver gets the sender's observed endpoint first, then its reported ones (no repeat)
    assert grant["peers"] == [
        {"host": "198.51.100.1", "port": 40000},
        {"host": "192.168.1.20", "port": 5000},
    ]
    assert accepted["peers"] == [
        {"host": "203.0.113.2", "port": 50000},
        {"host": "10.0.0.5", "port": 6000},
    ]
    send_ticket, receive_ticket = tickets_for(tid)
    assert accepted["relay"] == {
        "host": "relay.example",
        "port": 7878,
        "ticket": base64.b64encode(send_ticket).decode(),
    }
    assert grant["relay"]["ticket"] == base64.b64encode(receive_ticket).decode()
    # only the offering session gets the key, by its connection
    [delivery] = [d for d in h.outcomes[-1].deliveries if d.event.name == "file_accepted"]
    assert delivery.address == ToConns((alice,)) and delivery.to == (alice,)
    # accepting again (a resume) gives a new attempt: a new id and a new key
    again = h.ok(bob, "file_accept", offer=oid)
    assert again["transfer"] != grant["transfer"] and again["key"] != grant["key"]
    [second] = events(h, alice, "file_accepted")
    assert second["transfer"] == again["transfer"]
    assert second["peers"] == [{"host": "203.0.113.2", "port": 50000}]


def test_only_the_target_may_accept_or_decline() -> None:
    h = harness()
    alice, bob, carol = h.signup("alice"), h.signup("bob"), h.signup("carol")
    oid = offer(h, alice)["offer"]
    for conn in (alice, carol):
        for kind in ("file_accept", "file_decline"):
            err = h.err(conn, kind, offer=oid)
            assert err.code == "unknown_offer" and err.extra["offer"] == oid
    assert h.err(bob, "file_cancel", offer=oid).code == "unknown_offer"
    assert h.err(carol, "file_done", offer=oid).code == "unknown_offer"
    assert h.err(bob, "file_accept", offer="nope").code == "unknown_offer"
    assert h.ok(bob, "file_accept", offer=oid)["offer"] == oid


def _ended(h: Harness, conn: int) -> list[tuple[str, str | None]]:
    return [(e["reason"], e["by"]) for e in events(h, conn, "file_ended")]


def test_decline_cancel_and_done_end_the_offer_for_both_sides() -> None:
    h = harness()
    alice, bob, bob2 = h.signup("alice"), h.signup("bob"), h.login("bob")
    declined = offer(h, alice)["offer"]
    assert h.ok(bob, "file_decline", offer=declined) == {"offer": declined}
    assert _ended(h, alice) == [("declined", "bob")]
    assert _ended(h, bob2) == [("declined", "bob")] == _ended(h, bob)  # all of bob's sessions
    assert h.err(bob, "file_accept", offer=declined).code == "unknown_offer"

    cancelled = offer(h, alice)["offer"]
    h.ok(bob2, "file_accept", offer=cancelled)
    assert h.ok(alice, "file_cancel", offer=cancelled) == {"offer": cancelled}
    assert _ended(h, bob) == [("cancelled", "alice")] == _ended(h, bob2)
    assert h.err(bob, "file_accept", offer=cancelled).code == "unknown_offer"

    done = offer(h, alice)["offer"]
    h.ok(bob, "file_accept", offer=done)
    assert h.ok(bob, "file_done", offer=done) == {"offer": done}
    assert _ended(h, alice)[-1] == ("done", "bob")
    assert h.err(alice, "file_done", offer=done).code == "unknown_offer"
    assert len(h.svc.offers) == 0


def test_offers_expire_with_an_event_to_both_sides() -> None:
    h = harness(file_offer_ttl=60.0)
    alice, bob = h.signup("alice"), h.signup("bob")
    oid = offer(h, alice)["offer"]
    h.advance(59)
    h.apply(h.svc.tick(h.now))
    assert len(h.svc.offers) == 1 and _ended(h, alice) == []
    h.advance(1)
    h.apply(h.svc.tick(h.now))
    assert _ended(h, alice) == [("expired", None)] == _ended(h, bob)
    assert h.err(bob, "file_accept", offer=oid).code == "unknown_offer"
    assert len(h.svc.offers) == 0


def test_when_the_offering_session_ends_its_offers_end() -> None:
    h = harness()
    alice, alice2, bob = h.signup("alice"), h.login("alice"), h.signup("bob")
    gone = offer(h, alice)["offer"]
    stays = offer(h, alice2)["offer"]
    h.apply(h.svc.disconnect(alice, h.now, "bye"))
    assert _ended(h, bob) == [("offline", "alice")]
    assert set(h.svc.offers.by_id) == {stays}
    assert h.err(bob, "file_accept", offer=gone).code == "unknown_offer"
    # the target going offline does not end it: it may come back and accept (resume)
    h.apply(h.svc.disconnect(bob, h.now, "crash"))
    assert set(h.svc.offers.by_id) == {stays}


def test_a_new_session_of_the_target_is_shown_the_open_offers() -> None:
    h = harness()
    alice, bob = h.signup("alice"), h.signup("bob")
    first = offer(h, alice, filename="a.txt")["offer"]
    second = offer(h, alice, filename="b.txt")["offer"]
    h.apply(h.svc.disconnect(bob, h.now, "crash"))
    again = h.login("bob")
    shown = [(e["offer"], e["filename"]) for e in events(h, again, "file_offer")]
    assert shown == [(first, "a.txt"), (second, "b.txt")]
    h.ok(again, "file_accept", offer=first)


def test_an_offer_from_a_blocked_user_is_answered_but_never_reaches_the_blocker() -> None:
    h = harness(file_offer_ttl=30.0)
    alice, bob = h.signup("alice"), h.signup("bob")
    h.ok(bob, "block", user="alice")
    data = offer(h, alice)
    oid = data["offer"]
    assert data["to"] == "bob"  # exactly like any offer: alice cannot tell
    assert events(h, bob, "file_offer") == []
    assert h.err(bob, "file_accept", offer=oid).code == "unknown_offer"
    assert h.err(bob, "file_decline", offer=oid).code == "unknown_offer"
    later = h.login("bob")
    assert events(h, later, "file_offer") == []
    h.advance(30)
    h.apply(h.svc.tick(h.now))
    assert _ended(h, alice) == [("expired", None)]  # as if ignored
    assert _ended(h, bob) == [] == _ended(h, later)
    # the blocked user may still withdraw it; nothing reaches the blocker then either
    oid = offer(h, alice)["offer"]
    h.ok(alice, "file_cancel", offer=oid)
    assert _ended(h, bob) == []


def test_offers_are_bounded_per_sender_per_target_and_in_all() -> None:
    h = harness(file_offers_per_user=2, file_offers_per_target=3, file_offers_max=4)
    alice, bob, carol, dave = (
        h.signup("alice"),
        h.signup("bob"),
        h.signup("carol"),
        h.signup("dave"),
    )
    offer(h, alice)
    offer(h, alice)
    err = h.err(alice, "file_offer", to="bob", filename="x", size=1, sha256=SHA)
    assert err.code == "too_many_offers" and err.extra["limit"] == 2
    offer(h, carol)
    err = h.err(dave, "file_offer", to="bob", filename="x", size=1, sha256=SHA)
    assert err.code == "too_many_offers" and err.extra["limit"] == 3
    offer(h, dave, to="carol")
    err = h.err(dave, "file_offer", to="alice", filename="x", size=1, sha256=SHA)
    assert err.code == "too_many_offers" and err.extra["limit"] == 4
    # an offer that ends frees its place
    oid = next(iter(h.svc.offers.by_id))
    h.ok(bob, "file_decline", offer=oid)
    offer(h, dave, to="alice")


def test_offers_and_acceptances_are_rate_limited_like_messages() -> None:
    h = harness(rate_per_second=1.0, rate_burst=2.0)
    alice, bob = h.signup("alice"), h.signup("bob")
    oid = offer(h, alice)["offer"]
    offer(h, alice)
    err = h.err(alice, "file_offer", to="bob", filename="x", size=1, sha256=SHA)
    assert err.code == "rate_limited" and err.extra["retry_after"] > 0
    h.ok(bob, "file_accept", offer=oid)
    h.ok(bob, "file_accept", offer=oid)
    assert h.err(bob, "file_accept", offer=oid).code == "rate_limited"
    h.advance(1.0)
    h.ok(bob, "file_accept", offer=oid)


def test_file_transfers_can_be_disabled() -> None:
    h = harness(file_transfers=False)
    alice = h.signup("alice")
    h.signup("bob")
    for kind, fields in (
        ("file_probe", {}),
        ("file_offer", {"to": "bob", "filename": "a", "size": 1, "sha256": SHA}),
        ("file_accept", {"offer": "x"}),
    ):
        err = h.err(alice, kind, **fields)
        assert err.code == "forbidden", kind


def test_a_send_costs_the_same_with_offers_open() -> None:
    """The chat hot path is untouched: a room message's outcome does not change with open
    offers (no extra deliveries, the cached fan-out tuple is used)."""
    h = harness()
    alice, bob = h.signup("alice"), h.signup("bob")
    h.ok(alice, "join", room="general")
    h.ok(bob, "join", room="general")
    offer(h, alice)
    h.ok(alice, "send", room="general", text="hi", client_id="c1")
    out = h.outcomes[-1]
    assert [d.event.name for d in out.deliveries] == ["message"]


# ------------------------------------------------------------------------ a model, driven


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["offer", "accept", "decline", "cancel", "done", "drop", "login", "tick", "block"]
        ),
        st.integers(0, 3),
        st.integers(0, 3),
        st.integers(0, 7),
    ),
    max_size=40,
)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_offer_tables_stay_consistent_and_bounded(ops: list[tuple[str, int, int, int]]) -> None:
    """Whatever happens, the offer tables agree with each other, stay within their limits,
    an offer ends at most once, and only the parties ever hear of it."""
    h = harness(file_offer_ttl=5.0, file_offers_per_user=3, file_offers_per_target=4)
    names = ["u0", "u1", "u2", "u3"]
    conns: dict[str, list[int]] = {n: [h.signup(n)] for n in names}
    made: dict[str, tuple[str, str]] = {}  # offer id -> (sender, target)
    ended: dict[str, int] = {}
    for op, i, j, k in ops:
        a, b = names[i], names[j]
        ca = conns[a][k % len(conns[a])] if conns[a] else None
        offers = list(h.svc.offers.by_id)
        pick = offers[k % len(offers)] if offers else "none"
        if op == "offer" and ca is not None:
            reply = h.request(ca, "file_offer", to=b, filename="f", size=k, sha256=SHA)
            if not isinstance(reply, Error):
                made[reply.data["offer"]] = (a, b)
        elif op in ("accept", "decline", "cancel", "done") and ca is not None:
            h.request(ca, f"file_{op}", offer=pick)
        elif op == "drop" and ca is not None:
            conns[a].remove(ca)
            h.apply(h.svc.disconnect(ca, h.now, "gone"))
        elif op == "login":
            conns[a].append(h.login(a))
        elif op == "tick":
            h.advance(k)
            h.apply(h.svc.tick(h.now))
        elif op == "block" and ca is not None and a != b:
            h.request(ca, "block", user=b)
        table = h.svc.offers
        for name in names:
            mine = [o for o in table.by_id.values() if o.sender == name]
            assert table.sent_by(name) == len(mine) <= 3
            assert table.waiting_for(name) <= 4
            assert all(o.conn in h.svc.sessions.conns for o in mine)  # no orphan offers
            assert all(o.expires > h.now for o in mine)
    for out in h.outcomes:
        for d in out.deliveries:
            if d.event.name in ("file_offer", "file_ended", "file_accepted"):
                oid = d.event["offer"]
                sender, target = made[oid]
                for conn in d.to:
                    owner = h.svc.session_user(conn)
                    assert owner is None or owner in (sender, target), (d.event, owner)
                if d.event.name == "file_ended" and isinstance(d.address, ToConns):
                    ended[oid] = ended.get(oid, 0) + 1
    assert all(count == 1 for count in ended.values()), ended
