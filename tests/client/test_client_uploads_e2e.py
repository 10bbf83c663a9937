"""Files in chat through the client library against the real server (ChatTestServer with its
web listener and the files endpoints, on 127.0.0.1): upload to a room and a DM, download by
another member, the limits refused before any byte, an interrupted upload resumed by a new
client instance, an interrupted download resumed, a real 401 renewed, a damaged blob
detected, hostile file names. Every wait is on a condition (an event, a progress report)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from parlour.client import (
    Attachment,
    ChecksumMismatch,
    Client,
    ConnectionLost,
    FilesUnavailable,
    FileToken,
    FileTooLarge,
    QuotaExceeded,
    TooManyUploads,
    TransferFailed,
    attachment_of,
)
from parlour.protocol import Event, EventName
from parlour.server.testing import ChatTestServer

TIMEOUT = 30
PW = "password-1"
CHUNK = 64 * 1024


@asynccontextmanager
async def files_server(tmp: Path, **settings: Any) -> AsyncIterator[ChatTestServer]:
    async with ChatTestServer(
        rooms=("general",), web=True, web_port=0, data_dir=tmp / "data", **settings
    ) as srv:
        for name in ("alice", "bob", "carol"):
            await srv.add_user(name, PW)
        yield srv


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ChatTestServer]:
    async with files_server(tmp_path) as srv:
        yield srv


def web_url(srv: ChatTestServer) -> str:
    assert srv.server is not None and srv.server.web is not None
    host, port = srv.server.web.addresses[0][:2]
    return f"http://{host}:{port}/"


@asynccontextmanager
async def user(
    srv: ChatTestServer, name: str, tmp: Path, *, chunk: int = CHUNK
) -> AsyncIterator[Client]:
    # no files_url: the client finds the web listener from `hello` (web_url, web_port)
    client = Client("127.0.0.1", srv.port, state_dir=tmp / f"state-{name}")
    await client.connect()
    try:
        await client.login(name, PW)
        assert client.server_files.base_url() == web_url(srv)
        client.server_files.chunk_size = chunk
        yield client
    finally:
        await client.close()


def make_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def next_message(client: Client) -> Event:
    async def find() -> Event:
        async for event in client.events():
            if event.name in (EventName.MESSAGE, EventName.DM):
                return event
        raise AssertionError("events ended before a message")

    return await asyncio.wait_for(find(), TIMEOUT)


async def test_upload_to_a_room_and_download_by_a_member(
    server: ChatTestServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "report.pdf", 300_000)
    async with user(server, "alice", tmp_path) as alice, user(server, "bob", tmp_path) as bob:
        await alice.join("general")
        await bob.join("general")
        seen: list[int] = []
        record = await asyncio.wait_for(
            alice.upload(src, room="general", caption="Q3", progress=lambda d, t: seen.append(d)),
            TIMEOUT,
        )
        att = attachment_of(record)
        assert att is not None and record.text == "Q3" and record.room == "general"
        assert att.name == "report.pdf" and att.size == 300_000
        assert att.sha256 == sha(src.read_bytes())
        assert seen[0] == 0 and seen[-1] == 300_000
        event = await next_message(bob)
        got = attachment_of(event.fields)
        assert got == att
        saved = await asyncio.wait_for(bob.download(got, tmp_path / "bob"), TIMEOUT)
        assert saved == (tmp_path / "bob" / "report.pdf").resolve()
        assert saved.read_bytes() == src.read_bytes()
        # again: never over the first one
        again = await bob.download(att.id, tmp_path / "bob")
        assert again.name == "report (1).pdf" and again.read_bytes() == src.read_bytes()
        # nothing left to resume
        state = (tmp_path / "state-alice" / "files.json").read_text()
        assert '"uploads": {}' in state


async def test_upload_as_a_dm_with_an_empty_caption(server: ChatTestServer, tmp_path: Path) -> None:
    src = make_file(tmp_path / "photo.bin", 1000)
    async with user(server, "alice", tmp_path) as alice, user(server, "bob", tmp_path) as bob:
        record = await asyncio.wait_for(alice.upload(src, to="bob"), TIMEOUT)
        assert record.peer == "bob" and record.text == ""
        event = await next_message(bob)
        assert event.name is EventName.DM
        att = attachment_of(event.fields)
        assert att is not None
        saved = await asyncio.wait_for(bob.download(att.id, tmp_path / "in"), TIMEOUT)
        assert saved.read_bytes() == src.read_bytes()


async def test_limits_refuse_before_any_byte(tmp_path: Path) -> None:
    async with (
        files_server(
            tmp_path, max_file_size=100_000, user_quota=150_000, max_concurrent_uploads=1
        ) as srv,
        user(srv, "alice", tmp_path) as alice,
    ):
        await alice.join("general")
        with pytest.raises(FileTooLarge):
            await alice.upload(make_file(tmp_path / "big", 100_001), room="general")
        await alice.upload(make_file(tmp_path / "ok", 100_000), room="general")
        with pytest.raises(QuotaExceeded):
            await alice.upload(make_file(tmp_path / "more", 60_000), room="general")
        # one unfinished upload (interrupted), then another file
        src = make_file(tmp_path / "half", 40_000)
        started = asyncio.Event()
        task = asyncio.ensure_future(
            alice.upload(src, room="general", progress=lambda d, t: started.set() if d else None)
        )
        await asyncio.wait_for(started.wait(), TIMEOUT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(TooManyUploads):
            await alice.upload(make_file(tmp_path / "other", 10), room="general")


async def test_an_interrupted_upload_is_resumed_by_a_new_client(
    server: ChatTestServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "big.iso", 1_000_000)
    async with user(server, "alice", tmp_path) as alice:
        await alice.join("general")
        some = asyncio.Event()
        task = asyncio.ensure_future(
            alice.upload(
                src, room="general", progress=lambda d, t: some.set() if d >= 3 * CHUNK else None
            )
        )
        await asyncio.wait_for(some.wait(), TIMEOUT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # a new process: a new client with the same state directory
    async with user(server, "alice", tmp_path) as again, user(server, "bob", tmp_path) as bob:
        await bob.join("general")
        seen: list[int] = []
        record = await asyncio.wait_for(
            again.upload(src, room="general", progress=lambda d, t: seen.append(d)), TIMEOUT
        )
        assert seen[0] >= 2 * CHUNK  # it went on from what the server had
        att = attachment_of(record)
        assert att is not None and att.sha256 == sha(src.read_bytes())
        saved = await asyncio.wait_for(bob.download(att, tmp_path / "bob"), TIMEOUT)
        assert saved.read_bytes() == src.read_bytes()
    # one message only
    assert len([m for m in server.room_messages("general") if m.sender == "alice"]) == 1


async def test_an_expired_token_is_renewed(server: ChatTestServer, tmp_path: Path) -> None:
    src = make_file(tmp_path / "a.bin", 200_000)
    async with user(server, "alice", tmp_path) as alice:
        await alice.join("general")
        files = alice.server_files
        real = await files.token()
        bogus = FileToken("x" * 43, real.expires, real.upload_url, real.download_url)
        files._token = bogus  # the server answers 401 to it, as to an expired token

        def progress(done: int, total: int) -> None:
            if done and files._token is not bogus and done < total:
                files._token = bogus  # and once more in the middle of the upload

        record = await asyncio.wait_for(
            alice.upload(src, room="general", progress=progress), TIMEOUT
        )
        att = attachment_of(record)
        assert att is not None and att.sha256 == sha(src.read_bytes())
        files._token = bogus
        saved = await asyncio.wait_for(alice.download(att, tmp_path / "dl"), TIMEOUT)
        assert saved.read_bytes() == src.read_bytes()


async def test_an_interrupted_download_is_resumed(server: ChatTestServer, tmp_path: Path) -> None:
    src = make_file(tmp_path / "movie.mkv", 3_000_000)
    async with user(server, "alice", tmp_path, chunk=1 << 20) as alice:
        await alice.join("general")
        att = attachment_of(await asyncio.wait_for(alice.upload(src, room="general"), TIMEOUT))
        assert att is not None
    async with user(server, "bob", tmp_path) as bob:
        await bob.join("general")
        some = asyncio.Event()
        task = asyncio.ensure_future(
            bob.download(att, tmp_path / "dl", progress=lambda d, t: some.set() if d else None)
        )
        await asyncio.wait_for(some.wait(), TIMEOUT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    part = tmp_path / "dl" / "movie.mkv.part"
    kept = part.stat().st_size
    assert kept > 0
    async with user(server, "bob", tmp_path) as bob:
        seen: list[int] = []
        saved = await asyncio.wait_for(
            bob.download(att.id, tmp_path / "dl", progress=lambda d, t: seen.append(d)), TIMEOUT
        )
    assert saved.read_bytes() == src.read_bytes() and not part.exists()
    assert seen[0] == kept  # it went on from the partial file (Range)


async def test_a_damaged_file_is_detected(server: ChatTestServer, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    src = tmp_path / "a.bin"
    src.write_bytes(data)
    async with user(server, "alice", tmp_path) as alice:
        await alice.join("general")
        att = attachment_of(await asyncio.wait_for(alice.upload(src, room="general"), TIMEOUT))
        assert att is not None
        (blob,) = (tmp_path / "data" / "files" / "blobs").rglob(att.sha256)
        damaged = bytearray(blob.read_bytes())
        damaged[1000] ^= 0xFF
        blob.chmod(0o644)
        blob.write_bytes(bytes(damaged))
        with pytest.raises(ChecksumMismatch) as info:
            await asyncio.wait_for(alice.download(att, tmp_path / "dl"), TIMEOUT)
        assert info.value.expected == sha(data) and info.value.actual == sha(bytes(damaged))
        assert list((tmp_path / "dl").iterdir()) == []
        # a made-up SHA-256 for the right bytes: refused just the same
        blob.write_bytes(data)
        wrong = Attachment(att.id, att.name, att.size, att.type, "0" * 64)
        with pytest.raises(ChecksumMismatch):
            await alice.download(wrong, tmp_path / "dl")


@pytest.mark.parametrize(
    "name",
    [".bashrc", "a\\..\\..\\b.txt", "\x1b[31mred\x07.txt", "evil\u202etxt.exe", "..x", "x.part"],
)
async def test_hostile_names_are_saved_safely(
    server: ChatTestServer, tmp_path: Path, name: str
) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    src = folder / name
    src.write_bytes(b"payload")
    async with user(server, "alice", tmp_path) as alice:
        await alice.join("general")
        att = attachment_of(await asyncio.wait_for(alice.upload(src, room="general"), TIMEOUT))
        assert att is not None
        saved = await asyncio.wait_for(alice.download(att, tmp_path / "dl"), TIMEOUT)
    assert saved.parent == (tmp_path / "dl").resolve() and saved.read_bytes() == b"payload"
    assert not saved.name.startswith(".") and "\\" not in saved.name
    assert all(ch.isprintable() for ch in saved.name) and "\u202e" not in saved.name
    assert not saved.name.endswith(".part")


async def test_non_members_are_refused(server: ChatTestServer, tmp_path: Path) -> None:
    src = make_file(tmp_path / "secret.txt", 100)
    async with user(server, "alice", tmp_path) as alice, user(server, "carol", tmp_path) as carol:
        record = await asyncio.wait_for(alice.upload(src, to="bob"), TIMEOUT)
        att = attachment_of(record)
        assert att is not None
        with pytest.raises(TransferFailed) as info:
            await carol.download(att, tmp_path / "carol")
        assert info.value.status in (403, 404)
        assert not list((tmp_path / "carol").glob("*"))


async def test_a_server_without_uploads_says_so(tmp_path: Path) -> None:
    async with ChatTestServer(rooms=("general",)) as srv:  # no web listener
        await srv.add_user("alice", PW)
        async with Client("127.0.0.1", srv.port, state_dir=tmp_path / "state") as alice:
            await alice.login("alice", PW)
            with pytest.raises(FilesUnavailable):
                await alice.upload(make_file(tmp_path / "a", 10), room="general")
            with pytest.raises(FilesUnavailable):
                await alice.download("A" * 22, tmp_path / "dl")


async def test_a_finished_upload_not_yet_posted_is_posted_once(
    server: ChatTestServer, tmp_path: Path
) -> None:
    """The process ends between the last PATCH and the message (or the reply to it is
    lost): the next run finds the upload complete and posts it, once."""
    src = make_file(tmp_path / "a.bin", 150_000)
    async with user(server, "alice", tmp_path) as alice:
        await alice.join("general")
        real = alice._post_attachment

        async def lost(*args: Any, **kw: Any) -> Any:
            raise ConnectionLost("gone")

        alice._post_attachment = lost  # type: ignore[method-assign]
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(alice.upload(src, room="general"), TIMEOUT)
        alice._post_attachment = real  # type: ignore[method-assign]
    async with user(server, "alice", tmp_path) as again:
        seen: list[int] = []
        record = await asyncio.wait_for(
            again.upload(src, room="general", progress=lambda d, t: seen.append(d)), TIMEOUT
        )
        assert seen == [150_000]  # nothing sent again
        assert attachment_of(record) is not None
        # and once more (the reply to the message was lost after it was stored): no double
        state = again.server_files.state
        key = next(iter(state._load()["uploads"]), None)
        assert key is None
    assert len([m for m in server.room_messages("general") if m.sender == "alice"]) == 1


async def test_a_posted_upload_whose_end_was_not_recorded_is_not_posted_twice(
    server: ChatTestServer, tmp_path: Path
) -> None:
    """The message was stored but the process ended before it forgot the upload: the next
    run sends the same message again (same client id) and the server recognises it."""
    src = make_file(tmp_path / "a.bin", 1000)
    async with user(server, "alice", tmp_path) as alice:
        await alice.join("general")
        state = alice.server_files.state
        saved: dict[str, Any] = {}
        forget = state.forget

        def keep(section: str, key: str) -> None:
            saved.update(state._load()[section])  # what was there when it was forgotten

        state.forget = keep  # type: ignore[method-assign]
        first = await asyncio.wait_for(alice.upload(src, room="general"), TIMEOUT)
        state.forget = forget  # type: ignore[method-assign]
        assert saved
    async with user(server, "alice", tmp_path) as again:
        second = await asyncio.wait_for(again.upload(src, room="general"), TIMEOUT)
    assert second.seq == first.seq
    assert len([m for m in server.room_messages("general") if m.sender == "alice"]) == 1


async def test_an_empty_file(server: ChatTestServer, tmp_path: Path) -> None:
    src = tmp_path / "empty.txt"
    src.write_bytes(b"")
    async with user(server, "alice", tmp_path) as alice:
        await alice.join("general")
        att = attachment_of(await asyncio.wait_for(alice.upload(src, room="general"), TIMEOUT))
        assert att is not None and att.size == 0 and att.sha256 == sha(b"")
        saved = await asyncio.wait_for(alice.download(att, tmp_path / "dl"), TIMEOUT)
    assert saved.name == "empty.txt" and saved.read_bytes() == b""
