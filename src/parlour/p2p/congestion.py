"""RTT estimation, the congestion window and the pacer (no clock inside: time is passed in).

* :class:`RttEstimator`: smoothed RTT and variance as in RFC 6298 (alpha 1/8, beta 1/4),
  with the ack-delay correction and the timeouts of RFC 9002 (PTO, loss delay).
* :class:`NewReno`: the congestion controller of RFC 9002 section 7 in bytes (slow start,
  congestion avoidance, one window reduction per round trip of losses, persistent
  congestion), growing only while the window is actually the limit.
* :class:`Pacer`: a token bucket that spreads a window over the round trip (rate =
  gain x cwnd / srtt) so that a window is never sent as one burst into a slow path.
"""

from __future__ import annotations

__all__ = ["GRANULARITY", "NewReno", "Pacer", "RttEstimator"]

GRANULARITY = 0.001  # seconds; the smallest timer the loss detector relies on


class RttEstimator:
    __slots__ = ("latest", "min_rtt", "rttvar", "sampled", "smoothed")

    def __init__(self, initial_rtt: float) -> None:
        self.latest = 0.0
        self.min_rtt = 0.0
        self.smoothed = initial_rtt
        self.rttvar = initial_rtt / 2
        self.sampled = False

    def update(self, sample: float, ack_delay: float) -> None:
        sample = max(sample, 1e-6)
        self.latest = sample
        if not self.sampled:
            self.sampled = True
            self.min_rtt = sample
            self.smoothed = sample
            self.rttvar = sample / 2
            return
        self.min_rtt = min(self.min_rtt, sample)
        adjusted = sample - ack_delay if sample - ack_delay >= self.min_rtt else sample
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.smoothed - adjusted)
        self.smoothed = 0.875 * self.smoothed + 0.125 * adjusted

    def pto(self, max_ack_delay: float) -> float:
        """The probe timeout before any backoff."""
        return self.smoothed + max(4 * self.rttvar, GRANULARITY) + max_ack_delay

    def loss_delay(self, factor: float = 1.125) -> float:
        """How long after a later packet was acknowledged an unacknowledged one is lost."""
        return max(factor * max(self.smoothed, self.latest), GRANULARITY)


