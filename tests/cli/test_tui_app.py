"""The full-screen client driven headless (Textual's pilot) against a real chat server
(ChatTestServer: the real core and TCP door on 127.0.0.1). No sleeps: every wait is on a
real condition (the model, the screen, or what the server stored)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from textual import events
from tui_helpers import PASSWORD, screen, shows, tui, type_text, until, user

from parlour.cli.tui.widgets import BufferListView
from parlour.client import Client
from parlour.server.testing import ChatTestServer


@pytest.fixture
async def srv() -> AsyncIterator[ChatTestServer]:
    async with ChatTestServer(rooms=("general", "random")) as server:
        for name in ("alice", "bob", "carol"):
            await server.add_user(name, PASSWORD)
        yield server


# ---------------------------------------------------------------------- login


async def test_login_shows_unread_counts_and_what_was_missed(srv: ChatTestServer) -> None:
    async with user(srv, "alice", "general", "random") as alice:
        first = await alice.send("general", "before I left")
        await alice.mark_read(first.seq, "general")
    async with user(srv, "bob", "general", "random") as bob:
        for i in range(5):
            await bob.send("general", f"missed {i}" + (" @alice look" if i == 3 else ""))
        await bob.send("random", "random one")
        await bob.send("random", "random two")
        await bob.dm("alice", "psst")
    async with tui(srv) as (app, pilot):
        general = app.buffers.room("general")
        rnd = app.buffers.room("random")
        dm = app.buffers.dm("bob")
        assert general is not None and rnd is not None and dm is not None
        assert (rnd.unread, rnd.mentions) == (2, 0)
        assert (dm.unread, dm.mentions) == (1, 1)
        server_notes = [e.text or "" for e in app.buffers.server.entries]
        assert any(
            "while you were away" in n and "#general 5, 1 for you" in n for n in server_notes
        )
        # the first buffer with mentions is shown, from the read marker on
        assert app.buffers.current is general
        await until(pilot, lambda: shows(app, "new messages"))
        lines = screen(app)
        marker = next(i for i, line in enumerate(lines) if "new messages" in line)
        assert "before I left" in lines[marker - 1] and "missed 0" in lines[marker + 1]
        # seeing them moves the read position on the server
        await until(pilot, lambda: general.unread == 0)
        async with user(srv, "alice") as other:
            rows = {r.room or r.peer: r for r in await other.unread()}
            assert rows["general"].read_seq == rows["general"].last_seq
            assert rows["random"].unread == 2  # not shown yet: still unread
        # the hotlist and the status bar name the other buffers with activity
        status = app.query_one("#status").render()
        assert "Act:" in str(status) and "@bob(1,1!)" in str(status)


async def test_a_second_session_moves_the_read_marker(srv: ChatTestServer) -> None:
    async with user(srv, "bob", "general", "random") as bob:
        await bob.send("general", "one")
        async with user(srv, "alice", "general", "random"), tui(srv, room="random") as (app, pilot):
            general = app.buffers.room("general")
            assert general is not None and app.buffers.current is app.buffers.room("random")
            await until(pilot, lambda: general.unread == 1)
            two = await bob.send("general", "two")
            await until(pilot, lambda: general.unread == 2)
            async with user(srv, "alice") as phone:  # alice reads on her phone
                await phone.mark_read(two.seq, "general")
                await until(pilot, lambda: general.unread == 0 and general.marker_seq == two.seq)
            await pilot.press("alt+2")
            assert app.buffers.current is general
            await until(pilot, lambda: shows(app, "two"))
            assert not shows(app, "new messages")


# ---------------------------------------------------------------------- scrollback


async def test_scrolling_up_pages_older_history_by_sequence(srv: ChatTestServer) -> None:
    async with user(srv, "bob", "general") as bob:
        for i in range(260):
            await bob.send("general", f"message {i}")
    async with user(srv, "alice", "general") as alice:
        await alice.mark_read(10_000, "general")  # all read: the view starts at the bottom
    async with tui(srv, room="general", page=40) as (app, pilot):
        general = app.buffers.room("general")
        assert general is not None and app.buffers.current is general
        assert shows(app, "message 259")
        first = general.first_seq
        assert first is not None and first > 1 and general.has_older
        while not shows(app, "message 0 "):
            await pilot.press("pageup")
            await pilot.pause()
        assert general.first_seq == 1 and not general.has_older
        befores = [r["before"] for r in srv.requests_of("history") if r.get("before")]
        assert befores and befores == sorted(befores, reverse=True)  # each page older
        assert len(general) == 260
        status = str(app.query_one("#status").render())
        assert "-MORE(" in status
        await pilot.press("alt+end")
        await until(pilot, lambda: shows(app, "message 259"))


async def test_resize_rewraps_the_visible_lines(srv: ChatTestServer) -> None:
    long = "lorem ipsum dolor sit amet " * 6
    async with user(srv, "bob", "general") as bob:
        await bob.send("general", long.strip())
        await bob.send("general", "last line")
    async with tui(srv, room="general") as (app, pilot):
        await until(pilot, lambda: shows(app, "last line"))
        wide = [line for line in screen(app) if "lorem" in line]
        await pilot.resize_terminal(70, 24)
        await until(pilot, lambda: app.log_view.size.width < 60)
        narrow = [line for line in screen(app) if "lorem" in line]
        assert len(narrow) > len(wide)
        assert all(len(line) == app.log_view.size.width for line in screen(app))
        assert shows(app, "last line")
        assert not app.query_one("#members").display  # too narrow for the member list
        await pilot.resize_terminal(50, 20)
        await until(pilot, lambda: not app.query_one("#buffers").display)
        assert app.log_view.size.width == 50 and shows(app, "last line")


# ---------------------------------------------------------------------- input


async def test_multi_line_paste_is_sent_as_one_message(srv: ChatTestServer) -> None:
    async with tui(srv, room="general") as (app, pilot):
        pasted = "first line\nsecond line\n  indented third"
        app.post_message(events.Paste(pasted))
        await until(pilot, lambda: app.input.text == pasted)
        await pilot.press("enter")
        await srv.wait_for(lambda: bool(srv.room_messages("general")))
        assert [m.text for m in srv.room_messages("general")] == [pasted]
        await until(pilot, lambda: shows(app, "second line"))
        # alt+enter adds a line by hand; Up recalls what was sent
        await type_text(pilot, "a")
        await pilot.press("ctrl+j")
        await type_text(pilot, "b")
        assert app.input.text == "a\nb"
        app.input.load_text("")
        await pilot.press("up")
        assert app.input.text == pasted


async def test_completion_of_names_rooms_and_commands(srv: ChatTestServer) -> None:
    async with (
        user(srv, "carol", "general") as carol,
        user(srv, "bob", "general") as bob,
        tui(srv, room="general") as (app, pilot),
    ):
        await carol.send("general", "hi")
        await bob.send("general", "hello")  # bob spoke last: offered first
        general = app.buffers.room("general")
        assert general is not None
        await until(pilot, lambda: len(general) >= 2 and general.speakers()[:2] == ["bob", "carol"])
        await type_text(pilot, "thanks ")
        await pilot.press("tab")
        assert app.input.text == "thanks bob "
        await pilot.press("tab")
        assert app.input.text == "thanks carol "
        app.input.load_text("")
        await type_text(pilot, "/jo")
        await pilot.press("tab")
        assert app.input.text == "/join "
        await type_text(pilot, "ra")
        await pilot.press("tab")
        assert app.input.text == "/join random "
        await pilot.press("enter")
        await until(pilot, lambda: app.buffers.current is app.buffers.room("random"))


async def test_user_strings_are_never_markup(srv: ChatTestServer) -> None:
    evil = "[bold red]x[/] [link=https://evil.example]click[/link] [@click=app.quit]q[/]"
    async with user(srv, "bob", "general") as bob, tui(srv, room="general") as (app, pilot):
        await bob.send("general", evil)
        await until(pilot, lambda: shows(app, "[bold red]x[/]"))
        assert shows(app, "[link=https://evil.example]click[/link]")
        assert app.is_running
        for strip in app.log_view.lines():
            for segment in strip:
                assert segment.style is None or segment.style.link is None


# ---------------------------------------------------------------------- live changes


async def test_edits_deletions_and_mentions_show_in_place(srv: ChatTestServer) -> None:
    async with user(srv, "alice", "general", "random"):
        pass
    async with (
        user(srv, "bob", "general", "random") as bob,
        tui(srv, room="general") as (app, pilot),
    ):
        ack = await bob.send("general", "tpyo here")
        await until(pilot, lambda: shows(app, "tpyo here"))
        await bob.edit(ack.seq, "typo fixed", room="general")
        await until(pilot, lambda: shows(app, "typo fixed (edited)"))
        assert not shows(app, "tpyo")
        await bob.delete(ack.seq, room="general")
        await until(pilot, lambda: shows(app, "(message deleted)"))
        await bob.send("random", "@alice over here")
        rnd = app.buffers.room("random")
        assert rnd is not None
        await until(pilot, lambda: rnd.mentions == 1)
        await pilot.press("alt+a")  # jump to the buffer that mentions you
        assert app.buffers.current is rnd


async def test_member_list_follows_presence(srv: ChatTestServer) -> None:
    async with tui(srv, room="general") as (app, pilot):
        general = app.buffers.room("general")
        assert general is not None
        async with user(srv, "carol", "general"):
            await until(pilot, lambda: "carol" in general.online)
            assert "carol" in str(app.query_one("#members").render())
        await until(pilot, lambda: "carol" not in general.online)


async def test_commands_help_dm_buffers_and_errors(srv: ChatTestServer) -> None:
    async with tui(srv, room="general") as (app, pilot):

        async def run(line: str) -> None:
            await type_text(pilot, line)
            await pilot.press("enter")

        await run("/help ban")
        await until(pilot, lambda: shows(app, "/ban <user> [duration] [reason]"))
        await run("/nonsense")
        await until(pilot, lambda: shows(app, "unknown command /nonsense"))
        await run("/rooms")  # a line-mode command: its output lands in this buffer
        await until(pilot, lambda: shows(app, "#random"))
        await run("/kick bob")
        await until(pilot, lambda: shows(app, "[forbidden]"))
        await run("/query bob hello bob")
        await srv.wait_for(lambda: bool(srv.dm_messages("alice", "bob")))
        dm = app.buffers.dm("bob")
        assert app.buffers.current is dm and dm is not None
        await until(pilot, lambda: shows(app, "hello bob"))
        await run("/edit last hello, Bob")  # in a DM buffer no @user is needed
        await until(pilot, lambda: shows(app, "hello, Bob (edited)"))
        await run("plain text goes to bob")
        await srv.wait_for(lambda: len(srv.dm_messages("alice", "bob")) == 2)
        await run("/close")
        await until(pilot, lambda: app.buffers.dm("bob") is None)


async def test_reconnect_is_shown_in_the_status_bar(srv: ChatTestServer) -> None:
    async with tui(srv, room="general") as (app, pilot):
        await srv.stop()
        await until(pilot, lambda: app.connection.startswith(("reconnecting", "disconnected")))
        assert app.connection in str(app.query_one("#status").render())
        await srv.start()
        await until(pilot, lambda: app.connection == "connected", timeout=30)
        assert app.is_running


async def test_broadcasts_reach_the_server_buffer_and_a_toast_literally(
    srv: ChatTestServer,
) -> None:
    from textual.widgets._toast import Toast

    async with tui(srv, room="general") as (app, pilot):
        async with Client("127.0.0.1", srv.port) as admin:
            await admin.login("admin", srv.admin_password)
            await admin.broadcast("[bold]restart[/bold] at 22:00")
        server = app.buffers.server
        await until(pilot, lambda: server.mentions == 1)
        assert any("[bold]restart[/bold] at 22:00" in (e.text or "") for e in server.entries)
        await until(pilot, lambda: bool(app.screen.query(Toast)))
        shown = str(app.screen.query(Toast).first().render())
        assert "[bold]restart[/bold] at 22:00" in shown
        await pilot.press("alt+1")
        assert app.buffers.current is server and server.mentions == 0


async def test_a_long_buffer_list_scrolls_to_the_current_buffer() -> None:
    rooms = tuple(f"room{n:02}" for n in range(30))
    async with ChatTestServer(rooms=rooms) as server:
        await server.add_user("alice", PASSWORD)
        async with user(server, "alice", *rooms):
            pass
        async with tui(server, size=(100, 14)) as (app, pilot):
            view = app.query_one("#buffers", BufferListView)
            # every room's buffer is there (they open as the login's catch-up arrives)
            await until(
                pilot,
                lambda: {b.target.label.lstrip("#") for b in app.buffers.ordered()} >= set(rooms),
            )
            assert len(app.buffers.ordered()) > view.size.height > 0

            def listed() -> list[str]:
                return str(view.render()).splitlines()

            last = app.buffers.ordered()[-1]
            await type_text(pilot, f"/buffer {len(app.buffers.ordered())}")
            await pilot.press("enter")
            await until(pilot, lambda: app.buffers.current is last)
            await until(pilot, lambda: any(last.target.label in line for line in listed()))
            assert view.top > 0 and len(listed()) == view.size.height
            # a click picks the buffer on that line, counted from the first one shown
            first_shown = app.buffers.ordered()[view.top]
            await pilot.click("#buffers", offset=(4, 0))
            await until(pilot, lambda: app.buffers.current is first_shown)
            await type_text(pilot, "/buffer 1")
            await pilot.press("enter")
            await until(pilot, lambda: view.top == 0 and "1 " in listed()[0])


def test_the_buffer_window_follows_the_current_buffer_only_when_it_changes() -> None:
    from parlour.cli.tui.buffers import BufferList

    view = BufferListView(BufferList("alice"))
    assert view.window(5, 4, 10) == 0  # everything fits
    assert view.window(30, 25, 10) == 16  # moved to show the current one (the list changed)
    view.top = 16
    view._shown_current = view.buffers.current  # nothing changed since: a scroll stays
    assert view.window(30, 0, 10) == 16
    assert view.window(30, 0, 40) == 0
