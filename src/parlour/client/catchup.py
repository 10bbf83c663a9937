"""Which pushed messages to take while a bounded catch-up is still incomplete (pure).

The server bounds what one ``login``/``sync`` pushes; ``"truncated": true`` in the reply means
"sync again from what you have now". Until a reply comes back *not* truncated, the live
traffic of the session is interleaved with the catch-up on the wire, and the client cannot
tell a live message from the next catch-up message by looking at it. Taking a live message
too early would move the cursor past messages the client has not received yet, and the next
``sync`` would skip them for good.

So while catching up (after a truncated reply), for a room or conversation the client already
has a cursor ``c`` for, a message with sequence ``s`` is

* a duplicate if ``s <= c`` (dropped, as always);
* taken if ``s == c + 1`` — nothing can be missing before it, whatever its origin;
* taken if it is the first message pushed after the truncated reply — the server writes the
  reply and its catch-up batch together, so that message is catch-up, and a gap before it
  is a legitimate one (messages from blocked users are skipped);
* otherwise *held back*: it is neither delivered nor counted, and because the cursor stays
  at ``c`` the next ``sync`` pushes it again, in order. Nothing is buffered.

A message for a room or peer without a cursor is always taken (nothing to resume from; this is
how offline DMs from a new peer arrive). Once a reply is not truncated its batch is complete,
and everything after it is live: the normal at-most-once rule applies again.

Every truncated round takes at least its first message, so the catch-up always progresses
unless the server pushed nothing at all (then the caller stops and says so).
"""

from __future__ import annotations

from parlour.client.cursors import Cursors
from parlour.protocol import DmEvent, Event, MessageEvent

__all__ = ["CatchUp"]


class CatchUp:
    """Wraps :class:`Cursors` with the catch-up rule above; feed it every pushed event and
    every ``login``/``sync`` reply, in the order they arrived."""

    __slots__ = ("_head", "cursors", "held_back", "incomplete")

    def __init__(self, cursors: Cursors) -> None:
        self.cursors = cursors
        #: a truncated reply was seen and no complete one since
        self.incomplete = False
        #: the next message event is the first of a truncated reply's batch
        self._head = False
        #: messages held back to be pushed again by the next ``sync`` (statistics)
        self.held_back = 0

    @property
    def batch_empty(self) -> bool:
        """True if no message arrived since the last truncated reply (its batch was empty)."""
        return self._head

    def replied(self, truncated: bool) -> None:
        """A ``login``/``sync`` reply arrived (before any event that follows it)."""
        self.incomplete = truncated
        self._head = truncated

    def abandon(self) -> None:
        """Stop being careful (the catch-up cannot go on): take messages as they come."""
        self.incomplete = False
        self._head = False

    def accept(self, event: Event) -> bool:
        """True if ``event`` is to be delivered (and the cursors were advanced for it)."""
        if not self.incomplete:
            return self.cursors.accept(event)
        if isinstance(event, MessageEvent):
            last = self.cursors.rooms.get(event.room)
        elif isinstance(event, DmEvent):
            last = self.cursors.dms.get(event.peer)
        else:
            return self.cursors.accept(event)
        head, self._head = self._head, False
        if last is not None and event.seq > last + 1 and not head:
            self.held_back += 1
            return False
        return self.cursors.accept(event)
