"""Accounts: signup, login, logout, passwd, lockout, duplicate-login policy, bootstrap."""

from __future__ import annotations

import random

import pytest
from core_harness import ADMIN_PW, PW, Harness

from parlour.core.config import CoreConfig
from parlour.core.needs import HashPassword
from parlour.core.outcome import Outcome
from parlour.core.service import HANDLERS, ChatService
from parlour.core.writes import CreateUser, RecordLogin, SetPassword
from parlour.protocol import Ok
from parlour.storage.memory import MemoryStore


def test_hello_required_first(h: Harness) -> None:
    conn = h.connect(hello=False)
    assert h.err(conn, "login", username="admin", password=ADMIN_PW).code == "hello_required"
    assert "ts" in h.ok(conn, "ping")
    data = h.ok(conn, "hello", version=1)
    assert data["version"] == 1 and data["limits"]["max_text"] == 4000
    assert data["limits"]["max_frame"] == 65536 and data["server"].startswith("parlour/")
    assert data["limits"]["password_min_length"] == 8


def test_hello_version_mismatch_is_a_clear_error_and_the_client_may_retry() -> None:
    h = Harness()
    conn = h.connect(hello=False)
    bad = h.err(conn, "hello", version=2)
    assert bad.code == "unsupported_version" and bad.extra["supported"] == [1]
    assert "2" in bad.message and "1" in bad.message
    assert h.err(conn, "login", username="admin", password=ADMIN_PW).code == "hello_required"
    assert h.ok(conn, "hello", version=1)["version"] == 1
    h.ok(conn, "login", username="admin", password=ADMIN_PW)


def test_not_authenticated(h: Harness) -> None:
    conn = h.connect()
    for req, fields in [("rooms", {}), ("join", {"room": "general"}), ("who", {})]:
        assert h.err(conn, req, **fields).code == "not_authenticated"


def test_signup_then_login_elsewhere(h: Harness) -> None:
    conn = h.connect()
    data = h.ok(conn, "signup", username="Alice", password=PW)
    token, expires = data.pop("token"), data.pop("token_expires")
    assert data == {"username": "Alice", "role": "member", "rooms": []}
    assert len(token) == 43 and expires == h.now + CoreConfig().session_token_ttl
    assert h.svc.session_user(conn) == "Alice"
    users = {u.name: u for u in h.store.load().users}
    assert users["Alice"].password_hash != PW  # never stored in clear
    assert h.ok(conn, "logout") == {}
    assert conn not in h.closed  # the connection stays open and may log in again
    assert h.err(conn, "rooms").code == "not_authenticated"
    assert h.ok(conn, "login", username="ALICE", password=PW)["username"] == "Alice"
    h.ok(conn, "logout")
    c2 = h.connect()
    assert h.ok(c2, "login", username="alice", password=PW)["username"] == "Alice"


def test_signup_rules(h: Harness) -> None:
    h.signup("bob")
    conn = h.connect()
    assert h.err(conn, "signup", username="BOB", password=PW).code == "username_taken"
    weak = h.err(conn, "signup", username="carol", password="short")
    assert weak.code == "weak_password" and weak.extra["min_length"] == 8
    assert h.err(conn, "signup", username="bad name", password=PW).code == "invalid_field"
    assert h.err(conn, "signup", username="x" * 33, password=PW).code == "invalid_field"
    h.ok(conn, "signup", username="a.b-c_9", password=PW)
    assert h.err(conn, "signup", username="other", password=PW).code == "already_authenticated"


def test_password_min_length_configurable() -> None:
    h = Harness(CoreConfig(password_min_length=12))
    conn = h.connect()
    assert h.err(conn, "signup", username="dave", password="elevenchars").code == "weak_password"
    h.ok(conn, "signup", username="dave", password="twelve-chars")


def test_bad_credentials(h: Harness) -> None:
    h.register("bob")
    conn = h.connect()
    assert h.err(conn, "login", username="bob", password="wrongpass").code == "bad_credentials"
    assert h.err(conn, "login", username="nobody", password=PW).code == "bad_credentials"


def test_lockout_after_three_failures_and_expiry(h: Harness) -> None:
    h.register("bob")
    conn = h.connect()
    for _ in range(2):
        assert h.err(conn, "login", username="bob", password="nope-nope").code == "bad_credentials"
    third = h.err(conn, "login", username="bob", password="nope-nope")
    assert third.code == "locked_out" and third.extra["retry_after"] == 60.0
    assert "60 s" in third.message
    h.advance(30)
    locked = h.err(conn, "login", username="BOB", password=PW)  # even the right password
    assert locked.code == "locked_out" and locked.extra["retry_after"] == 30.0
    h.advance(30)
    h.apply(h.svc.tick(h.now))
    h.ok(conn, "login", username="bob", password=PW)


