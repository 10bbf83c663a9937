"""IPv4 and MAC address conversions (text <-> integers/bytes) with clear errors."""

from __future__ import annotations

import socket

__all__ = ["format_ipv4", "format_mac", "ipv4_to_bytes", "ipv4_to_int", "parse_mac"]


def ipv4_to_bytes(text: str) -> bytes:
    """Dotted-quad to 4 bytes; ``ValueError`` on anything else."""
    try:
        return socket.inet_aton(text) if text.count(".") == 3 else _bad(text)
    except OSError:
        return _bad(text)


def _bad(text: str) -> bytes:
    raise ValueError(f"not an IPv4 address: {text!r}")


def ipv4_to_int(text: str) -> int:
    return int.from_bytes(ipv4_to_bytes(text), "big")


def format_ipv4(raw: bytes | int) -> str:
    if isinstance(raw, int):
        raw = raw.to_bytes(4, "big")
    return socket.inet_ntoa(raw)


def parse_mac(text: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` (or with ``-``) to 6 bytes; ``ValueError`` otherwise."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    try:
        values = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {text!r}") from None
    if any(len(p) not in (1, 2) for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    return values


def format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)
