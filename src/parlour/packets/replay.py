"""Thin adapter: replay a conversation's client messages over a real kernel TCP connection.

The first sender in the message list plays the client; its messages are written in order
(spaced like the CSV timestamps, scaled by *speed*) and whatever the listener answers is read
and counted, so the exchange can be captured with ``parlour packets capture``.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from parlour.packets.conversation import AppMessage

__all__ = ["ReplayError", "ReplayReport", "parse_hostport", "replay_messages"]

_READ_LIMIT = 16 * 1024 * 1024


class ReplayError(OSError):
    """The listener could not be reached or the connection failed."""


@dataclass(frozen=True, slots=True)
class ReplayReport:
    target: str
    sent_messages: int
    sent_bytes: int
    received_bytes: int

    def __str__(self) -> str:
        return (
            f"replayed {self.sent_messages} messages ({self.sent_bytes} bytes) to {self.target}; "
            f"received {self.received_bytes} bytes"
        )


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ReplayError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def replay_messages(
    messages: Sequence[AppMessage],
    target: str,
    *,
    speed: float = 1.0,
    timeout: float = 5.0,
    linger: float = 0.2,
) -> ReplayReport:
    """Connect to *target* and send the client's messages; returns what happened."""
    host, port = parse_hostport(target)
    if not messages:
        raise ReplayError("no messages to replay")
    ordered = sorted(messages, key=lambda m: m.ts_ns)
    client = (ordered[0].src.ip, ordered[0].src.port)
    mine = [m for m in ordered if (m.src.ip, m.src.port) == client]
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ReplayError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    received = 0
    sent = 0
    sel = selectors.DefaultSelector()
    with sock, sel:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        start = time.monotonic()
        base = mine[0].ts_ns

        def drain(until: float) -> None:
            nonlocal received
            while True:
                left = until - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    return
                received += len(chunk)
                if received > _READ_LIMIT:
                    return

        try:
            for m in mine:
                due = start + (m.ts_ns - base) / 1e9 / max(speed, 1e-9)
                drain(due)
                sock.setblocking(True)
                sock.sendall(m.payload)
                sock.setblocking(False)
                sent += len(m.payload)
            drain(time.monotonic() + linger)
            sock.shutdown(socket.SHUT_WR)
            drain(time.monotonic() + linger)
        except OSError as exc:
            raise ReplayError(f"connection to {host}:{port} failed: {exc.strerror or exc}") from exc
    return ReplayReport(f"{host}:{port}", len(mine), sent, received)
