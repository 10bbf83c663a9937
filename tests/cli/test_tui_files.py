"""Peer-to-peer files in the full-screen client: `/send-file`, `/accept`, `/decline`,
`/cancel`, `/transfers` driven through Textual's pilot against a real chat server
(ChatTestServer, with its UDP relay); the files go between the clients over real UDP on
127.0.0.1. Stalls are made by a transfer manager that drops datagrams (a firewall), never
by timing; every wait is on a condition (the model, the screen, a transfer's end).

The pure parts (the throttle of progress lines, the display over a plain model, completion
of offer numbers, the shared wording) are tested first, without a network."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_helpers import PASSWORD, shows, tui, type_text, until, user

from parlour.cli._filetext import bar, percent, progress_line, unprefixed
from parlour.cli.tui.app import ChatTui
from parlour.cli.tui.buffers import Buffer, BufferKind, BufferList, Entry, EntryKind, Target
from parlour.cli.tui.completion import candidates
from parlour.cli.tui.transfers import Throttle, TuiTransfers
from parlour.client import Client, FileResult, Transfer, TransferOptions
from parlour.p2p import Progress, TransferConfig, TransferManager
from parlour.p2p.testing import FilteredManager
from parlour.p2p.wire import Kind
from parlour.protocol import Event, EventName
from parlour.server.testing import ChatTestServer

TIMEOUT = 30


# ---------------------------------------------------------------------- pure parts


def test_the_throttle_allows_one_draw_per_interval() -> None:
    th = Throttle(0.25)
    assert th.delay(100.0) == 0.0  # the first draw is immediate
    th.drew(100.0)
    assert th.delay(100.0) == pytest.approx(0.25)
    assert th.delay(100.2) == pytest.approx(0.05)
    assert th.delay(100.25) == 0.0
    th.drew(100.3)
    assert th.delay(100.31) == pytest.approx(0.24)


def test_progress_words() -> None:
    assert percent(0, 10) == 0 and percent(999, 1000) == 99 and percent(1000, 1000) == 100
    assert percent(0, 0) == 100
    assert bar(0, 100, 4) == "░░░░" and bar(50, 100, 4) == "██░░" and bar(100, 100, 4) == "████"
    assert unprefixed("! x") == ("x", True) and unprefixed("* y") == ("y", False)
    assert unprefixed("plain") == ("plain", False)


class FakeHost:
    """The display's host over a plain model (no screen)."""

    def __init__(self) -> None:
        self.buffers = BufferList("alice")
        self.output_buffer: Buffer = self.buffers.open(Target(BufferKind.DM, "bob"))
        self.toasts: list[str] = []
        self.rewritten = asyncio.Event()

    def notice(self, text: str, *, error: bool = False, buffer: Buffer | None = None) -> Entry:
        kind = EntryKind.ERROR if error else EntryKind.NOTICE
        return (buffer or self.buffers.current).note(text, 0.0, kind)

    def rewrite(self, entry: Entry, text: str, *, buffer: Buffer | None = None) -> None:
        assert buffer is not None
        buffer.rewrite(entry, text)
        self.rewritten.set()

    def toast(self, text: str, *, title: str) -> None:
        self.toasts.append(f"{title}: {text}")


def report(done: int, total: int = 10_000_000, *, relay: bool = False) -> Progress:
    return Progress(b"t" * 8, "send", done, total, 1_000_000.0, (total - done) / 1e6, relay)


