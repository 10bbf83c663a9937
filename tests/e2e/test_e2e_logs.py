"""Section 13 and the password rule over real sockets: structured logs of connections, logins,
joins and moderation; message bodies only at DEBUG; passwords never — not in any log line at
any level, not in the database files."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import ADMIN_PASSWORD, ClientFactory, FakeClock, ServerFactory

from parlour.server.logs import configure_logging

SECRETS = {
    "signup": "first-Secret-pw1",
    "changed": "second-Secret-pw2",
    "wrong": "wrong-Secret-guess3",
    "other": "other-Secret-pw4",
}


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["event"] == name]


@pytest.fixture
def json_logs() -> Iterator[Captured]:
    """The server's real log configuration (JSON, DEBUG) into a buffer; restored after."""
    logger = logging.getLogger("parlour")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    stream = io.StringIO()
    handler = configure_logging("DEBUG", "json", stream)
    try:
        yield Captured(stream)
    finally:
        logger.removeHandler(handler)
        logger.handlers[:] = saved[2]
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


async def test_logs_are_structured_never_hold_passwords_and_bodies_only_on_request(
    json_logs: Captured,
    make_server: ServerFactory,
    connect: ClientFactory,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    srv = await make_server(lockout_attempts=2)
    admin, alice, bob = await connect(srv.port), await connect(srv.port), await connect(srv.port)
    await admin.login("admin", ADMIN_PASSWORD)
    tokens = [(await alice.signup("alice", SECRETS["signup"]))["token"]]
    tokens.append((await bob.signup("bob", SECRETS["other"]))["token"])
    for c in (alice, bob):
        await c.ok("join", room="general")
    changed = await alice.ok(
        "passwd", old_password=SECRETS["signup"], new_password=SECRETS["changed"]
    )
    tokens.append(changed["token"])
    again = await connect(srv.port)
    await again.hello()
    await again.ok("login", username="bob", token=tokens[1])  # a token login, logged as such
    await intruder_token(connect, srv.port, tokens[0])  # revoked by the password change
    await alice.ok("send", room="general", text="a hidden body", client_id="a1")
    await alice.ok("dm", to="bob", text="a hidden dm", client_id="a2")
    intruder = await connect(srv.port)
    await intruder.hello()
    for _ in range(3):  # two failures lock the name; the third attempt is refused
        await intruder.error("login", username="alice", password=SECRETS["wrong"])
    clock.advance(61)
    await admin.ok("kick", user="bob", room="general", reason="testing kicks")
    await admin.ok("ban", user="bob", duration=60, reason="testing bans")

    logging.getLogger("parlour").setLevel(logging.INFO)
    await alice.ok("send", room="general", text="info-hidden body", client_id="a3")
    await admin.ok("broadcast", text="info-hidden broadcast")
    await alice.roundtrip()
    await admin.roundtrip()

    text = json_logs.text
    records = json_logs.records()  # every line is one JSON object
    assert all({"ts", "level", "logger", "event"} <= r.keys() for r in records)
    # passwords and session tokens: never, at any level
    for secret in (*SECRETS.values(), ADMIN_PASSWORD, *tokens):
        assert secret not in text, secret
    assert {r["by"] for r in json_logs.events("login") if r["user"] == "bob"} == {"token"}
    assert json_logs.events("token login failed")[0]["user"] == "alice"
    # message texts: never without log_message_text, even at DEBUG; sender, target and size
    # at INFO (seed 001's "[LOG] bob (ip:port) --> alice (ip:port)")
    assert "hidden" not in text
    (sent,) = [r for r in json_logs.events("message") if r["seq"] == 1]
    assert (sent["user"], sent["room"], sent["size"]) == ("alice", "general", 13)
    (dm,) = json_logs.events("dm")
    assert (dm["user"], dm["to"], dm["size"]) == ("alice", "bob", 11)
    # connections, logins, joins and moderation, with who and from where
    opened = json_logs.events("connection opened")
    assert len(opened) >= 4 and all(r["peer"].startswith("127.0.0.") for r in opened)
    assert {r["user"] for r in json_logs.events("login")} >= {"admin"}
    assert {r["user"] for r in json_logs.events("signup")} == {"alice", "bob"}
    assert {(r["user"], r["room"]) for r in json_logs.events("join")} == {
        ("alice", "general"),
        ("bob", "general"),
    }
    failed = json_logs.events("login failed")
    assert len(failed) == 2 and all(r["peer"].startswith("127.0.0.1:") for r in failed)
    locked = json_logs.events("locked out")
    assert locked and locked[0]["user"] == "alice" and locked[0]["level"] == "warning"
    kick = json_logs.events("kick")[0]
    assert (kick["by"], kick["user"], kick["room"], kick["reason"]) == (
        "admin",
        "bob",
        "general",
        "testing kicks",
    )
    ban = json_logs.events("ban")[0]
    assert (ban["by"], ban["user"], ban["reason"]) == ("admin", "bob", "testing bans")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", ban["until"])  # readable
    assert json_logs.events("password changed")[0]["user"] == "alice"

    # nothing in clear in the database either (Argon2id hashes only)
    await srv.stop()
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    for secret in (*SECRETS.values(), ADMIN_PASSWORD, *tokens):
        assert secret.encode() not in stored, secret
    assert b"$argon2id$" in stored


async def intruder_token(connect: ClientFactory, port: int, token: str) -> None:
    wire = await connect(port, source="127.0.0.2")  # apart from the password failures below
    await wire.hello()
    refused = await wire.error("login", username="alice", token=token)
    assert refused["code"] == "bad_credentials" and refused["token"] is True
