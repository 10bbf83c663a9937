"""The per-node router: logical delivery addresses -> this node's connections.

Pure and synchronous: reads the node's `Sessions` and the blocks of the shared `ChatState`.
The core resolves every delivery it produces right away (so a delivery reaches exactly the
sessions that were live when the core decided, as one node always did); another node resolves
the same address against its own sessions when the delivery reaches it over the bus.
"""

from __future__ import annotations

from parlour.core.outcome import Address, ConnId, ToAll, ToConns, ToPresence, ToRoom, ToUsers
from parlour.core.sessions import Sessions
from parlour.core.state import ChatState

__all__ = ["Router"]


class Router:
    __slots__ = ("_presence_limit", "_sessions", "_state")

    def __init__(self, state: ChatState, sessions: Sessions, presence_limit: int = 1000) -> None:
        self._state = state
        self._sessions = sessions
        self._presence_limit = presence_limit

    def resolve(self, address: Address) -> tuple[ConnId, ...]:
        if type(address) is ToRoom:  # the hot path: a room message
            return self.room(address)
        if isinstance(address, ToUsers):
            of = self._sessions.of
            return tuple(conn for user in address.users for conn in of(user))
        if isinstance(address, ToConns):
            conns = self._sessions.conns
            return tuple(c for c in address.conns if c in conns)
        if isinstance(address, ToAll):
            return self._sessions.all_conns()
        if isinstance(address, ToPresence):
            return self.presence(address.user)
        raise TypeError(f"not an address: {address!r}")

    def presence(self, user: str) -> tuple[ConnId, ...]:
        """The live sessions of the co-members of `user`'s rooms that have at most
        `presence_limit` live sessions here, except `user` and those who block it."""
        u = self._state.users.get(user)
        if u is None:
            return ()
        sessions = self._sessions
        limit = self._presence_limit
        users: dict[str, None] = {}
        for rk in u.rooms:
            online = sessions.peek_room(rk)
            if len(online) <= limit:
                users.update(dict.fromkeys(online.online.values()))
        users.pop(user, None)
        for blocker in self._state.blocks.blockers_of(user):
            users.pop(blocker, None)
        of = sessions.of
        return tuple(conn for k in users for conn in of(k))

    def room(self, address: ToRoom) -> tuple[ConnId, ...]:
        online = self._sessions.peek_room(address.room)
        skip: set[str] | None = None
        if address.sender is not None:
            blockers = self._state.blocks.blockers_of(address.sender)
            if blockers and not blockers.isdisjoint(online.online.values()):
                skip = set(blockers)
        if address.exclude is not None:
            skip = (skip or set()) | {address.exclude}
        if skip is None:
            return online.conns()
        return online.conns_except(skip)
