"""What the bus remembers of its messages: the login checks, for the login throttles.

Pub/sub forgets a message once it is delivered, and the store does not record failed
passwords; so a node that starts (or restarts) would throttle from nothing, and an attacker
could guess on it until its own counters filled. Every bus keeps the recent `LoginFailed` and
`LoginSucceeded` effects instead — at most `MAX_ENTRIES`, for at most `HORIZON` seconds (the
throttle's longest window and lock) — and a starting node replays them
(`ClusterNode.restore_logins`).
"""

from __future__ import annotations

from parlour.core.outcome import LoginFailed, LoginSucceeded, RemoteEffect
from parlour.core.ports import BusMessage

__all__ = ["HORIZON", "MAX_ENTRIES", "login_checks"]

#: login checks kept at most (the throttle's own tables hold 10,000 entries each)
MAX_ENTRIES = 20_000
#: seconds a login check is kept (an account's window and the longest lock are an hour)
HORIZON = 2 * 3600.0


def login_checks(message: BusMessage) -> tuple[RemoteEffect, ...]:
    """The effects of `message` that the journal keeps (usually none)."""
    if not message.effects:
        return ()
    return tuple(e for e in message.effects if isinstance(e, LoginFailed | LoginSucceeded))
