"""Files in chat, client side: uploads to the server (tus 1.0), attachments on messages, and
safe downloads (docs/design/files.md, docs/client.md "Files in chat").

* :meth:`ServerFiles.upload` asks ``file_token`` with the file's size first (so the size
  limit, the quota and the concurrent-upload limit refuse it before a byte is sent:
  :class:`~parlour.client.errors.FileTooLarge`, :class:`QuotaExceeded`,
  :class:`TooManyUploads`), creates a tus upload on the web listener and sends the file in
  PATCH chunks, each with ``Upload-Checksum: sha256`` (a chunk in memory at a time, never the
  whole file). A ``401`` renews the token and goes on; a dropped connection or a server error
  asks ``HEAD`` for the durable offset and goes on from there. The upload's URL is
  remembered in a small JSON state file (``<state dir>/files.json``) under the server, the
  file's absolute path, size and modification time, so a new process uploading the same file
  resumes it too. Complete, it becomes the ``attachment`` of a ``send`` / ``dm``.
* :meth:`ServerFiles.download` writes into ``<name>.part`` beside the final file, resuming
  with ``Range`` (``If-Range`` the SHA-256), checks the SHA-256 of the whole file against the
  attachment's (or the ``ETag``), and only then renames it: to the sanitised name, never over
  an existing file (``name (1).ext``...).

The HTTP is aiohttp's client; the rules (headers, names, ranges) are in
:mod:`parlour.client.tus`, without I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import mimetypes
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from parlour.client import tus
from parlour.client.errors import (
    ChecksumMismatch,
    ClientError,
    FileChanged,
    FilesUnavailable,
    QuotaExceeded,
    ServerError,
    TooManyUploads,
    TransferFailed,
    server_error,
)
from parlour.client.types import Attachment, FileToken
from parlour.protocol import FileTokenRequest

if TYPE_CHECKING:
    from parlour.client.client import Client

__all__ = [
    "DEFAULT_CHUNK",
    "ServerFiles",
    "StateFile",
    "TransferProgress",
    "default_state_dir",
]

log = logging.getLogger("parlour.client.files")

#: ``progress(done, total)``: bytes the server has (upload) or written (download), of all
TransferProgress = Callable[[int, int], None]

#: bytes per PATCH (hashed for its Upload-Checksum; the one being sent and the next one are
#: in memory). Each PATCH costs a round trip and a server-side fsync (the next chunk is read
#: and hashed meanwhile); an interrupted PATCH is sent again whole (the server drops a cut
#: checksummed body): 8 MiB balances the two
DEFAULT_CHUNK = 8 * 1024 * 1024
#: pieces a chunk is written in (progress is reported after each)
_PIECE = 256 * 1024
#: a token is renewed when it has less than this many seconds left
_TOKEN_MARGIN = 60.0
#: how often one upload or download tries again after a dropped connection or a 5xx
_RETRIES = 5
#: how often a chunk is sent again after the server found its checksum wrong (460)
_CHECKSUM_RETRIES = 3
#: uploads and downloads remembered in the state file (the oldest are forgotten)
_REMEMBERED = 64
_STATUS_CHECKSUM = 460


def default_state_dir() -> Path:
    """Where the client keeps its small state (unfinished uploads and downloads):
    ``$PARLOUR_STATE_DIR``, else ``$XDG_STATE_HOME/parlour``, else ``~/.local/state/parlour``."""
    env = os.environ.get("PARLOUR_STATE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "parlour"


class StateFile:
    """``files.json``: unfinished uploads (key -> upload URL, the message's client id) and
    downloads (key -> partial file), at most :data:`_REMEMBERED` of each; written whole to a
    temporary file and renamed (a crash leaves the old or the new one). An unreadable file
    counts as empty: the state only saves work, it never decides anything."""

    def __init__(self, path: Path, limit: int = _REMEMBERED) -> None:
        self.path = path
        self.limit = limit

    def _load(self) -> dict[str, dict[str, dict[str, Any]]]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw = {}
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for section in ("uploads", "downloads"):
            items = raw.get(section) if isinstance(raw, dict) else None
            out[section] = (
                {k: v for k, v in items.items() if isinstance(k, str) and isinstance(v, dict)}
                if isinstance(items, dict)
                else {}
            )
        return out

    def get(self, section: str, key: str) -> dict[str, Any] | None:
        return self._load()[section].get(key)

    def put(self, section: str, key: str, value: dict[str, Any]) -> None:
        data = self._load()
        items = data[section]
        items.pop(key, None)
        items[key] = {**value, "ts": time.time()}
        while len(items) > self.limit:
            oldest = min(items, key=lambda k: float(items[k].get("ts") or 0))
            del items[oldest]
        self._save(data)

    def forget(self, section: str, key: str) -> None:
        data = self._load()
        if data[section].pop(key, None) is not None:
            self._save(data)

    def _save(self, data: dict[str, dict[str, dict[str, Any]]]) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": 1, **data}), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:  # a read-only home: transfers work, resuming after exit not
            log.warning("cannot save %s: %s", self.path, exc)


class _Gone(Exception):
    """The upload is not on the server any more (expired, removed): start a new one."""


class ServerFiles:
    """Uploads and downloads of one :class:`~parlour.client.Client` (``client.server_files``).

    ``files_url``: the web listener's base URL, for servers that give their files URLs as
    paths (default: the ``web_url`` of the server's ``hello``, else the chat host with its
    ``web_port`` — or the chat port + 1 from a server that says neither —, https when the
    chat is over TLS)."""

    def __init__(
        self,
        client: Client,
        *,
        state_dir: Path | None = None,
        files_url: str | None = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self._client = client
        self.state = StateFile((state_dir or default_state_dir()) / "files.json")
        self._files_url = files_url
        self.chunk_size = chunk_size
        self._token: FileToken | None = None
        self._token_lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ plumbing

    @property
    def server(self) -> str:
        """The server's name in the state file: the chat address."""
        return f"{self._client.host}:{self._client.port}"

    def base_url(self) -> str:
        if self._files_url:
            return self._files_url
        limits = self._client.welcome.limits if self._client.welcome is not None else {}
        for key in ("web_url", "files_url", "public_url"):
            value = limits.get(key)
            if isinstance(value, str) and value.startswith(("http://", "https://")):
                return value
        scheme = "https" if self._client.tls else "http"
        host = self._client.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        port = limits.get("web_port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            port = self._client.port + 1  # a server that does not say where it listens
        return f"{scheme}://{host}:{port}/"

    def _http_session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            timeout = aiohttp.ClientTimeout(total=None, connect=30.0, sock_read=120.0)
            self._http = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        return self._http

    def _ssl(self) -> Any:
        context = self._client.ssl_context
        return context if context is not None else True

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def token(self, size: int | None = None, *, renew: bool = False) -> FileToken:
        """A bearer token for the files endpoints (cached until shortly before it expires).
        With ``size`` the server checks the limits first: raises FileTooLarge,
        QuotaExceeded, TooManyUploads or FilesUnavailable."""
        welcome = self._client.welcome
        if welcome is not None and not welcome.limits.get("upload_url"):
            # (the hello limits name the uploads endpoint only when the server takes files)
            raise FilesUnavailable("unavailable", "this server takes no uploads")
        async with self._token_lock:
            cached = self._token
            if (
                size is None
                and not renew
                and cached is not None
                and cached.expires - _TOKEN_MARGIN > time.time()
            ):
                return cached
            try:
                data = await self._client._call(lambda i: FileTokenRequest(id=i, size=size))
            except ServerError as exc:
                raise server_error(str(exc.code), exc.message, exc.extra, files=True) from None
            self._token = FileToken.from_data(data)
            return self._token

    def _auth(self, token: FileToken) -> dict[str, str]:
        return {"Authorization": f"Bearer {token.token}", "Tus-Resumable": tus.TUS_VERSION}

    # ------------------------------------------------------------------ uploads

    async def upload(
        self,
        path: str | os.PathLike[str],
        *,
        room: str | None = None,
        to: str | None = None,
        caption: str | None = None,
        progress: TransferProgress | None = None,
    ) -> Any:
        """Upload the file at ``path`` and post it to ``room`` (or as a DM ``to`` a user),
        with an optional ``caption``; returns the message record. An interrupted upload of
        the same file (same path, size, modification time) to the same server resumes."""
        if (room is None) == (to is None):
            raise ValueError("give exactly one of room or to")
        source = Path(path).expanduser().resolve()
        st = await asyncio.to_thread(source.stat)
        if not source.is_file():
            raise IsADirectoryError(f"not a regular file: {source}")
        size, mtime_ns = st.st_size, st.st_mtime_ns
        key = tus.upload_key(self.server, source, size, mtime_ns)
        remembered = self.state.get("uploads", key) or {}
        client_id = str(remembered.get("client_id") or _new_client_id())
        url = remembered.get("url") if isinstance(remembered.get("url"), str) else None
        offset: int | None = None
        if url is not None:
            try:
                offset = await self._head(url, size)
            except _Gone:
                offset = None
            if offset is None:  # gone (expired): a new upload, the same message id (if the
                # old upload was posted before this process ended, the server recognises the
                # message and nothing is posted twice)
                self.state.forget("uploads", key)
                url = None
        if url is None:
            token = await self.token(size)  # the limits, before any byte is sent
            url = await self._create(token, source.name, size)
            self.state.put("uploads", key, {"url": url, "client_id": client_id})
            offset = 0
        assert offset is not None
        if progress is not None:
            progress(offset, size)
        restarted = False
        while True:
            try:
                await self._send_from(url, source, offset, size, mtime_ns, progress)
                break
            except _Gone:
                # (expired between two runs, or removed): once, a new upload from the start
                self.state.forget("uploads", key)
                if restarted:
                    raise TransferFailed(
                        "the server lost the upload twice; not trying again"
                    ) from None
                restarted = True
                token = await self.token(size)
                url = await self._create(token, source.name, size)
                self.state.put("uploads", key, {"url": url, "client_id": client_id})
                offset = 0
        file_id = tus.file_id_of(url)
        record = await self._client._post_attachment(
            file_id, room=room, to=to, text=caption or "", client_id=client_id
        )
        self.state.forget("uploads", key)
        return record

    async def _create(self, token: FileToken, name: str, size: int) -> str:
        base = tus.resolve(self.base_url(), token.upload_url)
        filetype = mimetypes.guess_type(name)[0]
        for attempt in range(_RETRIES + 3):
            headers = {
                **self._auth(token),
                "Upload-Length": str(size),
                "Upload-Metadata": tus.upload_metadata(name, filetype),
            }
            try:
                async with self._http_session().post(
                    base, headers=headers, ssl=self._ssl(), allow_redirects=False
                ) as resp:
                    if resp.status == 201:
                        location = resp.headers.get("Location")
                        if not location:
                            raise TransferFailed("the server created no upload (no Location)")
                        url = tus.resolve(str(resp.url), location)
                        tus.file_id_of(url)
                        return url
                    if resp.status == 401 and attempt < 2:
                        token = await self.token(renew=True)
                        continue
                    await self._refused(resp, "the server refused the upload")
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt >= _RETRIES:
                    raise TransferFailed(f"cannot reach the server's files: {exc}") from None
                await self._pause(attempt)
        raise TransferFailed("the server refused the upload")

    async def _refused(self, resp: aiohttp.ClientResponse, what: str) -> None:
        """Raise the error an HTTP refusal stands for."""
        text = (await resp.content.read(2000)).decode("utf-8", "replace").strip()
        if resp.status == 413:
            raise server_error("file_too_large", text or "the file is too large", files=True)
        if resp.status == 403:
            # the body starts with the chat protocol's code ("quota_exceeded: ..."); older
            # wording is recognised by its words
            code, _, rest = text.partition(":")
            lowered = text.lower()
            if code == "quota_exceeded" or (not rest and "quota" in lowered):
                raise QuotaExceeded("quota_exceeded", rest.strip() or text)
            if code == "too_many_uploads" or (not rest and "upload" in lowered):
                raise TooManyUploads("too_many_uploads", rest.strip() or text)
        detail = f": {text[:200]}" if text else ""
        raise TransferFailed(f"{what} (HTTP {resp.status}){detail}", resp.status)

    async def _head(self, url: str, size: int) -> int | None:
        """The upload's durable offset (raises _Gone when it is not there any more)."""
        for attempt in range(_RETRIES + 3):
            token = await self.token()
            try:
                async with self._http_session().head(
                    url, headers=self._auth(token), ssl=self._ssl(), allow_redirects=False
                ) as resp:
                    if resp.status in (200, 204):
                        length = tus.parse_offset(resp.headers.get("Upload-Length"))
                        if length is not None and length != size:
                            raise _Gone()
                        offset = tus.parse_offset(resp.headers.get("Upload-Offset"), size)
                        if offset is None:
                            raise TransferFailed("the server sent no valid Upload-Offset")
                        return offset
                    if resp.status == 401 and attempt < 2:
                        await self.token(renew=True)
                        continue
                    if resp.status in (403, 404, 410):
                        raise _Gone()
                    if resp.status < 500:
                        await self._refused(resp, "the server refused to resume the upload")
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt >= _RETRIES:
                    raise TransferFailed(f"cannot reach the server's files: {exc}") from None
            await self._pause(attempt)
        raise TransferFailed("the server did not say where the upload stands")

    async def _send_from(
        self,
        url: str,
        source: Path,
        offset: int,
        size: int,
        mtime_ns: int,
        progress: TransferProgress | None,
    ) -> None:
        failures = 0
        bad_checksums = 0
        with source.open("rb") as f:
            chunks = _Chunks(f.fileno(), self.chunk_size, size)
            try:
                while offset < size:
                    st = os.fstat(f.fileno())
                    if st.st_size != size or st.st_mtime_ns != mtime_ns:
                        raise FileChanged(
                            f"{source.name} changed during the upload; upload it again"
                        )
                    chunk, checksum = await chunks.get(offset)
                    if len(chunk) != min(self.chunk_size, size - offset):
                        raise FileChanged(f"{source.name} got shorter during the upload")
                    chunks.prefetch(offset + len(chunk))  # read and hashed while this one goes
                    try:
                        status, new_offset = await self._patch(
                            url, offset, chunk, checksum, size, progress
                        )
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        failures += 1
                        if failures > _RETRIES:
                            raise TransferFailed(
                                f"the upload stopped: {exc or type(exc).__name__} "
                                "(upload the same file again to resume)"
                            ) from None
                        await self._pause(failures - 1)
                        offset = await self._head_or_gone(url, size)
                        _report(progress, offset, size)
                        continue
                    if status == 204 and new_offset is not None:
                        offset, failures, bad_checksums = new_offset, 0, 0
                        _report(progress, offset, size)
                    elif status == _STATUS_CHECKSUM:
                        bad_checksums += 1
                        if bad_checksums > _CHECKSUM_RETRIES:
                            raise TransferFailed(
                                "the server found the data damaged again and again (checksum)",
                                status,
                            )
                    elif status == 409 or (status >= 500 and failures < _RETRIES):
                        if status >= 500:
                            failures += 1
                            await self._pause(failures - 1)
                        offset = await self._head_or_gone(url, size)
                        _report(progress, offset, size)
                    else:
                        raise TransferFailed(
                            f"the server refused the upload (HTTP {status})", status
                        )
            finally:
                await chunks.close()

    async def _head_or_gone(self, url: str, size: int) -> int:
        offset = await self._head(url, size)
        if offset is None:
            raise _Gone()
        return offset

    async def _patch(
        self,
        url: str,
        offset: int,
        chunk: bytes,
        checksum: str,
        size: int,
        progress: TransferProgress | None,
    ) -> tuple[int, int | None]:
        """One PATCH; returns its status and the new offset (204)."""
        for attempt in range(3):
            token = await self.token()
            headers = {**self._auth(token), **tus.patch_headers(offset, chunk, checksum)}
            async with self._http_session().patch(
                url,
                data=_pieces(chunk, offset, size, progress),
                headers=headers,
                ssl=self._ssl(),
                allow_redirects=False,
            ) as resp:
                if resp.status == 401 and attempt < 2:
                    await self.token(renew=True)
                    continue
                if resp.status in (404, 410):
                    raise _Gone()
                if resp.status in (403, 413):
                    await self._refused(resp, "the server refused the upload")
                await resp.read()
                return resp.status, tus.parse_offset(resp.headers.get("Upload-Offset"), size)
        raise TransferFailed("the server keeps refusing the token (HTTP 401)", 401)

    @staticmethod
    async def _pause(attempt: int) -> None:
        """Back off before trying again after a failure (0.2 s, 0.4 s, ... at most 5 s)."""
        await asyncio.sleep(min(5.0, 0.2 * 2**attempt))

    # ------------------------------------------------------------------ downloads

    async def download(
        self,
        file: str | Attachment,
        directory: str | os.PathLike[str],
        *,
        progress: TransferProgress | None = None,
    ) -> Path:
        """Download a file (its id, or the :class:`Attachment` of a message) into
        ``directory``; returns where it was saved. The bytes go to ``<name>.part`` first (an
        interrupted download resumes from it), the SHA-256 is checked, then the file is
        renamed to its sanitised name, never over an existing file."""
        attachment = file if isinstance(file, Attachment) else None
        file_id = attachment.id if attachment is not None else str(file)
        if not tus.FILE_ID.fullmatch(file_id):
            raise ValueError(f"not a file id: {file_id!r}")
        folder = Path(directory).expanduser().resolve()
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        key = tus.attachment_key(self.server, file_id)
        remembered = self.state.get("downloads", key) or {}
        part: Path | None = None
        known_part = remembered.get("part")
        if isinstance(known_part, str) and Path(known_part).parent == folder:
            part = Path(known_part)
        name = tus.local_name(attachment.name) if attachment is not None else None
        if name is None and isinstance(remembered.get("name"), str):
            name = str(remembered["name"])
        expected = (attachment.sha256 if attachment is not None else "") or str(
            remembered.get("sha256") or ""
        )
        download = _Download(self, file_id, folder, key, part, name, expected.lower() or None)
        return await download.run(progress)


class _Download:
    """One download (its state across retries)."""

    def __init__(
        self,
        files: ServerFiles,
        file_id: str,
        folder: Path,
        key: str,
        part: Path | None,
        name: str | None,
        expected: str | None,
    ) -> None:
        self.files = files
        self.file_id = file_id
        self.folder = folder
        self.key = key
        self.part = part
        self.name = name
        self.expected = expected
        self.total: int | None = None

    async def run(self, progress: TransferProgress | None) -> Path:
        failures = restarts = 0
        fresh_retry = False
        while True:
            resumed = self.part is not None and self.part.exists() and self.part.stat().st_size
            try:
                done = await self._fetch(progress)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures += 1
                if failures > _RETRIES:
                    raise TransferFailed(
                        f"the download stopped: {exc or type(exc).__name__} "
                        "(download it again to resume)"
                    ) from None
                await ServerFiles._pause(failures - 1)
                continue
            if done is None:  # start again from the beginning (the partial file was stale)
                restarts += 1
                if restarts > _RETRIES:
                    raise TransferFailed("the server's answers to Range make no sense")
                continue
            digest, part = done
            if self.expected is not None and digest != self.expected:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
                if resumed and not fresh_retry:
                    fresh_retry = True  # the partial file was not this file's: once, afresh
                    continue
                self.files.state.forget("downloads", self.key)
                raise ChecksumMismatch(
                    f"the download of {self.name or self.file_id} does not match its SHA-256"
                    " (it was removed)",
                    self.expected,
                    digest,
                )
            final = await asyncio.to_thread(_place, part, self.folder, self.name or "file")
            self.files.state.forget("downloads", self.key)
            return final

    def _choose_part(self) -> Path:
        assert self.name is not None
        for n in range(10_000):
            candidate = self.folder / tus.part_name(tus.numbered(self.name, n))
            if not candidate.exists():
                return candidate
        raise TransferFailed("no free name for the partial file")

    async def _fetch(self, progress: TransferProgress | None) -> tuple[str, Path] | None:
        """One GET: the digest and the partial file when every byte is there; None to start
        again from zero."""
        files = self.files
        have = 0
        if self.part is not None and self.part.exists():
            have = self.part.stat().st_size
        for attempt in range(3):
            token = await files.token()
            url = tus.resolve(files.base_url(), token.download_url) + self.file_id
            headers = {"Authorization": f"Bearer {token.token}"}
            if have > 0:
                headers["Range"] = f"bytes={have}-"
                if self.expected:
                    headers["If-Range"] = f'"{self.expected}"'
            async with files._http_session().get(
                url, headers=headers, ssl=files._ssl(), allow_redirects=False
            ) as resp:
                if resp.status == 401 and attempt < 2:
                    await files.token(renew=True)
                    continue
                if resp.status == 416:
                    info = tus.content_range(resp.headers.get("Content-Range"))
                    if info is not None and info.total == have and self.part is not None:
                        return await asyncio.to_thread(_hash_file, self.part), self.part
                    self._discard_part()
                    return None
                if resp.status not in (200, 206):
                    await self._refused(resp)
                self._learn(resp)
                if resp.status == 206:
                    info = tus.content_range(resp.headers.get("Content-Range"))
                    if info is None or info.start != have:
                        self._discard_part()
                        return None
                    if info.total is not None:
                        self.total = info.total
                else:
                    have = 0
                    length = tus.parse_offset(resp.headers.get("Content-Length"))
                    if length is not None:
                        self.total = length
                if self.expected is None:
                    raise TransferFailed(
                        "the server gave no SHA-256 to check the file against; not saved"
                    )
                if self.part is None:
                    self.part = self._choose_part()
                files.state.put(
                    "downloads",
                    self.key,
                    {"part": str(self.part), "name": self.name, "sha256": self.expected},
                )
                return await self._write(resp, have, progress)
        raise TransferFailed("the server keeps refusing the token (HTTP 401)", 401)

    def _learn(self, resp: aiohttp.ClientResponse) -> None:
        """Name and SHA-256 from the response when the caller gave only an id."""
        if self.expected is None:
            self.expected = tus.etag_sha256(resp.headers.get("ETag"))
        if self.name is None:
            self.name = tus.local_name(
                tus.disposition_name(resp.headers.get("Content-Disposition")),
                fallback=f"file-{self.file_id}",
            )

    def _discard_part(self) -> None:
        if self.part is not None:
            with contextlib.suppress(FileNotFoundError):
                self.part.unlink()

    async def _refused(self, resp: aiohttp.ClientResponse) -> None:
        text = (await resp.content.read(2000)).decode("utf-8", "replace").strip()
        what = {
            403: "you may not download this file",
            404: "no such file",
        }.get(resp.status, "the server refused the download")
        detail = f": {text[:200]}" if text and resp.status not in (403, 404) else ""
        raise TransferFailed(f"{what} (HTTP {resp.status}){detail}", resp.status)

    async def _write(
        self, resp: aiohttp.ClientResponse, have: int, progress: TransferProgress | None
    ) -> tuple[str, Path] | None:
        assert self.part is not None
        digest = hashlib.sha256()
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if have:
                await asyncio.to_thread(_hash_prefix, fd, have, digest)
            os.ftruncate(fd, have)
            done = have
            total = self.total if self.total is not None else 0
            _report(progress, done, total)
            async for piece in resp.content.iter_chunked(_PIECE):
                written = 0
                while written < len(piece):
                    written += os.pwrite(fd, piece[written:], done + written)
                digest.update(piece)
                done += len(piece)
                _report(progress, done, max(total, done))
            if self.total is not None and done != self.total:
                raise aiohttp.ClientPayloadError(f"got {done} of {self.total} bytes")
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        return digest.hexdigest(), self.part


class _Chunks:
    """The file's chunks, each read and hashed in a thread; the next one is read while the
    current one is sent (at most two chunks in memory)."""

    def __init__(self, fd: int, chunk_size: int, size: int) -> None:
        self._fd = fd
        self._chunk = chunk_size
        self._size = size
        self._next: tuple[int, asyncio.Task[tuple[bytes, str]]] | None = None

    def _read(self, offset: int) -> tuple[bytes, str]:
        data = os.pread(self._fd, min(self._chunk, self._size - offset), offset)
        return data, tus.checksum_header(data)

    async def get(self, offset: int) -> tuple[bytes, str]:
        ahead, self._next = self._next, None
        if ahead is not None:
            if ahead[0] == offset:
                return await ahead[1]
            ahead[1].cancel()
        return await asyncio.to_thread(self._read, offset)

    def prefetch(self, offset: int) -> None:
        if offset < self._size and self._next is None:
            task = asyncio.ensure_future(asyncio.to_thread(self._read, offset))
            self._next = (offset, task)

    async def close(self) -> None:
        ahead, self._next = self._next, None
        if ahead is not None:
            ahead[1].cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await ahead[1]


def _report(progress: TransferProgress | None, done: int, total: int) -> None:
    if progress is None:
        return
    try:
        progress(done, total)
    except Exception:  # an application's callback must not break the transfer
        log.exception("progress callback failed")


async def _pieces(
    chunk: bytes, offset: int, size: int, progress: TransferProgress | None
) -> AsyncIterator[bytes]:
    """A chunk as a PATCH body, reporting progress as it goes out."""
    view = memoryview(chunk)
    for start in range(0, len(view), _PIECE):
        piece = view[start : start + _PIECE]
        yield piece  # type: ignore[misc]
        _report(progress, offset + start + len(piece), size)


def _hash_prefix(fd: int, length: int, digest: Any) -> None:
    pos = 0
    while pos < length:
        data = os.pread(fd, min(1024 * 1024, length - pos), pos)
        if not data:
            raise OSError("the partial file is shorter than it was")
        digest.update(data)
        pos += len(data)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while data := f.read(1024 * 1024):
            digest.update(data)
    return digest.hexdigest()


def _place(part: Path, folder: Path, name: str) -> Path:
    """Give the verified partial file its name, never over an existing file: ``name``,
    ``name (1)``, ... (a hard link fails when the name is taken: no race with other
    writers)."""
    for n in range(10_000):
        candidate = folder / tus.numbered(name, n)
        try:
            os.link(part, candidate)
        except FileExistsError:
            continue
        except OSError:  # no hard links here (some file systems): claim the name, then move
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            os.close(fd)
            os.replace(part, candidate)
            return candidate
        part.unlink()
        return candidate
    raise ClientError("no free name for the downloaded file")


def _new_client_id() -> str:
    import uuid

    return uuid.uuid4().hex
