"""Files on both ends (blocking calls, run off the event loop by the manager).

* :func:`safe_name`: a peer-chosen file name made harmless (no directories, no traversal, no
  control characters, no hidden files, at most 200 bytes).
* :class:`FileSource`: reads blocks of the file being sent and refuses to go on when the file
  changed or disappeared since it was offered (inode, size, modification time).
* :class:`FileSink`: writes into ``.<name>.<sha256 prefix>.part`` beside the destination,
  hashes in file order as it goes (out-of-order runs wait in memory, bounded by the flow
  window; held ranges of a resumed attempt are read back from disk), and on success fsyncs and
  links the file into place under a name that does not exist yet (never overwriting). On
  failure it fsyncs and records what it holds in ``<part>.json`` for a later resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .ranges import RangeSet

__all__ = ["FileChanged", "FileOffer", "FileSink", "FileSource", "describe_file", "safe_name"]

_MAX_NAME_BYTES = 200
_HASH_CHUNK = 1 << 20


def safe_name(name: str) -> str:
    """A file name safe to create inside the destination directory."""
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(
        "_" if unicodedata.category(c).startswith("C") or c in '<>:"|?*' else c for c in name
    )
    name = name.strip().lstrip(".")
    raw = name.encode("utf-8")
    if len(raw) > _MAX_NAME_BYTES:
        _stem, dot, ext = name.rpartition(".")
        ext = f"{dot}{ext}" if dot and len(ext.encode()) <= 16 else ""
        keep = _MAX_NAME_BYTES - len(ext.encode())
        name = name.encode()[:keep].decode("utf-8", "ignore") + ext
    return name or "file"


class FileChanged(Exception):
    """The file being sent is not the one that was offered any more."""


@dataclass(frozen=True, slots=True)
class FileOffer:
    """What an offer says about a file: its name, size and SHA-256."""

    name: str
    size: int
    sha256: bytes


def describe_file(path: Path) -> FileOffer:
    """Name, size and SHA-256 of ``path`` (reads the whole file: call it off the loop)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return FileOffer(path.name, size, digest.digest())


class FileSource:
    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        st = os.fstat(self._fd)
        self._identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if st.st_size != size:
            os.close(self._fd)
            raise FileChanged(f"the file is {st.st_size} bytes, the offer said {size}")

    def _check(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise FileChanged("the file was removed") from None
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self._identity:
            raise FileChanged("the file was modified or replaced")

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; raises FileChanged or OSError."""
        self._check()
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise FileChanged("the file got shorter")
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class FileSink:
    """The receiving file. Not thread-safe: one worker thread at a time (the manager uses a
    single-thread executor per sink, so writes and hashing keep their order)."""

    def __init__(
        self, dest_dir: Path, name: str, size: int, sha256: bytes, *, resume: bool = True
    ) -> None:
        self.dest_dir = dest_dir
        self.name = safe_name(name)
        self.size = size
        self.sha256 = sha256
        self.part = dest_dir / f".{self.name}.{sha256.hex()[:16]}.part"
        self.state_path = self.part.with_name(self.part.name + ".json")
        self.final_path: Path | None = None
        self.held = RangeSet()
        if resume:
            self.held = self._load_state()
        if not self.held:
            self._forget_partial()
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.part, flags, 0o600)
        self._digest = hashlib.sha256()
        self._hashed = 0
        self._pending: dict[int, bytes | bytearray] = {}
        try:
            self._advance_hash()  # hashes the held prefix now
        except OSError:  # the partial file is not what its state says: start over
            self.held = RangeSet()
            self._digest = hashlib.sha256()
            self._hashed = 0
            os.ftruncate(self._fd, 0)
            with contextlib.suppress(FileNotFoundError):
                self.state_path.unlink()

    def _forget_partial(self) -> None:
        for path in (self.part, self.state_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _load_state(self) -> RangeSet:
        try:
            raw = json.loads(self.state_path.read_text())
            if raw.get("sha256") != self.sha256.hex() or raw.get("size") != self.size:
                return RangeSet()
            ranges = RangeSet()
            part_size = self.part.stat().st_size
            for start, end in raw.get("held", []):
                if (
                    isinstance(start, int)
                    and isinstance(end, int)
                    and 0 <= start < end <= min(self.size, part_size)
                ):
                    ranges.add(start, end)
            return ranges
        except (OSError, ValueError, TypeError, AttributeError):
            return RangeSet()

    def write(self, offset: int, data: bytes | bytearray) -> None:
        """Write at ``offset`` and hash what became contiguous; raises OSError (ENOSPC...)."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], offset + done)
        if offset == self._hashed:
            self._digest.update(data)
            self._hashed += len(data)
        elif offset > self._hashed:
            self._pending[offset] = data
        self._advance_hash()

    def _advance_hash(self) -> None:
        while True:
            nxt = self._pending.pop(self._hashed, None)
            if nxt is not None:
                self._digest.update(nxt)
                self._hashed += len(nxt)
                continue
            end = self.held.prefix_end(self._hashed)
            if end > self._hashed:  # bytes from an earlier attempt: read them back
                while self._hashed < end:
                    chunk = os.pread(self._fd, min(_HASH_CHUNK, end - self._hashed), self._hashed)
                    if not chunk:
                        raise OSError("the partial file is shorter than recorded")
                    self._digest.update(chunk)
                    self._hashed += len(chunk)
                continue
            return

    def verify_and_place(self) -> Path | None:
        """After every byte is written: the final path when the SHA-256 matches, else None
        (the partial file and its state are removed: they cannot be trusted)."""
        self._advance_hash()
        if self._hashed != self.size or self._digest.digest() != self.sha256:
            self.discard()
            return None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        stem, dot, ext = self.name.rpartition(".")
        if not dot or not stem:
            stem, ext, dot = self.name, "", ""
        for n in range(10000):
            candidate = self.dest_dir / (self.name if n == 0 else f"{stem} ({n}){dot}{ext}")
            try:
                os.link(self.part, candidate)
            except FileExistsError:
                continue
            break
        else:
            raise OSError("no free name for the received file")
        self.part.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()
        _fsync_dir(self.dest_dir)
        self.final_path = candidate
        return candidate

    def save_state(self, held: RangeSet) -> None:
        """Keep the partial file for a resume: fsync it, then record what it holds."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            os.fsync(self._fd)
            tmp = self.state_path.with_name(self.state_path.name + ".tmp")
            tmp.write_text(
                json.dumps({"size": self.size, "sha256": self.sha256.hex(), "held": list(held)})
            )
            os.replace(tmp, self.state_path)

    def discard(self) -> None:
        self.close()
        for path in (self.part, self.state_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
