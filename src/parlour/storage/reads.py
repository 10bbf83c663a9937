"""`InlineReads`: the `Reads` port over a store whose reads never block (the memory store).

The reads run right away on the caller's thread; they are still awaited like any other
`Reads`, so the adapter treats every store the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from parlour.core.ports import Store
from parlour.core.records import BroadcastRecord, FileRecord, FileUsage, StoredMessage

__all__ = ["InlineReads"]


class InlineReads:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def room_messages(
        self, room: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        return self._store.room_messages(room, before=before, after=after, limit=limit)

    async def dm_messages(
        self, conv: str, *, before: int | None, after: int | None, limit: int
    ) -> list[StoredMessage]:
        return self._store.dm_messages(conv, before=before, after=after, limit=limit)

    async def messages_since(
        self, rooms: Sequence[str], ts: float, limit: int
    ) -> list[StoredMessage]:
        return self._store.messages_since(rooms, ts, limit)

    async def broadcasts(self, *, after: int, limit: int) -> list[BroadcastRecord]:
        return self._store.broadcasts(after=after, limit=limit)

    async def file(self, file_id: str) -> FileRecord | None:
        return self._store.file(file_id)

    async def file_usage(self, user: str) -> FileUsage:
        return self._store.file_usage(user)

    async def files_to_sweep(self, before: float, limit: int) -> list[FileRecord]:
        return self._store.files_to_sweep(before, limit)

    async def blob_refs(self, sha256: str) -> int:
        return self._store.blob_refs(sha256)

    def close(self) -> None:
        return None
