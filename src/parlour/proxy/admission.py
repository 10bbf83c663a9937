"""Sans-I/O admission: a bounded wait queue with deadlines and the retry policy.

When every eligible backend is at its `max_conns`, new clients wait in a bounded FIFO
queue; a waiter whose deadline passes gets a 503 (HTTP) or a close (TCP). The queue holds
opaque items (the runtime stores futures) and is told the time by its caller.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["IDEMPOTENT_METHODS", "RetryDecision", "WaitQueue", "may_retry"]

T = TypeVar("T")

IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


@dataclass(slots=True)
class _Waiter(Generic[T]):
    item: T
    deadline: float


class WaitQueue(Generic[T]):
    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self.limit = limit
        self._items: deque[_Waiter[T]] = deque()
        self.waiting = self._items  # read-only view for hot paths: empty = nobody waits

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: T, now: float, timeout_s: float) -> bool:
        """Queue `item` until `now + timeout_s`; False when the queue is full."""
        if len(self._items) >= self.limit:
            return False
        self._items.append(_Waiter(item, now + timeout_s))
        return True

    def pop(self) -> T | None:
        """The oldest waiter, or None."""
        return self._items.popleft().item if self._items else None

    def remove(self, item: T) -> bool:
        for w in self._items:
            if w.item is item:
                self._items.remove(w)
                return True
        return False

    def expire(self, now: float) -> list[T]:
        """Remove and return every waiter whose deadline has passed."""
        expired = [w.item for w in self._items if w.deadline <= now]
        if expired:
            self._items = deque(w for w in self._items if w.deadline > now)
        return expired


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    reason: str


def may_retry(
    *,
    attempt: int,
    retry_limit: int,
    request_sent: bool,
    method: str | None,
    reused_connection: bool = False,
    response_started: bool = False,
) -> RetryDecision:
    """Whether a failed attempt may be tried again on another (or a fresh) connection.

    `attempt` counts attempts already made (1 after the first failure). A request that
    never left the proxy can always be retried. One that may have reached a backend is
    retried only when it failed on a reused keep-alive connection before any response byte
    (the backend closed the idle connection) and the method is idempotent — a POST that
    may have been seen is never replayed. Once a response has started, never.
    """
    if response_started:
        return RetryDecision(False, "response already started")
    if not request_sent:
        if attempt > retry_limit:
            return RetryDecision(False, "retry limit reached")
        return RetryDecision(True, "request not sent")
    if not reused_connection:
        return RetryDecision(False, "request may have reached the backend")
    if method is None or method.upper() not in IDEMPOTENT_METHODS:
        return RetryDecision(False, "non-idempotent request may have reached the backend")
    if attempt > retry_limit:
        return RetryDecision(False, "retry limit reached")
    return RetryDecision(True, "stale keep-alive connection, idempotent request")
