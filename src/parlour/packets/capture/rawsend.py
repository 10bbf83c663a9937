"""Thin adapter: put hand-built IPv4 datagrams on a raw socket (needs root / CAP_NET_RAW)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Sequence

__all__ = ["RawSocketError", "send_packets"]


class RawSocketError(OSError):
    """Raw sockets are unavailable (not root, no CAP_NET_RAW) or sending failed."""


def send_packets(
    datagrams: Iterable[bytes],
    *,
    loopback_only: bool = True,
    times_ns: Sequence[int] | None = None,
    speed: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send each complete IPv4 datagram (header included) to its destination address.

    With *times_ns* (one per datagram) the datagrams go out spaced as those times say,
    *speed* times faster. With *loopback_only* (the default) nothing is sent unless every
    destination is in 127.0.0.0/8: hand-built packets are for the lab, not for the network.
    """
    datagrams = list(datagrams)
    if times_ns is not None and len(times_ns) != len(datagrams):
        raise ValueError("one time per datagram")
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
    start = clock()
    with sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        for i, datagram in enumerate(datagrams):
            if times_ns is not None:
                delay = start + (times_ns[i] - times_ns[0]) / 1e9 / speed - clock()
                if delay > 0:
                    sleep(delay)  # pacing the packets like the CSV, not synchronisation
            dst = socket.inet_ntoa(datagram[16:20])
            try:
                sock.sendto(datagram, (dst, 0))
            except OSError as exc:
                raise RawSocketError(f"sending to {dst} failed: {exc.strerror}") from exc
            count += 1
    return count
