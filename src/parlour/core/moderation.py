"""Moderation state: server-wide bans with optional expiry and the audit trail."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from parlour.core.records import AuditEntry, BanRecord, user_key

__all__ = ["AuditTrail", "Bans"]


class Bans:
    """Bans by user key. A ban with `until` in the past is no longer active."""

    __slots__ = ("_bans",)

    def __init__(self, bans: Iterable[BanRecord] = ()) -> None:
        self._bans: dict[str, BanRecord] = {user_key(b.user): b for b in bans}

    def active(self, key: str, now: float) -> BanRecord | None:
        ban = self._bans.get(key)
        if ban is None or (ban.until is not None and ban.until <= now):
            return None
        return ban

    def add(self, ban: BanRecord) -> None:
        self._bans[user_key(ban.user)] = ban

    def remove(self, key: str) -> BanRecord | None:
        return self._bans.pop(key, None)

    def expired(self, now: float) -> list[BanRecord]:
        """Remove and return the bans that ended."""
        gone = [b for b in self._bans.values() if b.until is not None and b.until <= now]
        for b in gone:
            del self._bans[user_key(b.user)]
        return gone

    def listing(self, now: float) -> list[BanRecord]:
        """Active bans, oldest first."""
        return sorted(
            (b for b in self._bans.values() if b.until is None or b.until > now),
            key=lambda b: b.ts,
        )


class AuditTrail:
    """The newest `capacity` audit entries in memory (the store keeps all of them)."""

    __slots__ = ("_entries",)

    def __init__(self, capacity: int, newest_first: Iterable[AuditEntry] = ()) -> None:
        self._entries: deque[AuditEntry] = deque(maxlen=max(1, capacity))
        for e in reversed(list(newest_first)):
            self._entries.append(e)

    def append(self, entry: AuditEntry) -> None:
        self._entries.append(entry)

    def newest(self, limit: int) -> list[AuditEntry]:
        out: list[AuditEntry] = []
        for e in reversed(self._entries):
            if len(out) >= limit:
                break
            out.append(e)
        return out
