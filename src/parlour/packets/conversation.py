"""Turn application messages into correct TCP conversations (pure: no sockets, no clock).

For every flow (address/port pair) the builder emits a three-way handshake with options, each
message as one or more data segments (split at the MSS) with correct sequence and
acknowledgement numbers, an ACK from the receiver, and a FIN/ACK teardown. Sequence numbers
advance by the bytes sent, so no segment is ever a retransmission.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from parlour.packets.addresses import ipv4_to_int
from parlour.packets.packet import ipv4_tcp_packet
from parlour.packets.tcp import TcpFlags, TcpOptions, encode_options

__all__ = [
    "DEFAULT_START_NS",
    "AppMessage",
    "BuildOptions",
    "BuiltPacket",
    "Endpoint",
    "build_conversations",
]

#: relative CSV times are counted from 2026-01-01T00:00:00Z unless told otherwise
DEFAULT_START_NS = 1_767_225_600 * 1_000_000_000

SYN = int(TcpFlags.SYN)
ACK = int(TcpFlags.ACK)
PSH = int(TcpFlags.PSH)
FIN = int(TcpFlags.FIN)


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str
    port: int
    name: str = ""

    def __post_init__(self) -> None:
        ipv4_to_int(self.ip)
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port out of range: {self.port}")


@dataclass(frozen=True, slots=True)
class AppMessage:
    """One application message: who sends it to whom, the bytes, and when (ns since epoch)."""

    src: Endpoint
    dst: Endpoint
    payload: bytes
    ts_ns: int
    msg_id: str = ""
    app_protocol: str = ""


@dataclass(frozen=True, slots=True)
class BuildOptions:
    mss: int = 1460
    syn_window: int = 64240
    window: int = 502
    wscale: int | None = 7
    sack_permitted: bool = True
    timestamps: bool = True
    ttl: int = 64
    #: spacing of the handshake packets before the first message, and of the teardown
    step_ns: int = 100_000
    #: the receiver's ACK follows a data segment after this delay (or sooner, see builder)
    ack_delay_ns: int = 40_000
    teardown: bool = True
    seed: int = 0


@dataclass(frozen=True, slots=True)
class BuiltPacket:
    ts_ns: int
    datagram: bytes
    src: Endpoint
    dst: Endpoint
    seq: int
    ack: int
    flags: int
    payload: bytes
    stream: int
    msg_id: str | None = None


@dataclass(slots=True)
class _Dir:
    isn: int
    nxt: int
    ts_base: int
    last_tsval: int = 0


@dataclass(slots=True)
class _Flow:
    index: int
    client: Endpoint
    server: Endpoint
    messages: list[AppMessage] = field(default_factory=list)


class _Builder:
    def __init__(self, opts: BuildOptions) -> None:
        self.o = opts
        self.rng = random.Random(opts.seed)
        self.ip_ids: dict[str, int] = {}
        self.out: list[BuiltPacket] = []

    def _ident(self, ip: str) -> int:
        value = self.ip_ids.get(ip)
        if value is None:
            value = self.rng.randrange(0x10000)
        self.ip_ids[ip] = (value + 1) & 0xFFFF
        return value

    def flow(self, flow: _Flow) -> None:
        o = self.o
        c, s = flow.client, flow.server
        cd = _Dir(isn := self.rng.randrange(1 << 32), isn, self.rng.randrange(1 << 31))
        sd = _Dir(isn := self.rng.randrange(1 << 32), isn, self.rng.randrange(1 << 31))
        dirs = {(c.ip, c.port): cd, (s.ip, s.port): sd}
        t0 = flow.messages[0].ts_ns
        last = t0 - 3 * o.step_ns
        out: list[BuiltPacket] = []

        def emit(
            src: Endpoint, dst: Endpoint, t: int, flags: int, payload: bytes = b"", mid: str = ""
        ) -> None:
            nonlocal last
            t = max(t, last)
            last = t
            me = dirs[(src.ip, src.port)]
            peer = dirs[(dst.ip, dst.port)]
            syn = bool(flags & SYN)
            ts_opt = None
            if o.timestamps:
                me.last_tsval = (me.ts_base + (t - t0 + 10 * o.step_ns) // 1_000_000) & 0xFFFFFFFF
                ts_opt = (me.last_tsval, peer.last_tsval if flags & ACK else 0)
            opts = TcpOptions(
                mss=o.mss if syn else None,
                wscale=o.wscale if syn else None,
                sack_permitted=o.sack_permitted and syn,
                timestamps=ts_opt,
            )
            options = encode_options(opts, syn)
            seq = me.nxt
            ack = peer.nxt if flags & ACK else 0
            window = o.syn_window if syn else o.window
            datagram = ipv4_tcp_packet(
                ipv4_to_int(src.ip), ipv4_to_int(dst.ip), src.port, dst.port, seq, ack, flags,
                window, options, payload, self._ident(src.ip), o.ttl,
            )  # fmt: skip
            me.nxt = (me.nxt + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
            out.append(
                BuiltPacket(
                    t, datagram, src, dst, seq, ack, flags, payload, flow.index, mid or None
                )
            )

        emit(c, s, t0 - 3 * o.step_ns, SYN)
        emit(s, c, t0 - 2 * o.step_ns, SYN | ACK)
        emit(c, s, t0 - o.step_ns, ACK)
        opt_len = 12 if o.timestamps else 0
        chunk = max(1, o.mss - opt_len)
        msgs = flow.messages
        for i, m in enumerate(msgs):
            next_t = msgs[i + 1].ts_ns if i + 1 < len(msgs) else None
            pieces = [m.payload[j : j + chunk] for j in range(0, len(m.payload), chunk)]
            if not pieces:  # nothing to send: an empty segment would read as a duplicate ACK
                continue
            t = m.ts_ns
            for k, piece in enumerate(pieces):
                final = k == len(pieces) - 1
                emit(m.src, m.dst, t, ACK | (PSH if final else 0), piece, m.msg_id)
                t = last + 1_000
                if k % 2 == 1 and not final:
                    emit(m.dst, m.src, t, ACK)
                    t = last + 1_000
            ack_t = last + o.ack_delay_ns
            if next_t is not None:
                ack_t = min(ack_t, max(next_t - 1_000, last))
            emit(m.dst, m.src, ack_t, ACK)
        if o.teardown:
            emit(c, s, last + o.step_ns, FIN | ACK)
            emit(s, c, last + o.step_ns, FIN | ACK)
            emit(c, s, last + o.step_ns, ACK)
        self.out.extend(out)


def build_conversations(
    messages: Iterable[AppMessage], options: BuildOptions | None = None
) -> list[BuiltPacket]:
    """Packets for all *messages*, flows interleaved by time (stable for equal times).

    Within a flow the messages are taken in order of time (then input order); the first
    message's sender is the client that opens the connection.
    """
    opts = options or BuildOptions()
    if not 64 <= opts.mss <= 65495:
        raise ValueError(f"MSS must be between 64 and 65495, not {opts.mss}")
    flows: dict[frozenset[tuple[str, int]], _Flow] = {}
    ordered: Sequence[AppMessage] = sorted(messages, key=lambda m: m.ts_ns)
    for m in ordered:
        if not m.payload:
            continue
        a, b = (m.src.ip, m.src.port), (m.dst.ip, m.dst.port)
        if a == b:
            raise ValueError(f"message {m.msg_id or '?'} is sent from an endpoint to itself")
        key = frozenset((a, b))
        f = flows.get(key)
        if f is None:
            f = flows[key] = _Flow(len(flows), m.src, m.dst)
        f.messages.append(m)
    builder = _Builder(opts)
    for f in flows.values():
        builder.flow(f)
    builder.out.sort(key=lambda p: p.ts_ns)
    return builder.out