async def test_progress_lines_are_throttled_and_the_newest_figures_win() -> None:
    host = FakeHost()
    view = TuiTransfers(host, lambda: Client("127.0.0.1", 1).files)
    dm = host.output_buffer
    host.buffers.switch(dm)  # (out of sight: next test)
    t = Transfer(
        direction="send",
        number=7,
        offer="o",
        peer="bob",
        filename="big[1].iso",
        size=10_000_000,
        sha256="ab" * 32,
    )
    view.follow(t)
    assert t.on_progress is not None and t.on_notice is not None
    for done in range(0, 5_000_000, 50_000):  # a hundred reports at once
        t.on_progress(report(done))
    assert view.draws == 1  # the first at once, the others wait for the interval
    (line,) = [e for e in dm.entries if e.text and "[file 7]" in e.text]
    assert line.text == progress_line(t, report(0))
    await asyncio.wait_for(host.rewritten.wait(), TIMEOUT)  # the interval is over
    assert view.draws == 2
    assert line.text == progress_line(t, report(4_950_000))  # the newest report
    assert "4.95 MB of 10.0 MB (49 %)" in line.text and "ETA 5 s" in line.text
    t.on_notice("no direct path yet: trying the relay")
    t.on_progress(report(5_000_000, relay=True))  # within the interval: waits
    t._finish(False, "the peer went silent", "idle_timeout")
    async with asyncio.timeout(TIMEOUT):  # the watcher says how it ended
        while len(dm.entries) < 3:
            await asyncio.sleep(0)
    texts = [e.text or "" for e in dm.entries]
    assert texts[0].endswith("(50 %), stopped (relay)")  # the same line, last figures
    assert texts[1] == "[file 7] no direct path yet: trying the relay"
    assert texts[2] == "[file 7] big[1].iso → bob: failed: the peer went silent"
    assert dm.entries[2].kind is EntryKind.ERROR
    assert host.toasts == [] and dm.highlights == 0  # it was on screen
    view.stop()


async def test_a_transfer_ending_out_of_sight_raises_a_toast_and_a_highlight() -> None:
    host = FakeHost()
    view = TuiTransfers(host, lambda: Client("127.0.0.1", 1).files)
    dm = host.output_buffer
    host.buffers.switch(host.buffers.server)
    t = Transfer(
        direction="receive", number=2, offer="o", peer="bob", filename="a.bin", size=5,
        sha256="ab" * 32,
    )  # fmt: skip
    view.follow(t)
    t._finish(False, "declined by you", "declined")
    async with asyncio.timeout(TIMEOUT):
        while not host.toasts:
            await asyncio.sleep(0)
    assert host.toasts == ["file failed: [file 2] a.bin ← bob: failed: declined by you"]
    assert dm.mentions == 1 and host.buffers.server.mentions == 0
    view.stop()


def test_offer_numbers_complete_after_the_file_commands() -> None:
    def cands(line: str) -> list[str]:
        start = len(line) - len(line.split(" ")[-1])
        return candidates(
            line, start, line[start:], commands=["accept"], rooms=["general"],
            users=["bob", "carol"], arguments={"accept": ["12", "3"], "cancel": ["5"]},
        )  # fmt: skip

    assert cands("/accept ") == ["12 ", "3 "]
    assert cands("/accept 1") == ["12 "]
    assert cands("/cancel ") == ["5 "]
    assert cands("/send-file c") == ["carol "]
    assert cands("/sendfile b") == ["bob "]


# ---------------------------------------------------------------------- with a server


@pytest.fixture
async def srv() -> AsyncIterator[ChatTestServer]:
    async with ChatTestServer(rooms=("general",), p2p_offer_ttl=60.0) as server:
        for name in ("alice", "bob", "carol"):
            await server.add_user(name, PASSWORD)
        yield server


def options(tmp: Path, name: str, **kw: Any) -> TransferOptions:
    return TransferOptions(bind="127.0.0.1", downloads=tmp / f"downloads-{name}", **kw)


def make_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def texts(buf: Buffer | None) -> list[str]:
    assert buf is not None
    return [e.text or "" for e in buf.entries]


def has(buf: Buffer | None, needle: str) -> bool:
    return any(needle in text for text in texts(buf))


def status(app: ChatTui) -> str:
    return str(app.query_one("#status").render())


