"""`InProcessBus`: the `Bus` port for nodes that share one process (the embedded default).

`publish` hands the message to every subscribed node synchronously, in subscription order,
so messages from one publisher arrive in the order they were published. The server of a
single node publishes every committed outcome's deliveries here and its own subscription hands
them to its hub; several `ChatServer` nodes in one process (tests) see each other's messages.
A handler that raises is logged and does not stop the others. It remembers the recent login
checks (`parlour.bus.journal`) for a node that starts later.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from parlour.bus.journal import HORIZON, MAX_ENTRIES, login_checks
from parlour.core.outcome import RemoteEffect
from parlour.core.ports import BusMessage

__all__ = ["InProcessBus"]

log = logging.getLogger("parlour.bus")


class InProcessBus:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._subscribers: dict[str, Callable[[BusMessage], None]] = {}
        self.published = 0
        self._clock = clock
        self._journal: deque[tuple[float, RemoteEffect]] = deque(maxlen=MAX_ENTRIES)

    def subscribe(self, node: str, handler: Callable[[BusMessage], None]) -> None:
        if node in self._subscribers:
            raise ValueError(f"node {node!r} is already subscribed")
        self._subscribers[node] = handler

    def unsubscribe(self, node: str) -> None:
        self._subscribers.pop(node, None)

    def publish(self, message: BusMessage) -> None:
        self.published += 1
        checks = login_checks(message)
        if checks:
            now = self._clock()
            self._journal.extend((now, e) for e in checks)
        for node, handler in list(self._subscribers.items()):
            try:
                handler(message)
            except Exception:
                log.exception("bus subscriber failed", extra={"fields": {"node": node}})

    async def login_history(self) -> tuple[RemoteEffect, ...]:
        since = self._clock() - HORIZON
        return tuple(e for at, e in self._journal if at >= since)
