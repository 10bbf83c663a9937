"""Rate and ETA from (time, bytes done) samples, sans-I/O."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["Progress", "RateMeter"]


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress report of a transfer."""

    transfer_id: bytes
    direction: str  # "send" or "receive"
    done: int  # bytes the receiver holds (acknowledged / written)
    total: int
    rate: float  # bytes per second over the last few seconds
    eta: float | None  # seconds left at that rate, None while unknown
    via_relay: bool

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else self.done / self.total


class RateMeter:
    """Bytes per second over a sliding window of ``window`` seconds."""

    def __init__(self, window: float = 3.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, now: float, done: int) -> float:
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            samples.popleft()
        t0, d0 = samples[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0

    @staticmethod
    def eta(done: int, total: int, rate: float) -> float | None:
        if done >= total:
            return 0.0
        return (total - done) / rate if rate > 0 else None
