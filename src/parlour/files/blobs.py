"""Where file bytes live: the `BlobStore` port, the filesystem store, and partial uploads.

`FsBlobStore` keeps complete files content-addressed under ``<root>/blobs/ab/cd/<sha256>``
(the same bytes uploaded twice are stored once). A file enters it fully written and fsynced,
by a hard link under a temporary name and an atomic ``rename`` (or, when those bytes are there
already, not at all), followed by an fsync of the directory; only then is an upload
acknowledged complete. Thumbnails sit beside their blob (``<sha256>.thumb.png``).

`Partials` keeps unfinished uploads under ``<root>/uploads/<id>`` with a small sidecar
``<id>.offset``: the last **durable** offset, written (temporary file, fsync, rename) only
after the bytes before it were fsynced. After a ``kill -9`` of the server, or of the client
mid-request, an upload resumes from the sidecar's offset: whatever lies beyond it in the file
is cut off when the upload is next looked at.

Everything here blocks (it is file I/O): the HTTP adapter calls it in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Protocol

__all__ = ["BlobStore", "FsBlobStore", "Partials", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Make a rename or creation in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore(Protocol):
    """Complete files by SHA-256 (hex)."""

    def path(self, sha256: str) -> Path:
        """Where the blob is (for streaming it); it may not exist."""
        ...

    def has(self, sha256: str) -> bool: ...

    def adopt(self, source: Path, sha256: str) -> bool:
        """Take the fully written and fsynced file `source` in as blob `sha256`, durably (a
        hard link: `source` stays until the caller removes it, so a crash in between leaves
        the upload to finish again). False when the blob was there already."""
        ...

    def remove(self, sha256: str) -> None:
        """Remove the blob and its thumbnail (nothing when absent)."""
        ...

    def thumbnail_path(self, sha256: str) -> Path: ...


class FsBlobStore:
    """`BlobStore` on a filesystem directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _check(sha256: str) -> str:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a SHA-256 in lower-case hex")
        return sha256

    def path(self, sha256: str) -> Path:
        sha = self._check(sha256)
        return self.blobs / sha[:2] / sha[2:4] / sha

    def thumbnail_path(self, sha256: str) -> Path:
        return self.path(sha256).with_name(sha256 + ".thumb.png")

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def adopt(self, source: Path, sha256: str) -> bool:
        target = self.path(sha256)
        if target.is_file():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)  # the temporary name, then an atomic rename: never half a blob
        os.replace(tmp, target)
        fsync_dir(target.parent)
        return True

    def remove(self, sha256: str) -> None:
        for p in (self.path(sha256), self.thumbnail_path(sha256)):
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: other blobs share the directory
            self.path(sha256).parent.rmdir()


class Partials:
    """Unfinished uploads: their bytes so far and their last durable offset."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "uploads"
        self.dir.mkdir(parents=True, exist_ok=True)

    def data(self, upload: str) -> Path:
        return self.dir / upload

    def _sidecar(self, upload: str) -> Path:
        return self.dir / (upload + ".offset")

    def create(self, upload: str) -> None:
        fd = os.open(self.data(upload), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        self.set_offset(upload, 0)

    def offset(self, upload: str) -> int | None:
        """The last durable offset (None: no such partial upload); bytes written beyond it
        (before a crash) are cut off."""
        try:
            text = self._sidecar(upload).read_text("ascii").strip()
            durable = int(text)
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            durable = 0
        try:
            size = self.data(upload).stat().st_size
        except FileNotFoundError:
            return None
        if size > durable:
            os.truncate(self.data(upload), durable)
        return min(size, durable)

    def touched(self, upload: str) -> float | None:
        """When the offset last moved (unix time; None: no such upload)."""
        try:
            return self._sidecar(upload).stat().st_mtime
        except FileNotFoundError:
            return None

    def set_offset(self, upload: str, offset: int) -> None:
        """Record `offset` as durable (the bytes before it must be fsynced already)."""
        side = self._sidecar(upload)
        tmp = side.with_name(side.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, str(offset).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, side)
        fsync_dir(self.dir)

    def remove(self, upload: str) -> None:
        for p in (self.data(upload), self._sidecar(upload)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # pragma: no cover - e.g. a directory in the way
                if exc.errno != errno.ENOENT:
                    raise
