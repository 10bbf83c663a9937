"""Password hashing with Argon2id (argon2-cffi) behind the `PasswordHasher` port."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["Argon2Hasher", "generate_password"]


class Argon2Hasher:
    """Argon2id hashes in PHC string form. Defaults are argon2-cffi's (RFC 9106 low-memory
    profile); tests pass cheap parameters (e.g. ``time_cost=1, memory_cost=8``)."""

    __slots__ = ("_ph",)

    def __init__(
        self, *, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 4
    ) -> None:
        self._ph = _Argon2(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=Type.ID,
        )

    def hash(self, password: str) -> str:
        return self._ph.hash(password)

    def verify(self, hash: str, password: str) -> bool:
        try:
            return self._ph.verify(hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, hash: str) -> bool:
        try:
            return self._ph.check_needs_rehash(hash)
        except (InvalidHashError, ValueError):
            return True


def generate_password(nbytes: int = 18) -> str:
    """A random strong password (URL-safe text, 24 characters for the default 18 bytes)."""
    return secrets.token_urlsafe(nbytes)
