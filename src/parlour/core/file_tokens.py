"""File tokens: short-lived bearer tokens for the files endpoints (sans-I/O; time passed in).

A token is ``<payload>.<mac>`` in URL-safe base64: the payload names the user (key), when the
token was issued and when it expires; the MAC is HMAC-SHA256 of the payload under the node's
file-token key. Checking one needs no table, so every node that holds the same key accepts
every node's tokens: a cluster's nodes share it (the ``secret_key`` setting,
docs/operations.md), and a client whose chat connection is on one node may send its uploads
and downloads through a load balancer to any other. A node without ``secret_key`` draws a
random key when it starts; its tokens then end with the process (a client asks again on 401).

The key signs nothing else (it is derived with its own label), so a file token is scoped to
the files endpoints: it cannot log in to chat. A password change revokes the user's tokens:
those issued up to that moment are refused (`revoke`, applied by every node that applies the
change); a revocation is forgotten once every token it could refuse has expired, so the table
holds at most the users who changed their password within one token lifetime.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["MAX_TOKEN_LENGTH", "FileTokenHolder", "FileTokens", "file_token_key"]

_VERSION = 1
_HEAD = struct.Struct(">BQQ")  # version, issued and expires in milliseconds
#: longest token accepted (a user key is at most a few hundred bytes of UTF-8)
MAX_TOKEN_LENGTH = 600
#: most revocations remembered (each is forgotten after one token lifetime anyway)
MAX_REVOCATIONS = 100_000


def file_token_key(secret: str) -> bytes:
    """The file-token key derived from the operator's `secret_key`."""
    return hmac.new(secret.encode(), b"parlour file tokens v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class FileTokenHolder:
    """Who a valid file token belongs to (user key) and when it expires."""

    key: str
    expires: float


class FileTokens:
    """Issues and checks file tokens under one key; remembers recent revocations."""

    __slots__ = ("_key", "_revoked", "ttl")

    def __init__(self, ttl: float, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a file-token key has at least 16 bytes")
        self.ttl = ttl
        self._key = key
        #: user key -> the moment (ms) up to which its tokens are refused, oldest first
        self._revoked: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        """Revocations remembered."""
        return len(self._revoked)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, key: str, now: float) -> tuple[str, float]:
        """A new token for user key `key`: the token and its expiry."""
        issued = int(now * 1000)
        expires = issued + int(self.ttl * 1000)
        payload = _HEAD.pack(_VERSION, issued, expires) + key.encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}", expires / 1000

    def check(self, token: str, now: float) -> FileTokenHolder | None:
        """The holder of `token` when it is valid at `now`, else None."""
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            return None
        body, dot, mac = token.partition(".")
        if not dot:
            return None
        try:
            payload, given = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._mac(payload)) or len(payload) <= _HEAD.size:
            return None
        version, issued, expires = _HEAD.unpack_from(payload)
        try:
            key = payload[_HEAD.size :].decode()
        except UnicodeDecodeError:
            return None
        if version != _VERSION or expires <= now * 1000:
            return None
        if issued <= self._revoked.get(key, -1):
            return None
        return FileTokenHolder(key, expires / 1000)

    def revoke(self, key: str, now: float) -> None:
        """Refuse every token of user key `key` issued up to `now` (a password change)."""
        self._revoked.pop(key, None)
        self._revoked[key] = int(now * 1000)
        horizon = int((now - self.ttl) * 1000)
        while self._revoked:
            oldest, at = next(iter(self._revoked.items()))
            if at >= horizon and len(self._revoked) <= MAX_REVOCATIONS:
                break
            del self._revoked[oldest]
