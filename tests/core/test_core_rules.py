"""Pure rules: token bucket, user names, lockouts (property-based), Argon2 hashing."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.core.accounts import password_problem, username_problem
from parlour.core.config import CoreConfig
from parlour.core.limits import TokenBucket
from parlour.core.passwords import Argon2Hasher, generate_password
from parlour.protocol import InvalidName, normalize_name

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,32}")


@settings(deadline=None, max_examples=200)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_ascii_username_rule_matches_spec(name: str) -> None:
    ok = 1 <= len(name) <= 32 and all(ch.isalnum() or ch in "_-." for ch in name)
    assert (username_problem(name) is None) == ok
    assert ok == bool(_NAME.fullmatch(name))


@settings(deadline=None, max_examples=200)
@given(st.text(max_size=40))
def test_the_core_accepts_exactly_the_normal_forms_of_names(name: str) -> None:
    """Names reach the core normalised by the protocol layer; anything else is refused."""
    try:
        normal: str | None = normalize_name(name)
    except InvalidName:
        normal = None
    assert (username_problem(name) is None) == (normal == name)
    if normal is not None and normal != name:
        assert repr(normal) in (username_problem(name) or "")


@settings(deadline=None)
@given(st.from_regex(_NAME, fullmatch=True))
def test_valid_names_accepted(name: str) -> None:
    assert username_problem(name) is None


def test_password_rule() -> None:
    assert password_problem("1234567", 8) is not None
    assert password_problem("12345678", 8) is None
    assert password_problem(" " * 10, 8) is not None


@settings(deadline=None, max_examples=200)
@given(
    rate=st.floats(min_value=0.5, max_value=100),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=200),
)
def test_token_bucket_never_exceeds_rate(rate: float, burst: int, gaps: list[float]) -> None:
    """Over any run, accepted <= burst + rate * elapsed; a refused take says when to retry,
    and retrying then succeeds."""
    now = 0.0
    bucket = TokenBucket(rate, burst, now)
    accepted = 0
    for gap in gaps:
        now += gap
        wait = bucket.take(now)
        if wait == 0:
            accepted += 1
        else:
            assert wait > 0
            assert bucket.take(now + wait + 1e-9) == 0
            accepted += 1
            now += wait + 1e-9
        assert accepted <= burst + rate * now + 1e-6


def test_token_bucket_burst_then_steady() -> None:
    b = TokenBucket(20, 30, 0.0)
    assert all(b.take(0.0) == 0 for _ in range(30))
    assert b.take(0.0) == pytest.approx(0.05)
    assert b.take(0.05) == 0
    assert b.take(-5.0) > 0  # time going backwards refills nothing
    with pytest.raises(ValueError):
        TokenBucket(0, 1, 0.0)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        CoreConfig(duplicate_login="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CoreConfig(lockout_threshold=0)
    with pytest.raises(ValueError):
        CoreConfig(rate_per_second=0)


def test_argon2_hasher() -> None:
    cheap = Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1)
    h = cheap.hash("correct horse")
    assert h.startswith("$argon2id$") and "correct horse" not in h
    assert cheap.verify(h, "correct horse")
    assert not cheap.verify(h, "wrong horse")
    assert not cheap.verify("not-a-hash", "x")
    assert not cheap.needs_rehash(h)
    assert Argon2Hasher(time_cost=2, memory_cost=16, parallelism=1).needs_rehash(h)
    assert len(generate_password()) >= 20
    assert generate_password() != generate_password()


async def test_service_with_argon2_rehashes_on_login() -> None:
    """The needs are answered by the server's NeedRunner: a password that matches a hash made
    with older Argon2 parameters comes back with a fresh hash, which the core stores."""
    from parlour.core.service import ChatService
    from parlour.core.writes import SetPassword
    from parlour.protocol import HelloRequest, LoginRequest, Ok
    from parlour.storage.memory import MemoryStore
    from parlour.storage.reads import InlineReads
    from parlour.transports.needs import NeedRunner

    async def resolve(runner: NeedRunner, call: Any) -> Any:
        answers: dict[Any, Any] = {}
        while (out := call(answers)).needs:
            answers.update(await runner.satisfy(1, out.needs))
        return out

    store = MemoryStore()
    old = NeedRunner(Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1), InlineReads(store))
    first = ChatService(store.load(), CoreConfig(), entropy=random.Random(0).randbytes)
    store.apply((await resolve(old, lambda a: first.bootstrap(0.0, "admin-password", a))).writes)
    old.close()
    new_hasher = Argon2Hasher(time_cost=2, memory_cost=8, parallelism=1)
    new = NeedRunner(new_hasher, InlineReads(store))
    svc = ChatService(store.load(), CoreConfig(), entropy=random.Random(0).randbytes)
    svc.connect(1, "127.0.0.1:1", 1.0)
    svc.handle(1, HelloRequest(id=1, version=1), 1.0)
    login = LoginRequest(id=2, username="admin", password="admin-password")
    out = await resolve(new, lambda a: svc.handle(1, login, 1.0, a))
    new.close()
    assert isinstance(out.reply, Ok)
    (rehash,) = [w for w in out.writes if isinstance(w, SetPassword)]
    assert not new_hasher.needs_rehash(rehash.password_hash)
    assert new_hasher.verify(rehash.password_hash, "admin-password")
