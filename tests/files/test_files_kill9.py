"""`kill -9` of the server in the middle of an upload: restart, resume from the last durable
offset, and the stored file's SHA-256 equals the source's."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import sys
from pathlib import Path

import aiohttp
from files_helpers import ADMIN_PASSWORD, Wire, b64

TIMEOUT = 60.0
SIZE = 40 * 1024 * 1024


class ServerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, web: str) -> None:
        self.proc = proc
        self.port = port
        self.web = web

    @classmethod
    async def start(cls, data_dir: Path) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
        env["PARLOUR_ARGON2_TIME_COST"] = "1"
        env["PARLOUR_ARGON2_MEMORY_KIB"] = "64"
        env["PARLOUR_ADMIN_PASSWORD"] = ADMIN_PASSWORD
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "parlour", "serve", "--port", "0", "--web-port", "0",
            "--data-dir", str(data_dir), "--log-level", "WARNING",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        assert proc.stdout is not None
        port, web = None, None
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
            if not line:
                raise AssertionError("server exited early")
            found = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
            found = re.search(r"Web client: (http://\S+?)/\s", line)
            if found:
                web = found.group(1)
            if line.startswith("Press Ctrl+C"):
                break
        assert port is not None and web is not None
        return cls(proc, port, web)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()  # SIGKILL: no shutdown, no flush


async def _token(port: int) -> tuple[Wire, str]:
    wire = await Wire.connect(port)
    await wire.login("admin", ADMIN_PASSWORD)
    return wire, (await wire.ok("file_token"))["token"]


async def test_kill_9_mid_upload_then_resume(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    data = os.urandom(SIZE)
    source.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    data_dir = tmp_path / "data"
    server = await ServerProcess.start(data_dir)
    wire: Wire | None = None
    try:
        wire, token = await _token(server.port)
        tus = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                server.web + "/files/uploads",
                headers={
                    **tus,
                    "Upload-Length": str(SIZE),
                    "Upload-Metadata": f"filename {b64('big.bin')}",
                },
            )
            assert resp.status == 201
            upload = resp.headers["Location"].rsplit("/", 1)[1]
        # a raw PATCH of the whole file; the server is killed after 24 MiB of it were sent
        host_port = server.web.removeprefix("http://")
        host, port = host_port.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            (
                f"PATCH /files/uploads/{upload} HTTP/1.1\r\nHost: {host_port}\r\n"
                f"Tus-Resumable: 1.0.0\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                f"Content-Length: {SIZE}\r\n\r\n"
            ).encode()
        )
        sent = 0
        while sent < 24 * 1024 * 1024:
            writer.write(data[sent : sent + 1024 * 1024])
            await writer.drain()
            sent += 1024 * 1024
        server.kill()
        await asyncio.wait_for(server.proc.wait(), TIMEOUT)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        del reader
        await wire.close()
        wire = None
        # restart on the same data directory; tokens were node memory: ask again
        server = await ServerProcess.start(data_dir)
        wire, token = await _token(server.port)
        tus = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            head = await http.head(server.web + f"/files/uploads/{upload}", headers=tus)
            assert head.status == 200
            offset = int(head.headers["Upload-Offset"])
            assert 0 <= offset <= sent
            resp = await http.patch(
                server.web + f"/files/uploads/{upload}",
                headers={
                    **tus,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                },
                data=_from(source, offset),
            )
            assert resp.status == 204, await resp.text()
            assert resp.headers["Upload-Offset"] == str(SIZE)
            got = hashlib.sha256()
            resp = await http.get(server.web + f"/files/{upload}", headers=tus)
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(1 << 20):
                got.update(chunk)
            assert got.hexdigest() == want
        # the blob on disk: content-addressed by the source's SHA-256, the same bytes
        blob = data_dir / "files" / "blobs" / want[:2] / want[2:4] / want
        digest = hashlib.sha256()
        with blob.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        assert digest.hexdigest() == want
        assert not (data_dir / "files" / "uploads" / upload).exists()
    finally:
        if wire is not None:
            await wire.close()
        server.kill()
        await asyncio.wait_for(server.proc.wait(), TIMEOUT)


async def _from(path: Path, offset: int):  # type: ignore[no-untyped-def]
    """The file from `offset` on, streamed (an async generator body for aiohttp)."""
    with path.open("rb") as f:
        f.seek(offset)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            yield chunk