def test_success_resets_failure_count(h: Harness) -> None:
    h.register("bob")
    for _ in range(2):
        h.err(h.connect(), "login", username="bob", password="nope-nope")
    c = h.login("bob")
    h.ok(c, "logout")
    for _ in range(2):
        assert h.err(h.connect(), "login", username="bob", password="x" * 9).code == (
            "bad_credentials"
        )


def test_lockout_configurable() -> None:
    h = Harness(CoreConfig(lockout_threshold=5, lockout_seconds=10))
    h.register("bob")
    conn = h.connect()
    codes = [h.err(conn, "login", username="bob", password="bad-pass").code for _ in range(5)]
    assert codes == ["bad_credentials"] * 4 + ["locked_out"]
    # from another address the owner is not locked out (issue 10: lockout abuse)
    elsewhere = h.connect(peer="10.9.8.7:5555")
    h.ok(elsewhere, "login", username="bob", password=PW)
    h.ok(elsewhere, "logout")
    h.advance(10)
    h.ok(conn, "login", username="bob", password=PW)


def test_a_second_login_replaces_the_first_session_under_replace() -> None:
    """Issue 10: a silently dead connection must not lock its owner out. Whoever has the
    password gets in at once; the old session is told why and closed; co-members see no
    offline/online flicker."""
    h = Harness(CoreConfig(duplicate_login="replace"))
    first = h.signup("bob")
    observer = h.signup("carol")
    h.ok(first, "join", room="general")
    h.ok(observer, "join", room="general")
    h.take(observer)
    c2 = h.connect()
    h.ok(c2, "login", username="bob", password=PW)
    code, reason = h.closed[first]
    assert code == "logged_out" and "logged in again" in reason
    assert h.svc.session_user(first) is None and h.svc.session_user(c2) == "bob"
    assert h.take(observer, "presence") == []
    h.ok(c2, "send", room="general", text="back", client_id="b1")
    assert h.texts(observer) == ["back"]


def test_duplicate_login_reject_refuses_only_while_the_old_session_is_alive() -> None:
    h = Harness(CoreConfig(duplicate_login="reject", heartbeat_s=30.0))
    first = h.signup("bob")
    c2 = h.connect()
    assert h.err(c2, "login", username="bob", password=PW).code == "already_logged_in"
    h.advance(45)
    h.ok(first, "ping")  # alive: heartbeats
    h.advance(45)
    assert h.err(c2, "login", username="bob", password=PW).code == "already_logged_in"
    h.advance(61)  # silent for more than two heartbeats: taken for dead, replaced
    h.ok(c2, "login", username="bob", password=PW)
    assert h.closed[first][0] == "logged_out"


def test_duplicate_login_allowed() -> None:
    h = Harness(CoreConfig(duplicate_login="allow"))
    a = h.signup("bob")
    b = h.login("bob")
    h.ok(a, "join", room="general")
    h.ok(a, "send", room="general", text="hi", client_id="1")
    assert h.texts(b) == ["hi"]
    assert h.texts(a) == ["hi"]


def test_passwd(h: Harness) -> None:
    c = h.signup("bob")
    assert h.err(c, "passwd", old_password="wrong-old", new_password="new-password").code == (
        "bad_credentials"
    )
    assert h.err(c, "passwd", old_password=PW, new_password="short").code == "weak_password"
    h.ok(c, "passwd", old_password=PW, new_password="new-password")
    assert any(isinstance(w, SetPassword) for w in h.outcomes[-1].writes)
    h.ok(c, "logout")
    assert h.err(h.connect(), "login", username="bob", password=PW).code == "bad_credentials"
    h.login("bob", "new-password")


def test_passwd_ends_the_other_sessions() -> None:
    h = Harness(CoreConfig(duplicate_login="allow", rate_burst=100))
    here = h.signup("bob")
    there = h.login("bob")
    observer = h.signup("carol")
    for c in (here, there, observer):
        h.ok(c, "join", room="general")
    h.take(observer)
    h.ok(here, "passwd", old_password=PW, new_password="new-password")
    assert h.closed[there][0] == "logged_out" and "password" in h.closed[there][1]
    assert here not in h.closed and h.svc.session_user(here) == "bob"
    assert h.svc.session_user(there) is None
    assert h.take(observer, "presence") == []  # bob is still online on `here`
    h.ok(here, "send", room="general", text="still here", client_id="1")
    assert h.texts(observer) == ["still here"]


