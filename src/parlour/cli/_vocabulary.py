"""Rooms and users the terminal client has seen, most recent first (for Tab completion; pure,
no prompt_toolkit: the line mode keeps it from its first event on, piped or not)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

__all__ = ["MAX_NAMES", "Vocabulary"]

#: names of each kind remembered (the oldest go first)
MAX_NAMES = 500


class Vocabulary:
    """Rooms and users the line mode has seen, most recent first."""

    __slots__ = ("_rooms", "_users", "limit")

    def __init__(self, limit: int = MAX_NAMES) -> None:
        self.limit = limit
        self._rooms: OrderedDict[str, str] = OrderedDict()
        self._users: OrderedDict[str, str] = OrderedDict()

    @staticmethod
    def _saw(table: OrderedDict[str, str], names: Iterable[str], limit: int) -> None:
        for name in names:
            if not name:
                continue
            key = name.casefold()
            table.pop(key, None)
            table[key] = name
            while len(table) > limit:
                table.popitem(last=False)

    def saw_rooms(self, *names: str) -> None:
        self._saw(self._rooms, names, self.limit)

    def saw_users(self, *names: str) -> None:
        self._saw(self._users, names, self.limit)

    def forget_room(self, name: str) -> None:
        self._rooms.pop(name.casefold(), None)

    @property
    def rooms(self) -> list[str]:
        return list(reversed(self._rooms.values()))

    @property
    def users(self) -> list[str]:
        return list(reversed(self._users.values()))
