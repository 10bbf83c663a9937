"""The client library's files-in-chat HTTP side (parlour.client.attachments) against a tus
test double on real sockets (tus_fake.py), and its rules without I/O (parlour.client.tus).
The same library against the real server: test_client_uploads_e2e.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tus_fake import FakeFiles

from parlour.client import (
    Attachment,
    ChecksumMismatch,
    FileChanged,
    FileTooLarge,
    QuotaExceeded,
    ServerError,
    ServerFiles,
    StateFile,
    TooManyUploads,
    TransferFailed,
    attachment_of,
    tus,
)

TIMEOUT = 30


class StubClient:
    """What ServerFiles needs of a Client: file_token over the "chat", and posting."""

    def __init__(self, fake: FakeFiles) -> None:
        self.fake = fake
        self.host, self.port = "127.0.0.1", 7878
        self.welcome = None
        self.tls = False
        self.ssl_context = None
        self.token_requests: list[dict[str, Any]] = []
        self.posted: list[dict[str, Any]] = []
        self.token_error: tuple[str, str] | None = None

    async def _call(self, build: Callable[[int], Any], **kw: Any) -> dict[str, Any]:
        wire = build(len(self.token_requests) + 1).to_wire()
        assert wire["type"] == "file_token"
        self.token_requests.append(wire)
        if self.token_error is not None:
            raise ServerError(*self.token_error)
        return self.fake.issue()

    async def _post_attachment(self, file_id: str, **kw: Any) -> dict[str, Any]:
        self.posted.append({"attachment": file_id, **kw})
        return {"attachment": file_id}


@pytest.fixture
async def fake() -> AsyncIterator[FakeFiles]:
    server = FakeFiles()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def files_for(stub: StubClient, tmp: Path, chunk: int = 64 * 1024) -> ServerFiles:
    return ServerFiles(
        stub,  # type: ignore[arg-type]
        state_dir=tmp / "state",
        files_url=stub.fake.url,
        chunk_size=chunk,
    )


def make_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- uploads


async def test_upload_in_checked_chunks_with_progress(fake: FakeFiles, tmp_path: Path) -> None:
    stub = StubClient(fake)
    files = files_for(stub, tmp_path)
    src = make_file(tmp_path / "report.pdf", 300_000)
    seen: list[tuple[int, int]] = []
    try:
        record = await asyncio.wait_for(
            files.upload(
                src, room="general", caption="the report", progress=lambda *a: seen.append(a)
            ),
            TIMEOUT,
        )
    finally:
        await files.close()
    (file_id,) = fake.uploads
    assert fake.uploads[file_id].data == src.read_bytes()
    assert fake.uploads[file_id].name == "report.pdf"
    assert record == {"attachment": file_id}
    assert stub.posted[0]["room"] == "general" and stub.posted[0]["text"] == "the report"
    # the limits were asked with the size before any byte; every PATCH was checksummed
    assert stub.token_requests[0]["size"] == 300_000
    patches = [h for m, _, h in fake.requests if m == "PATCH"]
    assert len(patches) == 5 and all(h["Upload-Checksum"].startswith("sha256 ") for h in patches)
    assert all(int(h["Content-Length"]) <= 64 * 1024 for h in patches)
    assert seen[0] == (0, 300_000) and seen[-1] == (300_000, 300_000)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    # nothing left to resume
    assert json.loads((tmp_path / "state" / "files.json").read_text())["uploads"] == {}


async def test_an_empty_file_is_an_upload_without_patches(fake: FakeFiles, tmp_path: Path) -> None:
    stub = StubClient(fake)
    files = files_for(stub, tmp_path)
    src = tmp_path / "empty.txt"
    src.write_bytes(b"")
    try:
        await asyncio.wait_for(files.upload(src, to="bob"), TIMEOUT)
    finally:
        await files.close()
    assert [m for m, _, _ in fake.requests] == ["POST"]
    assert stub.posted[0]["to"] == "bob" and stub.posted[0]["text"] == ""


async def test_expired_token_is_renewed_and_the_upload_goes_on(
    fake: FakeFiles, tmp_path: Path
) -> None:
    stub = StubClient(fake)
    files = files_for(stub, tmp_path)
    src = make_file(tmp_path / "a.bin", 200_000)

    expired = False

    def progress(done: int, total: int) -> None:
        nonlocal expired
        if done >= 64 * 1024 and not expired:
            expired = True
            fake.expire_tokens()  # a later request gets 401

    try:
        await asyncio.wait_for(files.upload(src, room="general", progress=progress), TIMEOUT)
    finally:
        await files.close()
    (up,) = fake.uploads.values()
    assert up.data == src.read_bytes()
    assert len(stub.token_requests) == 2 and "size" not in stub.token_requests[1]


async def test_a_damaged_chunk_is_sent_again(fake: FakeFiles, tmp_path: Path) -> None:
    stub = StubClient(fake)
    files = files_for(stub, tmp_path)
    src = make_file(tmp_path / "a.bin", 100_000)
    fake.corrupt_next_patch = 1
    try:
        await asyncio.wait_for(files.upload(src, room="general"), TIMEOUT)
    finally:
        await files.close()
    (up,) = fake.uploads.values()
    assert up.data == src.read_bytes()


async def test_a_chunk_damaged_every_time_fails(fake: FakeFiles, tmp_path: Path) -> None:
    stub = StubClient(fake)
    files = files_for(stub, tmp_path)
    src = make_file(tmp_path / "a.bin", 1000)
    fake.corrupt_next_patch = 100
    try:
        with pytest.raises(TransferFailed, match="checksum") as info:
            await asyncio.wait_for(files.upload(src, room="general"), TIMEOUT)
    finally:
        await files.close()
    assert info.value.status == 460
    assert stub.posted == []


async def test_a_dropped_connection_resumes_from_the_durable_offset(
    fake: FakeFiles, tmp_path: Path
) -> None:
    stub = StubClient(fake)
    files = files_for(stub, tmp_path)
    src = make_file(tmp_path / "a.bin", 300_000)
    fake.cut_patch_at = 100_000  # the second PATCH is cut after the server kept part of it
    try:
        await asyncio.wait_for(files.upload(src, room="general"), TIMEOUT)
    finally:
        await files.close()
    (up,) = fake.uploads.values()
    assert up.data == src.read_bytes()
    assert "HEAD" in [m for m, _, _ in fake.requests]
    assert fake.patched_bytes == 300_000  # nothing the server had was sent again


async def test_an_interrupted_upload_is_resumed_by_a_new_client(
    fake: FakeFiles, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "big.iso", 400_000)
    first = files_for(StubClient(fake), tmp_path)
    halfway = asyncio.Event()

    def progress(done: int, total: int) -> None:
        if done >= 128 * 1024 and done % (64 * 1024) == 0:
            halfway.set()

    task = asyncio.ensure_future(first.upload(src, room="general", progress=progress))
    await asyncio.wait_for(halfway.wait(), TIMEOUT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.close()
    (up,) = fake.uploads.values()
    kept = len(up.data)
    assert 0 < kept < 400_000
    state = json.loads((tmp_path / "state" / "files.json").read_text())
    assert len(state["uploads"]) == 1

    # a new process: another ServerFiles with the same state directory
    stub = StubClient(fake)
    second = files_for(stub, tmp_path)
    seen: list[int] = []
    try:
        await asyncio.wait_for(
            second.upload(src, room="general", progress=lambda d, t: seen.append(d)), TIMEOUT
        )
    finally:
        await second.close()
    assert len(fake.uploads) == 1 and up.data == src.read_bytes()
    assert seen[0] == kept  # it started where the server was
    assert fake.patched_bytes == 400_000
    assert stub.token_requests == [{"type": "file_token", "id": 1}]  # no new upload made


async def test_a_changed_file_is_not_resumed_into_the_old_upload(
    fake: FakeFiles, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "a.bin", 200_000)
    files = files_for(StubClient(fake), tmp_path)
    changed = False

    def progress(done: int, total: int) -> None:
        nonlocal changed
        if done == 64 * 1024 and not changed:
            changed = True
            with src.open("ab") as f:
                f.write(b"more")

    try:
        with pytest.raises(FileChanged):
            await asyncio.wait_for(files.upload(src, room="general", progress=progress), TIMEOUT)
        # the file as it is now: a new upload (other size and time)
        await asyncio.wait_for(files.upload(src, room="general"), TIMEOUT)
    finally:
        await files.close()
    assert len(fake.uploads) == 2
    assert any(up.data == src.read_bytes() for up in fake.uploads.values())


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("file_too_large", FileTooLarge),
        ("quota_exceeded", QuotaExceeded),
        ("too_many_uploads", TooManyUploads),
    ],
)
async def test_limits_refuse_before_any_byte(
    fake: FakeFiles, tmp_path: Path, code: str, error: type[ServerError]
) -> None:
    stub = StubClient(fake)
    stub.token_error = (code, "no")
    files = files_for(stub, tmp_path)
    src = make_file(tmp_path / "a.bin", 10)
    try:
        with pytest.raises(error) as info:
            await files.upload(src, room="general")
    finally:
        await files.close()
    assert isinstance(info.value, ServerError) and info.value.code == code
    assert fake.requests == []


async def test_http_413_is_file_too_large(fake: FakeFiles, tmp_path: Path) -> None:
    fake.max_size = 5
    files = files_for(StubClient(fake), tmp_path)
    try:
        with pytest.raises(FileTooLarge):
            await files.upload(make_file(tmp_path / "a.bin", 10), room="general")
    finally:
        await files.close()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("quota_exceeded: 10 of 10 bytes used", QuotaExceeded),
        ("too_many_uploads: at most 4", TooManyUploads),
        ("over your quota", QuotaExceeded),
        ("forbidden", TransferFailed),
    ],
)
async def test_http_403_says_which_limit(
    fake: FakeFiles, tmp_path: Path, text: str, error: type[Exception]
) -> None:
    fake.refuse_create = (403, text)
    files = files_for(StubClient(fake), tmp_path)
    try:
        with pytest.raises(error) as info:
            await files.upload(make_file(tmp_path / "a.bin", 10), room="general")
    finally:
        await files.close()
    if isinstance(info.value, ServerError):
        assert info.value.message == text.split(": ", 1)[-1]


async def test_upload_needs_one_target_and_a_file(fake: FakeFiles, tmp_path: Path) -> None:
    files = files_for(StubClient(fake), tmp_path)
    with pytest.raises(ValueError, match="exactly one"):
        await files.upload(tmp_path, room="a", to="b")
    with pytest.raises(IsADirectoryError):
        await files.upload(tmp_path, room="a")
    with pytest.raises(FileNotFoundError):
        await files.upload(tmp_path / "missing", room="a")


# ---------------------------------------------------------------------------- downloads


async def test_download_checks_and_names_the_file(fake: FakeFiles, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    file_id = fake.add(data, "photo.jpg")
    files = files_for(StubClient(fake), tmp_path)
    seen: list[tuple[int, int]] = []
    try:
        first = await files.download(file_id, tmp_path / "dl", progress=lambda *a: seen.append(a))
        second = await files.download(file_id, tmp_path / "dl")
    finally:
        await files.close()
    assert first == tmp_path / "dl" / "photo.jpg" and first.read_bytes() == data
    assert second == tmp_path / "dl" / "photo (1).jpg" and second.read_bytes() == data
    assert seen[-1] == (300_000, 300_000)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["photo (1).jpg", "photo.jpg"]


async def test_a_dropped_download_resumes_with_range(fake: FakeFiles, tmp_path: Path) -> None:
    data = os.urandom(500_000)
    file_id = fake.add(data, "a.bin")
    fake.cut_download_at = 200_000
    files = files_for(StubClient(fake), tmp_path)
    try:
        saved = await asyncio.wait_for(files.download(file_id, tmp_path), TIMEOUT)
    finally:
        await files.close()
    assert saved.read_bytes() == data
    ranges = [h.get("Range") for m, _, h in fake.requests if m == "GET"]
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")
    assert not list(tmp_path.glob("*.part"))


async def test_an_interrupted_download_is_resumed_by_a_new_client(
    fake: FakeFiles, tmp_path: Path
) -> None:
    data = os.urandom(2_000_000)
    file_id = fake.add(data, "movie.mkv")
    first = files_for(StubClient(fake), tmp_path)
    some = asyncio.Event()
    task = asyncio.ensure_future(
        first.download(file_id, tmp_path / "dl", progress=lambda d, t: some.set() if d else None)
    )
    await asyncio.wait_for(some.wait(), TIMEOUT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.close()
    part = tmp_path / "dl" / "movie.mkv.part"
    kept = part.stat().st_size
    assert 0 < kept <= 2_000_000

    second = files_for(StubClient(fake), tmp_path)
    try:
        saved = await asyncio.wait_for(second.download(file_id, tmp_path / "dl"), TIMEOUT)
    finally:
        await second.close()
    assert saved.read_bytes() == data and not part.exists()
    last = [h for m, _, h in fake.requests if m == "GET"][-1]
    if kept < 2_000_000:
        assert last["Range"] == f"bytes={kept}-"


async def test_checksum_mismatch_is_detected_and_nothing_saved(
    fake: FakeFiles, tmp_path: Path
) -> None:
    data = b"the real bytes"
    file_id = fake.add(data, "a.txt")
    wrong = Attachment(file_id, "a.txt", len(data), "text/plain", sha(b"other bytes"))
    files = files_for(StubClient(fake), tmp_path)
    try:
        with pytest.raises(ChecksumMismatch) as info:
            await files.download(wrong, tmp_path / "dl")
    finally:
        await files.close()
    assert info.value.actual == sha(data) and info.value.expected == sha(b"other bytes")
    assert list((tmp_path / "dl").iterdir()) == []


async def test_a_stale_partial_file_is_replaced_not_trusted(
    fake: FakeFiles, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    file_id = fake.add(data, "a.bin")
    (tmp_path / "a.bin.part").write_bytes(b"x" * 5000)  # someone else's partial file
    att = Attachment(file_id, "a.bin", len(data), "application/octet-stream", sha(data))
    files = files_for(StubClient(fake), tmp_path)
    try:
        saved = await files.download(att, tmp_path)
    finally:
        await files.close()
    assert saved.read_bytes() == data
    assert (tmp_path / "a.bin.part").read_bytes() == b"x" * 5000  # not ours: left alone


@pytest.mark.parametrize(
    "hostile",
    [
        "../../etc/passwd",
        "..",
        ".bashrc",
        "a/b\\c.txt",
        "\x1b[31mred\x07.txt",
        "evil\u202egnp.exe",
        "x" * 400 + ".txt",
        "é" * 300,
        "notes.part",
        "",
        "/",
    ],
)
async def test_hostile_names_stay_inside_the_directory(
    fake: FakeFiles, tmp_path: Path, hostile: str
) -> None:
    data = b"payload"
    file_id = fake.add(data, hostile)
    folder = tmp_path / "dl"
    files = files_for(StubClient(fake), tmp_path)
    try:
        saved = await files.download(file_id, folder)
    finally:
        await files.close()
    assert saved.parent == folder.resolve() and saved.read_bytes() == data
    name = saved.name
    assert not name.startswith(".") and "/" not in name and "\\" not in name
    assert all(ch.isprintable() for ch in name) and "\u202e" not in name
    assert len(name.encode()) <= 255 and not name.endswith(".part")


async def test_download_refusals_are_clear(fake: FakeFiles, tmp_path: Path) -> None:
    files = files_for(StubClient(fake), tmp_path)
    try:
        with pytest.raises(TransferFailed, match="no such file") as info:
            await files.download("AAAAAAAAAAAAAAAAAAAAAA", tmp_path)
        assert info.value.status == 404
        with pytest.raises(ValueError, match="not a file id"):
            await files.download("../x", tmp_path)
    finally:
        await files.close()


async def test_redirects_are_not_followed_with_the_token(fake: FakeFiles, tmp_path: Path) -> None:
    elsewhere = FakeFiles()
    await elsewhere.start()
    try:
        fake.redirect_get = f"{elsewhere.url}files/x"
        files = files_for(StubClient(fake), tmp_path)
        try:
            with pytest.raises(TransferFailed) as info:
                await files.download("AAAAAAAAAAAAAAAAAAAAAA", tmp_path)
        finally:
            await files.close()
        assert info.value.status == 302
        assert elsewhere.requests == []  # the bearer token went nowhere else
    finally:
        await elsewhere.stop()


# ---------------------------------------------------------------------------- state file


def test_state_file_is_bounded_and_survives_garbage(tmp_path: Path) -> None:
    path = tmp_path / "files.json"
    path.write_text("{not json")
    state = StateFile(path, limit=3)
    assert state.get("uploads", "k") is None
    for n in range(5):
        state.put("uploads", f"k{n}", {"url": f"u{n}"})
    state.put("downloads", "d", {"part": "p"})
    raw = json.loads(path.read_text())
    assert sorted(raw["uploads"]) == ["k2", "k3", "k4"]
    assert StateFile(path).get("downloads", "d") == {"part": "p", "ts": raw["downloads"]["d"]["ts"]}
    state.forget("uploads", "k3")
    assert state.get("uploads", "k3") is None and state.get("uploads", "k4") is not None


# ---------------------------------------------------------------------------- rules (pure)


def test_attachment_from_records() -> None:
    wire = {
        "id": "abc",
        "name": "a.png",
        "size": 3,
        "type": "image/png",
        "sha256": "A" * 64,
        "inline": True,
        "thumbnail": True,
    }
    att = Attachment.from_wire(wire)
    assert (
        att is not None and att.sha256 == "a" * 64 and att.inline and att.to_wire()["id"] == "abc"
    )
    assert attachment_of({"attachment": wire, "deleted": False}) == att
    assert attachment_of({"attachment": wire, "deleted": True}) is None
    assert attachment_of({"attachment": None}) is None
    assert Attachment.from_wire({"id": "x", "name": "y", "size": -1}) is None
    assert Attachment.from_wire({"id": 3, "name": "y", "size": 1}) is None


def test_tus_headers() -> None:
    meta = tus.upload_metadata("résumé.pdf", "application/pdf")
    assert meta == "filename csOpc3Vtw6kucGRm,filetype YXBwbGljYXRpb24vcGRm"
    headers = tus.patch_headers(10, b"abc")
    assert headers["Upload-Offset"] == "10" and headers["Content-Length"] == "3"
    assert headers["Upload-Checksum"] == "sha256 ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
    assert tus.file_id_of("http://h/files/uploads/abc_DEF-123") == "abc_DEF-123"
    with pytest.raises(ValueError):
        tus.file_id_of("http://h/files/uploads/a.b")
    assert tus.resolve("http://h:1/", "/files/uploads/x") == "http://h:1/files/uploads/x"
    with pytest.raises(ValueError):
        tus.resolve("http://h:1/", "javascript:alert(1)")
    assert tus.etag_sha256(f'W/"{"AB" * 32}"') == "ab" * 32
    assert tus.etag_sha256('"xyz"') is None
    assert tus.numbered("a.tar.gz", 2) == "a.tar (2).gz"
    assert tus.numbered("README", 1) == "README (1)"


@given(st.integers(0, 2**62), st.integers(0, 2**62), st.integers(1, 2**62))
def test_content_range_round_trip(a: int, b: int, total: int) -> None:
    start, end = min(a, b), max(a, b)
    parsed = tus.content_range(f"bytes {start}-{end}/{total}")
    if end < total:
        assert parsed == tus.ContentRange(start, end, total)
    else:
        assert parsed is None
    assert tus.content_range(f"bytes */{total}") == tus.ContentRange(None, None, total)


@given(st.text(max_size=40))
def test_content_range_never_raises(text: str) -> None:
    tus.content_range(text)
    tus.parse_offset(text)
    tus.disposition_name(text)


@given(st.text(min_size=1, max_size=300))
def test_disposition_name_round_trip(name: str) -> None:
    header = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
    assert tus.disposition_name(header) == name


@given(st.text(max_size=600))
def test_local_names_are_safe(name: str) -> None:
    safe = tus.local_name(name)
    assert safe and "/" not in safe and "\\" not in safe and not safe.startswith(".")
    assert len(safe.encode("utf-8")) <= 255 - 16
    assert all(ch.isprintable() or ch == " " for ch in safe)
    assert not safe.lower().endswith(".part")
    assert safe == safe.strip()
