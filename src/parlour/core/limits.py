"""Rate limiting: a token bucket per connection, driven by the caller's clock."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """`rate` tokens per second refill a bucket holding at most `burst` tokens (starts full).

    `take(now)` spends one token and returns 0.0, or returns how many seconds to wait until a
    token is available (nothing is spent then). Time going backwards is treated as no time.
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now

    def take(self, now: float, cost: float = 1.0) -> float:
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self._rate

    def wait(self, now: float, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens are there (0.0: now); spends nothing."""
        self._refill(now)
        return 0.0 if self._tokens >= cost else (cost - self._tokens) / self._rate

    def charge(self, now: float, cost: float) -> None:
        """Spend `cost` tokens whether they are there or not (the bucket may go down to
        `-burst`: a big answer delays the next requests instead of being refused after the
        work was done)."""
        self._refill(now)
        self._tokens = max(-self._burst, self._tokens - cost)

    @property
    def tokens(self) -> float:
        """Tokens available at the last `take` (for tests and metrics)."""
        return self._tokens
