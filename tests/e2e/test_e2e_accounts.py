"""Sections 2-3 over real sockets: hello, sign-up, login, lockout, passwd, duplicate login."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
from e2e_helpers import ADMIN_PASSWORD, PASSWORD, ClientFactory, FakeClock, ServerFactory, Wire

from parlour.server.logs import JsonFormatter

UserFactory = Callable[..., Awaitable[Wire]]


async def test_hello_is_required_first(connect: ClientFactory) -> None:
    c = await connect()
    err = await c.error("login", username="bob", password=PASSWORD)
    assert err["code"] == "hello_required"
    data = await c.hello()
    assert data["version"] == 1 and data["limits"]["max_text"] == 4000
    assert data["limits"]["max_frame"] == 65536 and data["heartbeat_s"] > 0
    assert (await c.error("hello", version=99))["code"] == "unsupported_version"


async def test_version_mismatch_is_a_clear_error_then_negotiation_succeeds(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server(max_frame=32768, min_password=10)
    c = await connect(srv.port)
    err = await c.error("hello", version=2, client="future-client/9")
    assert err["code"] == "unsupported_version" and err["supported"] == [1]
    assert "version 2" in err["message"]
    assert (await c.error("rooms"))["code"] == "hello_required"  # still not negotiated
    data = await c.ok("hello", version=err["supported"][0])
    assert data["version"] == 1 and data["server"].startswith("parlour/")
    limits = data["limits"]
    assert (limits["max_frame"], limits["password_min_length"]) == (32768, 10)
    assert limits["rate_per_second"] > 0 and limits["rate_burst"] >= 1


async def test_signup_login_logout_and_passwd(connect: ClientFactory) -> None:
    c = await connect()
    await c.hello()
    assert (await c.error("signup", username="bad name", password=PASSWORD))["code"] in (
        "invalid_field",
    )
    assert (await c.error("signup", username="alice", password="short"))["code"] == (
        "weak_password"
    )
    data = await c.ok("signup", username="Alice", password=PASSWORD)
    assert (data["username"], data["role"]) == ("Alice", "member")
    await c.ok("logout")

    d = await connect()
    await d.hello()
    assert (await d.error("signup", username="alice", password=PASSWORD))["code"] == (
        "username_taken"
    )
    err = await d.error("login", username="alice", password="wrong-password")
    assert err["code"] == "bad_credentials"
    assert (await d.ok("login", username="alice", password=PASSWORD))["username"] == "Alice"
    err = await d.error("passwd", old_password="not-the-old-one", new_password="new-password-1")
    assert err["code"] == "bad_credentials"
    await d.ok("passwd", old_password=PASSWORD, new_password="new-password-1")
    await d.ok("logout")

    e = await connect()
    await e.hello()
    assert (await e.error("login", username="alice", password=PASSWORD))["code"] == (
        "bad_credentials"
    )
    await e.ok("login", username="alice", password="new-password-1")


async def test_username_rules_case_insensitive_and_configurable_password_length(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server(min_password=12)
    c = await connect(srv.port)
    await c.hello()
    for bad in ("", "x" * 33, "with space", "p\u0430ypal", "semi;colon", 7):
        err = await c.error("signup", username=bad, password="long-enough-pw")
        assert err["code"] == "invalid_field" and err["field"] == "username", (bad, err)
    weak = await c.error("signup", username="Zoe", password="elevenchars")
    assert weak["code"] == "weak_password" and weak["min_length"] == 12
    assert "12" in weak["message"]
    ok = await c.ok("signup", username="Zoe.Q-1_x", password="twelve-chars")
    assert ok["username"] == "Zoe.Q-1_x"
    d = await connect(srv.port)
    await d.hello()
    taken = await d.error("signup", username="zoe.q-1_X", password="twelve-chars")
    assert taken["code"] == "username_taken"
    await d.ok("signup", username="x" * 32, password="twelve-chars")


async def test_passwd_ends_the_users_other_sessions(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server(duplicate_login="allow")
    here, there = await connect(srv.port), await connect(srv.port)
    await here.signup("erin", PASSWORD)
    await there.login("erin", PASSWORD)
    await here.ok("passwd", old_password=PASSWORD, new_password="brand-new-pw")
    bye = await there.event("disconnect")
    assert bye["code"] == "logged_out" and "password" in bye["reason"]
    await there.wait_closed()
    await here.ok("rooms")  # the session that changed it goes on


async def test_requests_need_login(connect: ClientFactory) -> None:
    c = await connect()
    await c.hello()
    assert (await c.error("rooms"))["code"] == "not_authenticated"


async def test_lockout_after_failures_then_expiry(
    connect: ClientFactory, user: UserFactory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    await (await user("bob")).ok("logout")
    c = await connect()
    await c.hello()
    caplog.set_level(logging.INFO, logger="parlour")
    assert (await c.error("login", username="bob", password="wrong-1x"))["code"] == (
        "bad_credentials"
    )
    assert (await c.error("login", username="bob", password="wrong-2x"))["code"] == (
        "bad_credentials"
    )
    third = await c.error("login", username="bob", password="wrong-3x")
    assert third["code"] == "locked_out" and third["retry_after"] > 0
    # even the right password is refused while locked, and the reply says how long
    locked = await c.error("login", username="bob", password=PASSWORD)
    assert locked["code"] == "locked_out" and 0 < locked["retry_after"] <= 60
    assert "60" in locked["message"] or "s" in locked["message"]
    # failures and the lockout are logged with the user name and peer address; passwords never
    logged = [r for r in caplog.records if r.getMessage() in ("login failed", "locked out")]
    assert [r.getMessage() for r in logged] == ["login failed"] * 3 + ["locked out"] * 2
    for r in logged:
        fields = r.fields  # type: ignore[attr-defined]
        assert fields["user"] == "bob" and fields["peer"].startswith("127.0.0.1:")
    assert logged[3].fields["seconds"] == 60  # type: ignore[attr-defined]
    text = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "wrong-1x" not in text and PASSWORD not in text
    clock.advance(61)
    await c.ok("login", username="bob", password=PASSWORD)


async def test_duplicate_login_policy(make_server: ServerFactory, connect: ClientFactory) -> None:
    for policy, expected in (("reject", "error"), ("allow", "ok")):
        srv = await make_server(duplicate_login=policy)
        a = await connect(srv.port)
        await a.hello()
        await a.ok("signup", username="dave", password=PASSWORD)
        b = await connect(srv.port)
        await b.hello()
        reply = await b.request("login", username="dave", password=PASSWORD)
        assert reply["type"] == expected, (policy, reply)
        if expected == "error":
            assert reply["code"] == "already_logged_in"


async def test_admin_exists_with_the_configured_password(connect: ClientFactory) -> None:
    c = await connect()
    data = await c.login("admin", ADMIN_PASSWORD)
    assert data["role"] == "admin"


async def test_default_rooms_are_configurable(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    srv = await make_server(default_rooms=("lobby", "dev"))
    c = await connect(srv.port)
    await c.signup("fay", PASSWORD)
    rooms = (await c.ok("rooms"))["rooms"]
    assert sorted(r["name"] for r in rooms) == ["dev", "lobby"]
    assert all(r["members"] == 0 and r["online"] == 0 and not r["joined"] for r in rooms)
