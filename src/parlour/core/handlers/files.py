"""File transfers: the server only brokers (docs/design/p2p-brokering.md).

`file_probe` issues a token the client sends over UDP to the relay (the adapter reports what
it observed through `ChatService.udp_probe`); `file_offer` forwards an offer to the target's
sessions; `file_accept` hands both sides a fresh transfer id and key, each other's endpoints
(observed by the relay, then reported by the client) and relay tickets; `file_decline`,
`file_cancel` and `file_done` end an offer; offers also end when they expire or when the
offering session ends. Offer ids, tokens and keys come from the service's `entropy` (the
core's random source, passed in); a transfer id with its relay tickets is a need, answered
by the node's relay (which holds the relay's secret).

Blocking: an offer from a user the target blocks is answered like any other (the sender is
not told) but never reaches the target; it expires like an ignored offer.

Several nodes: an offer is copied to every node, so the target may answer on any of them;
an acceptance elsewhere is granted there (that node's relay and tickets) and reaches the
offering connection through the offer's home node. What the nodes tell each other, and what
a node does with it, is `parlour.core.handlers.offers_shared`.
"""

from __future__ import annotations

import base64
import logging

from parlour.core.context import Ctx, Out, fail, log_event
from parlour.core.handlers.offers_shared import flat_endpoints, offer_event, shared
from parlour.core.needs import RelayTickets
from parlour.core.offers import Endpoint, Offer
from parlour.core.outcome import (
    OfferAccepted,
    OfferEnded,
    Outcome,
    ToConns,
    ToUsers,
)
from parlour.core.sessions import Connection
from parlour.core.state import UserState
from parlour.protocol import (
    EndpointRow,
    ErrorCode,
    FileAcceptedEvent,
    FileAcceptRequest,
    FileCancelRequest,
    FileDeclineRequest,
    FileDoneRequest,
    FileEndedEvent,
    FileOfferReply,
    FileOfferRequest,
    FileProbeReply,
    FileProbeRequest,
    FileReply,
    FileTransferReply,
    Ok,
    RelayRow,
    endpoints_to_wire,
)

__all__ = [
    "expire_offers",
    "file_accept",
    "file_cancel",
    "file_decline",
    "file_done",
    "file_offer",
    "file_probe",
    "session_ended",
    "session_started",
]

TOKEN_BYTES = 16
OFFER_ID_BYTES = 9
TRANSFER_ID_BYTES = 8
KEY_BYTES = 32


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _enabled(cx: Ctx) -> None:
    if not cx.cfg.file_transfers:
        raise fail(ErrorCode.FORBIDDEN, "file transfers are disabled on this server")


def _relay(cx: Ctx, ticket: bytes | None = None) -> RelayRow | None:
    relay = cx.cfg.file_relay
    if relay is None:
        return None
    row: RelayRow = {"host": relay[0], "port": relay[1]}
    if ticket is not None:
        row["ticket"] = base64.b64encode(ticket).decode("ascii")
    return row


def _peers(observed: Endpoint | None, reported: tuple[Endpoint, ...]) -> list[EndpointRow]:
    """A side's endpoints as the other side gets them: what the relay observed (it works
    across NAT), then what the client reported (a LAN path), without repeats."""
    found: list[Endpoint] = [observed] if observed is not None else []
    found.extend(ep for ep in reported if ep not in found)
    return endpoints_to_wire(found)


def _rate_room(cx: Ctx, c: Connection) -> None:
    """Refuse now if the message bucket is empty (spends nothing: `cx.rate` spends once
    every need is answered)."""
    wait = c.bucket.wait(cx.now)
    if wait > 0:
        cx.rate_limited(wait)


def _unknown(offer_id: str) -> Exception:
    return fail(ErrorCode.UNKNOWN_OFFER, f"no open offer {offer_id!r}", offer=offer_id)


def _offer_to(cx: Ctx, u: UserState, offer_id: str) -> Offer:
    """An open offer made to `u` (a phantom one does not exist for its target)."""
    offer = cx.offers.by_id.get(offer_id)
    if offer is None or offer.target != u.key or offer.phantom:
        raise _unknown(offer_id)
    return offer


