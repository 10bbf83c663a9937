"""A small tus 1.0 + downloads test double on 127.0.0.1 (aiohttp), for the client library's
HTTP side on its own (the real server is used by test_client_uploads_e2e.py).

It keeps uploads in memory and follows docs/design/files.md: ``POST /files/uploads`` ->
``201 Location``, ``HEAD`` -> ``Upload-Offset``, ``PATCH`` with ``Upload-Checksum: sha256``
(``460`` on a mismatch, ``409`` on a wrong offset), ``GET /files/<id>`` with ``Range``,
``ETag`` (the SHA-256) and ``Content-Disposition: attachment; filename*=UTF-8''…``. Faults:
``expire_tokens()`` (the next request gets 401), ``corrupt_next_patch``, ``cut_patch_at``
(a PATCH is answered by dropping the connection after that many bytes were stored),
``cut_download_at`` (a download stops after that many bytes)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web


@dataclass
class FakeUpload:
    length: int
    name: str
    data: bytearray = field(default_factory=bytearray)
    owner: str = "alice"


class FakeFiles:
    def __init__(self) -> None:
        self.uploads: dict[str, FakeUpload] = {}
        self.tokens: set[str] = set()
        self.patched_bytes = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.corrupt_next_patch = 0
        self.cut_patch_at: int | None = None
        self.cut_download_at: int | None = None
        self.max_size = 1 << 40
        #: a URL every GET is redirected to (302)
        self.redirect_get: str | None = None
        #: (status, text) every POST gets instead of a new upload
        self.refuse_create: tuple[int, str] | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ tokens

    def issue(self) -> dict[str, Any]:
        token = secrets.token_urlsafe(32)
        self.tokens.add(token)
        return {
            "token": token,
            "expires": 2e9,
            "upload_url": "/files/uploads",
            "download_url": "/files/",
            "max_file_size": self.max_size,
            "user_quota": 1 << 40,
            "quota_used": 0,
        }

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def _authorised(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/files/uploads", self.create)
        app.router.add_route("HEAD", "/files/uploads/{id}", self.head)
        app.router.add_patch("/files/uploads/{id}", self.patch)
        app.router.add_delete("/files/uploads/{id}", self.delete)
        app.router.add_get("/files/{id}", self.get)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def add(self, data: bytes, name: str) -> str:
        """A completed upload (for download tests); returns its id."""
        file_id = secrets.token_urlsafe(16)
        self.uploads[file_id] = FakeUpload(len(data), name, bytearray(data))
        return file_id

    # ------------------------------------------------------------------ handlers

    def _log(self, request: web.Request) -> None:
        self.requests.append((request.method, request.path, dict(request.headers)))

    async def create(self, request: web.Request) -> web.Response:
        self._log(request)
        if not self._authorised(request):
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        if self.refuse_create is not None:
            return web.Response(status=self.refuse_create[0], text=self.refuse_create[1])
        length = int(request.headers["Upload-Length"])
        if length > self.max_size:
            return web.Response(status=413, text="too large")
        meta = dict(
            pair.split(" ", 1) for pair in request.headers.get("Upload-Metadata", "").split(",")
        )
        name = base64.b64decode(meta["filename"]).decode()
        file_id = secrets.token_urlsafe(16)
        self.uploads[file_id] = FakeUpload(length, name)
        return web.Response(status=201, headers={"Location": f"/files/uploads/{file_id}"})

    async def head(self, request: web.Request) -> web.Response:
        self._log(request)
        if not self._authorised(request):
            return web.Response(status=401)
        up = self.uploads.get(request.match_info["id"])
        if up is None:
            return web.Response(status=404)
        return web.Response(
            status=200,
            headers={
                "Upload-Offset": str(len(up.data)),
                "Upload-Length": str(up.length),
                "Cache-Control": "no-store",
            },
        )

    async def patch(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        if not self._authorised(request):
            await request.read()
            return web.Response(status=401)
        up = self.uploads.get(request.match_info["id"])
        if up is None:
            return web.Response(status=404)
        offset = int(request.headers["Upload-Offset"])
        if offset != len(up.data):
            await request.read()
            return web.Response(status=409)
        body = await request.read()
        algo, _, value = request.headers.get("Upload-Checksum", "").partition(" ")
        expected = base64.b64decode(value)
        if self.corrupt_next_patch > 0:
            self.corrupt_next_patch -= 1
            body = bytes([body[0] ^ 1]) + body[1:]
        if algo != "sha256" or hashlib.sha256(body).digest() != expected:
            return web.Response(status=460, text="checksum mismatch")
        if self.cut_patch_at is not None and len(up.data) + len(body) > self.cut_patch_at:
            keep = max(0, self.cut_patch_at - len(up.data))
            up.data += body[:keep]
            self.patched_bytes += keep
            self.cut_patch_at = None
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        up.data += body
        self.patched_bytes += len(body)
        return web.Response(status=204, headers={"Upload-Offset": str(len(up.data))})

    async def delete(self, request: web.Request) -> web.Response:
        self._log(request)
        self.uploads.pop(request.match_info["id"], None)
        return web.Response(status=204)

    async def get(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        if self.redirect_get is not None:
            return web.Response(status=302, headers={"Location": self.redirect_get})
        if not self._authorised(request):
            return web.Response(status=401)
        up = self.uploads.get(request.match_info["id"])
        if up is None or len(up.data) != up.length:
            return web.Response(status=404)
        data = bytes(up.data)
        digest = hashlib.sha256(data).hexdigest()
        headers = {
            "ETag": f'"{digest}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(up.name, safe='')}",
        }
        start, status = 0, 200
        rng = request.headers.get("Range")
        if rng and request.headers.get("If-Range", f'"{digest}"') == f'"{digest}"':
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                return web.Response(
                    status=416, headers={**headers, "Content-Range": f"bytes */{len(data)}"}
                )
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        if self.cut_download_at is not None and self.cut_download_at < start + len(body):
            keep = max(0, self.cut_download_at - start)
            self.cut_download_at = None
            await resp.write(body[:keep])
            assert request.transport is not None
            request.transport.abort()
            return resp
        await resp.write(body)
        await resp.write_eof()
        return resp
