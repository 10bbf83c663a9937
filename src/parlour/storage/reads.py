"""`InlineReads`: the `Reads` port over a store whose reads never block (the memory store).

The reads run right away on the caller's thread; they are still awaited like any other
`Reads`, so the adapter treats every store the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from parlour.core.ports import Store
from parlour.core.records import BroadcastRecord, StoredMessage

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

    def close(self) -> None:
        return None
