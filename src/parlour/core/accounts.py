"""Account rules: user-name and password validation (login throttling: `throttles`)."""

from __future__ import annotations

from parlour.protocol.names import InvalidName, is_valid_name, normalize_name

__all__ = ["password_problem", "username_problem"]


def username_problem(name: str) -> str | None:
    """Why `name` is not a valid user (or room) name in its normal form, or None when it
    is (the protocol layer normalises names it receives; this guards every other way in)."""
    if is_valid_name(name):
        return None
    try:
        normal = normalize_name(name)
    except InvalidName as exc:
        return f"the name {exc}"
    return f"the name is not in its normal form (use {normal!r})"


def password_problem(password: str, min_length: int) -> str | None:
    """Why `password` is not acceptable, or None when it is."""
    if len(password) < min_length:
        return f"the password must have at least {min_length} characters"
    if password.isspace():
        return "the password must not be only spaces"
    return None
