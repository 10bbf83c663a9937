"""Keys for one transfer: HELLO authentication and per-direction packet protection.

The chat server hands both clients the same fresh 32-byte key per transfer. From it:

* ``hello key = HKDF-SHA256(key, info="parlour-p2p/1 hello" + transfer id)``: HELLOs carry
  ``HMAC-SHA256(hello key, body)[:16]`` (HELLOs are never encrypted, so no nonce is needed);
* per attempt, each side picks a fresh 16-byte random and learns the peer's from its HELLO;
  ``salt = sender random + receiver random`` and, for each direction,
  ``key || iv = HKDF-SHA256(key, salt, info="parlour-p2p/1 s2r|r2s" + transfer id, 44)``.

Packets are sealed with ChaCha20-Poly1305; the nonce is ``iv XOR packet number`` (as in TLS
1.3 and QUIC). A packet number is used once per direction and per attempt, and every attempt
(including a resume under the same key) has new randoms and so new keys: no nonce is ever
used twice under one key. The directions have separate keys, so a packet reflected back to
its sender does not open.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .wire import MAC_LEN

__all__ = ["KEY_LEN", "InvalidTag", "PacketKey", "TransferKeys"]

KEY_LEN = 32
_LABEL = b"parlour-p2p/1 "


def _hkdf(key: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


class PacketKey:
    """Seals or opens the packets of one direction of one attempt."""

    __slots__ = ("_aead", "_iv", "aead", "iv")

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._aead = self.aead = ChaCha20Poly1305(key)  # (public for the hot loops)
        self._iv = self.iv = int.from_bytes(iv, "big")

    def seal(self, header: bytes, pn: int, plaintext: bytes) -> bytes:
        """``header + ciphertext + tag`` with ``header`` as associated data."""
        nonce = (self._iv ^ pn).to_bytes(12, "big")
        return header + self._aead.encrypt(nonce, plaintext, header)

    def open(self, header: bytes, pn: int, sealed: bytes | memoryview) -> bytes:
        """The plaintext; raises :class:`InvalidTag` for anything forged or damaged."""
        nonce = (self._iv ^ pn).to_bytes(12, "big")
        return self._aead.decrypt(nonce, sealed, header)


class TransferKeys:
    """Everything derived from the shared per-transfer key."""

    __slots__ = ("_hello", "_key", "_transfer_id")

    def __init__(self, key: bytes, transfer_id: bytes) -> None:
        if len(key) != KEY_LEN:
            raise ValueError(f"the transfer key must be {KEY_LEN} bytes")
        self._key = key
        self._transfer_id = transfer_id
        self._hello = _hkdf(key, None, _LABEL + b"hello" + transfer_id, 32)

    def hello_mac(self, body: bytes) -> bytes:
        return hmac.new(self._hello, body, hashlib.sha256).digest()[:MAC_LEN]

    def hello_ok(self, body: bytes, mac: bytes) -> bool:
        return hmac.compare_digest(self.hello_mac(body), mac)

    def session(self, sender_random: bytes, receiver_random: bytes) -> tuple[PacketKey, PacketKey]:
        """(sender-to-receiver key, receiver-to-sender key) for one attempt."""
        salt = sender_random + receiver_random
        keys = []
        for label in (b"s2r", b"r2s"):
            material = _hkdf(self._key, salt, _LABEL + label + self._transfer_id, 44)
            keys.append(PacketKey(material[:32], material[32:]))
        return keys[0], keys[1]
