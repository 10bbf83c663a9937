"""Moderation: kick (server, room), ban with duration and reason, unban, bans, audit."""

from __future__ import annotations

from core_harness import ADMIN_PW, PW, Harness

from parlour.core.writes import AddBan, Audit, RemoveBan


def test_non_admins_get_forbidden(h: Harness) -> None:
    a = h.signup("alice")
    h.register("bob")
    for req, fields in [
        ("kick", {"user": "bob"}),
        ("ban", {"user": "bob"}),
        ("unban", {"user": "bob"}),
        ("bans", {}),
        ("audit", {}),
        ("broadcast", {"text": "x"}),
    ]:
        err = h.err(a, req, **fields)
        assert err.code == "forbidden", req
        assert "admin" in err.message


def test_kick_from_server_ends_sessions_and_they_may_return(h: Harness) -> None:
    adm = h.admin()
    b = h.signup("bob")
    h.ok(b, "join", room="general")
    data = h.ok(adm, "kick", user="bob", reason="cool down")
    assert data == {"user": "bob", "room": None, "sessions": 1}
    (ev,) = h.take(b, "kicked")
    assert (ev["room"], ev["by"], ev["reason"]) == (None, "admin", "cool down")
    assert h.closed[b][0] == "kicked" and "cool down" in h.closed[b][1]
    assert "bob" not in h.svc.online_users()
    b2 = h.login("bob")  # may come back
    assert h.ok(b2, "rooms")["rooms"][0]["joined"] is True  # membership kept
    entry = h.ok(adm, "audit")["entries"][0]
    assert (entry["actor"], entry["action"], entry["target"], entry["reason"]) == (
        "admin",
        "kick",
        "bob",
        "cool down",
    )
    assert entry["ts"] == h.now


def test_kick_from_room(h: Harness) -> None:
    adm = h.admin()
    a = h.signup("alice")
    b = h.signup("bob")
    for conn in (a, b):
        h.ok(conn, "join", room="general")
    h.take(a)
    data = h.ok(adm, "kick", user="bob", room="general", reason="off topic")
    assert data == {"user": "bob", "room": "general", "sessions": 1}
    (ev,) = h.take(b, "kicked")
    assert (ev["room"], ev["reason"]) == ("general", "off topic")
    assert [e["user"] for e in h.take(a, "left")] == ["bob"]
    assert b not in h.closed
    h.ok(a, "send", room="general", text="x", client_id="1")
    assert h.take(b, "message") == []
    h.ok(b, "join", room="general")  # may come back
    assert h.err(adm, "kick", user="bob", room="help").code == "not_member"
    assert h.err(adm, "kick", user="ghost").code == "unknown_user"
    assert h.err(adm, "kick", user="admin").code == "forbidden"  # admins cannot be kicked
    assert h.ok(adm, "audit")["entries"][0]["action"] == "kick:general"


def test_ban_with_duration_then_expiry(h: Harness) -> None:
    adm = h.admin()
    b = h.signup("bob")
    data = h.ok(adm, "ban", user="bob", duration=3600, reason="spam")
    until = h.now + 3600
    assert data == {"user": "bob", "until": until, "reason": "spam"}
    (ev,) = h.take(b, "banned")
    assert (ev["by"], ev["reason"], ev["until"]) == ("admin", "spam", until)
    assert h.closed[b][0] == "banned"
    err = h.err(h.connect(), "login", username="bob", password=PW)
    assert err.code == "banned" and err.extra["until"] == until and "spam" in err.message
    assert "1970-01-12 14:46:40 UTC" in err.message  # until, readable
    bans = h.ok(adm, "bans")["bans"]
    assert [(x["user"], x["until"], x["reason"], x["by"]) for x in bans] == [
        ("bob", until, "spam", "admin")
    ]
    bans_written = [w for o in h.outcomes for w in o.writes if isinstance(w, AddBan)]
    assert bans_written == [AddBan("bob", until, "spam", "admin", h.now)]
    h.advance(3600)
    out = h.apply(h.svc.tick(h.now))
    assert out.writes == (RemoveBan("bob"),)
    assert h.ok(adm, "bans") == {"bans": []}
    h.login("bob")


def test_permanent_ban_survives_restart_and_unban(h: Harness) -> None:
    adm = h.admin()
    h.register("bob")
    assert h.ok(adm, "ban", user="bob")["until"] is None
    h2 = h.restart()
    err = h2.err(h2.connect(), "login", username="bob", password=PW)
    assert err.code == "banned" and err.extra["until"] is None and "permanently" in err.message
    adm2 = h2.login("admin", ADMIN_PW)
    assert h2.ok(adm2, "unban", user="bob") == {"user": "bob"}
    assert h2.err(adm2, "unban", user="bob").code == "not_banned"
    h2.login("bob")
    actions = [e["action"] for e in h2.ok(adm2, "audit")["entries"]]
    assert actions[:2] == ["unban", "ban"]


def test_ban_wrong_password_does_not_reveal_ban(h: Harness) -> None:
    adm = h.admin()
    h.register("bob")
    h.ok(adm, "ban", user="bob")
    assert h.err(h.connect(), "login", username="bob", password="wrong-pw").code == (
        "bad_credentials"
    )


def test_ban_ends_all_sessions() -> None:
    from parlour.core.config import CoreConfig

    h = Harness(CoreConfig(duplicate_login="allow"))
    adm = h.admin()
    b1 = h.signup("bob")
    b2 = h.login("bob")
    h.ok(adm, "ban", user="bob", reason="x")
    assert set(h.closed) >= {b1, b2}
    assert h.err(adm, "ban", user="admin").code == "forbidden"


def test_audit_written_to_store_and_limited(h: Harness) -> None:
    adm = h.admin()
    for name in ("u1", "u2", "u3"):
        h.register(name)
        h.ok(adm, "kick", user=name)
    audits = [w for o in h.outcomes for w in o.writes if isinstance(w, Audit)]
    assert [a.target for a in audits] == ["u1", "u2", "u3"]
    assert [e.target for e in h.store.audit_log(10)] == ["u3", "u2", "u1"]
    assert [e["target"] for e in h.ok(adm, "audit", limit=2)["entries"]] == ["u3", "u2"]


def test_unban_of_a_user_not_banned_is_not_banned(h: Harness) -> None:
    adm = h.admin()
    h.register("bob")
    before = len(h.outcomes)
    err = h.err(adm, "unban", user="BOB")
    assert err.code == "not_banned"
    assert err.message == "bob is not banned" and err.extra == {"user": "bob"}
    assert all(not o.writes for o in h.outcomes[before:])  # nothing stored, nothing audited
    assert h.ok(adm, "audit")["entries"] == []
    # an expired ban that tick() removed is not banned either
    h.ok(adm, "ban", user="bob", duration=60)
    h.advance(61)
    h.apply(h.svc.tick(h.now))
    assert h.err(adm, "unban", user="bob").code == "not_banned"
