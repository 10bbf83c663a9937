"""Thin adapters: replay messages over real kernel TCP connections, so they can be captured.

:func:`replay_messages` plays the client against someone else's listener: the first sender's
messages are written in order (spaced like the CSV timestamps, scaled by *speed*) and whatever
the listener answers is read and counted. :func:`replay_loopback` plays *both* sides on
loopback with the CSV's own addresses and ports: a listener on each server port, a client socket
bound to each client port, every message written by its sender and read back in full by its
receiver before the next one, so the capture holds the whole conversation as the kernel's TCP
carried it (handshake, ACKs and teardown included).
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from parlour.packets.build.conversation import AppMessage, connection_ends

__all__ = [
    "LOOPBACK",
    "ReplayError",
    "ReplayReport",
    "parse_hostport",
    "replay_loopback",
    "replay_messages",
]

_READ_LIMIT = 16 * 1024 * 1024


class ReplayError(OSError):
    """The listener could not be reached or the connection failed."""


@dataclass(frozen=True, slots=True)
class ReplayReport:
    target: str
    sent_messages: int
    sent_bytes: int
    received_bytes: int
    connections: int = 1

    def __str__(self) -> str:
        over = f" over {self.connections} connections" if self.connections > 1 else ""
        return (
            f"replayed {self.sent_messages} messages ({self.sent_bytes} bytes) to "
            f"{self.target}{over}; received {self.received_bytes} bytes"
        )


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ReplayError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


@dataclass(slots=True)
class _Conn:
    """One replayed connection: the client's messages of one flow, to the target."""

    client: tuple[str, int]
    messages: list[AppMessage]
    sock: socket.socket | None = None
    sent: int = 0
    closed: bool = False
    done: bool = False


def _flows(ordered: Sequence[AppMessage]) -> list[_Conn]:
    """The client side of every connection in *ordered* (the builder's opener rules)."""
    conns: dict[tuple[frozenset[tuple[str, int]], str], _Conn] = {}
    for m in ordered:
        key = (frozenset(((m.src.ip, m.src.port), (m.dst.ip, m.dst.port))), m.connection)
        conn = conns.get(key)
        if conn is None:
            client, _server = connection_ends(m, ())
            conn = conns[key] = _Conn((client.ip, client.port), [])
        if (m.src.ip, m.src.port) == conn.client:
            conn.messages.append(m)
    return [c for c in conns.values() if c.messages]


def replay_messages(
    messages: Sequence[AppMessage],
    target: str,
    *,
    speed: float = 1.0,
    timeout: float = 5.0,
    linger: float = 0.2,
) -> ReplayReport:
    """Replay the client side of every connection in *messages* to *target*: one real TCP
    connection per flow, each message written when the CSV says (scaled by *speed*), the
    listener's answers read and counted."""
    host, port = parse_hostport(target)
    if not messages:
        raise ReplayError("no messages to replay")
    ordered = sorted((m for m in messages if m.payload), key=lambda m: m.ts_ns)
    conns = _flows(ordered)
    schedule = sorted(
        ((m.ts_ns, i, m) for i, c in enumerate(conns) for m in c.messages), key=lambda x: x[:2]
    )
    last_of = {i: c.messages[-1] for i, c in enumerate(conns)}
    sel = selectors.DefaultSelector()
    received = sent = count = 0
    base = schedule[0][0]
    start = time.monotonic()

    def drain(until: float) -> None:
        nonlocal received
        while True:
            left = until - time.monotonic()
            if left <= 0 or not sel.get_map():
                return
            for key, _ev in sel.select(left):
                conn: _Conn = key.data
                assert conn.sock is not None
                try:
                    chunk = conn.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    conn.closed = True
                    sel.unregister(conn.sock)
                    continue
                received += len(chunk)
                if received > _READ_LIMIT:
                    return

    def lost(conn: _Conn) -> ReplayError:
        return ReplayError(
            f"{host}:{port} closed the connection after {conn.sent} of {len(conn.messages)} "
            f"messages ({received} bytes received)"
        )

    try:
        for due_ns, i, m in schedule:
            conn = conns[i]
            drain(start + (due_ns - base) / 1e9 / max(speed, 1e-9))
            if conn.sock is None:
                try:
                    conn.sock = socket.create_connection((host, port), timeout=timeout)
                except OSError as exc:
                    raise ReplayError(
                        f"cannot connect to {host}:{port}: {exc.strerror or exc}"
                    ) from exc
                conn.sock.setblocking(False)
                sel.register(conn.sock, selectors.EVENT_READ, conn)
            if conn.closed:
                raise lost(conn)
            conn.sock.setblocking(True)
            try:
                conn.sock.sendall(m.payload)
            except (BrokenPipeError, ConnectionResetError):
                raise lost(conn) from None
            conn.sock.setblocking(False)
            sent += len(m.payload)
            count += 1
            conn.sent += 1
            if m is last_of[i]:
                drain(time.monotonic() + linger)
                if not conn.closed:
                    conn.sock.shutdown(socket.SHUT_WR)
        drain(time.monotonic() + linger)
    except ReplayError:
        raise
    except OSError as exc:
        raise ReplayError(f"connection to {host}:{port} failed: {exc.strerror or exc}") from exc
    finally:
        for c in conns:
            if c.sock is not None:
                c.sock.close()
        sel.close()
    return ReplayReport(f"{host}:{port}", count, sent, received, len(conns))


