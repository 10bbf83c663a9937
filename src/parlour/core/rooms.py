"""Rooms in memory: members (persistent), online connections (cached tuple), message log."""

from __future__ import annotations

from parlour.core.messages import MessageLog

__all__ = ["Room"]


class Room:
    """One room. `members` are user keys; `online` maps each live connection of a member to
    its user key. `conns()` is the fan-out tuple, rebuilt lazily after a change so that a burst
    of logins costs nothing until the next message."""

    __slots__ = ("_conns", "created", "created_by", "log", "members", "name", "online", "uid")

    def __init__(
        self, uid: int, name: str, created: float, created_by: str, log: MessageLog
    ) -> None:
        self.uid = uid
        self.name = name
        self.created = created
        self.created_by = created_by
        self.log = log
        self.members: set[str] = set()
        self.online: dict[int, str] = {}
        self._conns: tuple[int, ...] | None = ()

    def add_conn(self, conn: int, user: str) -> None:
        self.online[conn] = user
        self._conns = None

    def remove_conn(self, conn: int) -> None:
        if self.online.pop(conn, None) is not None:
            self._conns = None

    def conns(self) -> tuple[int, ...]:
        """Every live connection of every member (the fan-out target)."""
        c = self._conns
        if c is None:
            c = self._conns = tuple(self.online)
        return c

    def conns_except(self, users: set[str]) -> tuple[int, ...]:
        """Live connections of members not in `users` (blocking filter)."""
        return tuple(c for c, u in self.online.items() if u not in users)

    def online_users(self) -> set[str]:
        return set(self.online.values())
