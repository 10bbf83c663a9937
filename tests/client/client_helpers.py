"""Events the client tests feed to cursors and catch-up logic."""

from __future__ import annotations

from parlour.protocol import Event, EventName, MessageRecord


def msg(room: str, seq: int) -> Event:
    """A room message event with sequence number `seq`."""
    rec = MessageRecord(room=room, seq=seq, ts=1.0, sender="a", text="x")
    return Event(EventName.MESSAGE, rec.to_wire())


def dm(peer: str, seq: int) -> Event:
    """A direct message event from `peer` with sequence number `seq`."""
    rec = MessageRecord(peer=peer, seq=seq, ts=1.0, sender=peer, text="x")
    return Event(EventName.DM, rec.to_wire())