class NewReno:
    __slots__ = (
        "_ca_acked",
        "_cur_min",
        "_last_min",
        "_round_end",
        "_samples",
        "_undo",
        "beta",
        "bytes_in_flight",
        "cwnd",
        "max_datagram",
        "min_window",
        "recovery_start",
        "ssthresh",
    )

    def __init__(self, max_datagram: int, *, beta: float = 0.5, initial_packets: int = 10) -> None:
        self.max_datagram = max_datagram
        self.beta = beta
        self.cwnd = initial_packets * max_datagram
        self.min_window = 2 * max_datagram
        self.ssthresh = float("inf")
        self.bytes_in_flight = 0
        self.recovery_start = -1.0
        self._ca_acked = 0
        # HyStart++ (RFC 9406) round tracking: leave slow start when the round trip grows
        self._round_end = -1
        self._last_min = float("inf")
        self._cur_min = float("inf")
        self._samples = 0
        self._undo: tuple[int, float] | None = None  # (cwnd, ssthresh) before the last cut

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def available(self) -> int:
        return self.cwnd - self.bytes_in_flight

    def on_sent(self, size: int) -> None:
        self.bytes_in_flight += size

    def on_acked(self, flight: int, growth: int) -> None:
        """Packets of ``flight`` bytes were acknowledged; ``growth`` of them count towards
        the window: sent after the last cut, while the window was the limit (the window
        does not grow on an application- or flow-control-limited sender)."""
        self.bytes_in_flight -= flight
        if not growth:
            return
        if self.cwnd < self.ssthresh:
            self.cwnd += growth
            return
        self._ca_acked += growth
        while self._ca_acked >= self.cwnd:
            self._ca_acked -= self.cwnd
            self.cwnd += self.max_datagram

    def on_rtt_sample(self, rtt: float, largest_acked: int, next_pn: int) -> None:
        """HyStart++ without its conservative phase: in slow start, when the smallest RTT of
        this round exceeds last round's by max(4 ms, min(16 ms, last/8)), the queue at the
        bottleneck is growing: stop doubling before it overflows."""
        if self.cwnd >= self.ssthresh:
            return
        self._cur_min = min(self._cur_min, rtt)
        self._samples += 1
        if self._samples >= 3 and self._last_min != float("inf"):
            threshold = min(max(self._last_min / 8, 0.004), 0.016)
            if self._cur_min >= self._last_min + threshold:
                self.ssthresh = self.cwnd
                return
        if largest_acked >= self._round_end:
            self._last_min = self._cur_min
            self._cur_min = float("inf")
            self._samples = 0
            self._round_end = next_pn

    def on_lost(self, size: int) -> None:
        self.bytes_in_flight -= size

    def on_congestion(self, sent_time: float, now: float) -> bool:
        """A loss of a packet sent at ``sent_time``; True when it cut the window (at most
        once per round trip: losses of packets sent before the last cut do not count)."""
        if sent_time <= self.recovery_start:
            return False
        self.recovery_start = now
        self._undo = (self.cwnd, self.ssthresh)
        self.ssthresh = max(int(self.cwnd * self.beta), self.min_window)
        self.cwnd = int(self.ssthresh)
        self._ca_acked = 0
        return True

    def undo(self) -> None:
        """Every loss behind the last cut was spurious (the packets were only reordered or
        late): give the window back, as Linux does when its losses prove false."""
        if self._undo is not None:
            cwnd, ssthresh = self._undo
            self.cwnd = max(self.cwnd, cwnd)
            self.ssthresh = ssthresh
            self._undo = None

    def on_persistent_congestion(self, now: float) -> None:
        self._undo = None
        self.recovery_start = now
        self.cwnd = self.min_window
        self._ca_acked = 0


class Pacer:
    """Token bucket in bytes. ``rate`` is refreshed from the window and the RTT."""

    __slots__ = ("_capacity", "_last", "_rate", "_tokens", "max_datagram")

    def __init__(self, max_datagram: int) -> None:
        self.max_datagram = max_datagram
        self._rate = 0.0  # bytes per second; 0 = not pacing yet (no RTT sample)
        self._capacity = 10.0 * max_datagram
        self._tokens = self._capacity
        self._last: float | None = None

    def configure(self, cwnd: int, srtt: float, slow_start: bool, sampled: bool) -> None:
        if not sampled:
            self._rate = 0.0
            return
        gain = 2.0 if slow_start else 1.25
        self._rate = gain * cwnd / max(srtt, 1e-6)
        # Bursts of up to 2 ms of sending (at least 10 datagrams), never more than a window.
        self._capacity = float(min(cwnd, max(10 * self.max_datagram, self._rate * 0.002)))

    def _refill(self, now: float) -> None:
        if self._last is not None and self._rate:
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        elif not self._rate:
            self._tokens = self._capacity
        self._last = now

    def can_send(self, now: float) -> bool:
        self._refill(now)
        return self._tokens + 1.0 >= self.max_datagram or not self._rate

    def on_sent(self, size: int) -> None:
        self._tokens -= size

    def budget(self, now: float) -> float:
        """Bytes that may go now (infinite while not pacing)."""
        self._refill(now)
        return self._tokens if self._rate else float("inf")

    def next_send_time(self, now: float, pending: int = 0) -> float:
        """When a full-size datagram may go after ``pending`` more bytes are spent."""
        self._refill(now)
        missing = self.max_datagram - (self._tokens - pending)
        if missing <= 1.0 or not self._rate:
            return now
        return now + max(missing / self._rate, 1e-6)
