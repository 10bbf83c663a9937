"""Accounts: hello, ping, signup, login, logout and password changes.

Password work is asked for as needs (`HashPassword`, `VerifyPassword`): the adapter runs Argon2
off the event loop and the handler runs again with the answer.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

from parlour.core.accounts import password_problem, username_problem
from parlour.core.context import Ctx, Out, fail, log_event
from parlour.core.handlers.catch_up import plan_catch_up
from parlour.core.handlers.sessions import end_session, session_reply, start_session
from parlour.core.needs import HashPassword, Verified, VerifyPassword
from parlour.core.outcome import EndSessions, LoginFailed, LoginSucceeded, Outcome
from parlour.core.records import UserRecord, user_key
from parlour.core.sessions import Connection
from parlour.core.state import UserState
from parlour.core.tokens import TOKEN_BYTES
from parlour.core.writes import (
    AddSessionToken,
    CreateUser,
    RevokeSessionTokens,
    SetBroadcastCursor,
    SetPassword,
)
from parlour.protocol import (
    PROTOCOL_VERSION,
    EmptyReply,
    ErrorCode,
    HelloReply,
    HelloRequest,
    Limits,
    LoginRequest,
    LogoutRequest,
    Ok,
    PasswdReply,
    PasswdRequest,
    PingReply,
    PingRequest,
    ProtocolError,
    SignupRequest,
)

__all__ = ["SUPPORTED_VERSIONS", "hello", "login", "logout", "passwd", "ping", "signup", "utc"]

#: protocol versions this core speaks (a `hello` with another gets `unsupported_version`)
SUPPORTED_VERSIONS: tuple[int, ...] = (PROTOCOL_VERSION,)


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def hello(cx: Ctx, c: Connection, rq: HelloRequest) -> Outcome:
    if rq.version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise fail(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {rq.version} is not supported; this server speaks {supported}",
            supported=list(SUPPORTED_VERSIONS),
        )
    c.hello = True
    cfg = cx.cfg
    limits: Limits = {
        "max_frame": cfg.max_frame,
        "max_text": cfg.max_message_length,
        "rate_per_second": cfg.rate_per_second,
        "rate_burst": cfg.rate_burst,
        "read_rate_per_second": cfg.read_rate_per_second,
        "read_burst": cfg.read_burst,
        "password_min_length": cfg.password_min_length,
        "max_page": cfg.max_page,
        "max_file_size": cfg.max_file_size,
    }
    if cfg.upload_url is not None:  # files in chat (docs/design/files.md)
        limits["upload_url"] = cfg.upload_url
    if cfg.web_url is not None:
        limits["web_url"] = cfg.web_url
    if cfg.web_port is not None:
        limits["web_port"] = cfg.web_port
    return Outcome(
        Ok(
            rq.id,
            HelloReply(
                version=rq.version,
                server=cfg.server_name,
                limits=limits,
                heartbeat_s=cfg.heartbeat_s,
            ),
        )
    )


def ping(cx: Ctx, c: Connection, rq: PingRequest) -> Outcome:
    # never rate-limited: heartbeats keep connections alive (the endpoint's per-turn batch
    # keeps a flood of them from delaying anyone else)
    return Outcome(Ok(rq.id, PingReply(ts=cx.now)))


def signup(cx: Ctx, c: Connection, rq: SignupRequest) -> Outcome:
    if c.user is not None:
        raise fail(ErrorCode.ALREADY_AUTHENTICATED, "already logged in on this connection")
    problem = username_problem(rq.username)
    if problem is not None:
        raise fail(ErrorCode.INVALID_FIELD, problem, field="username")
    key = user_key(rq.username)
    holds = cx.sessions.signups
    # Taken, or being signed up right now by another connection (its password is being
    # hashed): the same answer, and no hashing for this one.
    if key in cx.state.users or holds.get(key, c.id) != c.id:
        raise fail(ErrorCode.USERNAME_TAKEN, f"the name {rq.username!r} is taken")
    problem = password_problem(rq.password, cx.cfg.password_min_length)
    if problem is not None:
        raise fail(ErrorCode.WEAK_PASSWORD, problem, min_length=cx.cfg.password_min_length)
    # The name is held while the hash is computed (released when this round completes, or
    # when the connection goes away: Sessions.close / ChatService.abandon).
    holds[key] = c.id
    password_hash: str = cx.need(HashPassword(rq.password))
    del holds[key]
    now = cx.now
    out = cx.out()
    rec = UserRecord(rq.username, password_hash, "member", now)
    out.writes.append(CreateUser(rec.name, rec.password_hash, rec.role, now))
    u = cx.state.users[key] = UserState(rec, key)
    # a new account starts after every broadcast made so far
    if cx.state.broadcast_last:
        cx.state.broadcast_cursors[key] = cx.state.broadcast_last
        out.writes.append(SetBroadcastCursor(u.name, cx.state.broadcast_last))
    start_session(cx, c, u, out)
    issued = _issue_token(cx, c, u, out)
    log_event(logging.INFO, "signup", user=u.name, peer=c.peer, conn=c.id)
    return out.done(Ok(rq.id, session_reply(cx, u, issued=issued)))


def _issue_token(cx: Ctx, c: Connection, u: UserState, out: Out) -> tuple[str, float] | None:
    """A new session token for `c`'s session of `u` (None when tokens are off)."""
    tokens = cx.state.tokens
    if not tokens.enabled:
        return None
    issued = tokens.issue(u.key, cx.entropy(TOKEN_BYTES), cx.now)
    for dropped in issued.dropped:
        out.writes.append(RevokeSessionTokens(u.name, dropped))
    out.writes.append(AddSessionToken(issued.token_hash, u.name, issued.expires))
    c.token_hash = issued.token_hash
    return issued.token, issued.expires


