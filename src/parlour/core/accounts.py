"""Account rules: user-name and password validation (login throttling: `throttles`)."""

from __future__ import annotations

import re

__all__ = ["NAME_RULE", "password_problem", "username_problem"]

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
