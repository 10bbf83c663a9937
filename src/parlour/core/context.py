"""The context every request handler of the core works in, and the helpers they share.

`Ctx` is long-lived (one per `ChatService`): the configuration, the shared truth (`state`), this
node's sessions and router, plus two per-call fields the service sets before each handler runs:
`now` and `answers` (the needs computed so far for this request, `parlour.core.needs`).
Handlers are plain functions `(cx, connection, request) -> Outcome` in `parlour.core.handlers`.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from parlour.core.config import CoreConfig
from parlour.core.file_tokens import FileTokens
from parlour.core.messages import Reader
from parlour.core.needs import NO_ANSWERS, Answers, Need, NeedMore, ReadDm, ReadRoom
from parlour.core.offers import Offers
from parlour.core.outcome import Address, ConnId, Delivery, Outcome, RemoteEffect, ToConns
from parlour.core.records import AuditEntry, StoredMessage, room_key, user_key
from parlour.core.router import Router
from parlour.core.sessions import Connection, Sessions
from parlour.core.state import ChatState, Room, UserState
from parlour.core.writes import Audit, Write
from parlour.protocol import ErrorCode, Event, ProtocolError, Reply

__all__ = ["Ctx", "Out", "fail", "log_event"]

log = logging.getLogger("parlour.core")


def fail(code: ErrorCode, message: str, **extra: Any) -> ProtocolError:
    return ProtocolError(code, message, **extra)


def log_event(level: int, event: str, **fields: object) -> None:
    """A structured log line (``fields`` as in ``parlour.server.logs``). Never pass passwords;
    message bodies only at DEBUG."""
    if log.isEnabledFor(level):
        log.log(level, event, extra={"fields": fields})


class Out:
    """Accumulates one outcome's effects; deliveries are resolved to this node's connections
    as they are added. With several nodes (`everywhere`) a delivery nobody here receives is
    kept all the same (its `to` empty): it is published for the other nodes, whose sessions
    may be the only ones it is for (a file offer to a user on another node)."""

    __slots__ = ("close", "deliveries", "everywhere", "router", "writes")

    def __init__(self, router: Router, everywhere: bool = False) -> None:
        self.router = router
        self.everywhere = everywhere
        self.deliveries: list[Delivery] = []
        self.writes: list[Write] = []
        self.close: list[tuple[ConnId, str, str]] = []

    def event(self, event: Event, address: Address) -> None:
        to = self.router.resolve(address)
        if to or (self.everywhere and type(address) is not ToConns):
            self.deliveries.append(Delivery(event, to, address))

    def done(self, reply: Reply | None) -> Outcome:
        return Outcome(reply, tuple(self.deliveries), tuple(self.writes), tuple(self.close))


class Ctx:
    __slots__ = (
        "answers",
        "attached",
        "cfg",
        "entropy",
        "file_tokens",
        "now",
        "offers",
        "others",
        "router",
        "sessions",
        "state",
    )

    def __init__(
        self,
        cfg: CoreConfig,
        state: ChatState,
        sessions: Sessions,
        router: Router,
        entropy: Callable[[int], bytes],
        offers: Offers | None = None,
    ) -> None:
        self.cfg = cfg
        self.entropy = entropy
        self.state = state
        self.sessions = sessions
        self.router = router
        #: node-local file offers and observed UDP endpoints (parlour.core.offers)
        self.offers = offers if offers is not None else Offers()
        #: bearer tokens for the files endpoints (signed: valid on every node with the same
        #: key; a node without one draws its own), and the uploads this node attached to a
        #: message lately, with that message's client id and place (another attach is
        #: refused before the store knows; a resend of the same message is not)
        self.file_tokens = FileTokens(cfg.file_token_ttl, cfg.file_token_key or entropy(32))
        self.attached: OrderedDict[str, tuple[str | None, str | None, str | None]] = OrderedDict()
        self.now = 0.0
        self.answers: Answers = NO_ANSWERS
        #: what the other nodes must be told of (several nodes only), collected during one
        #: call and attached to its outcome (`Outcome.remote`), whatever the outcome is
        self.others: list[RemoteEffect] = []

    def out(self) -> Out:
        return Out(self.router, self.cfg.cluster)

    def tell(self, effect: RemoteEffect) -> None:
        """Tell the other nodes (several nodes only; a single node has nobody to tell)."""
        self.others.append(effect)

    # ------------------------------------------------------------------ needs

    def need(self, need: Need) -> Any:
        """The answer to `need`, or stop this round of the handler to ask for it."""
        try:
            return self.answers[need]
        except KeyError:
            raise NeedMore((need,)) from None

    def need_all(self, *needs: Need) -> list[Any]:
        """The answers to all of `needs` (asked for together when any is missing)."""
        missing = tuple(n for n in needs if n not in self.answers)
        if missing:
            raise NeedMore(missing)
        return [self.answers[n] for n in needs]

    def room_reader(self, room: Room) -> Reader:
        def read(before: int | None, after: int | None, limit: int) -> list[StoredMessage]:
            found: list[StoredMessage] = self.need(ReadRoom(room.name, before, after, limit))
            return found

        return read

    def dm_reader(self, cid: str) -> Reader:
        def read(before: int | None, after: int | None, limit: int) -> list[StoredMessage]:
            found: list[StoredMessage] = self.need(ReadDm(cid, before, after, limit))
            return found

        return read

    # ------------------------------------------------------------------ lookups and checks

    def user(self, c: Connection) -> UserState:
        assert c.user is not None
        return self.state.users[c.user]

    def admin(self, c: Connection) -> UserState:
        u = self.user(c)
        if not u.is_admin:
            raise fail(ErrorCode.FORBIDDEN, "only admins may do that")
        return u

    def find_user(self, name: str) -> UserState:
        u = self.state.users.get(user_key(name))
        if u is None:
            raise fail(ErrorCode.UNKNOWN_USER, f"no user named {name!r}", user=name)
        return u

    def find_room(self, name: str) -> Room:
        r = self.state.rooms.get(room_key(name))
        if r is None:
            raise fail(ErrorCode.UNKNOWN_ROOM, f"no room named {name!r}", room=name)
        return r

    def member_room(self, u: UserState, name: str) -> Room:
        r = self.find_room(name)
        if u.key not in r.members:
            raise fail(
                ErrorCode.NOT_MEMBER, f"you are not in {r.name!r}; join it first", room=r.name
            )
        return r

    def check_text(self, text: str) -> None:
        if len(text) > self.cfg.max_message_length:
            raise fail(
                ErrorCode.TEXT_TOO_LONG,
                f"text longer than {self.cfg.max_message_length} characters",
                max_text=self.cfg.max_message_length,
            )

    def rate(self, c: Connection) -> None:
        wait = c.bucket.take(self.now)
        if wait > 0:
            self.rate_limited(wait)

    def may_read(self, c: Connection) -> None:
        """Refuse a read request (`rate_limited`) while `c`'s read bucket is empty. Spends
        nothing: call `read_done` once the answer is ready (after every need)."""
        wait = c.reads.wait(self.now)
        if wait > 0:
            self.rate_limited(wait)

    def read_done(self, c: Connection, items: int = 0) -> None:
        """Charge a read: 1, plus 1 per 100 messages or rows it returns."""
        c.reads.charge(self.now, 1 + items // 100)

    @staticmethod
    def rate_limited(wait: float) -> NoReturn:
        retry = math.ceil(wait * 1000) / 1000
        raise fail(
            ErrorCode.RATE_LIMITED,
            f"too many messages; retry in {retry:.3f} s",
            retry_after=retry,
        )

    def visible(self, viewer: str, msgs: Iterable[StoredMessage]) -> list[StoredMessage]:
        """`msgs` without those from users `viewer` blocks."""
        blocked = self.state.blocks.blocked_by_user(viewer)
        if not blocked:
            return list(msgs)
        return [m for m in msgs if user_key(m.sender) not in blocked]

    def online(self, u: UserState) -> bool:
        return self.sessions.online(u.key)

    def audit(self, out: Out, actor: str, action: str, target: str, reason: str) -> None:
        now = self.now
        out.writes.append(Audit(actor, action, target, reason, now))
        self.state.audit.append(AuditEntry(now, actor, action, target, reason))
