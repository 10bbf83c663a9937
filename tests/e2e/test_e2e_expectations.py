"""What the source designs' users expect of the server, over real sockets (issue 15):
broadcasts reach every registered user, offline mail arrives in the order it was sent, read
positions live on the server, and names may be written in any script."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from e2e_helpers import PASSWORD, ClientFactory, FakeClock, ServerFactory, Wire

UserFactory = Callable[..., Awaitable[Wire]]


async def test_offline_dms_and_broadcasts_arrive_at_login_in_the_order_sent(
    user: UserFactory, connect: ClientFactory, clock: FakeClock
) -> None:
    admin, bob = await user("admin"), await user("bob")
    alice = await user("alice")
    await alice.ok("logout")
    await bob.ok("dm", to="alice", text="dm 1", client_id="d1")
    clock.advance(1)
    await admin.ok("broadcast", text="broadcast 1")
    clock.advance(1)
    await bob.ok("dm", to="alice", text="dm 2", client_id="d2")
    clock.advance(1)
    first = await admin.ok("broadcast", text="broadcast 2")
    carol = await user("carol")  # signed up after the broadcasts: they are not hers
    await carol.roundtrip()
    assert carol.drain_events("broadcast") == []

    alice = await connect()
    await alice.login("alice", PASSWORD)
    await alice.roundtrip()
    got = [e for e in alice.drain_events() if e["event"] in ("dm", "broadcast")]
    assert [e["text"] for e in got] == ["dm 1", "broadcast 1", "dm 2", "broadcast 2"]
    times = [e["ts"] for e in got]
    assert times == sorted(times) and len(set(times)) == 4
    assert got[-1]["seq"] == first["seq"]
    await alice.ok("logout")

    again = await connect()  # delivered once
    await again.login("alice", PASSWORD)
    await again.roundtrip()
    assert [e for e in again.drain_events() if e["event"] in ("dm", "broadcast")] == []


async def test_broadcasts_resume_by_sequence_on_a_new_connection(
    user: UserFactory, connect: ClientFactory
) -> None:
    admin, alice = await user("admin"), await user("alice")
    seqs = [(await admin.ok("broadcast", text=f"b{i}"))["seq"] for i in range(3)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    for i in range(3):
        assert (await alice.event("broadcast"))["text"] == f"b{i}"
    # a second session of alice's that saw only the first one asks for the rest
    other = await connect()
    await other.login("alice", PASSWORD, resume={"rooms": {}, "dms": {}, "broadcasts": seqs[0]})
    await other.roundtrip()
    assert [e["text"] for e in other.drain_events("broadcast")] == ["b1", "b2"]


async def test_who_may_broadcast_is_a_setting(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await make_server(broadcast="everyone")
    alice, bob = await connect(server.port), await connect(server.port)
    await alice.signup("alice", PASSWORD)
    await bob.signup("bob", PASSWORD)
    await alice.ok("broadcast", text="lunch?")
    assert (await bob.event("broadcast"))["from"] == "alice"


async def test_read_positions_are_shared_by_every_session_and_survive_a_restart(
    make_server: ServerFactory, connect: ClientFactory, tmp_path: object
) -> None:
    server = await make_server()
    bob, alice = await connect(server.port), await connect(server.port)
    await bob.signup("bob", PASSWORD)
    await alice.signup("alice", PASSWORD)
    for c in (alice, bob):
        await c.ok("join", room="general")
    texts = ["one", "@alice two", "three"]
    acks = [await bob.ok("send", room="general", text=t, client_id=t) for t in texts]
    await bob.ok("dm", to="alice", text="psst", client_id="p")

    rows = await alice.ok("unread")
    general = next(r for r in rows["rooms"] if r["room"] == "general")
    assert (general["unread"], general["mentions"], general["read_seq"]) == (3, 1, 0)
    assert [(d["peer"], d["unread"], d["mentions"]) for d in rows["dms"]] == [("bob", 1, 1)]

    phone = await connect(server.port)  # alice's second session
    await phone.login("alice", PASSWORD)
    mark = await alice.ok("mark_read", room="general", seq=acks[1]["seq"])
    assert mark == {"room": "general", "seq": acks[1]["seq"]}
    ev = await phone.event("read_marker", room="general")
    assert (ev["peer"], ev["seq"]) == (None, acks[1]["seq"])
    # a marker never moves back; one past the end is the end
    assert (await phone.ok("mark_read", room="general", seq=1))["seq"] == acks[1]["seq"]
    assert (await phone.ok("mark_read", peer="bob", seq=99))["seq"] == 1
    general = next(r for r in (await phone.ok("unread"))["rooms"] if r["room"] == "general")
    assert (general["unread"], general["mentions"]) == (1, 0)
    # own messages and blocked users' messages are not unread
    await alice.ok("send", room="general", text="mine", client_id="m")
    general = next(r for r in (await alice.ok("unread"))["rooms"] if r["room"] == "general")
    assert general["unread"] == 1  # "three"
    await alice.ok("block", user="bob")
    await bob.ok("send", room="general", text="ignored", client_id="i")
    general = next(r for r in (await alice.ok("unread"))["rooms"] if r["room"] == "general")
    assert general["unread"] == 0
    assert (await alice.error("mark_read", room="nowhere", seq=1))["code"] == "unknown_room"
    await alice.ok("leave", room="general")
    assert (await alice.error("mark_read", room="general", seq=1))["code"] == "not_member"
    await alice.ok("join", room="general")

    data_dir = server.settings.data_dir
    await server.stop(grace=1)
    again = await make_server(data_dir=data_dir)
    back = await connect(again.port)
    await back.login("alice", PASSWORD)
    rows = await back.ok("unread")
    general = next(r for r in rows["rooms"] if r["room"] == "general")
    assert general["read_seq"] == acks[1]["seq"]
    assert [(d["peer"], d["read_seq"], d["unread"]) for d in rows["dms"]] == [("bob", 1, 0)]


async def test_names_in_any_script_compared_the_precis_way(
    user: UserFactory, connect: ClientFactory
) -> None:
    dani = await user("דני")
    emile = await user("Émile")
    taken = await connect()
    await taken.hello()
    for variant in ("émile", "ÉMILE", "E\u0301mile"):  # case and composition variants
        refused = await taken.error("signup", username=variant, password=PASSWORD)
        assert refused["code"] == "username_taken", variant
    wide = await connect()
    await wide.hello()
    session = await wide.ok("login", username="ＥＭＩＬＥ".replace("Ｅ", "É", 1), password=PASSWORD)
    assert session["username"] == "Émile"  # the name as it was registered

    admin = await user("admin")
    await admin.ok("room_create", room="חדר")
    assert (await admin.error("room_create", room="חדר"))["code"] == "room_exists"
    await dani.ok("join", room="חדר")
    await emile.ok("join", room="חדר")
    sent = await dani.ok("send", room="חדר", text="שלום", client_id="s")
    ev = await emile.event("message", room="חדר")
    assert (ev["from"], ev["text"], ev["seq"]) == ("דני", "שלום", sent["seq"])
    await emile.ok("dm", to="דני", text="hi", client_id="d")
    assert (await dani.event("dm"))["peer"] == "Émile"

    for bad, why in [("pаypal", "mixes scripts"), ("a\u200bb", "ZERO WIDTH SPACE")]:
        err = await taken.error("signup", username=bad, password=PASSWORD)
        assert err["code"] == "invalid_field" and why in err["message"]
        err = await dani.error("join", room=bad)
        assert err["code"] == "invalid_field" and why in err["message"]
