"""Thin adapter: put hand-built IPv4 datagrams on a raw socket (needs root / CAP_NET_RAW)."""

from __future__ import annotations

import socket
from collections.abc import Iterable

__all__ = ["RawSocketError", "send_packets"]


class RawSocketError(OSError):
    """Raw sockets are unavailable (not root, no CAP_NET_RAW) or sending failed."""


def send_packets(datagrams: Iterable[bytes], *, loopback_only: bool = True) -> int:
    """Send each complete IPv4 datagram (header included) to its destination address.

    With *loopback_only* (the default) nothing is sent unless every destination is in
    127.0.0.0/8: hand-built packets are for the lab, not for the network.
    """
    datagrams = list(datagrams)
    if loopback_only:
        for d in datagrams:
            if len(d) < 20 or d[16] != 127:
                dst = socket.inet_ntoa(d[16:20]) if len(d) >= 20 else "?"
                raise RawSocketError(
                    f"refusing to send to {dst}: --send only puts packets on loopback "
                    "(127.0.0.0/8); leave --hosts out or map the names to 127.0.0.x"
                )
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