@asynccontextmanager
async def pair(
    srv: ChatTestServer,
    tmp: Path,
    me: str,
    peer: str,
    *,
    mine: TransferOptions | None = None,
    **peer_options: Any,
) -> AsyncIterator[tuple[ChatTui, Pilot[int], Client]]:
    """``me`` in the full-screen client (in #general), ``peer`` as a library client."""
    async with (
        tui(srv, me, transfers=mine or options(tmp, me), room="general") as (app, pilot),
        user(srv, peer, transfers=options(tmp, peer, **peer_options)) as other,
    ):
        yield app, pilot, other


async def enter(app: ChatTui, pilot: Pilot[int], line: str) -> None:
    app.input.set_text(line)
    await pilot.press("enter")


async def offered(client: Client) -> Event:
    async def find() -> Event:
        async for event in client.events():
            if event.name is EventName.FILE_OFFER:
                return event
        raise AssertionError("events ended before an offer")

    return await asyncio.wait_for(find(), TIMEOUT)


async def send(app: ChatTui, pilot: Pilot[int], peer: Client, path: Path) -> list[Transfer]:
    """``/send-file`` typed in the full screen, and the peer accepts: [sending, receiving]."""
    assert peer.session is not None
    await enter(app, pilot, f"/send-file {peer.session.username} {path}")
    offer = await offered(peer)
    receiving = await peer.accept(offer["offer"])
    return [app.client.files.transfers[offer["offer"]], receiving]


async def finished(t: Transfer) -> FileResult:
    return await asyncio.wait_for(t.wait(), TIMEOUT)


class Gate:
    """A receiver's firewall: lets the first ``allow`` sealed datagrams of every transfer in,
    then drops them until ``opened`` (the transfers stall part-way, each with progress)."""

    def __init__(self, allow: int) -> None:
        self.allow = allow
        self.seen: dict[bytes, int] = {}
        self.opened = False

    def __call__(self, data: memoryview, addr: tuple[str, int]) -> bool:
        if self.opened or data[0] != Kind.SEALED:
            return True
        tid = bytes(data[1:9])
        self.seen[tid] = self.seen.get(tid, 0) + 1
        return self.seen[tid] <= self.allow

    def manager(self) -> Callable[[], TransferManager]:
        return lambda: FilteredManager(self)


async def test_an_offer_shows_here_and_accepting_it_brings_the_file(
    srv: ChatTestServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "report final.pdf", 2_000_000)
    async with pair(srv, tmp_path, "bob", "alice") as (app, pilot, alice):
        general = app.buffers.room("general")
        sending = await alice.offer_file("bob", src)
        # no DM buffer with alice: the offer shows in the buffer bob is looking at
        await until(pilot, lambda: has(general, "alice offers you report final.pdf"))
        assert has(general, "alice offers you report final.pdf (2.00 MB) [file 1] — /accept 1")
        assert shows(app, "alice offers you report final.pdf")  # on the screen
        assert "offer: /accept 1" in status(app)
        assert app.buffers.dm("alice") is None  # nothing opened behind bob's back
        await type_text(pilot, "/accept ")
        await pilot.press("tab")  # completes the number of the offer
        assert app.input.text == "/accept 1 "
        dest = tmp_path / "in here"
        await enter(app, pilot, f"/accept 1 {dest}")
        await until(pilot, lambda: has(general, "verified (SHA-256)"))
        got = dest / "report final.pdf"
        assert digest(got) == digest(src)
        assert (await finished(sending)).ok
        lines = texts(general)
        assert any(
            f"[file 1] receiving report final.pdf (2.00 MB) from alice into {dest}" in line
            for line in lines
        )
        progress = [line for line in lines if " of 2.00 MB (" in line]
        assert progress == [
            "[file 1] report final.pdf ← alice: ████████████ 2.00 MB of 2.00 MB (100 %), done"
        ]  # one line, rewritten in place
        final = lines[-1]
        assert final.startswith("[file 1] report final.pdf ← alice: verified (SHA-256)")
        assert f"saved as {got}" in final and final.endswith(", direct")
        assert app.transfers.draws >= 2
        await until(pilot, lambda: "offer:" not in status(app) and "files" not in status(app))
        await enter(app, pilot, "/transfers")
        await until(pilot, lambda: has(general, "[file 1] report final.pdf ← alice: verified"))