def _ended(cx: Ctx, offer: Offer, reason: str, by: str | None, out: Out) -> None:
    """Tell both sides `offer` is over: its offering session (through its home node when
    that is another) and the target's sessions (never the target of a phantom offer)."""
    event = FileEndedEvent(offer=offer.id, reason=reason, by=by, ts=cx.now)
    if offer.conn is not None:
        out.event(event, ToConns((offer.conn,)))
    if not offer.phantom:
        out.event(event, ToUsers((offer.target,)))
        if cx.cfg.cluster:
            cx.tell(OfferEnded(offer.id, reason, by))
    log_event(logging.INFO, "file offer ended", offer=offer.id, reason=reason)


# ---------------------------------------------------------------------------------- requests


def file_probe(cx: Ctx, c: Connection, rq: FileProbeRequest) -> Outcome:
    _enabled(cx)
    cx.may_read(c)
    token = cx.entropy(TOKEN_BYTES)
    cx.offers.issue_probe(c.id, token)
    cx.read_done(c)
    return Outcome(Ok(rq.id, FileProbeReply(token=_b64url(token), relay=_relay(cx))))


def file_offer(cx: Ctx, c: Connection, rq: FileOfferRequest) -> Outcome:
    _enabled(cx)
    u = cx.user(c)
    target = cx.find_user(rq.to)
    if target.key == u.key:
        raise fail(ErrorCode.SELF_MESSAGE, "you cannot offer a file to yourself")
    if not cx.online(target):
        raise fail(ErrorCode.USER_OFFLINE, f"{target.name} is not online", user=target.name)
    offers, cfg = cx.offers, cx.cfg
    if offers.sent_by(u.key) >= cfg.file_offers_per_user:
        raise fail(
            ErrorCode.TOO_MANY_OFFERS,
            f"you have {cfg.file_offers_per_user} open offers: cancel one or wait",
            limit=cfg.file_offers_per_user,
        )
    if offers.waiting_for(target.key) >= cfg.file_offers_per_target:
        raise fail(
            ErrorCode.TOO_MANY_OFFERS,
            f"{target.name} has too many offers waiting; try later",
            limit=cfg.file_offers_per_target,
        )
    if len(offers) >= cfg.file_offers_max:
        raise fail(
            ErrorCode.TOO_MANY_OFFERS,
            "the server holds too many offers; try later",
            limit=cfg.file_offers_max,
        )
    _rate_room(cx, c)
    offer_id = _b64url(cx.entropy(OFFER_ID_BYTES))
    if offer_id in offers.by_id:  # 72 random bits: never, but never silently
        raise fail(ErrorCode.INTERNAL_ERROR, "offer id collision; try again")
    cx.rate(c)
    now = cx.now
    offer = Offer(
        id=offer_id,
        sender=u.key,
        sender_name=u.name,
        conn=c.id,
        target=target.key,
        target_name=target.name,
        name=rq.filename,
        size=rq.size,
        sha256=rq.sha256,
        endpoints=rq.endpoints or (),
        created=now,
        expires=now + cfg.file_offer_ttl,
        # the target blocks the sender: answered like any offer, never delivered
        phantom=cx.state.blocks.blocks(target.key, u.key),
    )
    offers.add(offer)
    out = cx.out()
    if not offer.phantom:
        out.event(offer_event(offer), ToUsers((target.key,)))
        if cfg.cluster:
            cx.tell(shared(cx, offer))
    log_event(logging.INFO, "file offer", user=u.name, to=target.name, offer=offer_id, size=rq.size)
    reply = FileOfferReply(offer=offer_id, to=target.name, expires=offer.expires)
    return out.done(Ok(rq.id, reply))


