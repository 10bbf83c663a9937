"""The web client's static files, loaded once into memory: versioned, gzipped, typed.

The client is plain ES modules and CSS served as they are in the package (no build step).
Cache busting without a build: every file is served under ``/static/<version>/<path>``, where
``<version>`` is a hash of all the files' contents. Modules import each other by relative
URLs, so the whole module graph stays inside one version; a changed file changes the version
and with it every URL, so a browser never mixes files of two releases, and the files can be
cached for a year (``immutable``). Only the page itself (``index.html``, which names the
version) is revalidated on every load.

Files are few and small (the budget test keeps JS + CSS under 60 KB gzipped), so they are read
and gzipped once at start; every response is served from memory.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import PurePosixPath

__all__ = ["CONTENT_TYPES", "Asset", "Assets"]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".webmanifest": "application/manifest+json",
}
#: only these are worth compressing
_COMPRESSIBLE = {".html", ".js", ".css", ".svg", ".txt", ".md", ".webmanifest"}
#: the page names its files with this prefix; it becomes ``/static/<version>/``
_PLACEHOLDER = "/static/VERSION/"
#: replaced by a ``modulepreload`` link for every module, so that the browser fetches the
#: whole module graph at once instead of level by level as it discovers the imports
_MODULES = "<!-- MODULES -->"


@dataclass(frozen=True, slots=True)
class Asset:
    path: str
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str


def _make(path: str, body: bytes) -> Asset:
    suffix = PurePosixPath(path).suffix
    content_type = CONTENT_TYPES.get(suffix, "application/octet-stream")
    gzipped = None
    if suffix in _COMPRESSIBLE:
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        if len(packed) < len(body):
            gzipped = packed
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    return Asset(path, body, gzipped, content_type, etag)


def _walk(root: Traversable, prefix: str = "") -> Iterator[tuple[str, bytes]]:
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        if entry.is_dir():
            yield from _walk(entry, f"{prefix}{entry.name}/")
        elif PurePosixPath(entry.name).suffix in CONTENT_TYPES:
            yield f"{prefix}{entry.name}", entry.read_bytes()


class Assets:
    """The client's files (``files``: path under ``static/`` -> asset) and its page."""

    def __init__(self, index_template: bytes, files: dict[str, bytes]) -> None:
        digest = hashlib.sha256()
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + files[path] + b"\0")
        digest.update(index_template)
        self.version = digest.hexdigest()[:16]
        self.files = {path: _make(path, body) for path, body in files.items()}
        preload = "\n".join(
            f'<link rel="modulepreload" href="{_PLACEHOLDER}{path}">'
            for path in sorted(files)
            if path.endswith(".js")
        )
        page = index_template.replace(_MODULES.encode(), preload.encode())
        page = page.replace(_PLACEHOLDER.encode(), self.prefix.encode())
        self.index = _make("index.html", page)

    @classmethod
    def load(cls, root: Traversable | None = None) -> Assets:
        """The client shipped in the package (``parlour/web/index.html`` and ``static/``)."""
        base = root if root is not None else resources.files("parlour.web")
        static = base / "static"
        files = dict(_walk(static)) if static.is_dir() else {}
        return cls((base / "index.html").read_bytes(), files)

    @classmethod
    def packaged(cls) -> Assets:
        """The packaged client, loaded once per process."""
        return _packaged()

    @property
    def prefix(self) -> str:
        """The URL prefix of this version's files."""
        return f"/static/{self.version}/"

    def get(self, version: str, path: str) -> Asset | None:
        if version != self.version:
            return None
        return self.files.get(path)

    def gzipped_size(self, *suffixes: str) -> int:
        """Bytes on the wire (gzipped where that is smaller) of the files with these suffixes."""
        total = 0
        for asset in self.files.values():
            if PurePosixPath(asset.path).suffix in suffixes:
                total += len(asset.gzipped if asset.gzipped is not None else asset.body)
        return total


@functools.cache
def _packaged() -> Assets:
    return Assets.load()
