"""`InProcessBus`: the `Bus` port for nodes that share one process (the embedded default).

`publish` hands the message to every subscribed node synchronously, in subscription order,
so messages from one publisher arrive in the order they were published. The server of a
single node publishes every committed outcome's deliveries here and its own subscription hands
them to its hub; several `ChatServer` nodes in one process (tests) see each other's messages.
A handler that raises is logged and does not stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from parlour.core.ports import BusMessage

__all__ = ["InProcessBus"]

log = logging.getLogger("parlour.bus")


class InProcessBus:
    def __init__(self) -> None:
        self._subscribers: dict[str, Callable[[BusMessage], None]] = {}
        self.published = 0

    def subscribe(self, node: str, handler: Callable[[BusMessage], None]) -> None:
        if node in self._subscribers:
            raise ValueError(f"node {node!r} is already subscribed")
        self._subscribers[node] = handler

    def unsubscribe(self, node: str) -> None:
        self._subscribers.pop(node, None)

    def publish(self, message: BusMessage) -> None:
        self.published += 1
        for node, handler in list(self._subscribers.items()):
            try:
                handler(message)
            except Exception:
                log.exception("bus subscriber failed", extra={"fields": {"node": node}})
