"""The per-node router: logical delivery addresses -> this node's connections.

Pure and synchronous: reads the node's `Sessions` and the blocks of the shared `ChatState`.
The core resolves every delivery it produces right away (so a delivery reaches exactly the
sessions that were live when the core decided, as one node always did); another node resolves
the same address against its own sessions when the delivery reaches it over the bus.
"""

from __future__ import annotations

from parlour.core.outcome import Address, ConnId, ToAll, ToConns, ToRoom, ToUsers
from parlour.core.sessions import Sessions
from parlour.core.state import ChatState

__all__ = ["Router"]


class Router:
    __slots__ = ("_sessions", "_state")

    def __init__(self, state: ChatState, sessions: Sessions) -> None:
        self._state = state
        self._sessions = sessions

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
        raise TypeError(f"not an address: {address!r}")

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
