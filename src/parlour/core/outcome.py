"""`Outcome`: everything one call into the core asks the transport adapter to do.

The adapter submits `writes` to the store writer (resolves when durable), then dispatches, in
order: the `reply` to the requesting connection, each `Delivery` (encode the event once, write
the same bytes to every connection in `to`), then `close` (conn, code, reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from parlour.core.writes import Write
from parlour.protocol.schemas import Event, Reply

__all__ = ["EMPTY", "ConnId", "Delivery", "Event", "Outcome", "Reply"]

ConnId: TypeAlias = int


@dataclass(frozen=True, slots=True)
class Delivery:
    event: Event
    to: tuple[ConnId, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    reply: Reply | None = None
    deliveries: tuple[Delivery, ...] = ()
    writes: tuple[Write, ...] = ()
    close: tuple[tuple[ConnId, str, str], ...] = ()


EMPTY = Outcome()
