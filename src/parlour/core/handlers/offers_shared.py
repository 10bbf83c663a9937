"""File offers with several nodes: what the other nodes learn of an offer, and what this
node does with what they say (docs/design/p2p-brokering.md, "Several nodes").

An offer lives on the node of its offering session (its *home*) and is copied to the others
(`OfferShared`) so that its target may answer on any node; an acceptance elsewhere reaches the
offering connection through the home (`OfferAccepted`); an end anywhere is an end everywhere
(`OfferEnded`); a node that may have missed copies asks for them (`OffersWanted`, answered by
`share_offers`); the copies of a node that dies end `offline` (`node_gone`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from parlour.core.context import Ctx, Out, log_event
from parlour.core.offers import Endpoint, Offer
from parlour.core.outcome import OfferAccepted, OfferEnded, OfferShared, ToConns, ToUsers
from parlour.protocol import (
    FileAcceptedEvent,
    FileEndedEvent,
    FileOfferEvent,
    RelayRow,
    endpoints_to_wire,
)

__all__ = [
    "flat_endpoints",
    "node_gone",
    "offer_event",
    "remote_offer",
    "share_offers",
    "shared",
]


def offer_event(offer: Offer) -> FileOfferEvent:
    return FileOfferEvent(
        offer=offer.id,
        sender=offer.sender_name,
        filename=offer.name,
        size=offer.size,
        sha256=offer.sha256,
        expires=offer.expires,
        ts=offer.created,
    )


def flat_endpoints(endpoints: Iterable[Endpoint]) -> tuple[str | int, ...]:
    return tuple(v for ep in endpoints for v in ep)


def shared(cx: Ctx, offer: Offer, again: bool = False) -> OfferShared:
    """The copy of this node's `offer` for the other nodes."""
    assert offer.conn is not None
    seen = cx.offers.observed.get(offer.conn)
    return OfferShared(
        offer.id, offer.sender, offer.sender_name, offer.target, offer.target_name, offer.name,
        offer.size, offer.sha256, flat_endpoints(offer.endpoints),
        flat_endpoints((seen,) if seen else ()), offer.created, offer.expires, again,
    )  # fmt: skip


def share_offers(cx: Ctx) -> None:
    """Share every open offer of this node's sessions again (another node asked)."""
    for offer in cx.offers.by_id.values():
        if offer.conn is not None and not offer.phantom:
            cx.tell(shared(cx, offer, again=True))


def _pairs(flat: tuple[object, ...]) -> tuple[Endpoint, ...]:
    """Endpoints from the bus's flat form (what does not look like one is left out)."""
    out: list[Endpoint] = []
    for host, port in zip(flat[::2], flat[1::2], strict=False):
        if isinstance(host, str) and isinstance(port, int) and not isinstance(port, bool):
            out.append((host, port))
    return tuple(out)


def remote_offer(
    cx: Ctx, origin: str, effect: OfferShared | OfferAccepted | OfferEnded, out: Out
) -> None:
    """Another node's word about an offer (`OfferShared`, `OfferAccepted`, `OfferEnded`)."""
    offers = cx.offers
    if isinstance(effect, OfferShared):
        if effect.id in offers.by_id or len(offers) >= cx.cfg.file_offers_max:
            return  # (a copy is a convenience: without it, answers on this node are refused)
        seen = _pairs(effect.observed)
        copy = Offer(
            id=effect.id,
            sender=effect.sender,
            sender_name=effect.sender_name,
            conn=None,
            target=effect.target,
            target_name=effect.target_name,
            name=effect.name,
            size=effect.size,
            sha256=effect.sha256,
            endpoints=_pairs(effect.reported),
            created=effect.created,
            expires=effect.expires,
            home=origin,
            sender_observed=seen[0] if seen else None,
        )
        offers.add(copy)
        if effect.again:  # the first copy, and the event that went with it, were lost here
            out.event(offer_event(copy), ToUsers((copy.target,)))
        return
    offer = offers.by_id.get(effect.id)
    if offer is None:
        return
    if isinstance(effect, OfferAccepted):
        offer.accepts += 1
        if offer.conn is None:
            return
        relay: RelayRow | None = None
        if effect.relay_port:
            relay = {"host": effect.relay_host, "port": effect.relay_port}
            if effect.relay_ticket is not None:
                relay["ticket"] = effect.relay_ticket
        granted = FileAcceptedEvent(
            offer=offer.id,
            by=effect.by,
            transfer=effect.transfer,
            key=effect.key,
            peers=endpoints_to_wire(_pairs(effect.peers)),
            relay=relay,
        )
        out.event(granted, ToConns((offer.conn,)))
        log_event(logging.INFO, "file offer accepted", offer=offer.id, on=origin)
    elif isinstance(effect, OfferEnded):
        offers.remove(offer.id)
        if offer.conn is not None:  # the target's sessions hear it from where it ended
            event = FileEndedEvent(offer=offer.id, reason=effect.reason, by=effect.by, ts=cx.now)
            out.event(event, ToConns((offer.conn,)))
            log_event(logging.INFO, "file offer ended", offer=offer.id, reason=effect.reason)


def node_gone(cx: Ctx, node: str, out: Out) -> None:
    """`node` died or left: the offers made there end (`offline`) for their targets here."""
    for offer in cx.offers.homed_on(node):
        cx.offers.remove(offer.id)
        event = FileEndedEvent(offer=offer.id, reason="offline", by=offer.sender_name, ts=cx.now)
        out.event(event, ToUsers((offer.target,)))
