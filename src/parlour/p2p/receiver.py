"""The file receiver's side of a transfer, sans-I/O.

It tells the sender what it already holds (HAVE, for resume) and how far it may send (the
flow-control limit: the end of the run of bytes *written* from offset 0, plus ``window``),
drops duplicate bytes, gathers consecutive chunks into :class:`~parlour.p2p.events.WriteData`
runs, and once every byte is written asks for the SHA-256 check
(:class:`~parlour.p2p.events.ReadyToVerify`). Bytes received but not yet written always fit
in ``window``: a slow disk slows the sender down instead of losing data.
"""

from __future__ import annotations

from .connection import Address, Connection, State
from .crypto import InvalidTag
from .events import Event, ReadyToVerify, Reason, WriteData
from .ranges import RangeSet
from .wire import (
    DONE_FRAME,
    HAVE_MAX_RANGES,
    SEALED_HEADER_LEN,
    TAG_LEN,
    FrameType,
    Kind,
    encode_have,
)

__all__ = ["ReceiverConnection"]

RUN_MAX = 256 * 1024  # largest WriteData
_MIN_DATA_PACKET = SEALED_HEADER_LEN + 8 + TAG_LEN
_SEALED, _DATA, _ESTABLISHED = int(Kind.SEALED), int(FrameType.DATA), State.ESTABLISHED


class ReceiverConnection(Connection):
    ROLE = 1

    def _init_role(self) -> None:
        self._received = RangeSet()
        self._written = RangeSet()
        self._run_off = 0
        self._run = bytearray()
        self._limit_sent = 0  # the largest limit ever advertised
        self._verify_asked = False
        self._window = self.config.window
        self._replay_span = 2 * self.config.replay_window

    def hold(self, ranges: RangeSet) -> None:
        """Bytes already on disk from an earlier attempt (call before the handshake ends)."""
        if self.state is not State.PROBING:
            raise RuntimeError("hold() must come before the transfer starts")
        for start, end in ranges:
            if not 0 <= start < end <= self.size:
                raise ValueError("a held range outside the file")
            self._received.add(start, end)
            self._written.add(start, end)

    @property
    def bytes_written(self) -> int:
        return self._written.total()

    @property
    def held(self) -> RangeSet:
        """The bytes written so far (what a later attempt can resume from)."""
        return self._written.copy()

    def data_written(self, offset: int, length: int, now: float) -> None:
        """The adapter wrote ``length`` bytes at ``offset`` (from a WriteData)."""
        if not self._received.covers(offset, offset + length):
            raise ValueError("written bytes that were never received")
        before = self._advertised_limit()
        self._written.add(offset, offset + length)
        self._progress_at = now
        after = self._advertised_limit()
        if after - self._limit_sent >= self._window // 4 or (after == self.size > before):
            self._ack_now = True  # a window update, so a waiting sender goes on
        self._check_ready()

    def finish(self, now: float) -> None:
        """The file is verified and in place: tell the sender (reliably) and end."""
        if self.state is not State.ESTABLISHED or not self._verify_asked:
            return
        self._control.append(DONE_FRAME)
        self.state = State.FINISHING
        self._deadline = now + self.config.idle_timeout
        self._complete()

    def events(self) -> list[Event]:
        self._flush_run()
        return super().events()

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        """The hot path: the next DATA packet in order on the established path is handled
        here in one go; everything else takes the general route."""
        rx = self._rx
        if (
            rx is None
            or len(data) < _MIN_DATA_PACKET
            or data[0] != _SEALED
            or self.state is not _ESTABLISHED
            or addr != self.path
        ):
            super().receive_datagram(data, addr, now)
            return
        pn = int.from_bytes(data[9:SEALED_HEADER_LEN], "big")
        if pn != self._largest_rx + 1:
            super().receive_datagram(data, addr, now)
            return
        try:
            plaintext = rx.aead.decrypt(
                (rx.iv ^ pn).to_bytes(12, "big"),
                data[SEALED_HEADER_LEN:],
                bytes(data[:SEALED_HEADER_LEN]),
            )
        except InvalidTag:
            self.stats.datagrams_received += 1
            self._invalid(now)
            return
        self.stats.datagrams_received += 1
        if plaintext[0] != _DATA or len(plaintext) <= 7:
            self._accept(pn, plaintext, addr, now)
            return
        ends = self._rx_pns._ends
        if ends and ends[-1] == pn:
            ends[-1] = pn + 1
        else:
            self._rx_pns.add(pn, pn + 1)
        self._largest_rx = pn
        self._largest_rx_time = now
        self._last_rx = now
        self._progress_at = now
        if pn - self._rx_floor > self._replay_span:
            self._rx_floor = pn - self.config.replay_window
            self._rx_pns.discard_below(self._rx_floor)
        offset = int.from_bytes(plaintext[1:7], "big")
        chunk = memoryview(plaintext)[7:]
        end = offset + len(chunk)
        rends = self._received._ends
        if end <= self._limit_sent and rends and rends[-1] == offset:
            rends[-1] = end
            run = self._run
            if run and offset == self._run_off + len(run):
                run += chunk
                if len(run) >= RUN_MAX:
                    self._flush_run()
            else:
                self._append(offset, chunk)
            if end == self.size:
                self._check_ready()
        else:
            self._on_data(offset, chunk, now)
        self._ack_pending += 1
        if self._ack_pending >= 2:
            self._ack_now = True
        elif self._ack_deadline is None:
            self._ack_deadline = now + self.config.max_ack_delay

    # ------------------------------------------------------------------ hooks

    def _on_established(self, now: float) -> None:
        limit = self._advertised_limit()
        self._limit_sent = limit
        held = list(self._written)[:HAVE_MAX_RANGES]
        self._control.append(encode_have(self.size, self.sha256, limit, held))
        self._check_ready()

    def _advertised_limit(self) -> int:
        limit = min(self.size, self._written.prefix_end(0) + self._window)
        if limit > self._limit_sent:
            self._limit_sent = limit
        return self._limit_sent

    def _on_control_acked(self, frame: bytes, now: float) -> None:
        if frame[0] == FrameType.DONE and self.state is State.FINISHING:
            self.state = State.CLOSED

    def _on_data(self, offset: int, data: bytes | memoryview, now: float) -> None:
        end = offset + len(data)
        if end > self._limit_sent:
            self.abort(Reason.PROTOCOL, "data beyond the flow-control limit", now)
            return
        if self.state is not State.ESTABLISHED:
            return
        received = self._received
        if received.last_end == offset or (received.last_end or 0) < offset:
            received.add(offset, end)
            self._append(offset, data)
            self._progress_at = now
        else:
            for start, stop in received.add_new(offset, end):
                self._append(start, data[start - offset : stop - offset])
                self._progress_at = now
        if end == self.size or received.last_end == self.size:
            self._check_ready()

    def _append(self, offset: int, data: bytes | memoryview) -> None:
        run = self._run
        if run and offset == self._run_off + len(run):
            run += data
        else:
            self._flush_run()
            self._run_off = offset
            self._run = run = bytearray(data)
        if len(run) >= RUN_MAX:
            self._flush_run()

    def _flush_run(self) -> None:
        if self._run:
            self._events.append(WriteData(self._run_off, self._run))
            self._run = bytearray()

    def _check_ready(self) -> None:
        if (
            not self._verify_asked
            and self.state is State.ESTABLISHED
            and self._written.covers(0, self.size)
        ):
            self._verify_asked = True
            self._events.append(ReadyToVerify())
