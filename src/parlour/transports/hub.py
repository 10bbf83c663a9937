"""Fan-out hub: encode each event once per wire kind, write the same bytes to every recipient.

Every connection is added with its :class:`~parlour.protocol.wire.Wire`: replies are encoded
by that wire, and an event delivered to many connections is encoded once for each wire *kind*
present among them (NDJSON, WebSocket frames, ...), the same bytes written to every recipient
of that kind.

Every connection has a bounded send queue, measured in bytes: frames waiting in the hub for the
next flush plus what the transport still buffers for the socket. Frames queued during one event
loop iteration are coalesced and handed to the transport in one ``writelines`` at the end of the
iteration, so a burst of fan-out costs one system call per recipient rather than one per
message. Consecutive events to the same recipients (a busy room) are first collected in a
*segment* and joined once for all of them (see :class:`Hub`), so the per-recipient work is per
segment, not per message.

A recipient whose transport buffer (what the kernel would not take) stays over
``send_queue_max`` bytes after a flush, whose pending frames within one iteration exceed four
times that, or whose transport stays paused
(peer not reading) longer than ``stall_timeout``, is a slow consumer: its queue is dropped, it
gets a ``disconnect`` event with code ``slow_consumer`` and the connection is closed. Nothing is
queued after that reason, and the connection is kept while the peer keeps reading what was
already buffered before it — a slow but live client reads its backlog and then the reason —
and aborted once it makes no progress for ``close_grace`` seconds (or after ``stall_timeout``
in all). Memory per connection therefore stays bounded whatever the peer does.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sys
import termios
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from parlour.core.outcome import ConnId, Delivery, Outcome
from parlour.protocol import DisconnectEvent, ErrorCode, Event, NdjsonWire, Reply, Wire, WireKind

__all__ = ["Hub", "HubStats"]


def _unsent(transport: Any) -> int:
    """Bytes written to `transport` that its peer has not taken yet: the transport's buffer
    plus, where the system tells (Linux: SIOCOUTQ), the kernel's send queue — so that a peer
    reading slowly is seen to make progress even while the transport's buffer stands still."""
    buffered = int(transport.get_write_buffer_size())
    sock = transport.get_extra_info("socket")
    if sock is not None and _OUTQ is not None:
        try:
            out = fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0")
            buffered += int.from_bytes(out, sys.byteorder)
        except (OSError, ValueError):
            pass
    return buffered


_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)

log = logging.getLogger("parlour.transports.hub")


@dataclass(slots=True)
class HubStats:
    frames_encoded: int = 0
    frames_queued: int = 0
    bytes_queued: int = 0
    flushes: int = 0
    slow_consumers: int = 0


class _Peer:
    __slots__ = (
        "closing",
        "closing_buffered",
        "closing_progress",
        "closing_since",
        "conn",
        "kind",
        "paused_since",
        "pending",
        "pending_bytes",
        "transport",
        "wire",
    )

    def __init__(self, conn: ConnId, transport: asyncio.BaseTransport, wire: Wire) -> None:
        self.conn = conn
        self.transport: Any = transport
        self.wire = wire
        self.kind = wire.kind
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.paused_since: float | None = None
        self.closing = False
        self.closing_since = 0.0
        self.closing_progress = 0.0
        self.closing_buffered = 0


class _Segment:
    """Consecutive fan-out events to the same recipients, encoded once per wire kind present
    among them (``frames[i]`` for ``kinds[i]``), plus the few frames addressed to single
    members in between (replies to senders), with their position."""

    __slots__ = ("count", "extra", "frames", "kinds", "members", "size", "to")

    def __init__(self, to: tuple[ConnId, ...], kinds: tuple[WireKind, ...]) -> None:
        self.to = to
        self.kinds = kinds
        self.frames: list[list[bytes]] = [[] for _ in kinds]
        self.count = 0
        self.size = 0
        self.members: frozenset[ConnId] | None = None
        self.extra: dict[ConnId, list[tuple[int, bytes]]] | None = None

    def add(self, event: Event) -> int:
        """Encode `event` for every kind; returns the encodings made."""
        kinds = self.kinds
        for i in range(len(kinds)):
            data = kinds[i].encode_event(event)
            self.frames[i].append(data)
            if not i:
                self.size += len(data)
        self.count += 1
        return len(kinds)


