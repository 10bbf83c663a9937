"""Sessions: starting and ending them, presence events, and the reply that opens one."""

from __future__ import annotations

from parlour.core.context import Ctx, Out
from parlour.core.handlers import files
from parlour.core.outcome import EndSessions, SessionsChanged, ToPresence
from parlour.core.sessions import Connection
from parlour.core.state import UserState
from parlour.core.writes import RecordLogin, SetBroadcastCursor
from parlour.protocol import ErrorCode, PresenceEvent, SessionReply

__all__ = ["end_all_sessions", "end_session", "presence", "session_reply", "start_session"]


def start_session(cx: Ctx, c: Connection, u: UserState, out: Out, *, quiet: bool = False) -> None:
    """Log `c` in as `u`; co-members hear `u` came online (unless `quiet`: a session that
    replaces another)."""
    now = cx.now
    elsewhere = u.key in cx.sessions.remote  # online on another node already
    first = cx.sessions.start(c, u.key, u.rooms, now)
    u.last_login = now
    u.last_active = now
    out.writes.append(RecordLogin(u.name, now))
    if cx.cfg.cluster:
        cx.tell(SessionsChanged(u.key, 1))
    if first and not quiet and not elsewhere:
        presence(cx, u, True, out)
    if cx.offers.by_id:
        files.session_started(cx, c, u, out)


def end_session(cx: Ctx, c: Connection, out: Out, *, quiet: bool = False) -> None:
    """End `c`'s session; co-members hear `u` went offline when it was the last one (unless
    `quiet`: it is being replaced)."""
    if c.user is None:
        return
    u = cx.state.users[c.user]
    files.session_ended(cx, c, out)
    last = cx.sessions.end(c, u.rooms)
    u.last_active = cx.now
    if cx.cfg.cluster:
        cx.tell(SessionsChanged(u.key, -1))
    if last:
        # online until now: every broadcast so far reached them live
        state = cx.state
        if state.broadcast_last > state.broadcast_cursors.get(u.key, 0):
            state.broadcast_cursors[u.key] = state.broadcast_last
            out.writes.append(SetBroadcastCursor(u.name, state.broadcast_last))
    if last and not quiet and u.key not in cx.sessions.remote:
        presence(cx, u, False, out)


def presence(cx: Ctx, u: UserState, online: bool, out: Out) -> None:
    """Tell the online co-members of `u`'s rooms (rooms with at most `presence_room_limit`
    live sessions) that `u` came or went; never `u` itself, nor users who block `u`
    (docs/design/core-blocking.md). Every node resolves the address against its own."""
    out.event(PresenceEvent(user=u.name, online=online, ts=cx.now), ToPresence(u.key))


def end_all_sessions(
    cx: Ctx,
    u: UserState,
    code: ErrorCode,
    reason: str,
    out: Out,
    *,
    quiet: bool = False,
    everywhere: bool = True,
) -> int:
    """End every live session of `u` on this node and close its connections; with several
    nodes, the other nodes are told to end theirs too (unless not `everywhere`). Returns how
    many sessions ended here."""
    conns = list(cx.sessions.of(u.key))
    for conn in conns:
        c = cx.sessions.conns.get(conn)
        if c is not None:
            end_session(cx, c, out, quiet=quiet)
        out.close.append((conn, code.value, reason))
    if everywhere and cx.cfg.cluster:
        cx.tell(EndSessions(u.key, code.value, reason, quiet))
    return len(conns)


def session_reply(
    cx: Ctx, u: UserState, truncated: bool = False, issued: tuple[str, float] | None = None
) -> SessionReply:
    rooms = sorted(cx.state.rooms[rk].name for rk in u.rooms)
    # more to catch up: the client asks again with `sync` from what it received
    return SessionReply(
        username=u.name,
        role=u.role,
        rooms=rooms,
        truncated=True if truncated else None,
        token=issued[0] if issued is not None else None,
        token_expires=issued[1] if issued is not None else None,
    )
