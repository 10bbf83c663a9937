"""One side of one transfer, sans-I/O: handshake, packet protection, acknowledgements, loss
recovery, congestion control, path choice, timers and closing.

The adapter feeds it what arrives (``receive_datagram(data, addr, now)``), sends what it
returns (``datagrams_to_send(now)``), calls ``handle_timer(now)`` once ``now >= timer()``,
and acts on ``events()``. Nothing here reads a clock, touches a socket or a file. The file
sender and receiver (``sender.py``, ``receiver.py``) add the data transfer on top.

States::

    PROBING ----(peer proves the key)----> ESTABLISHED ---(receiver verified)--> FINISHING
       |                                      |   sender got DONE -> FINISHED        |
       | connect timeout                      | abort -> CLOSING (sends CLOSE)       | DONE acked
       v                                      | peer CLOSE -> DRAINING               v
    CLOSED <----------- deadlines -------------+-------------------------------> CLOSED
"""

from __future__ import annotations

import os
from collections import deque

from .config import Address, RelayInfo, State, Stats, TokenBucket, TransferConfig
from .congestion import NewReno, Pacer, RttEstimator
from .crypto import InvalidTag, PacketKey, TransferKeys
from .events import (
    Completed,
    Connected,
    Event,
    Failed,
    PathChanged,
    Reason,
    RelayBound,
    RelayFallback,
)
from .ranges import RangeSet
from .wire import (
    ACK_MAX_RANGES,
    MAX_DATAGRAM,
    MAX_PACKET_NUMBER,
    MAX_PLAINTEXT,
    PING_FRAME,
    SEALED_HEADER_LEN,
    TAG_LEN,
    Ack,
    Close,
    Data,
    Done,
    FrameType,
    Have,
    Hello,
    Kind,
    Ping,
    WireError,
    encode_ack,
    encode_close,
    parse_frames,
    parse_relay_bound,
    relay_bind,
)

__all__ = ["Address", "Connection", "RelayInfo", "State", "Stats", "TransferConfig"]
SENDER, RECEIVER = 0, 1
_ZERO_RANDOM = bytes(16)
_MIN_SEALED = SEALED_HEADER_LEN + TAG_LEN + 1


class _Sent:
    __slots__ = ("control", "length", "limited", "offset", "size", "time")

    def __init__(
        self, time: float, size: int, offset: int, length: int, control: tuple[bytes, ...]
    ) -> None:
        self.time = time
        self.size = size
        self.offset = offset  # DATA offset, or -1 when the packet carries none
        self.length = length
        self.control = control  # retransmittable control frames (HAVE, DONE)
        self.limited = True  # was the congestion window the limit when it was sent


