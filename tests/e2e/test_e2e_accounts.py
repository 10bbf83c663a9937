"""Sections 2-3 over real sockets: hello, sign-up, login, lockout, passwd, duplicate login."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
from e2e_helpers import ADMIN_PASSWORD, PASSWORD, ClientFactory, FakeClock, ServerFactory, Wire

UserFactory = Callable[..., Awaitable[Wire]]


async def test_hello_is_required_first(connect: ClientFactory) -> None:
    c = await connect()
    err = await c.error("login", username="bob", password=PASSWORD)
    assert err["code"] == "hello_required"
    data = await c.hello()
    assert data["version"] == 1 and data["limits"]["max_text"] == 4000
    assert (await c.error("hello", version=99))["code"] == "unsupported_version"


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
    # failures and the lockout are logged with the peer address; passwords never
    text = caplog.text
    assert "127.0.0.1" in text
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
