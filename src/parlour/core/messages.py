"""Message logs: the hot window of a room or conversation, paging merged with the store,
idempotent client ids, and the protocol record of a stored message."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace

from parlour.core.records import StoredMessage
from parlour.protocol import MessageRecord

__all__ = ["ClientIds", "MessageLog", "Reader", "to_record"]

#: reads committed messages of one scope: (before, after, limit) -> ascending messages
Reader = Callable[[int | None, int | None, int], list[StoredMessage]]


def to_record(
    msg: StoredMessage, *, room: str | None = None, peer: str | None = None
) -> MessageRecord:
    """The protocol record of a message (docs/protocol.md "message record"): `room` for room
    messages (current name), `peer` for DMs (the other participant, seen by the receiver)."""
    return MessageRecord(
        room=room,
        peer=peer,
        seq=msg.seq,
        ts=msg.ts,
        sender=msg.sender,
        text=msg.text,
        edited=msg.edited,
        deleted=msg.deleted,
        client_id=msg.client_id,
        attachment=msg.attachment,
    )


class MessageLog:
    """The newest `capacity` messages of one room/conversation and its last sequence number.

    The window is contiguous: it holds every sequence from `low` to `last_seq`. Older messages
    are read through `reader` (committed data) and merged with the window by sequence number,
    so messages written but not yet committed are always served from memory.
    """

    __slots__ = ("_capacity", "_patched", "_reader", "_window", "last_seq")

    #: edits/deletions of messages older than the window, kept so reads see them before
    #: they are committed (bounded; the oldest patch goes first)
    PATCHES = 1024

    def __init__(
        self, last_seq: int, capacity: int, reader: Reader, recent: Iterable[StoredMessage] = ()
    ) -> None:
        self.last_seq = last_seq
        self._capacity = capacity
        self._reader = reader
        self._window: dict[int, StoredMessage] = {}
        self._patched: OrderedDict[int, StoredMessage] = OrderedDict()
        for msg in recent:  # ascending; keep only the contiguous tail ending at last_seq
            if msg.seq <= last_seq:
                self._window[msg.seq] = msg
        expected = last_seq
        for seq in sorted(self._window, reverse=True):
            if seq != expected:
                break
            expected -= 1
        for seq in [s for s in self._window if s <= expected]:
            del self._window[seq]
        while len(self._window) > capacity:
            del self._window[next(iter(sorted(self._window)))]
        self._window = dict(sorted(self._window.items()))

    @property
    def low(self) -> int:
        """Lowest sequence held in memory (last_seq + 1 when the window is empty)."""
        return self.last_seq - len(self._window) + 1

    def recent(self) -> Iterable[StoredMessage]:
        return self._window.values()

    def append(self, msg: StoredMessage) -> None:
        """Add the next message (its `seq` must be `last_seq + 1`)."""
        self._window[msg.seq] = msg
        self.last_seq = msg.seq
        if len(self._window) > self._capacity:
            del self._window[msg.seq - self._capacity]

    def reset(self, last_seq: int) -> None:
        """Forget the window: the scope's last sequence is now `last_seq` and everything up
        to it is read from the store (several nodes: messages committed elsewhere that this
        node was not told of in order, while nobody here was waiting for them)."""
        self._window.clear()
        self._patched.clear()
        self.last_seq = last_seq

    def changed(self, seq: int, text: str | None) -> None:
        """Another node committed an edit (`text`) or deletion (`None`) of message `seq`:
        update the window; a message older than the window is read from the store again."""
        msg = self._window.get(seq)
        if msg is not None:
            self.edited(msg, text)
        else:
            self._patched.pop(seq, None)

    def get(self, seq: int) -> StoredMessage | None:
        """The message `seq` (memory first, then the store)."""
        if seq < 1 or seq > self.last_seq:
            return None
        msg = self._window.get(seq) or self._patched.get(seq)
        if msg is not None:
            return msg
        found = self._reader(seq + 1, seq - 1, 1)
        return found[0] if found and found[0].seq == seq else None

    def update(self, msg: StoredMessage) -> None:
        """Replace a message after an edit/delete (in memory; the write goes to the store)."""
        if msg.seq in self._window:
            self._window[msg.seq] = msg
            return
        patched = self._patched
        patched[msg.seq] = msg
        patched.move_to_end(msg.seq)
        if len(patched) > self.PATCHES:
            patched.popitem(last=False)

    def fresh(self, msg: StoredMessage) -> StoredMessage:
        """`msg` as read from the store, with any newer in-memory edit applied."""
        return self._window.get(msg.seq) or self._patched.get(msg.seq) or msg

    def _read(self, before: int | None, after: int | None, limit: int) -> list[StoredMessage]:
        found = self._reader(before, after, limit)
        if self._patched:
            patched = self._patched
            found = [patched.get(m.seq, m) for m in found]
        return found

    def before(self, before: int | None, limit: int) -> tuple[list[StoredMessage], bool]:
        """The newest `limit` messages with seq < `before` (ascending) and whether older ones
        exist."""
        if limit <= 0:
            return [], False
        top = self.last_seq + 1 if before is None else min(before, self.last_seq + 1)
        low = self.low
        out: list[StoredMessage] = []
        seq = top - 1
        while seq >= low and len(out) < limit:
            out.append(self._window[seq])
            seq -= 1
        out.reverse()
        if len(out) < limit and seq >= 1:
            older = self._read(min(top, low), None, limit - len(out))
            out[:0] = older
        return out, bool(out) and out[0].seq > 1

    def after(self, after: int, limit: int) -> list[StoredMessage]:
        """The oldest `limit` messages with seq > `after` (ascending)."""
        if limit <= 0 or after >= self.last_seq:
            return []
        low = self.low
        out: list[StoredMessage] = []
        if after + 1 < low:
            out = [m for m in self._read(None, after, limit) if m.seq < low]
        seq = max(after + 1, low)
        while seq <= self.last_seq and len(out) < limit:
            out.append(self._window[seq])
            seq += 1
        return out

    def edited(self, msg: StoredMessage, text: str | None) -> StoredMessage:
        """`msg` with new text (edit) or as a tombstone (`text=None`), kept in memory."""
        new = (
            replace(msg, text=None, deleted=True, attachment=None)
            if text is None
            else replace(msg, text=text, edited=True)
        )
        self.update(new)
        return new


class ClientIds:
    """Recent (scope, sender, client id) -> (seq, ts), bounded; the oldest entry goes first.

    An OrderedDict, not a dict: evicting a plain dict's first key over and over is O(n) per
    eviction (CPython skips the deleted slots at the front until the next resize)."""

    __slots__ = ("_capacity", "_ids")

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._ids: OrderedDict[tuple[int | str, str, str], tuple[int, float]] = OrderedDict()

    def get(self, scope: int | str, sender: str, client_id: str) -> tuple[int, float] | None:
        return self._ids.get((scope, sender, client_id))

    def put(self, scope: int | str, sender: str, client_id: str, seq: int, ts: float) -> None:
        ids = self._ids
        ids[(scope, sender, client_id)] = (seq, ts)
        if len(ids) > self._capacity:
            ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)
