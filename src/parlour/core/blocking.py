"""Who blocks whom, indexed both ways so the fan-out check is O(1) for unblocked senders.

Semantics (docs/design/core-blocking.md): DMs from a blocked user are stored and acknowledged
normally but never delivered to the blocker (now or at a later login); room messages from a
blocked user are filtered out of the blocker's live stream and of its history/join/since/resume
results; a blocked user is left out of the blocker's `who`, `join` member names and `presence`
events. The blocked user is never told.
"""

from __future__ import annotations

__all__ = ["Blocks"]

_EMPTY: frozenset[str] = frozenset()


class Blocks:
    __slots__ = ("_blocked_by", "_blocks")

    def __init__(self) -> None:
        self._blocks: dict[str, set[str]] = {}
        self._blocked_by: dict[str, set[str]] = {}

    def add(self, blocker: str, blocked: str) -> bool:
        """Returns False when the block already existed."""
        s = self._blocks.setdefault(blocker, set())
        if blocked in s:
            return False
        s.add(blocked)
        self._blocked_by.setdefault(blocked, set()).add(blocker)
        return True

    def remove(self, blocker: str, blocked: str) -> bool:
        """Returns False when there was no such block."""
        s = self._blocks.get(blocker)
        if not s or blocked not in s:
            return False
        s.discard(blocked)
        if not s:
            del self._blocks[blocker]
        by = self._blocked_by[blocked]
        by.discard(blocker)
        if not by:
            del self._blocked_by[blocked]
        return True

    def blocks(self, blocker: str, blocked: str) -> bool:
        s = self._blocks.get(blocker)
        return s is not None and blocked in s

    def blocked_by_user(self, blocker: str) -> set[str] | frozenset[str]:
        """Everyone `blocker` blocks."""
        return self._blocks.get(blocker, _EMPTY)

    def blockers_of(self, blocked: str) -> set[str] | frozenset[str]:
        """Everyone who blocks `blocked`."""
        return self._blocked_by.get(blocked, _EMPTY)
