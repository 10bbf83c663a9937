"""Account rules: user-name and password validation, and login lockout after failures."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "NAME_RULE",
    "LockoutState",
    "Lockouts",
    "password_problem",
    "username_problem",
]

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
NAME_RULE = "1-32 letters, digits, '_', '-' or '.'"


def username_problem(name: str) -> str | None:
    """Why `name` is not a valid user (or room) name, or None when it is."""
    if _NAME_RE.fullmatch(name) is None:
        return f"a name must be {NAME_RULE}"
    return None


def password_problem(password: str, min_length: int) -> str | None:
    """Why `password` is not acceptable, or None when it is."""
    if len(password) < min_length:
        return f"the password must have at least {min_length} characters"
    if password.isspace():
        return "the password must not be only spaces"
    return None


@dataclass(slots=True)
class LockoutState:
    failures: int = 0
    locked_until: float = 0.0


class Lockouts:
    """Consecutive failed logins per user key; `threshold` failures lock for `seconds`.

    At most `capacity` user keys are tracked (the oldest entry is dropped first), so guessing
    random names cannot grow memory without bound.
    """

    __slots__ = ("_capacity", "_seconds", "_states", "_threshold")

    def __init__(self, threshold: int, seconds: float, capacity: int = 10_000) -> None:
        self._threshold = threshold
        self._seconds = seconds
        self._capacity = max(1, capacity)
        self._states: OrderedDict[str, LockoutState] = OrderedDict()

    def locked_for(self, key: str, now: float) -> float:
        """Seconds until `key` may try again (0.0 when not locked)."""
        st = self._states.get(key)
        if st is None or st.locked_until <= now:
            return 0.0
        return st.locked_until - now

    def failure(self, key: str, now: float) -> float:
        """Record a failed login; returns the lockout length when this failure locks `key`,
        else 0.0."""
        st = self._states.get(key)
        if st is None:
            if len(self._states) >= self._capacity:
                self._states.popitem(last=False)
            st = self._states[key] = LockoutState()
        elif st.locked_until and st.locked_until <= now:
            st.locked_until = 0.0
        st.failures += 1
        if st.failures >= self._threshold:
            st.failures = 0
            st.locked_until = now + self._seconds
            return self._seconds
        return 0.0

    def success(self, key: str) -> None:
        """A successful login resets the count."""
        self._states.pop(key, None)

    def expire(self, now: float) -> list[str]:
        """Forget lockouts that ended; returns the keys unlocked."""
        done = [k for k, st in self._states.items() if st.locked_until and st.locked_until <= now]
        for k in done:
            del self._states[k]
        return done

    def __len__(self) -> int:
        return len(self._states)
