"""`Outcome`: everything one call into the core asks the adapter to do.

Either the call needs something first (`needs` is set and nothing else is: see
`parlour.core.needs`), or it is complete: the adapter submits `writes` to the store writer
(resolves when durable), then dispatches, in order: the `reply` to the requesting connection,
each `Delivery` (encoded once per wire kind, the same bytes to every connection in `to`),
then `close` (conn, code, reason).

With several nodes (`CoreConfig.cluster`), `remote` says what the other nodes must do that
neither a committed write nor a delivery tells them: end a user's sessions, count a session
that opened or closed, a failed login for the shared throttles (`parlour.core.replica`).

A delivery carries both its *logical* address (`address`: a room minus those who block the
sender, some users, specific connections, everyone) and `to`, the connections of this node it
resolved to when the core produced it (`parlour.core.router`). Other nodes resolve the address
against their own connections (`parlour.core.ports.Bus`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from parlour.core.needs import Need
from parlour.core.writes import Write
from parlour.protocol import Event, Reply
from parlour.protocol.fastinit import fast_init_module

__all__ = [
    "EMPTY",
    "TO_ALL",
    "Address",
    "ConnId",
    "Delivery",
    "EndSessions",
    "LoginFailed",
    "LoginSucceeded",
    "OfferAccepted",
    "OfferEnded",
    "OfferShared",
    "OffersWanted",
    "Outcome",
    "RemoteEffect",
    "SessionsChanged",
    "ToAll",
    "ToConns",
    "ToPresence",
    "ToRoom",
    "ToUsers",
]

ConnId: TypeAlias = int


@dataclass(frozen=True, slots=True)
class ToRoom:
    """The live sessions of room `room`'s members (by room key), except the users who block
    user key `sender` (when given) and except user key `exclude` (when given)."""

    room: str
    sender: str | None = None
    exclude: str | None = None


@dataclass(frozen=True, slots=True)
class ToUsers:
    """Every live session of these users (user keys)."""

    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ToConns:
    """Exactly these connections (of the node that produced the outcome)."""

    conns: tuple[ConnId, ...]


@dataclass(frozen=True, slots=True)
class ToAll:
    """Every logged-in session."""


TO_ALL = ToAll()


@dataclass(frozen=True, slots=True)
class ToPresence:
    """Who hears that user key `user` came or went: the live sessions of the co-members of
    its rooms (rooms with at most `presence_room_limit` live sessions on the node), never the
    user itself nor those who block it."""

    user: str


Address = ToRoom | ToUsers | ToConns | ToAll | ToPresence


@dataclass(frozen=True, slots=True)
class EndSessions:
    """End every session of user key `user` on the other nodes (kick, ban, password change, a
    login that replaces the others); `quiet`: no presence event (the user stays online)."""

    user: str
    code: str
    reason: str
    quiet: bool = False


@dataclass(frozen=True, slots=True)
class SessionsChanged:
    """User key `user` has `delta` more (or fewer) live sessions on the node that says so."""

    user: str
    delta: int


@dataclass(frozen=True, slots=True)
class LoginFailed:
    """A failed password check of user key `user` from `address` at `ts` (shared throttles)."""

    user: str
    address: str
    ts: float


@dataclass(frozen=True, slots=True)
class LoginSucceeded:
    """A good password of user key `user` from `address` (clears that pair's failures)."""

    user: str
    address: str


@dataclass(frozen=True, slots=True)
class OfferShared:
    """A file offer made on the node that says so, copied to the others so that its target
    may accept or decline it on any node (phantom offers are never shared). Endpoints are
    flat: host, port, host, port, ... (`reported`), or () / (host, port) (`observed`)."""

    id: str
    sender: str
    sender_name: str
    target: str
    target_name: str
    name: str
    size: int
    sha256: str
    reported: tuple[str | int, ...]
    observed: tuple[str | int, ...]
    created: float
    expires: float
    #: shared again (`OffersWanted`): a node that did not have it tells its target's sessions
    #: of it too (the event went with the first copy, and was lost with it)
    again: bool = False


@dataclass(frozen=True, slots=True)
class OfferAccepted:
    """Offer `id` of another node was accepted on the node that says so: the offer's home
    node hands its offering connection the grant (`file_accepted`). `peers` is flat as in
    `OfferShared`; `relay_port` 0: no relay (`relay_host` None: the chat host)."""

    id: str
    by: str
    transfer: str
    key: str
    peers: tuple[str | int, ...]
    relay_host: str | None
    relay_port: int
    relay_ticket: str | None


@dataclass(frozen=True, slots=True)
class OfferEnded:
    """Offer `id` ended on the node that says so (its events to the target are on their way
    there): the others drop their copy, and its home node tells the offering connection."""

    id: str
    reason: str
    by: str | None


@dataclass(frozen=True, slots=True)
class OffersWanted:
    """The node that says so may have missed offers (it reconnected to the bus, or lost
    messages): every node shares its open offers again (copies it has are ignored)."""


RemoteEffect = (
    EndSessions
    | SessionsChanged
    | LoginFailed
    | LoginSucceeded
    | OfferShared
    | OfferAccepted
    | OfferEnded
    | OffersWanted
)


@dataclass(frozen=True, slots=True)
class Delivery:
    event: Event
    to: tuple[ConnId, ...]
    address: Address | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    reply: Reply | None = None
    deliveries: tuple[Delivery, ...] = ()
    writes: tuple[Write, ...] = ()
    close: tuple[tuple[ConnId, str, str], ...] = ()
    needs: tuple[Need, ...] = ()
    remote: tuple[RemoteEffect, ...] = ()


EMPTY = Outcome()


fast_init_module(globals())
