"""`parlour chat` subprocesses against a real chat server on 127.0.0.1 (ephemeral port)."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import (
    ADMIN_PASSWORD,
    PASSWORD,
    ChatProcess,
    CuttableProxy,
    LiveServer,
    run_script,
)

from parlour.client import Client


async def history(port: int, room: str) -> list[str | None]:
    async with Client("127.0.0.1", port) as client:
        await client.login("admin", ADMIN_PASSWORD)
        await client.join(room)
        return [m.text for m in (await client.history(room)).messages]


async def test_piped_script_with_signup_then_login(live: LiveServer) -> None:
    code, out, err = await run_script(
        live.port, "/join general\nhello\n", "--user", "alice", "--signup"
    )
    assert code == 0, err
    assert "logged in as alice (member)" in out
    assert "#general <alice> hello [1]" in out
    assert await history(live.port, "general") == ["hello"]
    # the same script again, logging in this time: the room is remembered
    code, out, err = await run_script(live.port, "again\n", "--user", "alice")
    assert code == 0, err
    assert "your rooms: #general" in out and "#general <alice> again [2]" in out


async def test_two_clients_chat_edit_and_block(live: LiveServer, chats: list[ChatProcess]) -> None:
    alice = await ChatProcess.start(live.port, "--user", "alice", "--signup", "--room", "general")
    bob = await ChatProcess.start(live.port, "--user", "bob", "--signup", "--room", "general")
    chats += [alice, bob]
    await alice.expect("you are in #general")
    await bob.expect("you are in #general")
    await alice.send("hello bob")
    assert await bob.expect("<alice> hello bob") == "#general <alice> hello bob [1]"
    await bob.send("@alice psst", "hi alice")
    assert await alice.expect("[DM] bob") == "[DM] bob: psst [1]"
    assert await bob.expect("[DM] you") == "[DM] you → alice: psst [1]"
    await alice.expect("#general <bob> hi alice [2]")
    await bob.send("/edit last hi Alice")
    assert await alice.expect("edited") == "#general * bob edited [2]: hi Alice"
    await alice.send("/delete 1")
    assert await bob.expect("deleted") == "#general * message [1] by alice was deleted"
    # alice blocks bob: his DMs and room messages no longer reach her; carol's do
    await alice.send("/block bob", "/blocks")
    await alice.expect("* you block: bob")
    await bob.send("@alice are you there?", "anyone?")
    await bob.expect("#general <bob> anyone? [3]")
    code, _, err = await run_script(
        live.port, "/join general\nmarker\n", "--user", "carol", "--signup"
    )
    assert code == 0, err
    await alice.expect("#general <carol> marker [4]")
    code, a_out, a_err = await alice.finish()
    assert code == 0, a_err
    assert "are you there" not in a_out and "anyone?" not in a_out
    assert (await bob.finish())[0] == 0
    assert await history(live.port, "general") == [None, "hi Alice", "anyone?", "marker"]


async def test_dm_to_offline_user_arrives_at_next_login(live: LiveServer) -> None:
    code, _, err = await run_script(live.port, "", "--user", "carol", "--signup")
    assert code == 0, err
    code, out, err = await run_script(
        live.port, "@carol are you there?\n@carol call me\n", "--user", "alice", "--signup"
    )
    assert code == 0, err
    assert "[DM] you → carol: are you there? [1]" in out
    code, out, err = await run_script(live.port, "", "--user", "carol")
    assert code == 0, err
    lines = out.splitlines()
    first = lines.index("[DM] alice: are you there? [1]")
    assert lines[first + 1] == "[DM] alice: call me [2]"


async def test_errors_show_the_human_message_and_usage(live: LiveServer) -> None:
    script = (
        "not in a room yet\n/join nowhere\n/kick bob\n/frob\n/edit x\n@alice me\n"
        "/join general\nfine\n"
    )
    code, out, err = await run_script(live.port, script, "--user", "alice", "--signup")
    assert code == 4, (out, err)  # piped, some lines failed
    assert "you are not in a room" in err
    assert "no room named 'nowhere' [unknown_room]" in err
    assert "[forbidden]" in err
    assert "unknown command /frob" in err
    assert "usage: /edit [@user] <seq|last> <text>" in err
    assert "[self_message]" in err
    assert "#general <alice> fine [1]" in out
    code, _, err = await run_script(live.port, "hi\n", "--user", "alice", password="wrong-pass")
    assert code == 1 and "login failed: wrong user name or password" in err
    code, _, err = await run_script(live.port, "", "--user", "alice", "--signup")
    assert code == 1 and "sign-up failed" in err and "taken" in err


async def test_server_going_away_is_reported_and_the_client_reconnects(
    live: LiveServer, chats: list[ChatProcess]
) -> None:
    alice = await ChatProcess.start(live.port, "--user", "alice", "--signup", "--room", "general")
    chats.append(alice)
    await alice.expect("you are in #general")
    await alice.send("before")
    await alice.expect("<alice> before [1]")
    await live.stop()
    await alice.expect("server shutting down")
    await alice.expect("connection to the server lost", stream="err")
    await alice.expect("reconnecting", stream="err")
    await alice.send("typed while the server was down")
    await live.start()  # same port, same data directory
    await alice.expect("reconnected", stream="err")
    await alice.expect("<alice> typed while the server was down [2]")
    code, _, err = await alice.finish()
    assert code == 0, err
    assert await history(live.port, "general") == ["before", "typed while the server was down"]


async def test_admin_kicks_and_bans_from_the_terminal(
    live: LiveServer, chats: list[ChatProcess]
) -> None:
    mallory = await ChatProcess.start(live.port, "--user", "mallory", "--signup")
    chats.append(mallory)
    await mallory.expect("logged in as mallory")
    admin = await ChatProcess.start(live.port, "--user", "admin", password=ADMIN_PASSWORD)
    chats.append(admin)
    await admin.expect("logged in as admin (admin)")
    await admin.send("/kick mallory flooding")
    await admin.expect("* kicked mallory (1 session(s) told)")
    await mallory.expect("you were kicked from the server by admin: flooding")
    code, _, err = await mallory.finish()
    assert code == 3 and "disconnected" in err
    await admin.send("/ban mallory 1h spam", "/bans")
    await admin.expect("* banned mallory")
    await admin.expect("by admin: spam")
    code, _, err = await run_script(live.port, "", "--user", "mallory")
    assert code == 1 and "login failed: you are banned until" in err and "spam" in err
    await admin.send("/unban mallory", "/audit 3")
    await admin.expect("* unbanned mallory")
    await admin.expect("admin unban mallory")
    code, _, err = await run_script(live.port, "", "--user", "mallory", password=PASSWORD)
    assert code == 0, err
    assert (await admin.finish())[0] == 0


async def test_piped_burst_waits_out_the_rate_limit_and_loses_nothing(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data", rate=5.0, burst=1)
    await live.start()
    try:
        lines = [f"line {i}" for i in range(8)]
        script = "/join general\n" + "".join(f"{line}\n" for line in lines)
        # then: too long for the server, too long for a frame, and a byte that is not UTF-8
        odd = ("x" * 4001 + "\n" + "y" * 100_000 + "\n").encode() + b"bad \xff byte\nlast\n"
        code, _, err = await run_script(
            live.port, script.encode() + odd, "--user", "alice", "--signup"
        )
        assert code == 4, err  # the over-long lines failed, the rest went through
        assert "message too long: 4001 characters, the server allows 4000" in err
        assert "message too long: 65536 characters" in err
        assert "rate_limited" not in err
        assert await history(live.port, "general") == [*lines, "bad \ufffd byte", "last"]
    finally:
        await live.stop()


async def test_reconnect_resumes_and_shows_what_was_missed(
    live: LiveServer, chats: list[ChatProcess]
) -> None:
    proxy = CuttableProxy(live.port)
    await proxy.start()
    try:
        alice = await ChatProcess.start(
            proxy.port, "--user", "alice", "--signup", "--room", "general"
        )
        chats.append(alice)
        await alice.expect("you are in #general")
        async with Client("127.0.0.1", live.port) as bob:
            await bob.signup("bob", PASSWORD)
            await bob.join("general")
            await bob.send("general", "before the cut")
            await alice.expect("<bob> before the cut [1]")
            proxy.cut()  # alice's network goes away; the server stays up
            await alice.expect("connection to the server lost", stream="err")
            await bob.send("general", "while you were away")
            await bob.dm("alice", "psst, missed this?")
            proxy.reopen()
            await alice.expect("reconnected", stream="err")
            # offline DMs and missed room messages (their relative order is the server's)
            await alice.expect_all(
                "<bob> while you were away [2]", "[DM] bob: psst, missed this? [1]"
            )
            await alice.send("back")
            await alice.expect("<alice> back [3]")
        code, out, err = await alice.finish()
        assert code == 0, err
        for line in ("before the cut [1]", "while you were away [2]", "missed this? [1]"):
            assert out.count(line) == 1, out  # shown once: no duplicates from the resume
    finally:
        await proxy.close()