async def test_an_offer_goes_to_the_dm_buffer_with_its_sender(
    srv: ChatTestServer, tmp_path: Path
) -> None:
    from textual.widgets._toast import Toast

    src = make_file(tmp_path / "slides.pdf", 10_000)
    async with pair(srv, tmp_path, "bob", "alice") as (app, pilot, alice):
        general = app.buffers.room("general")
        await alice.dm("bob", "sending you the slides")
        await until(pilot, lambda: app.buffers.dm("alice") is not None)
        dm = app.buffers.dm("alice")
        assert dm is not None and app.buffers.current is general
        before = dm.mentions
        sending = await alice.offer_file("bob", src)
        await until(pilot, lambda: has(dm, "alice offers you slides.pdf (10.0 kB) [file 1]"))
        assert not has(general, "offers you")
        assert dm.mentions == before + 1  # a highlight: red in the buffer list and Act:
        assert f"@alice({dm.unread},{dm.mentions}!)" in status(app)
        await until(pilot, lambda: bool(app.screen.query(Toast)))
        assert "alice offers you slides.pdf" in str(app.screen.query(Toast).first().render())
        await enter(app, pilot, "/decline 1")  # typed in #general: answered there
        await until(pilot, lambda: has(general, "declined file offer 1"))
        result = await finished(sending)
        assert not result.ok and result.reason == "declined"
        # a withdrawn offer: its end is said where the offer was shown
        second = await alice.offer_file("bob", src)
        await until(pilot, lambda: has(dm, "[file 2] — /accept 2"))
        await alice.cancel(second.number)
        await until(pilot, lambda: has(dm, "the offer of slides.pdf from alice [file 2] was"))
        assert app.switch_to("@alice") and dm.highlights == 0
        assert not (tmp_path / "downloads-bob").exists()


async def test_cancelling_a_transfer_part_way(srv: ChatTestServer, tmp_path: Path) -> None:
    size = 6_000_000
    src = make_file(tmp_path / "big.bin", size)
    gate = Gate(allow=300)
    async with pair(srv, tmp_path, "alice", "bob", manager_factory=gate.manager()) as (
        app,
        pilot,
        bob,
    ):
        general = app.buffers.room("general")
        sending, receiving = await send(app, pilot, bob, src)

        def part_way() -> bool:
            p = sending.progress
            return p is not None and 0 < p.done < size and has(general, " of 6.00 MB (")

        await until(pilot, part_way)
        assert "files 1: " in status(app)
        assert has(general, "[file 1] bob accepted")
        await type_text(pilot, "/cancel ")
        await pilot.press("tab")
        assert app.input.text == "/cancel 1 "
        await pilot.press("enter")
        await until(pilot, lambda: has(general, "[file 1] big.bin → bob: failed:"))
        assert has(general, "cancelled file 1")
        (line,) = [text for text in texts(general) if " of 6.00 MB (" in text]
        assert line.endswith(", stopped") and "(100 %)" not in line
        assert not (await finished(receiving)).ok
        assert "files" not in status(app)