def test_login_recorded(h: Harness) -> None:
    h.signup("bob")
    assert any(isinstance(w, RecordLogin) for w in h.outcomes[-1].writes)
    assert any(isinstance(w, CreateUser) for w in h.outcomes[-1].writes)


def _bootstrapped(store: MemoryStore, config: CoreConfig, password: str) -> ChatService:
    """A service over `store`, bootstrapped with `password` like the server does it: the
    hash is a need, the writes go through the store's write path."""
    svc = ChatService(
        store.load(**ChatService.load_args(config)), config, entropy=random.Random(0).randbytes
    )
    out = svc.bootstrap(1.0, password)
    assert out.needs == (HashPassword(password),) and not out.writes
    assert svc.needs_bootstrap()  # a round that ends in needs changes nothing
    done = svc.bootstrap(1.0, password, {HashPassword(password): "plain$" + password})
    assert not done.needs and not svc.needs_bootstrap()
    store.apply(done.writes)
    return svc


def test_bootstrap_creates_the_admin_once_through_the_write_path() -> None:
    store = MemoryStore()
    _bootstrapped(store, CoreConfig(), "given-password")
    snap = store.load()
    assert [(u.name, u.role, u.password_hash) for u in snap.users] == [
        ("admin", "admin", "plain$given-password")
    ]
    assert [r.name for r in snap.rooms] == ["general", "random", "help"]
    svc2 = ChatService(store.load(), CoreConfig(), entropy=random.Random(0).randbytes)
    assert not svc2.needs_bootstrap()
    assert svc2.bootstrap(2.0, "other-password") == Outcome()  # not on later starts
    assert len(list(store.load().users)) == 1


def test_bootstrap_with_custom_rooms_and_a_bad_password() -> None:
    store = MemoryStore()
    _bootstrapped(store, CoreConfig(default_rooms=("lobby", "dev")), "given-password")
    assert [r.name for r in store.load().rooms] == ["lobby", "dev"]
    with pytest.raises(ValueError):
        ChatService(
            MemoryStore().load(), CoreConfig(), entropy=random.Random(0).randbytes
        ).bootstrap(1.0, "short")


def test_admin_role_in_reply(h: Harness) -> None:
    conn = h.connect()
    assert h.ok(conn, "login", username="admin", password=ADMIN_PW)["role"] == "admin"


def test_internal_error_costs_one_request(h: Harness) -> None:
    a = h.signup("alice")

    def boom(*args: object) -> None:
        raise RuntimeError("bug")

    from parlour.protocol import RoomsRequest

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(HANDLERS, RoomsRequest, boom)
        assert h.err(a, "rooms").code == "internal_error"
    assert h.ok(a, "ping")["ts"] == h.now


def test_a_name_being_signed_up_elsewhere_is_taken_without_hashing(h: Harness) -> None:
    from parlour.protocol import SignupRequest

    first, second = h.connect(), h.connect()
    rq = SignupRequest(id=1, username="bob", password=PW)
    waiting = h.svc.handle(first, rq, h.now)  # first's password is being hashed elsewhere
    assert waiting.needs == (HashPassword(PW),)
    err = h.err(second, "signup", username="Bob", password=PW + "x")
    assert (err.code, err.message) == ("username_taken", "the name 'Bob' is taken")
    assert [o.needs for o in h.outcomes[-1:]] == [()]  # refused without asking for a hash
    done = h.apply(h.svc.handle(first, rq, h.now, {HashPassword(PW): "plain$" + PW}))
    assert isinstance(done.reply, Ok) and done.reply.data["username"] == "bob"
    assert h.err(second, "signup", username="bob", password=PW).code == "username_taken"
    # a hold that ends without a sign-up (the adapter gave up on the hash) frees the name
    third = h.connect()
    carol = SignupRequest(id=2, username="carol", password=PW)
    assert h.svc.handle(third, carol, h.now).needs == (HashPassword(PW),)
    assert h.err(second, "signup", username="carol", password=PW).code == "username_taken"
    h.svc.abandon(third)
    assert h.ok(second, "signup", username="carol", password=PW)["username"] == "carol"


def test_a_departed_connection_frees_the_name_it_was_signing_up(h: Harness) -> None:
    from parlour.protocol import SignupRequest

    first, second = h.connect(), h.connect()
    rq = SignupRequest(id=1, username="dave", password=PW)
    assert h.svc.handle(first, rq, h.now).needs == (HashPassword(PW),)
    h.apply(h.svc.disconnect(first, h.now, "gone"))
    assert h.ok(second, "signup", username="dave", password=PW)["username"] == "dave"
