"""A fake transport for core tests: numbered connections, a fake clock, and a writer that
applies every outcome's writes to a MemoryStore before "sending" (like the real adapter)."""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from parlour.core.config import CoreConfig
from parlour.core.needs import (
    Answers,
    HashPassword,
    Need,
    ReadBroadcasts,
    ReadDm,
    ReadFile,
    ReadFileUsage,
    ReadRoom,
    ReadSince,
    RelayTickets,
    Verified,
    VerifyPassword,
)
from parlour.core.outcome import Outcome
from parlour.core.service import ChatService
from parlour.protocol import (
    REPLY_FIELDS,
    Error,
    Event,
    Ok,
    Reply,
    parse_event,
    parse_reply,
    parse_request,
)
from parlour.protocol.codec import decode_line, encode
from parlour.protocol.errors import ErrorCode, ProtocolError
from parlour.storage.memory import MemoryStore

ADMIN_PW = "admin-secret"
PW = "password1"


class PlainHasher:
    """Fast stand-in for Argon2 in domain tests (never use outside tests)."""

    def hash(self, password: str) -> str:
        return "plain$" + password

    def verify(self, hash: str, password: str) -> bool:
        return hash == "plain$" + password

    def needs_rehash(self, hash: str) -> bool:
        return False


#: the harness's transfer ids: distinct every draw, the same in every run
_DRAWS = itertools.count(1)
RELAY_SECRET = b"core-test-relay-secret"


def tickets_for(transfer_id: bytes) -> tuple[bytes, bytes]:
    """What the harness answers to RelayTickets (the server's relay computes real ones)."""
    return tuple(  # type: ignore[return-value]
        hashlib.sha256(RELAY_SECRET + transfer_id + bytes([side])).digest()[:16] for side in (0, 1)
    )


def answer(store: MemoryStore, hasher: PlainHasher, need: Need) -> Any:
    """What the adapter would answer to `need` (synchronously: memory store, plain hasher,
    deterministic transfer ids)."""
    if isinstance(need, RelayTickets):
        transfer_id = hashlib.sha256(b"transfer %d" % next(_DRAWS)).digest()[:8]
        return (transfer_id, *tickets_for(transfer_id))
    if isinstance(need, HashPassword):
        return hasher.hash(need.password)
    if isinstance(need, VerifyPassword):
        return Verified(hasher.verify(need.hash, need.password))
    if isinstance(need, ReadRoom):
        return store.room_messages(
            need.room, before=need.before, after=need.after, limit=need.limit
        )
    if isinstance(need, ReadDm):
        return store.dm_messages(need.conv, before=need.before, after=need.after, limit=need.limit)
    if isinstance(need, ReadSince):
        return store.messages_since(need.rooms, need.ts, need.limit)
    if isinstance(need, ReadBroadcasts):
        return store.broadcasts(after=need.after, limit=need.limit)
    if isinstance(need, ReadFile):
        return store.file(need.file_id)
    if isinstance(need, ReadFileUsage):
        return store.file_usage(need.user)
    raise AssertionError(f"unknown need {need!r}")