async def test_two_transfers_at_once_each_with_its_own_progress_line(
    srv: ChatTestServer, tmp_path: Path
) -> None:
    from textual.widgets._toast import Toast

    files = [make_file(tmp_path / "one.bin", 3_000_000), make_file(tmp_path / "two.bin", 2_000_000)]
    gate = Gate(allow=200)
    async with pair(srv, tmp_path, "alice", "bob", manager_factory=gate.manager()) as (
        app,
        pilot,
        bob,
    ):
        general = app.buffers.room("general")
        pairs = [await send(app, pilot, bob, path) for path in files]
        mine, receiving = [p[0] for p in pairs], [p[1] for p in pairs]

        def both_part_way() -> bool:
            lines = texts(general)
            return all(
                t.progress is not None
                and 0 < t.progress.done < t.size
                and any(line.startswith(f"[file {t.number}] ") and " of " in line for line in lines)
                for t in mine
            )

        await until(pilot, both_part_way)
        assert "files 2: " in status(app)
        one = [line for line in texts(general) if line.startswith("[file 1] one.bin → bob: ")]
        two = [line for line in texts(general) if line.startswith("[file 2] two.bin → bob: ")]
        assert len(one) == len(two) == 1 and "of 3.00 MB" in one[0] and "of 2.00 MB" in two[0]
        await pilot.press("alt+1")  # look elsewhere: the ends raise toasts
        gate.opened = True
        results = await asyncio.gather(*(finished(t) for t in receiving + mine))
        assert all(r.ok for r in results), results
        for path in files:
            assert digest(tmp_path / "downloads-bob" / "alice" / path.name) == digest(path)
        await until(pilot, lambda: has(general, "[file 2] two.bin → bob: verified"))
        assert has(general, "[file 1] one.bin → bob: verified")
        toasts = lambda: [str(toast.render()) for toast in app.screen.query(Toast)]  # noqa: E731
        await until(pilot, lambda: any("two.bin → bob: verified" in t for t in toasts()))
        assert all(t.startswith("file verified") for t in toasts())
        assert general is not None and general.mentions == 0  # success is no highlight


async def test_the_relay_fallback_is_said(srv: ChatTestServer, tmp_path: Path) -> None:
    relay = srv.server.relay  # type: ignore[union-attr]
    assert relay is not None
    only_relay = relay.address

    def relay_only() -> TransferManager:
        fast = TransferConfig(direct_timeout=1.0)
        return FilteredManager(lambda data, addr: addr == only_relay, config=fast)

    src = make_file(tmp_path / "far.bin", 1_000_000)
    mine = options(
        tmp_path,
        "alice",
        manager_factory=relay_only,
        report_local=False,
        extra_endpoints=(("127.0.0.1", 9),),
    )
    async with pair(srv, tmp_path, "alice", "bob", mine=mine, manager_factory=relay_only) as (
        app,
        pilot,
        bob,
    ):
        general = app.buffers.room("general")
        _, receiving = await send(app, pilot, bob, src)
        got = await finished(receiving)
        assert got.ok and got.via_relay
        await until(pilot, lambda: has(general, "[file 1] far.bin → bob: verified"))
        assert has(general, "[file 1] no direct path yet: trying the relay")
        assert texts(general)[-1].endswith("through the server's relay")
        assert any(" of 1.00 MB (" in line and "(relay)" in line for line in texts(general))


async def test_errors_are_said_in_the_buffer(srv: ChatTestServer, tmp_path: Path) -> None:
    here = make_file(tmp_path / "here.bin", 100)
    async with tui(srv, "alice", transfers=options(tmp_path, "alice"), room="general") as (
        app,
        pilot,
    ):
        general = app.buffers.room("general")
        await enter(app, pilot, f"/send-file bob {tmp_path / 'nope.bin'}")
        await until(pilot, lambda: has(general, "no file at"))
        await enter(app, pilot, f"/send-file bob {here}")  # bob is offline
        await until(pilot, lambda: has(general, "bob is not online [user_offline]"))
        await enter(app, pilot, f"/send-file nobody {here}")
        await until(pilot, lambda: has(general, "no user named 'nobody' [unknown_user]"))
        await enter(app, pilot, "/accept 7")
        await until(pilot, lambda: has(general, "no offer number 7 (/transfers lists them)"))
        await enter(app, pilot, "/send-file bob")
        await until(pilot, lambda: has(general, "usage: /send-file <user> <path>"))
        await enter(app, pilot, "/transfers")
        await until(pilot, lambda: has(general, "(no file offers or transfers)"))
        await enter(app, pilot, "/help send-file")
        await until(pilot, lambda: has(general, "Tab completes the user name"))
        errors = [e for e in general.entries if e.kind is EntryKind.ERROR]  # type: ignore[union-attr]
        assert len(errors) == 5


