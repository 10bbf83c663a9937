"""Turn application messages into correct TCP conversations (pure: no sockets, no clock).

For every flow (address/port pair) the builder emits a three-way handshake with options, each
message as one or more data segments (split at the MSS) with correct sequence and
acknowledgement numbers, an ACK from the receiver, and a FIN/ACK teardown. Sequence numbers
advance by the bytes sent, so no segment is ever a retransmission.
"""

from __future__ import annotations

import gc
import random
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple

from parlour.packets.wire.addresses import ipv4_to_int
from parlour.packets.wire.packet import ipv4_tcp_packet
from parlour.packets.wire.tcp import TcpFlags, TcpOptions, encode_options

__all__ = [
    "ANOMALIES",
    "DEFAULT_START_NS",
    "SERVICE_PORTS",
    "AppMessage",
    "BuildOptions",
    "BuiltPacket",
    "Endpoint",
    "build_conversations",
    "connection_ends",
]

#: relative CSV times are counted from 2026-01-01T00:00:00Z unless told otherwise
DEFAULT_START_NS = 1_767_225_600 * 1_000_000_000

SYN = int(TcpFlags.SYN)
ACK = int(TcpFlags.ACK)
PSH = int(TcpFlags.PSH)
FIN = int(TcpFlags.FIN)
RST = int(TcpFlags.RST)


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
    """One application message: who sends it to whom, the bytes, and when (ns since epoch).

    *opener* says who opens the message's connection when that is known ("src" or "dst");
    *connection* labels the connection: another label on the same addresses and ports starts
    a new connection there (the old one is closed first). *anomaly* asks the builder to get
    this message's packets wrong on purpose (see :data:`ANOMALIES`).
    """

    src: Endpoint
    dst: Endpoint
    payload: bytes
    ts_ns: int
    msg_id: str = ""
    app_protocol: str = ""
    opener: str = ""
    connection: str = ""
    anomaly: str = ""


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


class BuiltPacket(NamedTuple):
    """One built packet: the IPv4 datagram and what it means (a named tuple: cheap to make)."""

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


# Non-SYN segments with the timestamps option (Linux's NOP, NOP, TS layout) are the bulk of
# every conversation: one struct packs both headers and the option, and both checksums are
# computed arithmetically from the field values (2**16 ≡ 1 mod 0xFFFF, so a 32-bit field adds
# in whole) plus one big-integer remainder over the payload.
_HDR_TS = struct.Struct("!BBHHHBBHIIHHIIBBHHHHBBII")
_HDR_NOOPT = struct.Struct("!BBHHHBBHIIHHIIBBHHH")
_M = 0xFFFF
_DF = 0x4000


@dataclass(slots=True)
class _Dir:
    """One direction of a flow: its addresses, next sequence number and checksum constants."""

    ep: Endpoint
    src: int
    dst: int
    isn: int
    nxt: int
    ts_base: int
    last_tsval: int = 0
    ip_const: int = 0
    tcp_const: int = 0


@dataclass(slots=True)
class _Flow:
    index: int
    client: Endpoint
    server: Endpoint
    messages: list[AppMessage] = field(default_factory=list)
    label: str = ""
    #: the handshake starts no earlier (an earlier connection on the same ports is closing)
    not_before: int = 0
    #: when the flow's last packet went out (set once built)
    ends: int = 0


#: anomalies a message can be built with (``AppMessage.anomaly``, ``--anomaly``)
ANOMALIES = ("reuse-seq", "drop", "lose", "duplicate", "reorder", "rst", "zero-window")
#: ports a server listens on: the side using one of them (and not the other) is the server
SERVICE_PORTS = frozenset(
    {*range(1, 1024), 1080, 1433, 1521, 1883, 2049, 3000, 3306, 3389, 5000, 5060, 5222, 5432,
     5672, 5900, 6379, 6667, 7878, 8000, 8008, 8080, 8443, 8888, 9000, 9092, 9200, 11211,
     27017}
)  # fmt: skip
#: time a sender waits before resending what was not acknowledged (Linux's minimum RTO)
RTO_NS = 200_000_000
#: how long a receiver keeps its window shut in the zero-window anomaly
ZERO_WINDOW_NS = 200_000_000