def _documented_error_extras() -> dict[str, set[str]]:
    """error code -> the extra fields docs/protocol.md's table lists for it."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text("utf-8")
    section = doc.split("## Error codes")[1].split("\n## ")[0]
    out: dict[str, set[str]] = defaultdict(set)
    for code, extras in re.findall(r"^\| `([a-z0-9_]+)`[^|]*\|[^|]*\|([^|]*)\|", section, re.M):
        out[code].update(re.findall(r"`([a-z_]+)`", extras))
    return out


ERROR_EXTRAS = _documented_error_extras()


def check_reply(request_type: str, reply: Reply) -> None:
    """The reply as a client sees it: JSON-safe, parseable, with the documented data keys
    (``REPLY_FIELDS``) or a documented error code."""
    wire = decode_line(encode(reply.to_wire())[:-1])
    assert isinstance(wire, dict), wire
    parsed = parse_reply(wire)
    if isinstance(parsed, Ok):
        missing = REPLY_FIELDS[request_type] - parsed.data.keys()
        assert not missing, f"{request_type} reply lacks {missing}"
    else:
        assert parsed.code in set(ErrorCode), parsed.code
        assert parsed.message
        undocumented = set(parsed.extra) - ERROR_EXTRAS[parsed.code]
        assert not undocumented, f"{parsed.code}: undocumented extra fields {undocumented}"


class Harness:
    def __init__(
        self,
        config: CoreConfig | None = None,
        store: MemoryStore | None = None,
        *,
        bootstrap: bool = True,
    ) -> None:
        # tests send in bursts at one instant: a generous rate limit unless a test sets one
        self.config = config or CoreConfig(rate_per_second=1000.0, rate_burst=1000.0)
        self.store = store if store is not None else MemoryStore()
        self.hasher = PlainHasher()
        self.now = 1_000_000.0
        snapshot = self.store.load(**ChatService.load_args(self.config, self.now))
        self.svc = ChatService(snapshot, self.config, entropy=random.Random(7).randbytes)
        #: rounds of needs each request took (request id -> rounds)
        self.rounds: dict[object, int] = {}
        if bootstrap:
            first = self.resolve(lambda a: self.svc.bootstrap(self.now, ADMIN_PW, a))
            self.store.apply(first.writes)
        self._next_conn = 1
        self._next_id = 1
        self.events: dict[int, list[Event]] = defaultdict(list)
        self.closed: dict[int, tuple[str, str]] = {}
        self.outcomes: list[Outcome] = []

    # -- driving ------------------------------------------------------------------------------

    def restart(self) -> Harness:
        """A new service over the same store (the process restarted)."""
        h = Harness(self.config, self.store, bootstrap=False)
        h.now = self.now
        return h

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def apply(self, out: Outcome) -> Outcome:
        self.outcomes.append(out)
        for d in out.deliveries:  # every event survives the wire and the client's parser
            wire = decode_line(encode(d.event.to_wire())[:-1])
            assert isinstance(wire, dict)
            parse_event(wire)
        for _, code, _ in out.close:
            assert code in set(ErrorCode), code
        if out.writes:
            self.store.apply(out.writes)
        for d in out.deliveries:
            for conn in d.to:
                self.events[conn].append(d.event)
        for conn, code, reason in out.close:
            self.closed[conn] = (code, reason)
            self.apply(self.svc.disconnect(conn, self.now, reason))
        return out

    def resolve(self, call: Any) -> Outcome:
        """Call the core until it needs nothing more, answering its needs like the adapter
        (a round that ends in needs must have changed nothing: checked by its outcome)."""
        answers: dict[Need, Any] = {}
        for _ in range(64):
            out: Outcome = call(answers)
            if not out.needs:
                return out
            assert out.reply is None and not out.deliveries and not out.writes and not out.close
            for need in out.needs:
                assert need not in answers, f"asked twice for {need!r}"
                answers[need] = answer(self.store, self.hasher, need)
        raise AssertionError("the core kept asking for needs")

    def handle(self, conn: int, request: Any, answers: Answers | None = None) -> Outcome:
        """`svc.handle` with its needs answered."""
        return self.resolve(lambda a: self.svc.handle(conn, request, self.now, a))

    def connect(self, hello: bool = True, peer: str | None = None) -> int:
        conn = self._next_conn
        self._next_conn += 1
        self.apply(self.svc.connect(conn, peer or f"127.0.0.1:{40000 + conn}", self.now))
        if hello:
            self.ok(conn, "hello", version=1)
        return conn

    def request(self, conn: int, type: str, **fields: Any) -> Reply:
        rid = self._next_id
        self._next_id += 1
        try:
            req = parse_request({"id": rid, "type": type, **fields})
        except ProtocolError as exc:  # the transport answers these without the core
            return Error.from_exception(exc)
        out = self.apply(self.handle(conn, req))
        assert out.reply is not None
        assert out.reply.id == rid
        check_reply(type, out.reply)
        return out.reply

    def ok(self, conn: int, type: str, **fields: Any) -> dict[str, Any]:
        reply = self.request(conn, type, **fields)
        assert isinstance(reply, Ok), reply
        return dict(reply.data)

    def err(self, conn: int, type: str, **fields: Any) -> Error:
        reply = self.request(conn, type, **fields)
        assert isinstance(reply, Error), reply
        return reply

    def signup(self, name: str, password: str = PW) -> int:
        conn = self.connect()
        self.ok(conn, "signup", username=name, password=password)
        return conn

    def register(self, name: str, password: str = PW) -> None:
        """Sign up and disconnect (the account exists, the user is offline)."""
        conn = self.signup(name, password)
        self.apply(self.svc.disconnect(conn, self.now, "done"))

    def login(self, name: str, password: str = PW, **fields: Any) -> int:
        conn = self.connect()
        self.ok(conn, "login", username=name, password=password, **fields)
        return conn

    def admin(self) -> int:
        return self.login("admin", ADMIN_PW)

    # -- observing ------------------------------------------------------------------------

    def take(self, conn: int, name: str | None = None) -> list[Event]:
        """Events delivered to `conn` since the last take (optionally only `name`)."""
        evs = self.events.pop(conn, [])
        return [e for e in evs if name is None or e.name == name]

    def texts(self, conn: int, name: str = "message") -> list[str | None]:
        return [e["text"] for e in self.take(conn, name)]
