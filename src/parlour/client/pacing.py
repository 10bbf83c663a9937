"""Pacing of read requests (sans-I/O; time passed in).

The server answers `rate_limited` to reads beyond its read allowance (`read_rate_per_second`,
`read_burst` in the `hello` limits), and counts a client that keeps sending while told to wait
as abusive. A client that opens thirty rooms at once would send thirty `join`/`history`
requests together: the library spends the same allowance on its side first, and holds a read
back until the server would take it, instead of having it refused.
"""

from __future__ import annotations

__all__ = ["READ_TYPES", "ReadPacer"]

#: request types the server charges to the read allowance
READ_TYPES = frozenset(
    {"history", "since", "join", "rooms", "who", "unread", "blocks", "bans", "audit", "file_probe"}
)


class ReadPacer:
    """A token bucket mirroring the server's read bucket; a read that finds it empty is given
    the time to wait (the reservations queue: each waits its turn)."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self) -> None:
        self.rate = 0.0  # 0: the server did not say; nothing is held back
        self.burst = 0.0
        self._tokens = 0.0
        self._stamp: float | None = None

    def configure(self, rate: float, burst: float) -> None:
        """The server's allowance (from `hello`); a new connection starts with a full bucket.
        Slightly under the server's rate, so that clock skew never makes it refuse."""
        self.rate = max(0.0, rate * 0.95)
        self.burst = max(1.0, burst - 1)
        self._tokens = self.burst
        self._stamp = None

    def wait(self, now: float) -> float:
        """Take one read: seconds to wait before sending it (0: now)."""
        if self.rate <= 0:
            return 0.0
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