#: ``--replay loopback``: play both sides on 127.0.0.0/8 with the CSV's ports
LOOPBACK = "loopback"


def _loopback_ip(ip: str, who: str) -> str:
    if not ip.startswith("127."):
        raise ReplayError(
            f"loopback replay needs 127.x.x.x addresses, but {who} maps to {ip} "
            "(drop --hosts, or map names to 127.0.0.x)"
        )
    return ip


def replay_loopback(
    messages: Sequence[AppMessage], *, speed: float = 1.0, timeout: float = 5.0
) -> ReplayReport:
    """Play every flow of *messages* over real TCP connections on loopback; see the module."""
    if not messages:
        raise ReplayError("no messages to replay")
    ordered = sorted((m for m in messages if m.payload), key=lambda m: m.ts_ns)
    listeners: dict[tuple[str, int], socket.socket] = {}
    flows: dict[frozenset[tuple[str, int]], dict[tuple[str, int], socket.socket]] = {}
    remaining: dict[frozenset[tuple[str, int]], int] = {}
    for m in ordered:
        key = frozenset(((m.src.ip, m.src.port), (m.dst.ip, m.dst.port)))
        remaining[key] = remaining.get(key, 0) + 1
    sent = received = count = 0
    start = time.monotonic()
    base = ordered[0].ts_ns if ordered else 0

    def open_flow(m: AppMessage) -> dict[tuple[str, int], socket.socket]:
        server = (_loopback_ip(m.dst.ip, m.dst.name or m.dst.ip), m.dst.port)
        client = (_loopback_ip(m.src.ip, m.src.name or m.src.ip), m.src.port)
        lsock = listeners.get(server)
        if lsock is None:
            try:
                lsock = socket.create_server(server, reuse_port=False)
            except OSError as exc:
                raise ReplayError(
                    f"cannot listen on {server[0]}:{server[1]}: {exc.strerror or exc}"
                ) from exc
            lsock.settimeout(timeout)
            listeners[server] = lsock
        csock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            csock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            csock.settimeout(timeout)
            csock.bind(client)
            csock.connect(server)
            while True:
                ssock, peer = lsock.accept()
                if peer[:2] == client:
                    break
                ssock.close()  # somebody else's connection: not part of the replay
        except OSError as exc:
            csock.close()
            raise ReplayError(
                f"cannot connect {client[0]}:{client[1]} to {server[0]}:{server[1]}: "
                f"{exc.strerror or exc}"
            ) from exc
        ssock.settimeout(timeout)
        return {client: csock, server: ssock}

    def close_flow(socks: dict[tuple[str, int], socket.socket], first: tuple[str, int]) -> None:
        # the client (first sender) closes first, as in the built conversation
        a = socks[first]
        b = next(s for k, s in socks.items() if k != first)
        a.shutdown(socket.SHUT_WR)
        if b.recv(1) != b"":
            raise ReplayError("unexpected data after the last message")
        b.shutdown(socket.SHUT_WR)
        if a.recv(1) != b"":
            raise ReplayError("unexpected data after the last message")
        a.close()
        b.close()

    firsts: dict[frozenset[tuple[str, int]], tuple[str, int]] = {}
    try:
        for m in ordered:
            key = frozenset(((m.src.ip, m.src.port), (m.dst.ip, m.dst.port)))
            socks = flows.get(key)
            if socks is None:
                socks = flows[key] = open_flow(m)
                firsts[key] = (m.src.ip, m.src.port)
            delay = start + (m.ts_ns - base) / 1e9 / max(speed, 1e-9) - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the replay like the CSV, not synchronisation
            socks[(m.src.ip, m.src.port)].sendall(m.payload)
            got = bytearray()
            rx = socks[(m.dst.ip, m.dst.port)]
            while len(got) < len(m.payload):
                chunk = rx.recv(len(m.payload) - len(got))
                if not chunk:
                    raise ReplayError(f"connection closed while delivering message {m.msg_id}")
                got += chunk
            if bytes(got) != m.payload:
                raise ReplayError(f"message {m.msg_id} arrived changed")  # pragma: no cover
            sent += len(m.payload)
            received += len(got)
            count += 1
            remaining[key] -= 1
            if not remaining[key]:
                close_flow(flows.pop(key), firsts[key])
    except ReplayError:
        raise
    except OSError as exc:
        raise ReplayError(f"loopback replay failed: {exc.strerror or exc}") from exc
    finally:
        for socks in flows.values():
            for sock in socks.values():
                sock.close()
        for lsock in listeners.values():
            lsock.close()
    return ReplayReport("loopback (both sides)", count, sent, received)
