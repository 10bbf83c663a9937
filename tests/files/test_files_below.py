"""A PATCH body read below aiohttp (plain TCP, at least `fast_min` bytes still to come): the
edges of that path against a real server on 127.0.0.1 — a body partly buffered by aiohttp,
a client that goes away while the thread reads, an idle body, a server shutting down, a body
longer than the upload, bytes pipelined after the body, a zero-length PATCH, checksums, and TLS
connections, which keep the ordinary path."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import ssl
from pathlib import Path

import aiohttp
import pytest
from files_helpers import PASSWORD, User, Wire, start_server

import parlour.files.http as files_http
from parlour.server.app import ChatServer

MiB = 1024 * 1024


def _head(user: User, upload: str, length: int, offset: int = 0, extra: str = "") -> bytes:
    host = user.base.removeprefix("http://")
    return (
        f"PATCH /files/uploads/{upload} HTTP/1.1\r\nHost: {host}\r\n"
        f"Tus-Resumable: 1.0.0\r\nAuthorization: Bearer {user.token}\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def _when(server: ChatServer, what: str, upload: str) -> asyncio.Future[None]:
    """A future done when the files endpoints report `what` for `upload`."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    assert server.files is not None
    before = server.files.observer

    def observe(seen: str, fid: str) -> None:
        if before is not None:
            before(seen, fid)
        if seen == what and fid == upload and not fut.done():
            fut.set_result(None)

    server.files.observer = observe
    return fut


