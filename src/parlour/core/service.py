"""`ChatService`: the pure, synchronous chat core behind every transport.

Every call takes the current time (`now`, unix seconds) and returns an `Outcome`: the reply
for the calling connection, the events to deliver (each to a tuple of connection ids), the
storage writes that must be durable before any of it is sent, and the connections to close.
The service never does I/O except synchronous `Store` reads of committed history.
"""

from __future__ import annotations

from parlour.core.config import CoreConfig
from parlour.core.outcome import ConnId, Outcome
from parlour.core.ports import PasswordHasher, Store

__all__ = ["ChatService"]


class ChatService:
    """The chat domain as a state machine driven by connections, requests and time."""

    def __init__(self, store: Store, config: CoreConfig, hasher: PasswordHasher) -> None:
        """Load hot state with `store.load()` (once) and keep `config` and `hasher`."""
        self._store = store
        self._config = config
        self._hasher = hasher

    def bootstrap(self, now: float, admin_password: str | None) -> str | None:
        """First start: create the admin account and the default rooms if there are no users.

        Writes are applied to the store directly (before serving). Returns the generated admin
        password when `admin_password` is None and the admin was created (print it once),
        else None.
        """
        raise NotImplementedError

    def connect(self, conn: ConnId, peer: str, now: float) -> Outcome:
        """A new connection `conn` from `peer` ("host:port"); it must send `hello` first."""
        raise NotImplementedError

    def handle(self, conn: ConnId, request: object, now: float) -> Outcome:
        """Turn one decoded protocol request of `conn` into an Outcome (exactly one reply)."""
        raise NotImplementedError

    def disconnect(self, conn: ConnId, now: float, reason: str) -> Outcome:
        """`conn` is gone (closed by either side): end its session, tell rooms if it was the
        user's last session (presence)."""
        raise NotImplementedError

    def tick(self, now: float) -> Outcome:
        """Expire timed state (bans, lockouts); call about once a second."""
        raise NotImplementedError
