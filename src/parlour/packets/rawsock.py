"""Thin adapter: put hand-built IPv4 datagrams on a raw socket (needs root / CAP_NET_RAW)."""

from __future__ import annotations

import socket
from collections.abc import Iterable

__all__ = ["RawSocketError", "send_packets"]


class RawSocketError(OSError):
    """Raw sockets are unavailable (not root, no CAP_NET_RAW) or sending failed."""


def send_packets(datagrams: Iterable[bytes]) -> int:
    """Send each complete IPv4 datagram (header included) to its destination address."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        raise RawSocketError(
            "sending raw packets needs root (or CAP_NET_RAW): run with sudo, or use --replay "
            "to replay the messages over a normal TCP connection"
        ) from None
    count = 0
    with sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        for datagram in datagrams:
            dst = socket.inet_ntoa(datagram[16:20])
            try:
                sock.sendto(datagram, (dst, 0))
            except OSError as exc:
                raise RawSocketError(f"sending to {dst} failed: {exc.strerror}") from exc
            count += 1
    return count
