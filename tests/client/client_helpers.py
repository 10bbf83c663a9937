"""Events the client tests feed to cursors and catch-up logic."""

from __future__ import annotations

from parlour.protocol import Event, EventName, MessageRecord, event_from_fields


def msg(room: str, seq: int) -> Event:
    """A room message event with sequence number `seq`."""
    rec = MessageRecord(room=room, seq=seq, ts=1.0, sender="a", text="x")
    return event_from_fields(EventName.MESSAGE, rec.to_wire())


def dm(peer: str, seq: int) -> Event:
    """A direct message event from `peer` with sequence number `seq`."""
    rec = MessageRecord(peer=peer, seq=seq, ts=1.0, sender=peer, text="x")
    return event_from_fields(EventName.DM, rec.to_wire())