class Connection:
    """Everything both roles share. Subclasses: ``SenderConnection``, ``ReceiverConnection``."""

    ROLE = SENDER

    def __init__(
        self,
        *,
        transfer_id: bytes,
        key: bytes,
        size: int,
        sha256: bytes,
        candidates: list[Address],
        now: float,
        relay: RelayInfo | None = None,
        config: TransferConfig | None = None,
        random: bytes | None = None,
    ) -> None:
        if len(transfer_id) != 8:
            raise ValueError("transfer_id must be 8 bytes")
        if len(sha256) != 32 or size < 0:
            raise ValueError("sha256 must be 32 bytes and size >= 0")
        if not candidates and relay is None:
            raise ValueError("need at least one candidate endpoint or a relay")
        self.config = cfg = config or TransferConfig()
        self.transfer_id = transfer_id
        self.size = size
        self.sha256 = sha256
        self.stats = Stats()
        self.state = State.PROBING
        self.path: Address | None = None
        self.via_relay = False
        self.result: Failed | Completed | None = None
        self._keys = TransferKeys(key, transfer_id)
        self._random = random if random is not None else os.urandom(16)
        if len(self._random) != 16:
            raise ValueError("random must be 16 bytes")
        self._candidates = list(dict.fromkeys(candidates))
        self._relay = relay
        self._events: list[Event] = []
        self._start = now
        self._progress_at = now  # the last time a file byte moved (or the transfer began)
        # handshake
        self._pending: dict[bytes, tuple[PacketKey, PacketKey]] = {}  # peer random -> keys
        self._peer_random: bytes | None = None
        self._next_hello = now
        self._hello_interval = 0.25
        self._hello_replies: list[tuple[bytes, Address]] = []
        self._reply_bucket = TokenBucket(10, 10.0)
        self._fallback = not self._candidates  # no direct candidate: the relay at once
        self._relay_bound = False
        self._next_bind = now
        self._bind_interval = 0.25
        # packet protection
        self._tx: PacketKey | None = None
        self._rx: PacketKey | None = None
        self._hdr = bytes([Kind.SEALED]) + transfer_id
        self._next_pn = 0
        # receiving side of the packet-number space
        self._rx_pns = RangeSet()
        self._rx_floor = 0
        self._largest_rx = -1
        self._largest_rx_time = now
        self._last_rx = now
        self._ack_pending = 0
        self._ack_now = False
        self._ack_deadline: float | None = None
        # sending side: recovery and congestion
        self._sent: dict[int, _Sent] = {}
        self._sent_order: deque[int] = deque()
        self._acked_pns = RangeSet()
        self._largest_acked = -1
        self._loss_time: float | None = None
        self._pto_count = 0
        self._last_eliciting_sent: float | None = None
        self._probes = 0
        self._control: list[bytes] = []
        self._ping = False
        self.rtt = RttEstimator(cfg.initial_rtt)
        self.cc = NewReno(MAX_DATAGRAM, beta=cfg.beta)
        self.pacer = Pacer(MAX_DATAGRAM)
        self._pacer_wake: float | None = None
        # Reordering tolerance, widened when a loss proves spurious (RFC 9002 6.1 allows it)
        self._packet_threshold = 3
        self._time_factor = 1.125
        self._declared_lost: dict[int, None] = {}  # recent packets declared lost (bounded)
        self._episode: set[int] = set()  # the lost packets behind the last window cut
        # limits and closing
        self._invalid_bucket = TokenBucket(cfg.invalid_burst, cfg.invalid_rate)
        self._replay_bucket = TokenBucket(cfg.replay_burst, cfg.replay_rate)
        self._close_frame = b""
        self._close_owed = False
        self._close_sends_left = 0
        self._deadline: float | None = None  # end of CLOSING/DRAINING/FINISHING/FINISHED
        self._init_role()

    # ------------------------------------------------------------------ public API

    def events(self) -> list[Event]:
        """The events since the last call, oldest first."""
        out, self._events = self._events, []
        return out

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def abort(self, reason: Reason, detail: str, now: float) -> None:
        """End the transfer with ``reason``; the peer is told when it can be."""
        if self.state in (State.CLOSED, State.CLOSING, State.DRAINING):
            return
        self._fail(reason, detail, by_peer=False)
        if self._tx is None or self.state in (State.FINISHED, State.FINISHING):
            self.state = State.CLOSED
            return
        self.state = State.CLOSING
        self._close_frame = encode_close(reason.code, detail or reason.message)
        self._close_owed = True
        self._close_sends_left = 5
        self._deadline = now + 3 * self.rtt.pto(self.config.max_ack_delay)

    def add_candidate(self, addr: Address, now: float) -> None:
        """Another endpoint the peer may be reached at (the server learned it later, e.g.
        what the relay observed); it is probed at once."""
        if self.state is State.PROBING and addr not in self._candidates:
            self._candidates.append(addr)
            self._next_hello = now
            self._hello_interval = 0.25

    def timer(self) -> float | None:
        """The next time ``handle_timer`` must run, or None."""
        st = self.state
        if st is State.CLOSED:
            return None
        if st is State.PROBING:
            cfg = self.config
            times = [self._next_hello, self._start + cfg.connect_timeout]
            if self._relay is not None:
                if not self._relay_bound:
                    times.append(self._next_bind)
                if not self._fallback:
                    times.append(self._start + cfg.direct_timeout)
            return min(times)
        if st in (State.CLOSING, State.DRAINING):
            return self._deadline
        times = [self._last_rx + self.config.idle_timeout]
        if st is State.ESTABLISHED:
            times.append(self._progress_at + self.config.stall_timeout)
        if self._deadline is not None:
            times.append(self._deadline)
        if self._loss_time is not None:
            times.append(self._loss_time)
        elif self._sent and self._last_eliciting_sent is not None:
            times.append(self._pto_deadline())
        if self._ack_deadline is not None:
            times.append(self._ack_deadline)
        if self._pacer_wake is not None:
            times.append(self._pacer_wake)
        if self._last_eliciting_sent is not None:
            times.append(self._last_eliciting_sent + self.config.idle_timeout / 3)
        extra = self._role_timer()
        if extra is not None:
            times.append(extra)
        return min(times)

    def handle_timer(self, now: float) -> None:
        st = self.state
        cfg = self.config
        if st is State.CLOSED:
            return
        if st is State.PROBING:
            if now >= self._start + cfg.connect_timeout:
                where = "directly or through the relay" if self._relay else "directly"
                self._fail(Reason.NO_PATH, f"no answer from the peer {where}", by_peer=False)
                self.state = State.CLOSED
                return
            if (
                self._relay is not None
                and not self._fallback
                and now >= (self._start + cfg.direct_timeout)
            ):
                self._fallback = True
                self._next_hello = now
                self._events.append(RelayFallback())
            return
        if self._deadline is not None and now >= self._deadline:
            self.state = State.CLOSED
            return
        if st in (State.CLOSING, State.DRAINING):
            return
        if now >= self._last_rx + cfg.idle_timeout:
            self._fail(Reason.IDLE_TIMEOUT, self._idle_detail(), by_peer=False)
            self.state = State.CLOSED
            return
        if st is State.ESTABLISHED and now >= self._progress_at + cfg.stall_timeout:
            self.abort(Reason.STALLED, f"no file byte moved for {cfg.stall_timeout:g} s", now)
            return
        if self._loss_time is not None and now >= self._loss_time:
            self._detect_lost(now)
        elif self._sent and self._last_eliciting_sent is not None and now >= self._pto_deadline():
            self._pto_count += 1
            self.stats.pto_count += 1
            self._probes = 2
        if self._ack_deadline is not None and now >= self._ack_deadline:
            self._ack_now = True
        if self._pacer_wake is not None and now >= self._pacer_wake:
            self._pacer_wake = None
        if (
            self._last_eliciting_sent is not None
            and now >= self._last_eliciting_sent + cfg.idle_timeout / 3
        ):
            self._ping = True
        self._role_handle_timer(now)

    def receive_datagram(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        """Take one datagram that arrived from ``addr`` for this transfer."""
        if self.state is State.CLOSED or len(data) < 9:
            return
        kind = data[0]
        self.stats.datagrams_received += 1
        if kind == Kind.SEALED:
            self._receive_sealed(data, addr, now)
        elif kind == Kind.HELLO:
            self._receive_hello(data, addr, now)
        elif kind == Kind.RELAY_BOUND and self._relay is not None and addr == self._relay.address:
            try:
                bound = parse_relay_bound(data)
            except WireError:
                self._invalid(now)
                return
            if bound.transfer_id == self.transfer_id and bound.side == self.ROLE:
                if not self._relay_bound:
                    self._events.append(RelayBound(bound.observed))
                self._relay_bound = True
        else:
            self._invalid(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Every datagram that may go now, each with its destination."""
        out: list[tuple[bytes, Address]] = []
        st = self.state
        if st is State.PROBING:
            self._send_probing(now, out)
        elif st is State.CLOSING:
            if self._close_owed and self._close_sends_left > 0 and self.path is not None:
                self._close_owed = False
                self._close_sends_left -= 1
                out.append((self._seal(self._close_frame), self.path))
        elif st in (State.ESTABLISHED, State.FINISHING, State.FINISHED):
            self._send_established(now, out)
        if self._hello_replies:
            out.extend(self._hello_replies)
            self._hello_replies = []
        if out:
            self.stats.datagrams_sent += len(out)
            self.stats.wire_bytes_sent += sum([len(d) for d, _ in out])
        return out

    # ------------------------------------------------------------------ role hooks

    def _init_role(self) -> None:
        pass

    def _on_established(self, now: float) -> None:
        raise NotImplementedError

    def _after_ack(self, now: float) -> None:
        pass

    def _on_data(self, offset: int, data: bytes | memoryview, now: float) -> None:
        self.abort(Reason.PROTOCOL, "unexpected DATA", now)

    def _on_have(self, frame: Have, now: float) -> None:
        self.abort(Reason.PROTOCOL, "unexpected HAVE", now)

    def _on_done(self, now: float) -> None:
        self.abort(Reason.PROTOCOL, "unexpected DONE", now)

    def _on_max_offset(self, max_offset: int) -> None:
        pass

    def _on_data_acked(self, offset: int, length: int) -> None:
        pass

    def _on_data_lost(self, offset: int, length: int) -> None:
        pass

    def _on_control_acked(self, frame: bytes, now: float) -> None:
        pass

    def _advertised_limit(self) -> int:
        return 0

    def _send_data(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        pass

    def _role_timer(self) -> float | None:
        return None

    def _idle_detail(self) -> str:
        return f"nothing for {self.config.idle_timeout:g} s"

    def _role_handle_timer(self, now: float) -> None:
        pass

    # ------------------------------------------------------------------ handshake

    def _hello(self, echo: bytes) -> bytes:
        body = Hello(self.transfer_id, self.ROLE, self._random, echo).body()
        return body + self._keys.hello_mac(body)

    def _send_probing(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        relay = self._relay
        if relay is not None and not self._relay_bound and now >= self._next_bind:
            out.append((relay_bind(self.transfer_id, self.ROLE, relay.ticket), relay.address))
            self._next_bind = now + self._bind_interval
            self._bind_interval = min(self._bind_interval * 2, 1.0)
        if now >= self._next_hello:
            echo = next(reversed(self._pending), _ZERO_RANDOM)
            hello = self._hello(echo)
            for dest in self._candidates:
                out.append((hello, dest))
            if self._fallback and relay is not None:
                out.append((hello, relay.address))
            self._next_hello = now + self._hello_interval
            self._hello_interval = min(self._hello_interval * 2, 1.0)

    def _receive_hello(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        try:
            hello, body, mac = Hello.parse(data)
        except WireError:
            self._invalid(now)
            return
        if (
            hello.transfer_id != self.transfer_id
            or hello.role == self.ROLE
            or not self._keys.hello_ok(body, mac)
        ):
            self._invalid(now)
            return
        if self.state is State.PROBING:
            if hello.echo == self._random:
                self._commit(hello.random, addr, now, None)
                return
            if hello.random not in self._pending:
                if len(self._pending) >= 4:
                    del self._pending[next(iter(self._pending))]
                self._pending[hello.random] = self._derive(hello.random)
            self._reply_hello(hello.random, addr, now)
        elif hello.random == self._peer_random:
            # The peer has not seen our proof yet: answer again (rate-limited).
            self._reply_hello(hello.random, addr, now)
            if self.state is State.CLOSING:
                self._close_owed = True
        else:
            self._replayed(now)

    def _reply_hello(self, peer_random: bytes, addr: Address, now: float) -> None:
        if self._reply_bucket.take(now):
            self._hello_replies.append((self._hello(peer_random), addr))

    def _derive(self, peer_random: bytes) -> tuple[PacketKey, PacketKey]:
        """(tx, rx) for a peer random."""
        if self.ROLE == SENDER:
            s2r, r2s = self._keys.session(self._random, peer_random)
            return s2r, r2s
        s2r, r2s = self._keys.session(peer_random, self._random)
        return r2s, s2r

    def _commit(
        self,
        peer_random: bytes,
        addr: Address,
        now: float,
        keys: tuple[PacketKey, PacketKey] | None,
    ) -> None:
        self._tx, self._rx = keys if keys is not None else self._derive(peer_random)
        self._peer_random = peer_random
        self._pending.clear()
        self.state = State.ESTABLISHED
        self._last_rx = now
        self._progress_at = now
        self._set_path(addr)
        self._events.append(Connected(addr, self.via_relay))
        self._on_established(now)

    def _set_path(self, addr: Address) -> None:
        self.path = addr
        self.via_relay = self._relay is not None and addr == self._relay.address

    # ------------------------------------------------------------------ receiving

    def _receive_sealed(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        if len(data) < _MIN_SEALED or data[1:9] != self.transfer_id:
            self._invalid(now)
            return
        pn = int.from_bytes(data[9:SEALED_HEADER_LEN], "big")
        header = bytes(data[:SEALED_HEADER_LEN])
        sealed = data[SEALED_HEADER_LEN:]
        rx = self._rx
        if rx is None:
            for peer_random, keys in list(self._pending.items()):
                try:
                    plaintext = keys[1].open(header, pn, sealed)
                except InvalidTag:
                    continue
                self._commit(peer_random, addr, now, keys)
                self._accept(pn, plaintext, addr, now)
                return
            self._invalid(now)
            return
        if pn < self._rx_floor or pn in self._rx_pns:
            self._replayed(now)
            return
        try:
            plaintext = rx.open(header, pn, sealed)
        except InvalidTag:
            self._invalid(now)
            return
        self._accept(pn, plaintext, addr, now)

    def _accept(self, pn: int, plaintext: bytes, addr: Address, now: float) -> None:
        rx_pns = self._rx_pns
        rx_pns.add(pn, pn + 1)
        self._last_rx = now
        if pn > self._largest_rx:
            in_order = pn == self._largest_rx + 1
            self._largest_rx = pn
            self._largest_rx_time = now
            if addr != self.path and self.state is not State.CLOSING:
                self._set_path(addr)
                self.stats.path_changes += 1
                self._events.append(PathChanged(addr, self.via_relay))
            window = self.config.replay_window
            if pn - self._rx_floor > 2 * window:
                self._rx_floor = pn - window
                rx_pns.discard_below(self._rx_floor)
        else:
            in_order = False
        if self.state is State.CLOSING:
            self._close_owed = True
            return
        if self.state is State.DRAINING:
            return
        if plaintext and plaintext[0] == FrameType.DATA and len(plaintext) > 7:
            self._on_data(int.from_bytes(plaintext[1:7], "big"), memoryview(plaintext)[7:], now)
            eliciting = True
        else:
            try:
                frames = parse_frames(plaintext)
            except WireError as exc:
                self.abort(Reason.PROTOCOL, str(exc), now)
                return
            eliciting = False
            for frame in frames:
                if self.state in (State.CLOSED, State.CLOSING, State.DRAINING):
                    return
                if isinstance(frame, Ack):
                    self._on_ack(frame, now)
                elif isinstance(frame, Data):
                    eliciting = True
                    self._on_data(frame.offset, frame.data, now)
                elif isinstance(frame, Ping):
                    eliciting = True
                elif isinstance(frame, Have):
                    eliciting = True
                    self._on_have(frame, now)
                elif isinstance(frame, Done):
                    eliciting = True
                    self._on_done(now)
                elif isinstance(frame, Close):
                    self._on_peer_close(frame, now)
                    return
        if eliciting:
            self._ack_pending += 1
            if not in_order or self._ack_pending >= 2:
                self._ack_now = True
            elif self._ack_deadline is None:
                self._ack_deadline = now + self.config.max_ack_delay

    def _on_peer_close(self, frame: Close, now: float) -> None:
        self._fail(Reason.from_code(frame.code), frame.reason, by_peer=True)
        self.state = State.DRAINING
        self._deadline = now + 3 * self.rtt.pto(self.config.max_ack_delay)

    def _invalid(self, now: float) -> None:
        self.stats.forged_dropped += 1
        if not self._invalid_bucket.take(now):
            self.abort(Reason.FLOOD, f"{self.stats.forged_dropped} forged datagrams", now)

    def _replayed(self, now: float) -> None:
        self.stats.replays_dropped += 1
        if not self._replay_bucket.take(now):
            self.abort(Reason.FLOOD, f"{self.stats.replays_dropped} replayed datagrams", now)

    def _fail(self, reason: Reason, detail: str, *, by_peer: bool) -> None:
        if self.result is None:
            self.result = Failed(reason, detail, by_peer)
            self._events.append(self.result)

    def _complete(self) -> None:
        if self.result is None:
            self.result = Completed()
            self._events.append(self.result)

    # ------------------------------------------------------------------ acknowledgements

    def _on_ack(self, ack: Ack, now: float) -> None:
        largest = ack.ranges[0][1] - 1
        if largest >= self._next_pn:
            self.abort(Reason.PROTOCOL, "acknowledged a packet never sent", now)
            return
        self._on_max_offset(ack.max_offset)
        sent = self._sent
        order = self._sent_order
        while order and order[0] not in sent:
            order.popleft()
        floor = order[0] if order else self._next_pn
        if self._declared_lost:  # still watching these for a late (spurious-loss) ACK
            floor = min(floor, next(iter(self._declared_lost)))
        self._acked_pns.discard_below(floor)
        newly: list[tuple[int, int]] = []
        for start, end in ack.ranges:
            if end <= floor:
                break
            newly.extend(self._acked_pns.add_new(max(start, floor), end))
        if not newly:
            return
        if largest > self._largest_acked:
            self._largest_acked = largest
            top = sent.get(largest)
            if top is not None:
                delay = min(ack.ack_delay_us / 1e6, self.config.max_ack_delay)
                self.rtt.update(now - top.time, delay)
                self.cc.on_rtt_sample(self.rtt.latest, largest, self._next_pn)
        cc = self.cc
        recovery_start = cc.recovery_start
        flight = growth = 0
        run_start = run_end = -1  # consecutive acknowledged data, reported as one range
        declared = self._declared_lost
        for start, end in newly:
            for pn in range(start, end):
                p = sent.pop(pn, None)
                if p is None:
                    if pn in declared:
                        self._spurious(pn)
                    continue
                flight += p.size
                if p.time > recovery_start and p.limited:
                    growth += p.size
                if p.offset >= 0:
                    if p.offset == run_end:
                        run_end += p.length
                    else:
                        if run_end > run_start:
                            self._on_data_acked(run_start, run_end - run_start)
                        run_start, run_end = p.offset, p.offset + p.length
                for frame in p.control:
                    self._on_control_acked(frame, now)
        if run_end > run_start:
            self._on_data_acked(run_start, run_end - run_start)
        cc.on_acked(flight, growth)
        self._pto_count = 0
        self._detect_lost(now)
        self._after_ack(now)
        self.pacer.configure(cc.cwnd, self.rtt.smoothed, cc.in_slow_start, self.rtt.sampled)

    def _spurious(self, pn: int) -> None:
        """A packet declared lost was acknowledged after all: it was reordered or late.
        Tolerate more reordering from now on, and undo the window cut if every loss
        behind it was like this one."""
        del self._declared_lost[pn]
        extra = self.stats.extra
        extra["spurious_losses"] = extra.get("spurious_losses", 0) + 1
        distance = self._largest_acked - pn + 1  # how far behind it arrived (at most)
        self._packet_threshold = min(max(self._packet_threshold + 1, distance), 256)
        self._time_factor = min(self._time_factor + 0.125, 2.0)
        if pn in self._episode:
            self._episode.discard(pn)
            if not self._episode:
                self.cc.undo()

    def _detect_lost(self, now: float) -> None:
        self._loss_time = None
        largest = self._largest_acked
        if largest < 0:
            return
        loss_delay = self.rtt.loss_delay(self._time_factor)
        threshold = self._packet_threshold
        sent = self._sent
        first_lost: float | None = None
        last_lost = 0.0
        cut_from: float | None = None
        lost_now: list[int] = []
        for pn in list(self._sent_order):
            if pn > largest:
                break
            p = sent.get(pn)
            if p is None:
                continue
            if pn <= largest - threshold or p.time + loss_delay <= now:
                del sent[pn]
                lost_now.append(pn)
                self.stats.packets_lost += 1
                self.cc.on_lost(p.size)
                if first_lost is None:
                    first_lost = p.time
                last_lost = p.time
                cut_from = p.time if cut_from is None else max(cut_from, p.time)
                if p.offset >= 0:
                    self._on_data_lost(p.offset, p.length)
                self._control.extend(p.control)
            else:
                self._loss_time = p.time + loss_delay
                break
        if cut_from is None:
            return
        declared = self._declared_lost
        for pn in lost_now:
            declared[pn] = None
        while len(declared) > 4096:
            del declared[next(iter(declared))]
        if self.cc.on_congestion(cut_from, now):
            self._episode = set(lost_now)
        else:
            self._episode.update(lost_now)
        if first_lost is not None and self.rtt.sampled:
            span = 3 * self.rtt.pto(self.config.max_ack_delay)
            if last_lost - first_lost > span:
                self.cc.on_persistent_congestion(now)
                self._episode.clear()

    def _pto_deadline(self) -> float:
        assert self._last_eliciting_sent is not None
        backoff: float = 2 ** min(self._pto_count, 10)
        return self._last_eliciting_sent + self.rtt.pto(self.config.max_ack_delay) * backoff

    # ------------------------------------------------------------------ sending

    def _seal(self, plaintext: bytes) -> bytes:
        pn = self._next_pn
        if pn > MAX_PACKET_NUMBER:
            raise OverflowError("packet numbers exhausted")
        self._next_pn = pn + 1
        assert self._tx is not None
        return self._tx.seal(self._hdr + pn.to_bytes(6, "big"), pn, plaintext)

    def _record(
        self, now: float, size: int, offset: int, length: int, control: tuple[bytes, ...]
    ) -> None:
        pn = self._next_pn - 1
        rec = _Sent(now, size, offset, length, control)
        self._sent[pn] = rec
        self._sent_order.append(pn)
        self._last_eliciting_sent = now
        self.cc.on_sent(size)
        self.pacer.on_sent(size)

    def _ack_frame(self, now: float) -> bytes:
        self._ack_pending = 0
        self._ack_now = False
        self._ack_deadline = None
        delay_us = int(max(0.0, now - self._largest_rx_time) * 1e6)
        return encode_ack(delay_us, self._advertised_limit(), self._rx_pns.top(ACK_MAX_RANGES))

    def _send_established(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        path = self.path
        assert path is not None
        frames: list[bytes] = []
        if self._ack_now or (self._ack_deadline is not None and now >= self._ack_deadline):
            frames.append(self._ack_frame(now))
        control = self._control
        self._control = []
        if self._ping:
            self._ping = False
            control.append(PING_FRAME)
        # Pack frames greedily into packets; only ones with control frames are recorded.
        batch: list[bytes] = []
        used = 0
        eliciting: list[bytes] = []
        for frame in frames + control:
            if used + len(frame) > MAX_PLAINTEXT and batch:
                self._emit(now, batch, eliciting, path, out)
                batch, used, eliciting = [], 0, []
            batch.append(frame)
            used += len(frame)
            if frame[0] != FrameType.ACK:
                eliciting.append(frame)
        if batch:
            self._emit(now, batch, eliciting, path, out)
        self._send_data(now, out)
        if self._probes > 0:
            # Probes carry the control frames still in flight (HAVE, DONE), not a bare PING,
            # so a lost one does not wait for loss detection, which needs later ACKs.
            pending = [f for p in self._sent.values() for f in p.control][:4]
            frames = [PING_FRAME, *pending]
            while self._probes > 0:  # (each recorded packet pays one probe)
                self._emit(now, frames, frames, path, out)

    def _emit(
        self,
        now: float,
        frames: list[bytes],
        eliciting: list[bytes],
        path: Address,
        out: list[tuple[bytes, Address]],
    ) -> None:
        datagram = self._seal(b"".join(frames))
        out.append((datagram, path))
        if eliciting:
            keep = tuple(f for f in eliciting if f[0] != FrameType.PING)
            self._record(now, len(datagram), -1, 0, keep)
            if self._probes > 0:
                self._probes -= 1