async def test_an_offer_to_someone_who_blocks_you_just_expires(tmp_path: Path) -> None:
    async with ChatTestServer(rooms=("general",), p2p_offer_ttl=1.0) as server:
        for name in ("alice", "bob"):
            await server.add_user(name, PASSWORD)
        src = make_file(tmp_path / "x.bin", 1000)
        async with (
            user(server, "bob") as bob,
            tui(server, "alice", transfers=options(tmp_path, "alice"), room="general") as (
                app,
                pilot,
            ),
        ):
            await bob.block("alice")
            general = app.buffers.room("general")
            await enter(app, pilot, f"/send-file bob {src}")
            await until(pilot, lambda: has(general, "[file 1] offered x.bin (1.00 kB) to bob"))
            await until(pilot, lambda: has(general, "[file 1] x.bin → bob: failed:"))
            assert texts(general)[-1].endswith("failed: the offer was expired")
            assert not bob.files.incoming


async def test_hashing_a_file_does_not_hold_up_the_chat(
    srv: ChatTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`/send-file` runs beside the input queue: a message typed while the file is being
    hashed goes out at once (the hash is held back here until the message has arrived)."""
    import parlour.client.files as client_files

    real = client_files.describe_file
    hashing, release = threading.Event(), threading.Event()

    def slow_describe(path: Path) -> Any:
        hashing.set()
        release.wait(TIMEOUT)
        return real(path)

    monkeypatch.setattr(client_files, "describe_file", slow_describe)
    src = make_file(tmp_path / "huge.iso", 1000)
    async with pair(srv, tmp_path, "alice", "bob") as (app, pilot, bob):
        general = app.buffers.room("general")
        await enter(app, pilot, f"/sendfile bob {src}")  # (the line mode's other name)
        await until(pilot, hashing.is_set)
        await enter(app, pilot, "meanwhile, hello")
        await srv.wait_for(lambda: bool(srv.room_messages("general")))
        assert not has(general, "offered huge.iso")
        release.set()
        await until(pilot, lambda: has(general, "[file 1] offered huge.iso (1.00 kB) to bob"))
        offer = await offered(bob)
        assert offer["filename"] == "huge.iso"
        await enter(app, pilot, "/files")
        await until(pilot, lambda: has(general, "[file 1] huge.iso → bob: offered"))


async def test_lines_of_a_transfer_whose_buffer_was_closed_go_to_the_current_one() -> None:
    host = FakeHost()
    view = TuiTransfers(host, lambda: Client("127.0.0.1", 1).files)
    dm = host.output_buffer
    t = Transfer(
        direction="send", number=3, offer="o", peer="bob", filename="a.bin", size=10_000_000,
        sha256="ab" * 32,
    )  # fmt: skip
    view.follow(t)
    assert t.on_progress is not None and t.on_notice is not None
    t.on_progress(report(1_000_000))
    assert texts(dm)[-1].startswith("[file 3] a.bin → bob: █░░░")
    host.buffers.close(dm)  # /close: the server buffer is current
    t.on_notice("bob accepted")
    t._finish(True, "verified", None)
    server = host.buffers.server
    async with asyncio.timeout(TIMEOUT):
        while not has(server, "verified"):
            await asyncio.sleep(0)
    assert texts(server) == [
        "[file 3] bob accepted",
        "[file 3] a.bin → bob: ████████████ 10.0 MB of 10.0 MB (100 %), done",
        texts(server)[-1],
    ]
    assert texts(server)[-1].startswith("[file 3] a.bin → bob: verified (SHA-256)")
    view.stop()
