"""Session tokens: a login without the password, revoked by logout and password changes."""

from __future__ import annotations

from typing import Any

import pytest
from core_harness import ADMIN_PW, PW, Harness
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from parlour.core.config import CoreConfig
from parlour.core.tokens import SessionTokens, hash_token, token_text


def counting(h: Harness) -> list[int]:
    """Count the password checks the adapter is asked for."""
    calls = [0]
    verify = h.hasher.verify

    def counted(hash: str, password: str) -> bool:
        calls[0] += 1
        return verify(hash, password)

    h.hasher.verify = counted  # type: ignore[method-assign]
    return calls


def token_of(data: dict[str, Any]) -> str:
    token = data["token"]
    assert isinstance(token, str)
    return token


def test_a_token_logs_in_without_password_work() -> None:
    h = Harness()
    first = h.connect()
    token = token_of(h.ok(first, "signup", username="alice", password=PW))
    checks = counting(h)
    other = h.connect()
    data = h.ok(other, "login", username="ALICE", token=token)
    assert (data["username"], data["token"]) == ("alice", token)
    assert checks[0] == 0
    assert h.svc.session_user(other) == "alice"


def test_bad_tokens_are_refused_and_counted() -> None:
    h = Harness()
    alice = token_of(h.ok(h.connect(), "signup", username="alice", password=PW))
    bob = token_of(h.ok(h.connect(), "signup", username="bob", password=PW))
    assert alice != bob
    c = h.connect()
    wrong = h.err(c, "login", username="alice", token=bob)  # bob's token, alice's name
    assert wrong.code == "bad_credentials" and wrong.extra == {"token": True}
    assert h.err(c, "login", username="nobody", token=alice).code == "bad_credentials"
    # the third failure for alice from this address locks the address out of alice
    assert h.err(c, "login", username="alice", token="x" * 43).code == "bad_credentials"
    assert h.err(c, "login", username="alice", token="y" * 43).code == "locked_out"
    assert h.err(c, "login", username="alice", token=alice).code == "locked_out"
    assert h.svc.session_user(c) is None


def test_a_token_expires() -> None:
    h = Harness(CoreConfig(session_token_ttl=60.0))
    data = h.ok(h.connect(), "signup", username="alice", password=PW)
    assert data["token_expires"] == h.now + 60.0
    h.advance(59)
    h.ok(h.connect(), "login", username="alice", token=data["token"])
    h.advance(2)
    assert h.err(h.connect(), "login", username="alice", token=data["token"]).code == (
        "bad_credentials"
    )


def test_logout_revokes_the_sessions_token_and_passwd_revokes_all() -> None:
    h = Harness()
    c1 = h.connect()
    t1 = token_of(h.ok(c1, "signup", username="alice", password=PW))
    c2 = h.connect()
    t2 = token_of(h.ok(c2, "login", username="alice", password=PW))
    c3 = h.connect()
    t3 = token_of(h.ok(c3, "login", username="alice", password=PW))
    assert len({t1, t2, t3}) == 3
    h.ok(c1, "logout")
    assert h.err(h.connect(), "login", username="alice", token=t1).code == "bad_credentials"
    h.ok(h.connect(), "login", username="alice", token=t2)  # the others still work
    fresh = h.ok(c3, "passwd", old_password=PW, new_password="another-password-1")
    t4 = token_of(fresh)
    for old in (t2, t3):
        assert h.err(h.connect(), "login", username="alice", token=old).code == "bad_credentials"
    assert h.ok(h.connect(), "login", username="alice", token=t4)["username"] == "alice"


def test_tokens_survive_a_restart_and_the_oldest_go_first() -> None:
    h = Harness(CoreConfig(session_tokens_per_user=3))
    tokens = [token_of(h.ok(h.connect(), "signup", username="alice", password=PW))]
    for _ in range(3):
        tokens.append(token_of(h.ok(h.connect(), "login", username="alice", password=PW)))
    h2 = h.restart()
    assert h2.err(h2.connect(), "login", username="alice", token=tokens[0]).code == (
        "bad_credentials"
    )
    for kept in tokens[1:]:
        assert h2.ok(h2.connect(), "login", username="alice", token=kept)["token"] == kept


def test_a_banned_user_cannot_use_a_token() -> None:
    h = Harness()
    token = token_of(h.ok(h.connect(), "signup", username="mallory", password=PW))
    admin = h.connect()
    h.ok(admin, "login", username="admin", password=ADMIN_PW)
    h.ok(admin, "ban", user="mallory", reason="spam")
    assert h.err(h.connect(), "login", username="mallory", token=token).code == "banned"


def test_no_tokens_when_switched_off() -> None:
    h = Harness(CoreConfig(session_token_ttl=0))
    data = h.ok(h.connect(), "signup", username="alice", password=PW)
    assert "token" not in data and "token_expires" not in data


@pytest.mark.parametrize(
    "fields",
    [{}, {"password": PW, "token": "a" * 43}, {"token": "short"}, {"token": "a" * 42 + "!"}],
)
def test_login_needs_exactly_one_valid_credential(fields: dict[str, str]) -> None:
    h = Harness()
    err = h.err(h.connect(), "login", username="alice", **fields)
    assert err.code in ("missing_field", "invalid_field")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_token_text_is_url_safe_and_hashes_differ(raw: bytes) -> None:
    text = token_text(raw)
    assert len(text) == 43 and text.isascii() and "=" not in text
    assert hash_token(text) != hash_token(text[:-1] + ("A" if text[-1] != "A" else "B"))


class TokenModel(RuleBasedStateMachine):
    """SessionTokens against a plain model: valid tokens per user, newest `per_user` kept."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = SessionTokens(ttl=100.0, per_user=3, loaded=())
        self.model: dict[str, tuple[str, float]] = {}  # token -> (user, expires)
        self.order: dict[str, list[str]] = {}
        self.now = 0.0
        self.counter = 0

    @rule(user=st.sampled_from(["a", "b"]))
    def issue(self, user: str) -> None:
        self.counter += 1
        issued = self.tokens.issue(user, self.counter.to_bytes(32, "big"), self.now)
        mine = [t for t in self.order.get(user, []) if self.model[t][1] > self.now]
        for t in self.order.get(user, []):
            if t not in mine:
                del self.model[t]
        while len(mine) >= 3:
            del self.model[mine.pop(0)]
        mine.append(issued.token)
        self.order[user] = mine
        self.model[issued.token] = (user, self.now + 100.0)

    @rule(seconds=st.sampled_from([1.0, 30.0, 101.0]))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @rule(user=st.sampled_from(["a", "b"]), everything=st.booleans())
    def revoke(self, user: str, everything: bool) -> None:
        mine = self.order.get(user, [])
        if everything:
            self.tokens.revoke(user)
            for t in mine:
                self.model.pop(t, None)
            self.order[user] = []
        elif mine:
            t = mine.pop()
            self.tokens.revoke(user, hash_token(t))
            self.model.pop(t, None)

    @invariant()
    def agrees(self) -> None:
        for token, (user, expires) in self.model.items():
            ok = self.tokens.check(user, token, self.now) is not None
            assert ok == (expires > self.now)
            other = "b" if user == "a" else "a"
            assert self.tokens.check(other, token, self.now) is None


TestTokenModel = TokenModel.TestCase
TestTokenModel.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
