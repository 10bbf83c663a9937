"""tus 1.0 against a real server: the external client tuspy, resume after an interrupted
upload (a client that stops, and a connection cut mid-body), checksums, termination, the
protocol's refusals."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from pathlib import Path

import aiohttp
from files_helpers import User, b64, sha256_of, upload_bytes
from tusclient import client as tus_client

from parlour.server.app import ChatServer


def _tuspy_upload(
    url: str, token: str, path: Path, *, stop_at: int | None = None, resume: str | None = None
) -> tuple[str, int]:
    """Upload `path` with tuspy (blocking: run in a thread): (upload URL, offset reached)."""
    tus = tus_client.TusClient(url, headers={"Authorization": f"Bearer {token}"})
    with path.open("rb") as stream:  # tuspy leaves files it opens itself open
        uploader = tus.uploader(
            file_stream=stream,
            url=resume,
            chunk_size=256 * 1024,
            metadata={"filename": path.name, "filetype": "application/x-made-up"},
            upload_checksum=True,
        )
        uploader.upload(stop_at=stop_at)
    assert uploader.url is not None
    return uploader.url, uploader.offset


async def test_tuspy_uploads_resumes_and_the_bytes_arrive(
    server: ChatServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    alice = await User.make(server, "alice", http)
    await alice.wire.ok("join", room="general")
    data = os.urandom(1_500_000)
    source = tmp_path / "random.bin"
    source.write_bytes(data)
    endpoint = alice.base + "/files/uploads"
    # the first client stops after about a third (as if interrupted)...
    url, offset = await asyncio.to_thread(
        _tuspy_upload, endpoint, alice.token, source, stop_at=512 * 1024
    )
    assert offset == 512 * 1024
    # ...a second one resumes from the server's offset (HEAD) and finishes
    url2, offset2 = await asyncio.to_thread(
        _tuspy_upload, endpoint, alice.token, source, resume=url
    )
    assert url2 == url and offset2 == len(data)
    upload = url.rsplit("/", 1)[1]
    sent = await alice.wire.ok("send", room="general", text="", client_id="t1", attachment=upload)
    history = await alice.wire.ok("history", room="general")
    att = history["messages"][-1]["attachment"]
    assert history["messages"][-1]["seq"] == sent["seq"]
    assert att["sha256"] == sha256_of(data) and att["size"] == len(data)
    assert att["type"] == "application/octet-stream" and not att["inline"]  # not the claim
    got = await alice.get(f"/files/{upload}")
    assert got.status == 200 and sha256_of(await got.read()) == sha256_of(data)
    assert got.headers["Content-Disposition"].startswith("attachment;")
    await alice.close()


async def test_a_connection_cut_mid_body_keeps_what_arrived(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    alice = await User.make(server, "alice", http)
    data = os.urandom(3 * 1024 * 1024)
    upload = await alice.create(len(data))
    noticed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    assert server.files is not None
    server.files.observer = lambda what, fid: (
        noticed.set_result(fid) if what == "interrupted" and not noticed.done() else None
    )
    host, port = server.web.addresses[0]  # type: ignore[union-attr]
    _reader, writer = await asyncio.open_connection(host, port)
    sent_part = data[: 2 * 1024 * 1024 + 123]
    writer.write(
        (
            f"PATCH /files/uploads/{upload} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Tus-Resumable: 1.0.0\r\nAuthorization: Bearer {alice.token}\r\n"
            "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        + sent_part
    )
    await writer.drain()
    writer.close()  # the client goes away mid-body
    await writer.wait_closed()
    # the server keeps what it received: HEAD tells the offset to resume from
    assert await asyncio.wait_for(noticed, 30) == upload
    head = await alice.tus("HEAD", f"/files/uploads/{upload}")
    assert head.status == 200
    offset = int(head.headers["Upload-Offset"])
    assert offset == len(sent_part)
    resp = await alice.patch(upload, offset, data[offset:])
    assert resp.status == 204 and resp.headers["Upload-Offset"] == str(len(data))
    got = await alice.get(f"/files/{upload}")
    assert await got.read() == data
    await alice.close()


async def test_checksums(server: ChatServer, http: aiohttp.ClientSession) -> None:
    alice = await User.make(server, "alice", http)
    upload = await alice.create(8)
    good = base64.b64encode(hashlib.sha256(b"abcd").digest()).decode()
    bad = base64.b64encode(hashlib.sha256(b"nope").digest()).decode()
    resp = await alice.patch(upload, 0, b"abcd", **{"Upload-Checksum": f"sha256 {bad}"})
    assert resp.status == 460
    head = await alice.tus("HEAD", f"/files/uploads/{upload}")
    assert head.headers["Upload-Offset"] == "0"  # the chunk was discarded
    resp = await alice.patch(upload, 0, b"abcd", **{"Upload-Checksum": f"sha256 {good}"})
    assert resp.status == 204 and resp.headers["Upload-Offset"] == "4"
    sha1 = base64.b64encode(hashlib.sha1(b"efgh").digest()).decode()
    resp = await alice.patch(upload, 4, b"efgh", **{"Upload-Checksum": f"sha1 {sha1}"})
    assert resp.status == 204 and resp.headers["Upload-Offset"] == "8"
    resp = await alice.patch(upload, 8, b"", **{"Upload-Checksum": "md5 AAAA"})
    assert resp.status == 400  # an algorithm the server does not offer
    await alice.close()


async def test_protocol_refusals_and_termination(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    alice = await User.make(server, "alice", http)
    bob = await User.make(server, "bob", http)
    options = await http.options(alice.base + "/files/uploads")
    assert options.status == 204
    assert options.headers["Tus-Version"] == "1.0.0"
    assert set(options.headers["Tus-Extension"].split(",")) >= {
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    }
    assert options.headers["Tus-Checksum-Algorithm"] == "sha1,sha256"
    upload = await alice.create(10)
    # an offset that is not the server's: 409
    assert (await alice.patch(upload, 5, b"12345")).status == 409
    # the wrong content type: 415; no Tus-Resumable: 412
    resp = await alice.tus(
        "PATCH",
        f"/files/uploads/{upload}",
        headers={"Upload-Offset": "0", "Content-Type": "text/plain"},
        data=b"x",
    )
    assert resp.status == 415
    resp = await http.patch(
        alice.base + f"/files/uploads/{upload}",
        headers={**alice.auth, "Upload-Offset": "0"},
        data=b"x",
    )
    assert resp.status == 412
    # more bytes than Upload-Length: refused, nothing kept
    assert (await alice.patch(upload, 0, b"x" * 11)).status == 413
    # somebody else's upload does not exist for them
    assert (await bob.tus("HEAD", f"/files/uploads/{upload}")).status == 404
    assert (await bob.patch(upload, 0, b"1")).status == 404
    # no token, a bad token: 401 with WWW-Authenticate
    resp = await http.head(
        alice.base + f"/files/uploads/{upload}", headers={"Tus-Resumable": "1.0.0"}
    )
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await http.head(
        alice.base + f"/files/uploads/{upload}",
        headers={"Tus-Resumable": "1.0.0", "Authorization": "Bearer not-a-token"},
    )
    assert resp.status == 401
    # metadata that is not tus's
    resp = await alice.tus(
        "POST", "/files/uploads", headers={"Upload-Length": "1", "Upload-Metadata": "filename !!"}
    )
    assert resp.status == 400
    resp = await alice.tus("POST", "/files/uploads", headers={"Upload-Length": "-1"})
    assert resp.status == 400
    # termination: the partial upload is gone
    assert (await alice.tus("DELETE", f"/files/uploads/{upload}")).status == 204
    assert (await alice.tus("HEAD", f"/files/uploads/{upload}")).status == 404
    # creation-with-upload: bytes in the POST
    resp = await alice.tus(
        "POST",
        "/files/uploads",
        headers={
            "Upload-Length": "5",
            "Upload-Metadata": f"filename {b64('w.txt')}",
            "Content-Type": "application/offset+octet-stream",
        },
        data=b"hello",
    )
    assert resp.status == 201 and resp.headers["Upload-Offset"] == "5"
    assert "Upload-Expires" in resp.headers
    done = resp.headers["Location"].rsplit("/", 1)[1]
    assert await (await alice.get(f"/files/{done}")).read() == b"hello"
    # a finished upload takes no more bytes
    assert (await alice.patch(done, 5, b"!")).status == 409
    await alice.close()
    await bob.close()


async def test_limits_before_bytes(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    from files_helpers import start_server

    server = await start_server(
        tmp_path / "d", max_file_size=1000, user_quota=1500, max_concurrent_uploads=2
    )
    try:
        alice = await User.make(server, "alice", http)
        # file_token says it before any byte is sent
        err = await alice.wire.error("file_token", size=1001)
        assert err["code"] == "file_too_large" and err["max_file_size"] == 1000
        ok = await alice.wire.ok("file_token", size=1000)
        assert ok["max_file_size"] == 1000 and ok["user_quota"] == 1500
        # HTTP says it too: exactly the limit is fine, one byte over is 413
        resp = await alice.tus("POST", "/files/uploads", headers={"Upload-Length": "1001"})
        assert resp.status == 413
        first = await upload_bytes(alice, b"x" * 1000, "limit.bin")
        assert first
        err = await alice.wire.error("file_token", size=501)
        assert err["code"] == "quota_exceeded" and err["quota_used"] == 1000
        resp = await alice.tus("POST", "/files/uploads", headers={"Upload-Length": "501"})
        assert resp.status == 403 and "quota" in await resp.text()
        await alice.create(10)
        await alice.create(10)
        err = await alice.wire.error("file_token", size=1)
        assert err["code"] == "too_many_uploads"
        resp = await alice.tus("POST", "/files/uploads", headers={"Upload-Length": "1"})
        assert resp.status == 403 and "too_many_uploads" in await resp.text()
        hello = await alice.wire.ok("hello", version=1)
        assert hello["limits"]["max_file_size"] == 1000
        assert hello["limits"]["upload_url"] == "/files/uploads"
        await alice.close()
    finally:
        await server.stop(grace=1.0)


async def test_a_client_that_comes_back_breaks_its_stale_request(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    """A PATCH whose link died silently (no FIN, no RST: the server still waits for its body)
    holds the upload; the client comes back, and its HEAD takes the upload over."""
    alice = await User.make(server, "alice", http)
    data = os.urandom(2 * 1024 * 1024)
    upload = await alice.create(len(data))
    host, port = server.web.addresses[0]  # type: ignore[union-attr]
    _reader, writer = await asyncio.open_connection(host, port)
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    assert server.files is not None
    server.files.observer = lambda what, fid: (
        started.set_result(None) if what == "writing" and not started.done() else None
    )
    writer.write(
        (
            f"PATCH /files/uploads/{upload} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Tus-Resumable: 1.0.0\r\nAuthorization: Bearer {alice.token}\r\n"
            "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        + data[: len(data) // 2]
    )
    await writer.drain()
    await asyncio.wait_for(started, 30)  # the stale request holds the upload now
    head = await alice.tus("HEAD", f"/files/uploads/{upload}")
    assert head.status == 200
    offset = int(head.headers["Upload-Offset"])
    assert 0 <= offset <= len(data) // 2
    resp = await alice.patch(upload, offset, data[offset:])
    assert resp.status == 204 and resp.headers["Upload-Offset"] == str(len(data))
    assert await (await alice.get(f"/files/{upload}")).read() == data
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    await alice.close()


async def test_tuspy_uploads_an_empty_file(
    server: ChatServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    alice = await User.make(server, "alice", http)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    url, offset = await asyncio.to_thread(
        _tuspy_upload, alice.base + "/files/uploads", alice.token, empty
    )
    assert offset == 0
    upload = url.rsplit("/", 1)[1]
    got = await alice.get(f"/files/{upload}")
    assert got.status == 200 and await got.read() == b""
    assert got.headers["ETag"] == f'"{sha256_of(b"")}"'
    await alice.close()


async def test_others_are_served_while_an_upload_hangs(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    """An upload whose client stalls mid-body holds nothing but its own upload: chat and
    other users' uploads and downloads go on."""
    alice = await User.make(server, "alice", http)
    bob = await User.make(server, "bob", http)
    upload = await alice.create(1024 * 1024)
    writing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    assert server.files is not None
    server.files.observer = lambda what, fid: (
        writing.set_result(None) if what == "writing" and fid == upload else None
    )
    host, port = server.web.addresses[0]  # type: ignore[union-attr]
    _reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        (
            f"PATCH /files/uploads/{upload} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Tus-Resumable: 1.0.0\r\nAuthorization: Bearer {alice.token}\r\n"
            "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            "Content-Length: 1048576\r\n\r\n"
        ).encode()
        + b"x" * 1000
    )
    await writer.drain()
    await asyncio.wait_for(writing, 30)  # the stalled request holds its upload
    await bob.wire.ok("ping")
    other = await upload_bytes(bob, b"bob's bytes", "b.txt")
    assert await (await bob.get(f"/files/{other}")).read() == b"bob's bytes"
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    await alice.close()
    await bob.close()
