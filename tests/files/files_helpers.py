"""Helpers of the files tests: a real server on 127.0.0.1 (chat + web listener on ephemeral
ports), users with chat connections and file tokens, and a small HTTP client."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_helpers import ADMIN_PASSWORD, PASSWORD, Wire

from parlour.core.passwords import Argon2Hasher
from parlour.server.app import ChatServer
from parlour.server.config import Settings

__all__ = [
    "ADMIN_PASSWORD",
    "PASSWORD",
    "User",
    "Wire",
    "b64",
    "sha256_of",
    "start_server",
    "upload_bytes",
]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def start_server(data_dir: Path, **overrides: Any) -> ChatServer:
    settings = dataclasses.replace(
        Settings(
            host="127.0.0.1",
            port=0,
            web_port=0,
            data_dir=data_dir,
            admin_password=ADMIN_PASSWORD,
            p2p_relay=False,
        ),
        **overrides,
    )
    return await ChatServer.start(
        settings, password_hasher=Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1)
    )


def base_url(server: ChatServer) -> str:
    assert server.web is not None
    host, port = server.web.addresses[0]
    return f"http://{host}:{port}"


@dataclasses.dataclass
class User:
    name: str
    wire: Wire
    token: str
    base: str
    http: aiohttp.ClientSession

    @classmethod
    async def make(
        cls, server: ChatServer, name: str, http: aiohttp.ClientSession, *, signup: bool = True
    ) -> User:
        wire = await Wire.connect(server.port)
        if name == "admin":
            await wire.login("admin", ADMIN_PASSWORD)
        elif signup:
            await wire.signup(name, PASSWORD)
        else:
            await wire.login(name, PASSWORD)
        token = (await wire.ok("file_token"))["token"]
        return cls(name, wire, token, base_url(server), http)

    async def new_token(self) -> None:
        self.token = (await self.wire.ok("file_token"))["token"]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def tus(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> aiohttp.ClientResponse:
        all_headers = {"Tus-Resumable": "1.0.0", **self.auth, **(headers or {})}
        body = io.BytesIO(data) if data is not None else None  # aiohttp warns of big bytes
        resp = await self.http.request(method, self.base + path, headers=all_headers, data=body)
        await resp.read()
        return resp

    async def create(self, length: int, name: str = "a.txt", **headers: str) -> str:
        resp = await self.tus(
            "POST",
            "/files/uploads",
            headers={
                "Upload-Length": str(length),
                "Upload-Metadata": f"filename {b64(name)}",
                **headers,
            },
        )
        assert resp.status == 201, (resp.status, await resp.text())
        location = resp.headers["Location"]
        assert location.startswith("/files/uploads/")
        return location.rsplit("/", 1)[1]

    async def patch(
        self, upload: str, offset: int, data: bytes, **headers: str
    ) -> aiohttp.ClientResponse:
        return await self.tus(
            "PATCH",
            f"/files/uploads/{upload}",
            headers={
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
                **headers,
            },
            data=data,
        )

    async def get(self, path: str, **headers: str) -> aiohttp.ClientResponse:
        resp = await self.http.get(self.base + path, headers={**self.auth, **headers})
        await resp.read()
        return resp

    async def close(self) -> None:
        await self.wire.close()


async def upload_bytes(user: User, data: bytes, name: str = "a.txt") -> str:
    """A finished upload of `data` (one PATCH): its file id."""
    upload = await user.create(len(data), name)
    resp = await user.patch(upload, 0, data)
    assert resp.status == 204, (resp.status, await resp.text())
    assert resp.headers["Upload-Offset"] == str(len(data))
    return upload