async def _open(server: ChatServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.web.addresses[0]  # type: ignore[union-attr]
    return await asyncio.open_connection(host, port)


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (a reset after the answer ends it too)."""
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await reader.read(65536):
            got += chunk
    return got


async def _offset(user: User, upload: str) -> int:
    head = await user.tus("HEAD", f"/files/uploads/{upload}")
    assert head.status == 200
    return int(head.headers["Upload-Offset"])


def _below(server: ChatServer) -> int:
    assert server.files is not None
    return server.files.stats["read_below"]


async def test_a_body_partly_buffered_by_aiohttp(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    alice = await User.make(server, "alice", http)
    data = os.urandom(3 * MiB + 17)
    upload = await alice.create(len(data))
    below = _when(server, "below", upload)
    reader, writer = await _open(server)
    writer.write(_head(alice, upload, len(data)) + data[:100_000])  # with the head: buffered
    await writer.drain()
    await asyncio.wait_for(below, 30)  # taken from aiohttp with what it had
    writer.write(data[100_000:])
    await writer.drain()
    answer = await _read_all(reader)  # the server closes the connection after the answer
    writer.close()
    assert answer.startswith(b"HTTP/1.1 204 ")
    assert b"\r\nConnection: close\r\n" in answer
    assert f"\r\nUpload-Offset: {len(data)}\r\n".encode() in answer
    assert _below(server) == 1
    got = await alice.get(f"/files/{upload}")
    assert got.status == 200 and await got.read() == data
    await alice.close()


async def test_a_client_that_goes_away_while_the_thread_reads(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    alice = await User.make(server, "alice", http)
    data = os.urandom(4 * MiB)
    upload = await alice.create(len(data))
    below = _when(server, "below", upload)
    cut = _when(server, "interrupted", upload)
    _reader, writer = await _open(server)
    writer.write(_head(alice, upload, len(data)) + data[:1000])
    await writer.drain()
    await asyncio.wait_for(below, 30)
    sent = 1000 + 2 * MiB + 5
    writer.write(data[1000:sent])  # read by the thread, then the FIN
    await writer.drain()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    await asyncio.wait_for(cut, 30)
    assert await _offset(alice, upload) == sent  # everything that arrived is durable
    resp = await alice.patch(upload, sent, data[sent:])
    assert resp.status == 204 and resp.headers["Upload-Offset"] == str(len(data))
    got = await alice.get(f"/files/{upload}")
    assert hashlib.sha256(await got.read()).digest() == hashlib.sha256(data).digest()
    await alice.close()


async def test_an_idle_body_is_closed(
    server: ChatServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_http, "BODY_IDLE", 0.2)
    alice = await User.make(server, "alice", http)
    data = os.urandom(2 * MiB)
    upload = await alice.create(len(data))
    below = _when(server, "below", upload)
    cut = _when(server, "interrupted", upload)
    reader, writer = await _open(server)
    writer.write(_head(alice, upload, len(data)) + data[:300_000])
    await writer.drain()
    await asyncio.wait_for(below, 30)
    await asyncio.wait_for(cut, 30)  # the body stalled: the server closed it
    assert await _read_all(reader) == b""  # closed without an answer
    writer.close()
    offset = await _offset(alice, upload)
    assert offset <= 300_000  # what was read before the stall (all of it, as a rule): durable
    resp = await alice.patch(upload, offset, data[offset:])
    assert resp.status == 204 and resp.headers["Upload-Offset"] == str(len(data))
    assert await (await alice.get(f"/files/{upload}")).read() == data
    await alice.close()


async def test_a_server_shutting_down_keeps_what_arrived(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await start_server(tmp_path / "d")
    try:
        alice = await User.make(server, "alice", http)
        data = os.urandom(2 * MiB)
        upload = await alice.create(len(data))
        below = _when(server, "below", upload)
        cut = _when(server, "interrupted", upload)
        _reader, writer = await _open(server)
        writer.write(_head(alice, upload, len(data)) + data[:500_000])
        await writer.drain()
        await asyncio.wait_for(below, 30)
        await alice.close()
    finally:
        await server.stop(grace=1.0)
    assert cut.done()
    writer.close()
    again = await start_server(tmp_path / "d")
    try:
        alice = await User.make(again, "alice", http, signup=False)
        offset = await _offset(alice, upload)
        assert offset <= 500_000  # what the thread had read when it stopped: durable
        resp = await alice.patch(upload, offset, data[offset:])
        assert resp.status == 204 and resp.headers["Upload-Offset"] == str(len(data))
        assert await (await alice.get(f"/files/{upload}")).read() == data
        await alice.close()
    finally:
        await again.stop(grace=1.0)


async def test_a_body_longer_than_the_upload(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    alice = await User.make(server, "alice", http)
    data = os.urandom(MiB)
    upload = await alice.create(len(data))
    reader, writer = await _open(server)
    writer.write(_head(alice, upload, 2 * MiB))  # said before a byte is sent
    await writer.drain()
    answer = await reader.readuntil(b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")
    writer.close()
    assert await _offset(alice, upload) == 0
    resp = await alice.patch(upload, 0, data)
    assert resp.status == 204 and resp.headers["Upload-Offset"] == str(len(data))
    assert _below(server) == 1
    await alice.close()


async def test_bytes_pipelined_after_the_body_are_not_taken(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    alice = await User.make(server, "alice", http)
    data = os.urandom(4 * MiB)
    upload = await alice.create(len(data) + 100)
    host = alice.base.removeprefix("http://")
    after = f"HEAD /files/uploads/{upload} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() + b"x" * 100
    reader, writer = await _open(server)
    writer.write(_head(alice, upload, len(data)) + data + after)
    await writer.drain()
    answer = await _read_all(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 204 ")
    assert answer.count(b"HTTP/1.1 ") == 1  # the pipelined request is not answered
    assert b"\r\nConnection: close\r\n" in answer
    assert _below(server) == 1
    assert await _offset(alice, upload) == len(data)  # nothing past the body was written
    resp = await alice.patch(upload, len(data), b"y" * 100)
    assert resp.status == 204
    got = await alice.get(f"/files/{upload}")
    assert await got.read() == data + b"y" * 100
    await alice.close()


async def test_a_zero_length_patch_keeps_the_connection(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    alice = await User.make(server, "alice", http)
    upload = await alice.create(10)
    resp = await alice.patch(upload, 0, b"")
    assert resp.status == 204 and resp.headers["Upload-Offset"] == "0"
    assert resp.headers.get("Connection", "").lower() != "close"
    assert _below(server) == 0
    await alice.close()


@pytest.mark.parametrize(("good", "status"), [(True, 204), (False, 460)])
async def test_checksums_below(
    server: ChatServer, http: aiohttp.ClientSession, good: bool, status: int
) -> None:
    alice = await User.make(server, "alice", http)
    data = os.urandom(2 * MiB)
    upload = await alice.create(len(data))
    digest = hashlib.sha256(data if good else b"other").digest()
    resp = await alice.patch(
        upload, 0, data, **{"Upload-Checksum": f"sha256 {base64.b64encode(digest).decode()}"}
    )
    assert resp.status == status
    assert resp.headers["Upload-Offset"] == str(len(data) if good else 0)
    assert _below(server) == 1
    assert await _offset(alice, upload) == (len(data) if good else 0)
    await alice.close()


async def test_tls_connections_keep_the_ordinary_path(
    tmp_path: Path, self_signed_cert: tuple[Path, Path]
) -> None:
    cert, key = self_signed_cert
    server = await start_server(tmp_path / "d", tls_cert=cert, tls_key=key)
    ctx = ssl.create_default_context(cafile=str(cert))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            wire = await Wire.connect(server.port, ssl_context=ctx)
            await wire.signup("alice", PASSWORD)
            token = (await wire.ok("file_token"))["token"]
            host, port = server.web.addresses[0]  # type: ignore[union-attr]
            alice = User("alice", wire, token, f"https://{host}:{port}", http)
            data = os.urandom(2 * MiB)
            upload = await alice.create(len(data))
            resp = await alice.patch(upload, 0, data)
            assert resp.status == 204 and resp.headers["Upload-Offset"] == str(len(data))
            assert resp.headers.get("Connection", "").lower() != "close"
            assert _below(server) == 0
            assert await (await alice.get(f"/files/{upload}")).read() == data
            await alice.close()
    finally:
        await server.stop(grace=1.0)


async def test_a_returning_client_breaks_the_lock_of_a_body_read_below(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    """A stale PATCH whose body the thread is reading holds the upload; the client's HEAD
    stops that thread, closes its connection and resumes from what was made durable."""
    alice = await User.make(server, "alice", http)
    data = os.urandom(3 * MiB)
    upload = await alice.create(len(data))
    below = _when(server, "below", upload)
    reader, writer = await _open(server)
    writer.write(_head(alice, upload, len(data)) + data[: MiB + 7])
    await writer.drain()
    await asyncio.wait_for(below, 30)
    offset = await _offset(alice, upload)  # breaks the lock: the stale request ends
    assert 0 <= offset <= MiB + 7
    assert await _read_all(reader) == b""  # its connection was closed without an answer
    writer.close()
    resp = await alice.patch(upload, offset, data[offset:])
    assert resp.status == 204 and resp.headers["Upload-Offset"] == str(len(data))
    assert await (await alice.get(f"/files/{upload}")).read() == data
    assert _below(server) == 2
    await alice.close()
