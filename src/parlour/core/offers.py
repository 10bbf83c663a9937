"""File offers and UDP endpoints: node-local, ephemeral state of the file-transfer brokering.

An offer lives only in the memory of the node whose session made it (never in the store): it
goes when it is accepted and verified (`done`), declined, cancelled, expired, or when the
offering session ends. The server never sees a file's bytes; it forwards the offer and the
answer and hands both sides a transfer id, a key, each other's endpoints and relay tickets
(docs/design/p2p-brokering.md).

Every table is bounded: open offers per sender, per target and on the node (the limits are
`CoreConfig.file_offers_*`), one probe token and one observed endpoint per connection.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

__all__ = ["Endpoint", "Offer", "Offers"]

Endpoint = tuple[str, int]


@dataclass(slots=True, eq=False)
class Offer:
    """One open offer. `sender`/`target` are user keys; `conn` is the offering connection
    (only it can send the file). A `phantom` offer is one the target never hears of (the
    target blocks the sender): it behaves like an offer that is ignored, and expires.

    With several nodes, an offer made on another node is copied here (`home` names that
    node; `conn` is None: the offering connection is there) so that the target may accept or
    decline it on any node; `sender_observed` is the sender's UDP endpoint as that node's
    relay saw it when the offer was made."""

    id: str
    sender: str
    sender_name: str
    conn: int | None
    target: str
    target_name: str
    name: str
    size: int
    sha256: str
    endpoints: tuple[Endpoint, ...]
    created: float
    expires: float
    phantom: bool = False
    #: accepted this many times (each acceptance is one transfer attempt; again = resume)
    accepts: int = 0
    #: the receiving connection of the latest acceptance
    receiver: int | None = None
    receiver_endpoints: tuple[Endpoint, ...] = field(default=())
    home: str | None = None
    sender_observed: Endpoint | None = None


class Offers:
    """The offers of this node's sessions (and copies of other nodes' offers), and the UDP
    endpoints observed for connections."""

    __slots__ = (
        "_by_conn",
        "_by_sender",
        "_by_target",
        "_expiry",
        "_token_of",
        "by_id",
        "observed",
        "probes",
    )

    def __init__(self) -> None:
        self.by_id: dict[str, Offer] = {}
        self._by_conn: dict[int, set[str]] = {}
        self._by_sender: dict[str, int] = {}
        #: target -> its offers' ids in the order they were made
        self._by_target: dict[str, dict[str, None]] = {}
        self._expiry: list[tuple[float, str]] = []
        #: probe token -> the connection it was issued to (one per connection) and the
        #: address it was first seen from
        self.probes: dict[bytes, _Probe] = {}
        self._token_of: dict[int, bytes] = {}
        #: connection -> its UDP endpoint as the relay saw it (from a probe)
        self.observed: dict[int, Endpoint] = {}

    def __len__(self) -> int:
        return len(self.by_id)

    # ------------------------------------------------------------------ offers

    def sent_by(self, sender: str) -> int:
        return self._by_sender.get(sender, 0)

    def waiting_for(self, target: str) -> int:
        return len(self._by_target.get(target, ()))

    def for_target(self, target: str) -> list[Offer]:
        """Open offers made to user key `target`, oldest first."""
        return [self.by_id[i] for i in self._by_target.get(target, ())]

    def add(self, offer: Offer) -> None:
        self.by_id[offer.id] = offer
        if offer.conn is not None:
            self._by_conn.setdefault(offer.conn, set()).add(offer.id)
        self._by_sender[offer.sender] = self._by_sender.get(offer.sender, 0) + 1
        self._by_target.setdefault(offer.target, {})[offer.id] = None
        heapq.heappush(self._expiry, (offer.expires, offer.id))

    def remove(self, offer_id: str) -> Offer | None:
        offer = self.by_id.pop(offer_id, None)
        if offer is None:
            return None
        ids = self._by_conn.get(offer.conn) if offer.conn is not None else None
        if ids is not None and offer.conn is not None:
            ids.discard(offer_id)
            if not ids:
                del self._by_conn[offer.conn]
        left = self._by_sender.get(offer.sender, 1) - 1
        if left > 0:
            self._by_sender[offer.sender] = left
        else:
            self._by_sender.pop(offer.sender, None)
        targets = self._by_target.get(offer.target)
        if targets is not None:
            targets.pop(offer_id, None)
            if not targets:
                del self._by_target[offer.target]
        return offer

    def homed_on(self, node: str) -> list[Offer]:
        """The copies of offers made on `node`."""
        return [o for o in self.by_id.values() if o.home == node]

    def of_conn(self, conn: int) -> list[Offer]:
        """The open offers made on connection `conn`."""
        return [self.by_id[i] for i in self._by_conn.get(conn, ())]

    def expired(self, now: float) -> list[Offer]:
        """Remove and return the offers whose time is up."""
        out: list[Offer] = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, offer_id = heapq.heappop(heap)
            offer = self.by_id.get(offer_id)
            if offer is not None and offer.expires <= now:
                self.remove(offer_id)
                out.append(offer)
        if len(heap) > 4 * len(self.by_id) + 64:  # ended offers leave stale heap entries
            self._expiry = [(o.expires, o.id) for o in self.by_id.values()]
            heapq.heapify(self._expiry)
        return out

    # ------------------------------------------------------------------ endpoints

    def issue_probe(self, conn: int, token: bytes) -> None:
        """Give `conn` a (new) probe token; an older one of `conn` stops working."""
        old = self._token_of.pop(conn, None)
        if old is not None:
            self.probes.pop(old, None)
        self.probes[token] = _Probe(conn)
        self._token_of[conn] = token

    def probed(self, token: bytes, address: Endpoint) -> int | None:
        """A probe with `token` came from `address`: the connection it belongs to (its
        observed endpoint is now `address`), or None for a token nobody holds. The first
        address wins: the same token from another address changes nothing (a token copied
        off the path cannot move the endpoint elsewhere; the client asks for a new token when
        its address changes)."""
        probe = self.probes.get(token)
        if probe is None:
            return None
        if probe.address is None:
            probe.address = address
        elif probe.address != address:
            return None
        self.observed[probe.conn] = address
        return probe.conn

    def forget_conn(self, conn: int) -> list[Offer]:
        """`conn`'s session ended: drop its token and observed endpoint; remove and return
        the offers it had made."""
        token = self._token_of.pop(conn, None)
        if token is not None:
            self.probes.pop(token, None)
        self.observed.pop(conn, None)
        return [o for o in (self.remove(i) for i in list(self._by_conn.get(conn, ()))) if o]


@dataclass(slots=True)
class _Probe:
    conn: int
    address: Endpoint | None = None