def _locked(name: str, wait: float, c: Connection) -> ProtocolError:
    retry = math.ceil(wait * 1000) / 1000
    log_event(
        logging.WARNING, "locked out", user=name, peer=c.peer, conn=c.id, seconds=round(wait, 3)
    )
    return fail(
        ErrorCode.LOCKED_OUT,
        f"too many failed logins; try again in {math.ceil(wait)} s",
        retry_after=retry,
    )


def _count_failure(cx: Ctx, c: Connection, name: str) -> float:
    """Count a failed check for user `name` from `c`'s address in the throttles (on every
    node: they are shared); how long the pair is now locked out (0: not locked)."""
    key = user_key(name)
    if cx.cfg.cluster:
        cx.tell(LoginFailed(key, c.address, cx.now))
    return cx.sessions.throttle.failure(key, c.address, cx.now)


def _bad_token(cx: Ctx, c: Connection, name: str) -> ProtocolError:
    """A token that is not (or no longer) valid for user `name`: counted like a wrong
    password (a token cannot be guessed, but nobody gets to try forever)."""
    locked = _count_failure(cx, c, name)
    log_event(logging.WARNING, "token login failed", user=name, peer=c.peer, conn=c.id)
    if locked > 0:
        return _locked(name, locked, c)
    return fail(
        ErrorCode.BAD_CREDENTIALS,
        "the session token is not valid (expired or revoked); log in with your password",
        token=True,
    )


def _wrong_password(cx: Ctx, c: Connection, name: str, what: str) -> ProtocolError:
    """Count a failed password check of user `name` from `c`'s address; the error to answer
    (the same shape whether the user exists or not)."""
    locked = _count_failure(cx, c, name)
    log_event(logging.WARNING, f"{what} failed", user=name, peer=c.peer, conn=c.id)
    if locked > 0:
        return _locked(name, locked, c)
    if what == "login":
        return fail(ErrorCode.BAD_CREDENTIALS, "wrong user name or password")
    return fail(ErrorCode.BAD_CREDENTIALS, "the old password is wrong")


def _session_alive(cx: Ctx, conn: int) -> bool:
    """Whether an existing session showed life within two heartbeats."""
    other = cx.sessions.conns.get(conn)
    return other is not None and cx.now - other.last_request <= 2 * cx.cfg.heartbeat_s


