"""Last seen sequence numbers per room and DM peer, and of broadcasts, for resume and
de-duplication (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parlour.protocol import (
    BroadcastEvent,
    DmEvent,
    Event,
    MessageEvent,
    Resume,
    RoomDeletedEvent,
    RoomRenamedEvent,
)

__all__ = ["Cursors"]


class Cursors:
    """Tracks the highest ``seq`` seen per room and per DM peer.

    :meth:`accept` is called for every pushed event: it returns False for a ``message``/``dm``
    event already seen (a resume overlap), so consumers see each message at most once.
    """

    __slots__ = ("broadcasts", "dms", "rooms")

    def __init__(self) -> None:
        self.rooms: dict[str, int] = {}
        self.dms: dict[str, int] = {}
        self.broadcasts: int | None = None  # None: none seen (the server's cursor decides)

    def accept(self, event: Event) -> bool:
        if isinstance(event, MessageEvent):
            return self._advance(self.rooms, event.room, event.seq)
        if isinstance(event, DmEvent):
            return self._advance(self.dms, event.peer, event.seq)
        if isinstance(event, BroadcastEvent):
            if self.broadcasts is not None and event.seq <= self.broadcasts:
                return False
            self.broadcasts = event.seq
            return True
        if isinstance(event, RoomRenamedEvent):
            if event.room in self.rooms:
                self.rooms[event.new_name] = self.rooms.pop(event.room)
        elif isinstance(event, RoomDeletedEvent):
            self.rooms.pop(event.room, None)
        return True

    def seen_room(self, room: str, seq: Any) -> None:
        """Record that everything up to ``seq`` in ``room`` is known (e.g. from ``join``).

        The room gets a cursor even at ``0`` (an empty room), so that a resume asks for it."""
        if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0:
            self.rooms.setdefault(room, 0)
        self._advance(self.rooms, room, seq)

    def forget_room(self, room: str) -> None:
        self.rooms.pop(room, None)

    @staticmethod
    def _advance(table: dict[str, int], key: object, seq: object) -> bool:
        if not isinstance(key, str) or not isinstance(seq, int) or isinstance(seq, bool):
            return True
        last = table.get(key, 0)
        if seq <= last:
            return False
        table[key] = seq
        return True

    def resume(self) -> Resume | None:
        if not self.rooms and not self.dms and self.broadcasts is None:
            return None
        return Resume(rooms=dict(self.rooms), dms=dict(self.dms), broadcasts=self.broadcasts)

    def snapshot(self) -> Mapping[str, Any]:
        return {"rooms": dict(self.rooms), "dms": dict(self.dms), "broadcasts": self.broadcasts}