def _anomalies(m: AppMessage) -> frozenset[str]:
    return frozenset(a for a in m.anomaly.split(",") if a) if m.anomaly else frozenset()


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

    def _dir(self, me: Endpoint, peer: Endpoint) -> _Dir:
        o = self.o
        isn = self.rng.randrange(1 << 32)
        d = _Dir(
            me, ipv4_to_int(me.ip), ipv4_to_int(peer.ip), isn, isn, self.rng.randrange(1 << 31)
        )
        d.ip_const = 0x4500 + _DF + (o.ttl << 8) + 6 + d.src + d.dst
        # pseudo-header (addresses, protocol) + ports + NOP NOP + TS kind/length + 8-word offset
        d.tcp_const = d.src + d.dst + 6 + me.port + peer.port + 0x0101 + 0x080A + 0x8000
        return d

    def flow(self, flow: _Flow) -> None:
        o = self.o
        c, s = flow.client, flow.server
        cd = self._dir(c, s)
        sd = self._dir(s, c)
        t0 = flow.messages[0].ts_ns
        ts_off = 10 * o.step_ns - t0
        last = max(t0 - 3 * o.step_ns, flow.not_before)
        out: list[BuiltPacket] = []
        append = out.append
        stream = flow.index
        timestamps = o.timestamps
        window = o.window
        ttl = o.ttl
        ip_ids = self.ip_ids
        pack_ts = _HDR_TS.pack
        pack_plain = _HDR_NOOPT.pack
        from_bytes = int.from_bytes
        new = tuple.__new__
        established = False
        #: (anomaly, first index, end index) of the data segments of anomalous messages
        marks: list[tuple[str, int, int]] = []

        def slow(
            me: _Dir, peer: _Dir, t: int, flags: int, payload: bytes, mid: str, seq: int,
            ack: int, win: int,
        ) -> None:  # fmt: skip
            """Any segment (SYNs, or options other than timestamps): the general builder."""
            syn = bool(flags & SYN)
            ts_opt = None
            if timestamps:
                me.last_tsval = (me.ts_base + (t + ts_off) // 1_000_000) & 0xFFFFFFFF
                ts_opt = (me.last_tsval, peer.last_tsval if flags & ACK else 0)
            opts = TcpOptions(
                mss=o.mss if syn else None,
                wscale=o.wscale if syn else None,
                sack_permitted=o.sack_permitted and syn,
                timestamps=ts_opt,
            )
            datagram = ipv4_tcp_packet(
                me.src, me.dst, me.ep.port, peer.ep.port, seq, ack, flags,
                o.syn_window if syn else win, encode_options(opts, syn), payload,
                self._ident(me.ep.ip), ttl,
            )  # fmt: skip
            append(BuiltPacket(t, datagram, me.ep, peer.ep, seq, ack, flags, payload, stream,
                               mid or None))  # fmt: skip

        def emit(
            me: _Dir,
            peer: _Dir,
            src: Endpoint,
            dst: Endpoint,
            t: int,
            flags: int,
            payload: bytes = b"",
            mid: str = "",
            seq: int | None = None,
            ack: int | None = None,
            win: int | None = None,
        ) -> None:
            """One segment; *seq*, *ack* and *win* override what the state says (anomalies)."""
            nonlocal last
            if t < last:
                t = last
            last = t
            advance = seq is None
            if seq is None:
                seq = me.nxt
            if ack is None:
                ack = peer.nxt if flags & ACK else 0
            if win is None:
                win = window
            if advance:
                me.nxt = (seq + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
            if flags & SYN:
                slow(me, peer, t, flags, payload, mid, seq, ack, win)
                return
            ip = src.ip
            ident = ip_ids.get(ip)
            if ident is None:
                ident = self._ident(ip)
            else:
                ip_ids[ip] = (ident + 1) & 0xFFFF
            n = len(payload)
            if n:
                psum = from_bytes(payload, "big")
                if n & 1:
                    psum <<= 8
            else:
                psum = 0
            if timestamps:
                tsval = me.last_tsval = (me.ts_base + (t + ts_off) // 1_000_000) & 0xFFFFFFFF
                tsecr = peer.last_tsval if flags & ACK else 0
                total = 52 + n
                r = (me.ip_const + total + ident) % _M
                r2 = (me.tcp_const + seq + ack + flags + win + tsval + tsecr + total - 20
                      + psum) % _M  # fmt: skip
                hdr = pack_ts(
                    0x45, 0, total, ident, _DF, ttl, 6, _M - r if r else 0, me.src, me.dst,
                    src.port, dst.port, seq, ack, 0x80, flags, win, _M - r2 if r2 else 0, 0,
                    0x0101, 8, 10, tsval, tsecr,
                )  # fmt: skip
            else:
                total = 40 + n
                r = (me.ip_const + total + ident) % _M
                r2 = (me.tcp_const - 0x0101 - 0x080A - 0x3000 + seq + ack + flags + win
                      + total - 20 + psum) % _M  # fmt: skip
                hdr = pack_plain(
                    0x45, 0, total, ident, _DF, ttl, 6, _M - r if r else 0, me.src, me.dst,
                    src.port, dst.port, seq, ack, 0x50, flags, win, _M - r2 if r2 else 0, 0,
                )  # fmt: skip
            append(new(BuiltPacket, (t, hdr + payload if n else hdr, src, dst, seq, ack, flags,
                                     payload, stream, mid or None)))  # fmt: skip

        def handshake(t: int) -> None:
            nonlocal established
            emit(cd, sd, c, s, max(t - 3 * o.step_ns, last), SYN)
            emit(sd, cd, s, c, last + o.step_ns, SYN | ACK)
            emit(cd, sd, c, s, last + o.step_ns, ACK)
            established = True

        opt_len = 12 if timestamps else 0
        chunk = max(1, o.mss - opt_len)
        msgs = flow.messages
        ack_delay = o.ack_delay_ns
        for i, m in enumerate(msgs):
            next_t = msgs[i + 1].ts_ns if i + 1 < len(msgs) else None
            data = m.payload
            if not data:  # nothing to send: an empty segment would read as a duplicate ACK
                continue
            t = m.ts_ns
            src, dst = m.src, m.dst
            me, peer = (cd, sd) if src.port == c.port and src.ip == c.ip else (sd, cd)
            n = len(data)
            bad = _anomalies(m)
            if "rst" in bad and not established:
                # nobody listens: the data goes out without a connection (acknowledging what
                # the peer sent so far, as the source design's lab did) and the destination's
                # kernel answers RST, as RFC 793 says: the segment carries an ACK, so the
                # reset takes that number as its sequence number and has no ACK of its own
                if me.nxt == me.isn:
                    me.nxt = (me.isn + 1) & 0xFFFFFFFF
                if peer.nxt == peer.isn:
                    peer.nxt = (peer.isn + 1) & 0xFFFFFFFF
                seq = (me.isn + 1) & 0xFFFFFFFF if "reuse-seq" in bad else me.nxt
                first = len(out)
                emit(me, peer, src, dst, t, ACK | PSH, data, m.msg_id, seq=seq, ack=peer.nxt)
                marks.extend((a, first, len(out)) for a in bad - {"rst", "reuse-seq"})
                end = (seq + n) & 0xFFFFFFFF
                if (end - me.nxt) & 0xFFFFFFFF < 0x80000000:  # beyond what was sent before
                    me.nxt = end
                emit(peer, me, dst, src, last + ack_delay, RST, seq=peer.nxt, ack=0, win=0)
                continue
            if not established:
                if out:  # after a reset: a new connection, new initial sequence numbers
                    cd, sd = self._dir(c, s), self._dir(s, c)
                    me, peer = (cd, sd) if src.port == c.port and src.ip == c.ip else (sd, cd)
                handshake(t)
            if n <= chunk and timestamps and not bad:
                # the common case, inlined: one data segment, then the receiver's ACK (the
                # same arithmetic as emit(); two calls per message are a tenth of the time)
                if t < last:
                    t = last
                ip = src.ip
                ident = ip_ids.get(ip)
                if ident is None:
                    ident = self._ident(ip)
                else:
                    ip_ids[ip] = (ident + 1) & 0xFFFF
                seq = me.nxt
                ack = peer.nxt
                psum = from_bytes(data, "big")
                if n & 1:
                    psum <<= 8
                tsval = me.last_tsval = (me.ts_base + (t + ts_off) // 1_000_000) & 0xFFFFFFFF
                tsecr = peer.last_tsval
                total = 52 + n
                r = (me.ip_const + total + ident) % _M
                r2 = (me.tcp_const + seq + ack + 0x18 + window + tsval + tsecr + total - 20
                      + psum) % _M  # fmt: skip
                hdr = pack_ts(
                    0x45, 0, total, ident, _DF, ttl, 6, _M - r if r else 0, me.src, me.dst,
                    src.port, dst.port, seq, ack, 0x80, 0x18, window, _M - r2 if r2 else 0, 0,
                    0x0101, 8, 10, tsval, tsecr,
                )  # fmt: skip
                append(new(BuiltPacket, (t, hdr + data, src, dst, seq, ack, 0x18, data, stream,
                                         m.msg_id or None)))  # fmt: skip
                seq = me.nxt = (seq + n) & 0xFFFFFFFF  # what the ACK acknowledges
                last = t
                # the receiver's ACK
                ack_t = t + ack_delay
                if next_t is not None:
                    ack_t = min(ack_t, max(next_t - 1_000, t))
                ip = dst.ip
                ident = ip_ids.get(ip)
                if ident is None:
                    ident = self._ident(ip)
                else:
                    ip_ids[ip] = (ident + 1) & 0xFFFF
                pseq = peer.nxt
                tsval = peer.last_tsval = (
                    peer.ts_base + (ack_t + ts_off) // 1_000_000
                ) & 0xFFFFFFFF
                tsecr = me.last_tsval
                r = (peer.ip_const + 52 + ident) % _M
                r2 = (peer.tcp_const + pseq + seq + 0x10 + window + tsval + tsecr + 32) % _M
                hdr = pack_ts(
                    0x45, 0, 52, ident, _DF, ttl, 6, _M - r if r else 0, peer.src, peer.dst,
                    dst.port, src.port, pseq, seq, 0x80, 0x10, window, _M - r2 if r2 else 0, 0,
                    0x0101, 8, 10, tsval, tsecr,
                )  # fmt: skip
                append(new(BuiltPacket, (ack_t, hdr, dst, src, pseq, seq, 0x10, b"", stream,
                                         None)))  # fmt: skip
                last = ack_t
                continue
            first = len(out)
            if "reuse-seq" in bad:
                # the source design's mistake: every message starts at sequence number 1; the
                # first one is new data, later ones overlap what the receiver already has
                seq = (me.isn + 1) & 0xFFFFFFFF
                if seq == me.nxt:
                    emit(me, peer, src, dst, t, ACK | PSH, data, m.msg_id)
                else:
                    emit(me, peer, src, dst, t, ACK | PSH, data, m.msg_id, seq=seq)
                marks.extend((a, first, len(out)) for a in bad - {"reuse-seq", "rst"})
                # the receiver has these bytes already (or they overlap): it ACKs what it had
                if "rst" in bad:
                    emit(peer, me, dst, src, last + ack_delay, RST | ACK, win=0)
                    established = False
                    continue
                ack_t = last + ack_delay
                if next_t is not None:
                    ack_t = min(ack_t, max(next_t - 1_000, last))
                emit(peer, me, dst, src, ack_t, ACK)
                continue
            lose = "lose" in bad
            if n <= chunk:
                emit(me, peer, src, dst, t, ACK | PSH, data, m.msg_id)
            else:
                pieces = [data[j : j + chunk] for j in range(0, len(data), chunk)]
                for k, piece in enumerate(pieces):
                    final = k == len(pieces) - 1
                    emit(me, peer, src, dst, t, ACK | (PSH if final else 0), piece, m.msg_id)
                    t = last + 1_000
                    if k % 2 == 1 and not final and not lose:
                        emit(peer, me, dst, src, t, ACK)
                        t = last + 1_000
            end = len(out)
            marks.extend((a, first, end) for a in bad - {"rst", "zero-window", "lose"})
            if lose:
                # the network lost the segments after the capture saw them: no ACK comes, and
                # the sender sends them again when its retransmission timer expires (what the
                # connection sends later moves later with it)
                again = last + RTO_NS
                for p in out[first:end]:
                    emit(me, peer, src, dst, again, p.flags, p.payload, m.msg_id, seq=p.seq)
                    again = last + 1_000
            ack_t = last + ack_delay
            if next_t is not None:
                ack_t = min(ack_t, max(next_t - 1_000, last))
            if "rst" in bad:  # the receiver aborts: RST instead of an ACK, no teardown
                emit(peer, me, dst, src, ack_t, RST | ACK, win=0)
                established = False
                continue
            if "zero-window" in bad:  # the receiver's buffer is full for a while
                emit(peer, me, dst, src, ack_t, ACK, win=0)
                reopen = last + ZERO_WINDOW_NS
                if next_t is not None:
                    reopen = min(reopen, max(next_t - 1_000, last))
                emit(peer, me, dst, src, reopen, ACK)
                continue
            emit(peer, me, dst, src, ack_t, ACK)
        if o.teardown and established:
            emit(cd, sd, c, s, last + o.step_ns, FIN | ACK)
            emit(sd, cd, s, c, last + o.step_ns, FIN | ACK)
            emit(cd, sd, c, s, last + o.step_ns, ACK)
        flow.ends = last
        self.out.extend(_apply_marks(out, marks))


def _apply_marks(out: list[BuiltPacket], marks: list[tuple[str, int, int]]) -> list[BuiltPacket]:
    """Drop, duplicate or reorder the data segments of anomalous messages (after building,
    so every other packet keeps the numbers a correct conversation has)."""
    if not marks:
        return out
    drop: set[int] = set()
    dup: set[int] = set()
    swaps: list[int] = []
    for name, first, end in marks:
        if name == "drop":
            drop.update(range(first, end))
        elif name == "duplicate":
            dup.update(range(first, end))
        elif name == "reorder":
            swaps.append(first)
    result = list(out)
    for first in sorted(swaps, reverse=True):
        # the message's first segment arrives after the next segment of the same sender
        p = result[first]
        later = next(
            (j for j in range(first + 1, len(result))
             if result[j].src == p.src and result[j].payload), None,
        )  # fmt: skip
        if later is not None:
            q = result[later]
            result[first] = q._replace(ts_ns=p.ts_ns)
            result[later] = p._replace(ts_ns=q.ts_ns)
            if first in dup:
                dup.discard(first)
                dup.add(later)
    final: list[BuiltPacket] = []
    for i, p in enumerate(result):
        if i in drop:
            continue
        final.append(p)
        if i in dup:
            final.append(p._replace(ts_ns=p.ts_ns + 1_000))
    return final


def connection_ends(
    first: AppMessage, flow_messages: Sequence[AppMessage] = ()
) -> tuple[Endpoint, Endpoint]:
    """(client, server) of a connection: who opens it.

    1. an explicit ``opener`` on its first message ("src" or "dst");
    2. the side on a server port (:data:`SERVICE_PORTS`) when the other side is not on one —
       an SMTP server speaks first, but the client still opened the connection;
    3. otherwise the sender of the first message.
    """
    _ = flow_messages
    if first.opener == "dst":
        return first.dst, first.src
    if first.opener == "src":
        return first.src, first.dst
    src_service = first.src.port in SERVICE_PORTS
    dst_service = first.dst.port in SERVICE_PORTS
    if src_service and not dst_service:
        return first.dst, first.src
    return first.src, first.dst


def build_conversations(
    messages: Iterable[AppMessage],
    options: BuildOptions | None = None,
    *,
    new_connection_after_ns: int | None = None,
) -> list[BuiltPacket]:
    """Packets for all *messages*, connections interleaved by time (stable for equal times).

    Messages between the same two endpoints share a connection, taken in order of time (then
    input order). The client that opens it is found by :func:`connection_ends`'s rules. Another
    ``connection`` label on the same endpoints, or a silence longer than
    *new_connection_after_ns* (``None``: never), closes the connection and opens a new one
    on the same ports (tshark notes the reuse, as it would on a real network).
    """
    opts = options or BuildOptions()
    if not 64 <= opts.mss <= 65495:
        raise ValueError(f"MSS must be between 64 and 65495, not {opts.mss}")
    for m in messages if isinstance(messages, Sequence) else ():
        unknown = _anomalies(m) - set(ANOMALIES)
        if unknown:
            raise ValueError(
                f"message {m.msg_id or '?'}: unknown anomaly {', '.join(sorted(unknown))} "
                f"(known: {', '.join(ANOMALIES)})"
            )
    current: dict[frozenset[tuple[str, int]], _Flow] = {}
    last_ts: dict[frozenset[tuple[str, int]], int] = {}
    flows: list[_Flow] = []
    previous: dict[int, _Flow] = {}  # flow index -> the flow it replaced on the same ports
    ordered: Sequence[AppMessage] = sorted(messages, key=lambda m: m.ts_ns)
    for m in ordered:
        if not m.payload:
            continue
        unknown = _anomalies(m) - set(ANOMALIES)
        if unknown:
            raise ValueError(
                f"message {m.msg_id or '?'}: unknown anomaly {', '.join(sorted(unknown))} "
                f"(known: {', '.join(ANOMALIES)})"
            )
        a, b = (m.src.ip, m.src.port), (m.dst.ip, m.dst.port)
        if a == b:
            raise ValueError(f"message {m.msg_id or '?'} is sent from an endpoint to itself")
        key = frozenset((a, b))
        f = current.get(key)
        if f is not None and (
            m.connection != f.label
            or (new_connection_after_ns is not None
                and m.ts_ns - last_ts[key] > new_connection_after_ns)
        ):  # fmt: skip
            replaced = f
            f = None
        else:
            replaced = None
        if f is None:
            client, server = connection_ends(m, ())
            f = current[key] = _Flow(len(flows), client, server, label=m.connection)
            flows.append(f)
            if replaced is not None:
                previous[f.index] = replaced
        f.messages.append(m)
        last_ts[key] = m.ts_ns
    builder = _Builder(opts)
    with _no_gc():  # millions of new tuples, no cycles: the cyclic GC would only rescan them
        for f in flows:
            before = previous.get(f.index)
            if before is not None:  # the new connection waits until the old one is closed
                f.not_before = before.ends + opts.step_ns
            builder.flow(f)
        if len(flows) > 1:
            builder.out.sort(key=itemgetter(0))
    return builder.out


@contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
