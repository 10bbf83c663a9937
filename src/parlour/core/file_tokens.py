"""File tokens: short-lived bearer tokens for the files endpoints (sans-I/O; randomness and
time passed in).

`file_token` answers a random token (256 bits, URL-safe base64, as session tokens); the node
keeps only its SHA-256 with the user and an expiry. The token is scoped to the files endpoints
(tus uploads and downloads, docs/design/files.md): it cannot log in to chat. Tokens are
node-local: a cluster routes a user's HTTP requests to the node that issued them or the client
asks the node it talks to for a new one (401 -> ask again). Expired ones are dropped as new
ones are issued; each user holds at most `per_user` (the oldest goes first).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from parlour.core.tokens import hash_token, token_text

__all__ = ["FileTokenHolder", "FileTokens"]


@dataclass(frozen=True, slots=True)
class FileTokenHolder:
    """Who a valid file token belongs to: the user's key and display name."""

    key: str
    name: str
    expires: float


class FileTokens:
    __slots__ = ("_by_hash", "_by_user", "per_user", "ttl")

    def __init__(self, ttl: float, per_user: int = 16) -> None:
        self.ttl = ttl
        self.per_user = max(1, per_user)
        self._by_hash: dict[str, FileTokenHolder] = {}
        self._by_user: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self._by_hash)

    def issue(self, key: str, name: str, raw: bytes, now: float) -> tuple[str, float]:
        """A new token for user `key` (display name `name`) from `raw` random bytes: the
        token and its expiry."""
        token = token_text(raw)
        h = hash_token(token)
        mine = self._by_user.setdefault(key, [])
        for old in [t for t in mine if self._by_hash[t].expires <= now]:
            self._drop(key, old)
        while len(mine) >= self.per_user:
            self._drop(key, mine[0])
        expires = now + self.ttl
        self._by_hash[h] = FileTokenHolder(key, name, expires)
        mine.append(h)
        return token, expires

    def check(self, token: str, now: float) -> FileTokenHolder | None:
        """The holder of `token` when it is valid at `now`."""
        if not token or len(token) > 128 or not token.isascii():
            return None
        h = hash_token(token)
        found = self._by_hash.get(h)
        if found is None:
            return None
        # the lookup found it by hash; compare once more in constant time all the same
        if not hmac.compare_digest(h, hash_token(token)) or found.expires <= now:
            return None
        return found

    def revoke(self, key: str) -> None:
        """Drop every token of user `key` (log-out everywhere, password change, ban)."""
        for h in self._by_user.pop(key, []):
            self._by_hash.pop(h, None)

    def _drop(self, key: str, h: str) -> None:
        self._by_hash.pop(h, None)
        mine = self._by_user.get(key)
        if mine is not None and h in mine:
            mine.remove(h)