#: a segment is handed to the per-connection queues after this many frames or bytes at the
#: latest (the byte bound also keeps one segment well under a member's queue limit)
_SEGMENT_MAX_FRAMES = 1024
_SEGMENT_MAX_BYTES = 256 * 1024


class Hub:
    """Per-connection bounded send queues and write coalescing for one event loop.

    Room traffic is the common case: many consecutive events to the same members, each
    followed by a reply to its sender. Such runs are collected in a *segment* and, at the end
    of the loop iteration, joined once into one bytes object that is queued for every member;
    the replies are spliced in for their senders only. So the per-recipient work is per
    segment, not per message, and every member still sees exactly the order of dispatch.
    """

    def __init__(
        self,
        *,
        send_queue_max: int = 1 << 20,
        stall_timeout: float = 30.0,
        close_grace: float = 5.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.send_queue_max = send_queue_max
        self._burst_max = 4 * send_queue_max
        self._segment_max_bytes = min(_SEGMENT_MAX_BYTES, send_queue_max)
        self.stall_timeout = stall_timeout
        self.close_grace = close_grace
        self._peers: dict[ConnId, _Peer] = {}
        self._dirty: list[_Peer] = []
        self._flush_scheduled = False
        self._segment: _Segment | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock = clock
        #: connected peers per wire kind (kinds present among recipients are looked up only
        #: when more than one kind is connected)
        self._kinds: dict[WireKind, int] = {}
        self._single: tuple[WireKind, ...] | None = None
        self._last_targets: tuple[ConnId, ...] | None = None
        self._last_kinds: tuple[WireKind, ...] = ()
        self.stats = HubStats()

    # ------------------------------------------------------------------ membership

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, conn: object) -> bool:
        return conn in self._peers

    def connections(self) -> list[ConnId]:
        return list(self._peers)

    def add(self, conn: ConnId, transport: asyncio.BaseTransport, wire: Wire | None = None) -> None:
        """A connection and its wire (NDJSON when none is given)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        peer = self._peers[conn] = _Peer(
            conn, transport, wire if wire is not None else NdjsonWire()
        )
        self._kinds[peer.kind] = self._kinds.get(peer.kind, 0) + 1
        self._kinds_changed()

    def remove(self, conn: ConnId) -> None:
        """The connection is gone: drop whatever was queued for it."""
        peer = self._peers.pop(conn, None)
        if peer is not None:
            peer.pending.clear()
            peer.pending_bytes = 0
            peer.closing = True
            left = self._kinds[peer.kind] - 1
            if left:
                self._kinds[peer.kind] = left
            else:
                del self._kinds[peer.kind]
            self._kinds_changed()

    def _kinds_changed(self) -> None:
        self._single = tuple(self._kinds) if len(self._kinds) == 1 else None
        self._last_targets = None

    def _kinds_of(self, targets: tuple[ConnId, ...]) -> tuple[WireKind, ...]:
        """The wire kinds present among `targets`."""
        single = self._single
        if single is not None:
            return single
        if targets is self._last_targets:
            return self._last_kinds
        peers = self._peers
        found = tuple({peers[c].kind: None for c in targets if c in peers})
        self._last_targets, self._last_kinds = targets, found
        return found

    def buffered(self, conn: ConnId) -> int:
        """Bytes queued for ``conn`` (hub queue + transport buffer)."""
        self._materialize()
        peer = self._peers.get(conn)
        if peer is None:
            return 0
        return peer.pending_bytes + int(peer.transport.get_write_buffer_size())

    # ------------------------------------------------------------------ sending

    def dispatch(self, outcome: Outcome, conn: ConnId | None) -> None:
        """Send an outcome: the reply to ``conn``, then each delivery, then the closes."""
        if outcome.reply is not None and conn is not None:
            self.reply(conn, outcome.reply)
        self.deliver_all(outcome.deliveries)
        for target, code, reason in outcome.close:
            self.close(target, code, reason)

    def deliver_all(self, deliveries: tuple[Delivery, ...]) -> None:
        """Each delivery to the connections it resolved to on this node."""
        for delivery in deliveries:
            if delivery.to:
                self.deliver(delivery.event, delivery.to)

    def reply(self, conn: ConnId, reply: Reply) -> None:
        """Encode ``reply`` with ``conn``'s wire and queue it (after what is queued)."""
        peer = self._peers.get(conn)
        if peer is None:
            return
        data = peer.wire.encode_reply(reply)
        self.stats.frames_encoded += 1
        self.send(conn, data)

    def encodes(self, conn: ConnId, reply: Reply) -> bool:
        """Whether ``conn``'s wire can encode ``reply`` (after a failed dispatch: was the
        reply sent at all?)."""
        peer = self._peers.get(conn)
        if peer is None:
            return True
        try:
            peer.wire.encode_reply(reply)
        except Exception:
            return False
        return True

    def send(self, conn: ConnId, data: bytes) -> None:
        """Queue bytes already encoded for ``conn``'s wire."""
        seg = self._segment
        if seg is not None:
            members = seg.members
            if members is None:
                members = seg.members = frozenset(seg.to)
            if conn in members:
                if seg.extra is None:
                    seg.extra = {}
                seg.extra.setdefault(conn, []).append((seg.count, data))
                return
        peer = self._peers.get(conn)
        if peer is not None and not peer.closing:
            self._queue(peer, data)

    def deliver(self, event: Event, to: Iterable[ConnId]) -> None:
        """Queue ``event`` for every connection in ``to``, encoded once per wire kind."""
        targets = to if isinstance(to, tuple) else tuple(to)
        kinds = self._kinds_of(targets)
        seg = self._segment
        if seg is not None:
            if (
                (seg.to is targets or seg.to == targets)
                and seg.kinds == kinds
                and seg.count < _SEGMENT_MAX_FRAMES
                and seg.size < self._segment_max_bytes
            ):
                self.stats.frames_encoded += seg.add(event)
                return
            self._materialize()
        seg = self._segment = _Segment(targets, kinds)
        self.stats.frames_encoded += seg.add(event)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if self._loop is None:  # a delivery before any connection was added
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.flush)

    def _materialize(self) -> None:
        """Hand the open segment to the per-connection queues."""
        seg = self._segment
        if seg is None:
            return
        self._segment = None
        kinds = seg.kinds
        blobs = {
            kind: frames[0] if len(frames) == 1 else b"".join(frames)
            for kind, frames in zip(kinds, seg.frames, strict=True)
        }
        by_kind = dict(zip(kinds, seg.frames, strict=True))
        extra = seg.extra or {}
        peers = self._peers
        queue = self._queue
        for conn in seg.to:
            peer = peers.get(conn)
            if peer is None or peer.closing:
                continue
            blob = blobs.get(peer.kind)
            if blob is None:  # joined after the segment was started: not a recipient
                continue
            own = extra.get(conn)
            if own is None:
                if blob:
                    queue(peer, blob)
                continue
            frames = by_kind[peer.kind]
            pos = 0
            for index, data in own:
                if index > pos:
                    queue(peer, b"".join(frames[pos:index]))
                    pos = index
                queue(peer, data)
                if peer.closing:
                    break
            if pos < len(frames) and not peer.closing:
                queue(peer, b"".join(frames[pos:]) if pos else blob)

    def _queue(self, peer: _Peer, data: bytes) -> None:
        if not data:  # an event this peer's wire has no frame for
            return
        if not peer.pending:
            self._dirty.append(peer)
            self._schedule_flush()
        peer.pending.append(data)
        peer.pending_bytes += len(data)
        self.stats.frames_queued += 1
        self.stats.bytes_queued += len(data)
        # Frames queued in this loop iteration are flushed at its end; the limit proper is
        # checked against the transport's buffer after the flush. This only guards memory
        # against a single iteration queueing far more than the limit.
        if peer.pending_bytes > self._burst_max:
            self._cut_off(peer, "send queue over the limit")

    def flush(self) -> None:
        """Hand every connection's coalesced frames to its transport."""
        self._materialize()  # before clearing the flag: this flush takes what it queues
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        self.stats.flushes += 1
        limit = self.send_queue_max
        for peer in dirty:
            chunks = peer.pending
            if not chunks:
                continue
            peer.pending = []
            peer.pending_bytes = 0
            transport = peer.transport
            if transport.is_closing() and not peer.closing:
                continue
            if len(chunks) == 1:
                transport.write(chunks[0])
            else:
                transport.writelines(chunks)
            if not peer.closing and transport.get_write_buffer_size() > limit:
                self._cut_off(peer, "send queue over the limit")

    # ------------------------------------------------------------------ closing

    def close(self, conn: ConnId, code: str, reason: str) -> None:
        """Tell ``conn`` why (a ``disconnect`` event) after what is queued, then close it."""
        peer = self._peers.get(conn)
        if peer is None or peer.closing:
            return
        self._materialize()  # what was dispatched before the close goes out first
        self._queue(peer, self._disconnect_frame(peer, code, reason))
        self._begin_close(peer)

    @staticmethod
    def _disconnect_frame(peer: _Peer, code: str, reason: str) -> bytes:
        return peer.kind.encode_event(DisconnectEvent(code=code, reason=reason))

    def _begin_close(self, peer: _Peer) -> None:
        peer.closing = True
        peer.closing_since = peer.closing_progress = self._now()
        peer.closing_buffered = _unsent(peer.transport)
        loop = self._loop
        assert loop is not None
        # Close after the pending frames have been flushed (flush runs before this callback).
        loop.call_soon(self._close_transport, peer)

    def _close_transport(self, peer: _Peer) -> None:
        if peer.pending:
            self.flush()
        if not peer.transport.is_closing():
            peer.transport.close()

    def _cut_off(self, peer: _Peer, why: str) -> None:
        self.stats.slow_consumers += 1
        buffered = peer.pending_bytes + int(peer.transport.get_write_buffer_size())
        log.warning(
            "slow consumer disconnected",
            extra={"fields": {"conn": peer.conn, "why": why, "buffered": buffered}},
        )
        was_dirty = bool(peer.pending)  # then it is already in self._dirty
        frame = self._disconnect_frame(
            peer, ErrorCode.SLOW_CONSUMER.value, f"you are not reading fast enough ({why})"
        )
        peer.pending = [frame]
        peer.pending_bytes = len(frame)
        if not was_dirty:
            self._dirty.append(peer)
        self._begin_close(peer)

    # ------------------------------------------------------------------ flow control

    def pause_writing(self, conn: ConnId) -> None:
        peer = self._peers.get(conn)
        if peer is not None and peer.paused_since is None:
            peer.paused_since = self._now()

    def resume_writing(self, conn: ConnId) -> None:
        peer = self._peers.get(conn)
        if peer is not None:
            peer.paused_since = None

    def sweep(self, now: float | None = None) -> None:
        """Cut off stalled writers, and abort closing connections whose peer stopped reading
        what is left (no progress for ``close_grace``, or closing for ``stall_timeout``)."""
        now = self._now() if now is None else now
        for peer in list(self._peers.values()):
            if peer.closing:
                buffered = _unsent(peer.transport)
                if buffered < peer.closing_buffered:
                    peer.closing_progress = now
                peer.closing_buffered = buffered
                if (
                    now - peer.closing_progress > self.close_grace
                    or now - peer.closing_since > self.stall_timeout
                ):
                    peer.transport.abort()
            elif peer.paused_since is not None and now - peer.paused_since > self.stall_timeout:
                self._cut_off(peer, f"not reading for {self.stall_timeout:g}s")

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        loop = self._loop
        return loop.time() if loop is not None else 0.0
