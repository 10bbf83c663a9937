"""The file sender's side of a transfer, sans-I/O.

It asks for file blocks with :class:`~parlour.p2p.events.ReadRequest` events (never more than
``read_ahead`` past what it sends, never blocks the receiver already holds), cuts them into
``chunk``-sized DATA packets, sends lost chunks again in new packets (packet numbers are
never reused), stays under the congestion window, the pacer and the receiver's flow-control
limit, and keeps a block only until every byte of it is acknowledged.
"""

from __future__ import annotations

from collections import deque

from .connection import Address, Connection, State, _Sent
from .events import ReadRequest, Reason
from .ranges import RangeSet
from .wire import MAX_DATAGRAM, FrameType, Have

__all__ = ["SenderConnection"]

_DATA = bytes([FrameType.DATA])


class SenderConnection(Connection):
    ROLE = 0

    def _init_role(self) -> None:
        self._acked = RangeSet()  # file bytes the receiver holds
        self.bytes_acked = 0  # total of _acked
        self._next = 0  # where new data continues
        self._gap_end = 0  # end of the unheld run that _next is in
        self._retx: deque[tuple[int, int]] = deque()
        self._blocks: dict[int, memoryview] = {}
        self._requested: set[int] = set()
        self._peer_limit = 0
        self._have = False
        self._blocked_probe_at: float | None = None
        self._blocked_interval = 0.0
        self._limit_at_probe = -1
        self._read_upto = 0  # blocks below this index were requested (or are held)
        self._acked_before = 0

    @property
    def held_by_peer_at_start(self) -> int:
        return self.stats.extra.get("resumed_bytes", 0)

    def provide_data(self, offset: int, data: bytes, now: float) -> None:
        """The bytes asked for by ``ReadRequest(offset, len(data))``."""
        block = self.config.read_block
        index, rem = divmod(offset, block)
        if rem or index not in self._requested:
            raise ValueError(f"no read was requested at offset {offset}")
        if len(data) != min(block, self.size - offset):
            raise ValueError("a block of the wrong length")
        self._requested.discard(index)
        if self.state is State.ESTABLISHED:
            self._blocks[index] = memoryview(data)

    # ------------------------------------------------------------------ hooks

    def _on_established(self, now: float) -> None:
        self._ping = True  # lets the receiver prove the keys if it is still probing

    def _on_have(self, frame: Have, now: float) -> None:
        if frame.size != self.size or frame.sha256 != self.sha256:
            self.abort(Reason.OFFER_MISMATCH, "size or SHA-256 differ", now)
            return
        self._on_max_offset(frame.max_offset)
        if self._have:
            return
        self._have = True
        self._progress_at = now
        for start, end in frame.ranges:
            self.bytes_acked += self._acked.add(start, end)
        self.stats.extra["resumed_bytes"] = self.bytes_acked
        self._gap_end = 0
        self._request_reads()

    def _on_max_offset(self, max_offset: int) -> None:
        if max_offset > self._peer_limit:
            self._peer_limit = min(max_offset, self.size)
            self._request_reads()

    def _on_data_acked(self, offset: int, length: int) -> None:
        self.bytes_acked += self._acked.add(offset, offset + length)

    def _after_ack(self, now: float) -> None:
        if self.bytes_acked != self._acked_before:
            self._acked_before = self.bytes_acked
            self._progress_at = now
        blocks = self._blocks
        size, block = self.size, self.config.read_block
        acked = self._acked
        while blocks:
            index = next(iter(blocks))
            start = index * block
            if not acked.covers(start, min(start + block, size)):
                break
            del blocks[index]
        self._request_reads()

    def _on_data_lost(self, offset: int, length: int) -> None:
        self._retx.append((offset, length))

    def _on_done(self, now: float) -> None:
        if self.state is State.ESTABLISHED:
            self._complete()
            self.state = State.FINISHED
            self._deadline = now + 3 * self.rtt.pto(self.config.max_ack_delay)
            self._blocks.clear()
            self._retx.clear()

    def _idle_detail(self) -> str:
        if self.bytes_acked == self.size:
            return "every byte was acknowledged, but the receiver's confirmation never came"
        return super()._idle_detail()

    def _role_timer(self) -> float | None:
        return self._blocked_probe_at

    def _role_handle_timer(self, now: float) -> None:
        if self._blocked_probe_at is not None and now >= self._blocked_probe_at:
            self._blocked_probe_at = None
            self._ping = True

    # ------------------------------------------------------------------ reading

    def _request_reads(self) -> None:
        if not self._have or self.state is not State.ESTABLISHED:
            return
        block, size = self.config.read_block, self.size
        horizon = min(size, max(self._next, self._peer_limit) + self.config.read_ahead)
        first = max(self._next // block, self._read_upto)
        last = (horizon + block - 1) // block
        if first >= last:
            return
        self._read_upto = last
        blocks, requested, acked = self._blocks, self._requested, self._acked
        for index in range(first, last):
            if index in blocks or index in requested:
                continue
            start = index * block
            end = min(start + block, size)
            if acked.covers(start, end):
                continue
            requested.add(index)
            self._events.append(ReadRequest(start, end - start))

    # ------------------------------------------------------------------ sending

    def _next_chunk(self) -> tuple[int, int, memoryview] | None:
        block = self.config.read_block
        retx = self._retx
        while retx:
            off, length = retx[0]
            if self._acked.covers(off, off + length):
                retx.popleft()
                continue
            index = off // block
            data = self._blocks.get(index)
            if data is None:  # (cannot happen: a block lives until it is all acked)
                retx.popleft()
                continue
            retx.popleft()
            self.stats.data_bytes_resent += length
            base = off - index * block
            return off, length, data[base : base + length]
        off = self._next
        size = self.size
        if off >= self._gap_end:
            gap = self._acked.first_gap(off, size)
            if gap is None:
                self._next = size
                return None
            off, self._gap_end = gap
            self._next = off
        if off >= self._peer_limit:
            return None
        index = off // block
        data = self._blocks.get(index)
        if data is None:
            return None
        first = index * block
        end = min(off + self.config.chunk, first + len(data), self._gap_end, self._peer_limit)
        self._next = end
        return off, end - off, data[off - first : end - first]

    def _send_data(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        """The hot loop: one DATA packet per pass, while the window, the pacer, the peer's
        flow-control limit and the loaded blocks allow (probes ignore window and pacer)."""
        if self.state is not State.ESTABLISHED or not self._have:
            return
        cc = self.cc
        path = self.path
        tx = self._tx
        assert path is not None and tx is not None
        encrypt = tx.aead.encrypt
        iv = tx.iv
        hdr = self._hdr
        sent = self._sent
        order = self._sent_order
        chunk_size = self.config.chunk
        block_size = self.config.read_block
        retx = self._retx
        window = cc.cwnd - cc.bytes_in_flight
        pacing = self.pacer.budget(now)
        spent = 0
        data_bytes = 0
        limited_by_cwnd = False
        # The run that new data can be cut from without looking anything up.
        fast_end = 0
        fast_first = 0
        fast_block: memoryview | None = None
        probes = self._probes
        pn = self._next_pn
        nxt = self._next  # (mirrors self._next; synced around _next_chunk)
        room = MAX_DATAGRAM - 1
        while True:
            if not probes:
                if window < MAX_DATAGRAM:
                    limited_by_cwnd = True
                    break
                if pacing - spent < room:
                    self._pacer_wake = self.pacer.next_send_time(now, spent)
                    break
            off = nxt
            if off < fast_end and not retx:
                end = off + chunk_size
                if end > fast_end:
                    end = fast_end
                nxt = end
                length = end - off
                data = fast_block[off - fast_first : end - fast_first]  # type: ignore[index]
            else:
                self._next = nxt
                chunk = self._next_chunk()
                nxt = self._next
                if chunk is None:
                    break
                off, length, data = chunk
                fast_end = 0
                if not retx and off + length == nxt:  # new data: set up the fast run
                    index = off // block_size
                    fast_block = self._blocks.get(index)
                    fast_first = index * block_size
                    if fast_block is not None:
                        fast_end = min(
                            fast_first + len(fast_block), self._gap_end, self._peer_limit
                        )
            header = hdr + pn.to_bytes(6, "big")
            datagram = header + encrypt(
                (iv ^ pn).to_bytes(12, "big"),
                b"".join((_DATA, off.to_bytes(6, "big"), data)),
                header,
            )
            out.append((datagram, path))
            size = len(datagram)
            sent[pn] = _Sent(now, size, off, length, ())
            order.append(pn)
            pn += 1
            window -= size
            spent += size
            data_bytes += length
            if probes:
                probes -= 1
        self._next = nxt
        self._next_pn = pn
        self._probes = probes
        if spent:
            cc.bytes_in_flight += spent
            self.pacer.on_sent(spent)
            self.stats.data_bytes_sent += data_bytes
            self._last_eliciting_sent = now
        # A window that is not full is not a signal to grow it (RFC 9002 7.8).
        if not limited_by_cwnd and cc.bytes_in_flight < cc.cwnd // 2:
            for pn in reversed(order):
                rec = sent.get(pn)
                if rec is None or rec.time != now:
                    break
                rec.limited = False
        self._check_flow_blocked(now)

    def _check_flow_blocked(self, now: float) -> None:
        """Blocked by the receiver's window with nothing in flight: probe it, backing off,
        so a lost window update cannot stall the transfer forever."""
        blocked = (
            not self._retx
            and not self._sent
            and self._next < self.size
            and self._next >= self._peer_limit
        )
        if not blocked:
            self._blocked_probe_at = None
            self._blocked_interval = 0.0
            return
        if self._blocked_probe_at is not None:
            return
        if self._limit_at_probe != self._peer_limit:
            self._blocked_interval = self.rtt.pto(self.config.max_ack_delay)
            self._limit_at_probe = self._peer_limit
        else:
            self._blocked_interval = min(self._blocked_interval * 2, 1.0)
        self._blocked_probe_at = now + self._blocked_interval
