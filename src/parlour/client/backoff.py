"""Exponential backoff with full jitter for reconnects (pure; randomness injected)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before reconnect attempt ``n`` (0-based): a random value in
    ``[base * factor**n * (1 - jitter), base * factor**n]``, capped at ``maximum``.

    ``max_attempts`` (``None``: forever) bounds consecutive failed attempts.
    """

    base: float = 0.2
    factor: float = 2.0
    maximum: float = 15.0
    jitter: float = 0.5
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.base < 0 or self.factor < 1 or self.maximum < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("invalid backoff parameters")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        ceiling = min(self.maximum, self.base * self.factor ** min(attempt, 64))
        return ceiling * (1.0 - self.jitter * rand())

    def gives_up(self, attempt: int) -> bool:
        return self.max_attempts is not None and attempt >= self.max_attempts
