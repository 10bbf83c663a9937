"""Users and connections in memory, and the presence views built from them (`who`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from parlour.core.limits import TokenBucket
from parlour.core.ports import Role, UserRecord

__all__ = ["Connection", "UserState", "who_entries"]


class UserState:
    """A registered user: account record fields plus live-session state.

    `conns` are the user's live logged-in connections (several only with duplicate login
    policy `allow`); `rooms` are the keys of the rooms they are a member of (persistent);
    `convs` the ids of their DM conversations."""

    __slots__ = (
        "conns",
        "convs",
        "created",
        "key",
        "last_active",
        "last_login",
        "name",
        "password_hash",
        "role",
        "rooms",
    )

    def __init__(self, rec: UserRecord, key: str) -> None:
        self.name = rec.name
        self.key = key
        self.role: Role = rec.role
        self.password_hash = rec.password_hash
        self.created = rec.created
        self.last_login = rec.last_login
        self.last_active: float | None = rec.last_login
        self.conns: list[int] = []
        self.rooms: set[str] = set()
        self.convs: set[str] = set()

    @property
    def online(self) -> bool:
        return bool(self.conns)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Connection:
    """One transport connection. `user` is the logged-in user's key (None before login)."""

    __slots__ = ("bucket", "connected_at", "hello", "id", "login_at", "peer", "user")

    def __init__(self, conn: int, peer: str, now: float, bucket: TokenBucket) -> None:
        self.id = conn
        self.peer = peer
        self.connected_at = now
        self.hello = False
        self.user: str | None = None
        self.login_at: float | None = None
        self.bucket = bucket


def who_entries(users: Iterable[UserState], rooms_of: dict[str, str]) -> list[dict[str, Any]]:
    """`who` rows, sorted by name: user, role, online, login time, last activity, rooms."""
    rows = []
    for u in sorted(users, key=lambda u: u.key):
        rows.append(
            {
                "username": u.name,
                "role": u.role,
                "online": u.online,
                "login_ts": u.last_login,
                "last_active": u.last_active,
                "rooms": sorted(rooms_of[r] for r in u.rooms if r in rooms_of),
            }
        )
    return rows
