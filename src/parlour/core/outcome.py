"""`Outcome`: everything one call into the core asks the adapter to do.

Either the call needs something first (`needs` is set and nothing else is: see
`parlour.core.needs`), or it is complete: the adapter submits `writes` to the store writer
(resolves when durable), then dispatches, in order: the `reply` to the requesting connection,
each `Delivery` (encoded once per wire kind, the same bytes to every connection in `to`),
then `close` (conn, code, reason).

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
    "Outcome",
    "ToAll",
    "ToConns",
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

Address = ToRoom | ToUsers | ToConns | ToAll


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


EMPTY = Outcome()


fast_init_module(globals())
