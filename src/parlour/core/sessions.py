"""Node-local state: this node's connections, who is logged in on them, rate buckets, the
online sessions of each room, and sign-ups in progress.

None of this is shared truth (that is `parlour.core.state`): with several nodes every node has
its own `Sessions`, and a delivery's logical address is resolved against them by the node's
`parlour.core.router.Router`.
"""

from __future__ import annotations

from parlour.core.limits import TokenBucket
from parlour.core.throttles import LoginThrottle

__all__ = ["Connection", "RoomOnline", "Sessions", "address_of", "peer_name"]


def peer_name(host: str, port: object) -> str:
    """A connection's peer as ``1.2.3.4:5`` or ``[::1]:5`` (what `address_of` reads)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def address_of(peer: str) -> str:
    """The host part of a peer name (``1.2.3.4:5``, ``[::1]:5``): the unit of per-address
    limits and throttles."""
    host, sep, _ = peer.rpartition(":")
    if not sep:
        return peer
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class Connection:
    """One transport connection. `user` is the logged-in user's key (None before login).
    `bucket` limits message-producing requests, `reads` read requests; `last_request` is when
    it last sent a request (a session that has been silent for two heartbeats is taken for
    dead by the `reject` duplicate-login policy)."""

    __slots__ = (
        "address",
        "bucket",
        "connected_at",
        "hello",
        "id",
        "last_request",
        "login_at",
        "peer",
        "reads",
        "token_hash",
        "user",
    )

    def __init__(
        self, conn: int, peer: str, now: float, bucket: TokenBucket, reads: TokenBucket
    ) -> None:
        self.id = conn
        self.peer = peer
        self.address = address_of(peer)
        self.connected_at = now
        self.last_request = now
        self.hello = False
        self.user: str | None = None
        #: the session token this session was issued or logged in with (revoked at logout)
        self.token_hash: str | None = None
        self.login_at: float | None = None
        self.bucket = bucket
        self.reads = reads


class RoomOnline:
    """The live sessions of one room's members on this node: connection -> user key, and the
    fan-out tuple, rebuilt lazily after a change so that a burst of logins costs nothing until
    the next message."""

    __slots__ = ("_conns", "online")

    def __init__(self) -> None:
        self.online: dict[int, str] = {}
        self._conns: tuple[int, ...] | None = ()

    def add(self, conn: int, user: str) -> None:
        self.online[conn] = user
        self._conns = None

    def remove(self, conn: int) -> None:
        if self.online.pop(conn, None) is not None:
            self._conns = None

    def conns(self) -> tuple[int, ...]:
        """Every live connection of every member (the fan-out target)."""
        c = self._conns
        if c is None:
            c = self._conns = tuple(self.online)
        return c

    def conns_except(self, users: set[str] | frozenset[str]) -> tuple[int, ...]:
        """Live connections of members not in `users` (blocking filter)."""
        return tuple(c for c, u in self.online.items() if u not in users)

    def users(self) -> set[str]:
        return set(self.online.values())

    def __len__(self) -> int:
        return len(self.online)


_NOBODY = RoomOnline()


class Sessions:
    """This node's connections and logged-in sessions."""

    __slots__ = ("by_user", "conns", "remote", "rooms", "signups", "throttle")

    def __init__(self, throttle: LoginThrottle) -> None:
        #: failed password checks by account, address and both (shared through Redis when
        #: there are several nodes)
        self.throttle = throttle
        self.conns: dict[int, Connection] = {}
        #: user key -> this node's live sessions of the user (several only with the `allow`
        #: duplicate-login policy), in login order
        self.by_user: dict[str, list[int]] = {}
        #: room key -> the online sessions of its members
        self.rooms: dict[str, RoomOnline] = {}
        #: user key -> connection whose sign-up for that name is waiting for its hash: a
        #: second sign-up for the name is refused as taken meanwhile (no Argon2 work)
        self.signups: dict[str, int] = {}
        #: several nodes: user key -> {node: its live sessions there} on the *other* nodes
        #: (told over the bus; a node that dies is dropped: `node_gone`)
        self.remote: dict[str, dict[str, int]] = {}

    # ------------------------------------------------------------------ connections

    def open(
        self, conn: int, peer: str, now: float, bucket: TokenBucket, reads: TokenBucket
    ) -> Connection:
        c = self.conns[conn] = Connection(conn, peer, now, bucket, reads)
        return c

    def close(self, conn: int) -> Connection | None:
        """Forget `conn` (its session must have ended) and any sign-up it was holding."""
        c = self.conns.pop(conn, None)
        if self.signups:
            for key in [k for k, held in self.signups.items() if held == conn]:
                del self.signups[key]
        return c

    # ------------------------------------------------------------------ sessions

    def start(self, c: Connection, user: str, rooms: set[str], now: float) -> bool:
        """Log `c` in as user key `user`, a member of `rooms` (room keys). True when this is
        the user's first live session on this node."""
        c.user = user
        c.login_at = now
        conns = self.by_user.setdefault(user, [])
        first = not conns
        conns.append(c.id)
        for rk in rooms:
            self.room(rk).add(c.id, user)
        return first

    def end(self, c: Connection, rooms: set[str]) -> bool:
        """End `c`'s session. True when it was the user's last live session on this node."""
        user = c.user
        if user is None:
            return False
        c.user = None
        conns = self.by_user.get(user)
        if conns is not None and c.id in conns:
            conns.remove(c.id)
        for rk in rooms:
            online = self.rooms.get(rk)
            if online is not None:
                online.remove(c.id)
        if not conns:
            self.by_user.pop(user, None)
            return True
        return False

    def of(self, user: str) -> list[int]:
        """The live sessions of user key `user` on this node (do not modify)."""
        return self.by_user.get(user) or []

    def online(self, user: str) -> bool:
        """Whether user key `user` has a live session on this node or (several nodes) any."""
        return user in self.by_user or user in self.remote

    def remote_changed(self, node: str, user: str, delta: int) -> None:
        """Another node says `user` has `delta` more (or fewer) live sessions there."""
        nodes = self.remote.get(user)
        if nodes is None:
            if delta <= 0:
                return
            nodes = self.remote[user] = {}
        left = nodes.get(node, 0) + delta
        if left > 0:
            nodes[node] = left
        else:
            nodes.pop(node, None)
            if not nodes:
                del self.remote[user]

    def set_remote(self, node: str, counts: dict[str, int]) -> None:
        """`node`'s live sessions per user, as its registry entry says (replacing what was
        known of it)."""
        for user in [u for u, nodes in self.remote.items() if node in nodes]:
            self.remote_changed(node, user, -self.remote[user][node])
        for user, n in counts.items():
            if n > 0:
                self.remote_changed(node, user, n)

    def remote_nodes(self) -> set[str]:
        return {node for nodes in self.remote.values() for node in nodes}

    def node_gone(self, node: str) -> list[str]:
        """Forget every session of `node` (it died or left); the users it had sessions of."""
        users = [u for u, nodes in self.remote.items() if node in nodes]
        for user in users:
            self.remote_changed(node, user, -self.remote[user][node])
        return users

    def all_conns(self) -> tuple[int, ...]:
        return tuple(c for conns in self.by_user.values() for c in conns)

    # ------------------------------------------------------------------ rooms

    def room(self, rk: str) -> RoomOnline:
        online = self.rooms.get(rk)
        if online is None:
            online = self.rooms[rk] = RoomOnline()
        return online

    def peek_room(self, rk: str) -> RoomOnline:
        """The online sessions of room key `rk` (an empty view when none)."""
        return self.rooms.get(rk, _NOBODY)

    def joined(self, rk: str, user: str) -> None:
        """User key `user` became a member of `rk`: its sessions now receive the room."""
        conns = self.by_user.get(user)
        if conns:
            online = self.room(rk)
            for conn in conns:
                online.add(conn, user)

    def left(self, rk: str, user: str) -> None:
        online = self.rooms.get(rk)
        if online is not None:
            for conn in self.by_user.get(user, ()):
                online.remove(conn)

    def renamed(self, old: str, new: str) -> None:
        if old != new and old in self.rooms:
            self.rooms[new] = self.rooms.pop(old)

    def dropped(self, rk: str) -> None:
        self.rooms.pop(rk, None)
