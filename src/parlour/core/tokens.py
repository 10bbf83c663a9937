"""Session tokens: log in again without the password (sans-I/O; randomness passed in).

A login with a password is answered with a random token (256 bits, URL-safe base64); the
server keeps only its SHA-256, with the user and an expiry. A later `login` with the token
costs a hash lookup instead of Argon2 work, which is what lets hundreds of clients come back
at once after a restart, and lets a browser tab reload without asking for the password again.
A user holds at most `per_user` tokens (the oldest is dropped); `logout` revokes the
session's token, a password change revokes all of them (docs/design/session-tokens.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from parlour.core.records import SessionTokenRecord, user_key

__all__ = ["TOKEN_BYTES", "Issued", "SessionTokens", "hash_token", "token_text"]

#: random bytes per token
TOKEN_BYTES = 32


def token_text(raw: bytes) -> str:
    """The wire form of a token: URL-safe base64 without padding (43 characters)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def hash_token(token: str) -> str:
    """What the server stores of a token."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class Issued:
    """A new token (to hand to the client once), its hash and expiry, and the hashes of the
    user's tokens dropped to make room."""

    token: str
    token_hash: str
    expires: float
    dropped: tuple[str, ...]


class SessionTokens:
    """The valid tokens by hash, and each user's in the order issued."""

    __slots__ = ("_by_hash", "_by_user", "per_user", "ttl")

    def __init__(self, ttl: float, per_user: int, loaded: Iterable[SessionTokenRecord]) -> None:
        self.ttl = ttl
        self.per_user = per_user
        self._by_hash: dict[str, tuple[str, float]] = {}
        self._by_user: dict[str, list[str]] = {}
        for rec in sorted(loaded, key=lambda t: t.expires):
            self._add(rec.token_hash, user_key(rec.user), rec.expires)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def __len__(self) -> int:
        return len(self._by_hash)

    def _add(self, token_hash: str, key: str, expires: float) -> None:
        self._by_hash[token_hash] = (key, expires)
        self._by_user.setdefault(key, []).append(token_hash)

    def issue(self, key: str, raw: bytes, now: float) -> Issued:
        """A new token for user `key` from `raw` random bytes."""
        token = token_text(raw)
        token_hash = hash_token(token)
        mine = self._by_user.get(key, [])
        dropped: list[str] = []
        # expired ones first, then the oldest while over the limit
        for h in list(mine):
            if self._by_hash[h][1] <= now:
                dropped.append(h)
        keep = [h for h in mine if h not in dropped]
        while len(keep) >= self.per_user > 0:
            dropped.append(keep.pop(0))
        for h in dropped:
            self._drop(h)
        expires = now + self.ttl
        self._add(token_hash, key, expires)
        return Issued(token, token_hash, expires, tuple(dropped))

    def remember(self, token_hash: str, key: str, expires: float) -> None:
        """A token another node issued (several nodes): valid here too."""
        if token_hash in self._by_hash:
            self._drop(token_hash)
        self._add(token_hash, key, expires)

    def check(self, key: str, token: str, now: float) -> str | None:
        """The token's hash when `token` is a valid token of user `key` at `now`."""
        token_hash = hash_token(token)
        found = self._by_hash.get(token_hash)
        if found is None:
            return None
        owner, expires = found
        # the hash lookup found it; compare the owner in constant time all the same
        if not hmac.compare_digest(owner, key) or expires <= now:
            return None
        return token_hash

    def expires(self, token_hash: str) -> float | None:
        found = self._by_hash.get(token_hash)
        return None if found is None else found[1]

    def revoke(self, key: str, token_hash: str | None = None) -> bool:
        """Drop one of `key`'s tokens, or all of them (None); whether any was dropped."""
        if token_hash is None:
            hashes = self._by_user.pop(key, [])
            for h in hashes:
                self._by_hash.pop(h, None)
            return bool(hashes)
        found = self._by_hash.get(token_hash)
        if found is None or found[0] != key:
            return False
        self._drop(token_hash)
        return True

    def _drop(self, token_hash: str) -> None:
        key, _ = self._by_hash.pop(token_hash)
        mine = self._by_user.get(key)
        if mine is not None:
            mine.remove(token_hash)
            if not mine:
                del self._by_user[key]