def file_accept(cx: Ctx, c: Connection, rq: FileAcceptRequest) -> Outcome:
    _enabled(cx)
    u = cx.user(c)
    offer = _offer_to(cx, u, rq.offer)
    _rate_room(cx, c)
    tickets: tuple[bytes, bytes] | None = None
    if cx.cfg.file_relay is not None:  # the relay mints the id its tickets are bound to
        transfer_id, *pair = cx.need(RelayTickets(offer.id, offer.accepts + 1))
        tickets = (pair[0], pair[1])
    else:
        transfer_id = cx.entropy(TRANSFER_ID_BYTES)
    key = cx.entropy(KEY_BYTES)
    cx.rate(c)
    offer.accepts += 1
    offer.receiver = c.id
    offer.receiver_endpoints = rq.endpoints or ()
    observed = cx.offers.observed
    transfer, key_text = transfer_id.hex(), base64.b64encode(key).decode("ascii")
    out = cx.out()
    granted = FileAcceptedEvent(
        offer=offer.id,
        by=u.name,
        transfer=transfer,
        key=key_text,
        peers=_peers(observed.get(c.id), offer.receiver_endpoints),
        relay=_relay(cx, tickets[0] if tickets else None),
    )
    if offer.conn is not None:
        out.event(granted, ToConns((offer.conn,)))
        sender_seen = observed.get(offer.conn)
    else:  # the offering connection is on the offer's home node
        relay = granted.relay or {}
        cx.tell(
            OfferAccepted(
                offer.id, u.name, transfer, key_text,
                flat_endpoints((p["host"], p["port"]) for p in granted.peers),
                relay.get("host"), relay.get("port", 0), relay.get("ticket"),
            )
        )  # fmt: skip
        sender_seen = offer.sender_observed
    log_event(
        logging.INFO,
        "file offer accepted",
        user=u.name,
        offer=offer.id,
        attempt=offer.accepts,
        transfer=transfer,
    )
    reply = FileTransferReply(
        offer=offer.id,
        transfer=transfer,
        key=key_text,
        peers=_peers(sender_seen, offer.endpoints),
        relay=_relay(cx, tickets[1] if tickets else None),
    )
    return out.done(Ok(rq.id, reply))


def file_decline(cx: Ctx, c: Connection, rq: FileDeclineRequest) -> Outcome:
    _enabled(cx)
    u = cx.user(c)
    offer = _offer_to(cx, u, rq.offer)
    cx.offers.remove(offer.id)
    out = cx.out()
    _ended(cx, offer, "declined", u.name, out)
    return out.done(Ok(rq.id, FileReply(offer=offer.id)))


def file_cancel(cx: Ctx, c: Connection, rq: FileCancelRequest) -> Outcome:
    _enabled(cx)
    u = cx.user(c)
    offer = cx.offers.by_id.get(rq.offer)
    if offer is None or offer.sender != u.key:
        raise _unknown(rq.offer)
    cx.offers.remove(offer.id)
    out = cx.out()
    _ended(cx, offer, "cancelled", u.name, out)
    return out.done(Ok(rq.id, FileReply(offer=offer.id)))


def file_done(cx: Ctx, c: Connection, rq: FileDoneRequest) -> Outcome:
    _enabled(cx)
    u = cx.user(c)
    offer = cx.offers.by_id.get(rq.offer)
    if offer is None or (offer.sender != u.key and (offer.target != u.key or offer.phantom)):
        raise _unknown(rq.offer)
    cx.offers.remove(offer.id)
    out = cx.out()
    _ended(cx, offer, "done", u.name, out)
    return out.done(Ok(rq.id, FileReply(offer=offer.id)))


# ---------------------------------------------------------------------------------- life cycle


def session_started(cx: Ctx, c: Connection, u: UserState, out: Out) -> None:
    """A new session of `u` sees the offers that wait for `u` (so a client that crashed
    mid-transfer can accept again and resume)."""
    for offer in cx.offers.for_target(u.key):
        if not offer.phantom:
            out.event(offer_event(offer), ToConns((c.id,)))


def session_ended(cx: Ctx, c: Connection, out: Out) -> None:
    """`c`'s session ended: its probe token and observed endpoint go, and the offers it made
    end (`offline`: only that session could send the file). A transfer already running
    between the clients is not affected."""
    for offer in cx.offers.forget_conn(c.id):
        _ended(cx, offer, "offline", offer.sender_name, out)


def expire_offers(cx: Ctx, out: Out) -> None:
    for offer in cx.offers.expired(cx.now):
        if offer.home is None:  # a copy expires quietly: its home node tells everybody
            _ended(cx, offer, "expired", None, out)