def login(cx: Ctx, c: Connection, rq: LoginRequest) -> Outcome:
    if c.user is not None:
        raise fail(ErrorCode.ALREADY_AUTHENTICATED, "already logged in on this connection")
    state, now = cx.state, cx.now
    key = user_key(rq.username)
    wait = cx.sessions.throttle.locked_for(key, c.address, now)
    if wait > 0:
        raise _locked(rq.username, wait, c)
    u = state.users.get(key)
    token_hash: str | None = None
    new_hash: str | None = None
    if rq.token is not None:
        # a session token: a hash lookup, no password work (reconnects after a restart)
        token_hash = state.tokens.check(key, rq.token, now) if u is not None else None
        if u is None or token_hash is None:
            raise _bad_token(cx, c, rq.username)
    else:
        # An unknown name costs the same Argon2 work as a wrong password (an empty hash: the
        # adapter verifies against a dummy one), so neither the answer nor its time tells
        # them apart.
        password = rq.password or ""
        verified: Verified = cx.need(VerifyPassword(u.password_hash if u else "", password))
        if u is None or not verified.ok:
            raise _wrong_password(cx, c, rq.username, "login")
        new_hash = verified.new_hash
    ban = state.bans.active(key, now)
    if ban is not None:
        log_event(logging.WARNING, "login refused: banned", user=u.name, peer=c.peer, conn=c.id)
        raise fail(
            ErrorCode.BANNED,
            "you are banned "
            + ("permanently" if ban.until is None else f"until {utc(ban.until)}")
            + (f": {ban.reason}" if ban.reason else ""),
            until=ban.until,
            reason=ban.reason,
        )
    policy = cx.cfg.duplicate_login
    existing = list(cx.sessions.of(u.key)) if policy != "allow" else []
    elsewhere = policy != "allow" and u.key in cx.sessions.remote  # on another node
    if policy == "reject" and (elsewhere or any(_session_alive(cx, conn) for conn in existing)):
        log_event(
            logging.INFO, "login refused: already logged in", user=u.name, peer=c.peer, conn=c.id
        )
        raise fail(ErrorCode.ALREADY_LOGGED_IN, f"{u.name} is already logged in elsewhere")
    plan = plan_catch_up(cx, u, rq.resume)  # may need store reads: before any change
    cx.sessions.throttle.success(key, c.address)
    if cx.cfg.cluster:
        cx.tell(LoginSucceeded(key, c.address))
    out = cx.out()
    if new_hash is not None:
        u.password_hash = new_hash
        out.writes.append(SetPassword(u.name, u.password_hash))
    # The session of whoever holds the password takes over: the old one is told why and
    # closed (with `reject`, only when it had gone silent). No presence flicker for others.
    for conn in existing:
        old = cx.sessions.conns.get(conn)
        if old is not None:
            end_session(cx, old, out, quiet=True)
        out.close.append((conn, ErrorCode.LOGGED_OUT.value, f"you logged in again from {c.peer}"))
        log_event(logging.INFO, "session replaced", user=u.name, conn=conn, by_conn=c.id)
    if elsewhere:  # `replace`: the sessions on other nodes end too, quietly
        reason = f"you logged in again from {c.peer}"
        cx.tell(EndSessions(u.key, ErrorCode.LOGGED_OUT.value, reason, quiet=True))
    start_session(cx, c, u, out, quiet=bool(existing) or elsewhere)
    issued: tuple[str, float] | None
    if token_hash is not None and rq.token is not None:  # the same token goes on
        c.token_hash = token_hash
        issued = (rq.token, state.tokens.expires(token_hash) or now)
    else:
        issued = _issue_token(cx, c, u, out)
    plan.apply(cx, c, u, out)
    log_event(
        logging.INFO,
        "login",
        user=u.name,
        peer=c.peer,
        conn=c.id,
        truncated=plan.truncated,
        by="token" if token_hash is not None else "password",
    )
    return out.done(Ok(rq.id, session_reply(cx, u, plan.truncated, issued)))


def logout(cx: Ctx, c: Connection, rq: LogoutRequest) -> Outcome:
    u = cx.user(c)
    log_event(logging.INFO, "logout", user=u.name, peer=c.peer, conn=c.id)
    out = cx.out()
    # this session's token ends with it (a client that logs out does not come back with it)
    if c.token_hash is not None and cx.state.tokens.revoke(u.key, c.token_hash):
        out.writes.append(RevokeSessionTokens(u.name, c.token_hash))
    c.token_hash = None
    end_session(cx, c, out)
    return out.done(Ok(rq.id, EmptyReply()))


def passwd(cx: Ctx, c: Connection, rq: PasswdRequest) -> Outcome:
    u = cx.user(c)
    # the cheap check first: a refused change costs no Argon2 work
    problem = password_problem(rq.new_password, cx.cfg.password_min_length)
    if problem is not None:
        raise fail(ErrorCode.WEAK_PASSWORD, problem, min_length=cx.cfg.password_min_length)
    wait = cx.sessions.throttle.locked_for(u.key, c.address, cx.now)
    if wait > 0:
        raise _locked(u.name, wait, c)
    verified: Verified = cx.need(VerifyPassword(u.password_hash, rq.old_password))
    if not verified.ok:
        raise _wrong_password(cx, c, u.name, "password change")
    cx.sessions.throttle.success(u.key, c.address)
    new_hash: str = cx.need(HashPassword(rq.new_password))
    u.password_hash = new_hash
    out = cx.out()
    out.writes.append(SetPassword(u.name, u.password_hash))
    # every token was issued on the old password: all are revoked, this session gets a new one
    cx.state.tokens.revoke(u.key)
    cx.file_tokens.revoke(u.key, cx.now)
    out.writes.append(RevokeSessionTokens(u.name))
    issued = _issue_token(cx, c, u, out)
    # the user's other sessions were opened with the old password: they end
    others = [conn for conn in cx.sessions.of(u.key) if conn != c.id]
    for conn in others:
        other = cx.sessions.conns.get(conn)
        if other is not None:
            end_session(cx, other, out)
        out.close.append(
            (
                conn,
                ErrorCode.LOGGED_OUT.value,
                "your password was changed on another connection; log in again",
            )
        )
    if cx.cfg.cluster:  # and those on the other nodes
        reason = "your password was changed on another connection; log in again"
        cx.tell(EndSessions(u.key, ErrorCode.LOGGED_OUT.value, reason))
    log_event(
        logging.INFO, "password changed", user=u.name, peer=c.peer, ended_sessions=len(others)
    )
    if issued is None:
        return out.done(Ok(rq.id, PasswdReply()))
    return out.done(Ok(rq.id, PasswdReply(token=issued[0], token_expires=issued[1])))
