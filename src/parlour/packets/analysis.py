"""TCP stream analysis that reproduces Wireshark's ``tcp.analysis`` decisions (pure).

The per-direction bookkeeping is a port of ``tcp_analyze_sequence_number`` in Wireshark
4.0's ``packet-tcp.c`` (the tshark CI installs): next expected sequence number, last ACK,
duplicate-ACK counter, highest contiguous sequence to be ACKed, raw window and scale, the
previous segment's flags, with the same checks in the same order, so the flags agree with
tshark packet for packet (see docs/design/packets-analysis.md).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from parlour.packets.appdecode import StreamDecoder, http_first_line
from parlour.packets.decode import DecodedPacket
from parlour.packets.tcp import decode_options, flags_text

__all__ = [
    "FLAG_ORDER",
    "TSHARK_FIELDS",
    "Analysis",
    "Conversation",
    "Direction",
    "PacketAnalysis",
    "StreamChunk",
    "TcpInfo",
    "analyze",
    "endpoint_text",
    "follow",
    "retransmitted",
]

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

RETRANSMISSION = "retransmission"
FAST_RETRANSMISSION = "fast retransmission"
SPURIOUS_RETRANSMISSION = "spurious retransmission"
OUT_OF_ORDER = "out-of-order"
LOST_SEGMENT = "previous segment not captured"
ACK_LOST_SEGMENT = "ACKed unseen segment"
DUPLICATE_ACK = "duplicate ACK"
ZERO_WINDOW = "zero window"
ZERO_WINDOW_PROBE = "zero window probe"
ZERO_WINDOW_PROBE_ACK = "zero window probe ACK"
WINDOW_FULL = "window full"
WINDOW_UPDATE = "window update"
KEEP_ALIVE = "keep-alive"
KEEP_ALIVE_ACK = "keep-alive ACK"
RESET = "RST"
PORTS_REUSED = "port numbers reused"
BAD_CHECKSUM = "bad checksum"

#: segments whose payload Wireshark does not hand to application dissectors
_NO_APP_DECODE = frozenset({RETRANSMISSION, SPURIOUS_RETRANSMISSION, OUT_OF_ORDER})

#: display order, and the tshark field each flag corresponds to
FLAG_ORDER = (
    PORTS_REUSED, RETRANSMISSION, FAST_RETRANSMISSION, SPURIOUS_RETRANSMISSION, OUT_OF_ORDER,
    LOST_SEGMENT, ACK_LOST_SEGMENT, DUPLICATE_ACK, ZERO_WINDOW, ZERO_WINDOW_PROBE,
    ZERO_WINDOW_PROBE_ACK, WINDOW_FULL, WINDOW_UPDATE, KEEP_ALIVE, KEEP_ALIVE_ACK, RESET,
)  # fmt: skip
TSHARK_FIELDS = {
    RETRANSMISSION: "tcp.analysis.retransmission",
    FAST_RETRANSMISSION: "tcp.analysis.fast_retransmission",
    SPURIOUS_RETRANSMISSION: "tcp.analysis.spurious_retransmission",
    OUT_OF_ORDER: "tcp.analysis.out_of_order",
    LOST_SEGMENT: "tcp.analysis.lost_segment",
    ACK_LOST_SEGMENT: "tcp.analysis.ack_lost_segment",
    DUPLICATE_ACK: "tcp.analysis.duplicate_ack",
    ZERO_WINDOW: "tcp.analysis.zero_window",
    ZERO_WINDOW_PROBE: "tcp.analysis.zero_window_probe",
    ZERO_WINDOW_PROBE_ACK: "tcp.analysis.zero_window_probe_ack",
    WINDOW_FULL: "tcp.analysis.window_full",
    WINDOW_UPDATE: "tcp.analysis.window_update",
    KEEP_ALIVE: "tcp.analysis.keep_alive",
    KEEP_ALIVE_ACK: "tcp.analysis.keep_alive_ack",
    RESET: "tcp.connection.rst",
    PORTS_REUSED: "tcp.analysis.reused_ports",
}
_INFO_PREFIX = {
    RETRANSMISSION: "TCP Retransmission",
    FAST_RETRANSMISSION: "TCP Fast Retransmission",
    SPURIOUS_RETRANSMISSION: "TCP Spurious Retransmission",
    OUT_OF_ORDER: "TCP Out-Of-Order",
    LOST_SEGMENT: "TCP Previous segment not captured",
    ACK_LOST_SEGMENT: "TCP ACKed unseen segment",
    DUPLICATE_ACK: "TCP Dup ACK",
    ZERO_WINDOW: "TCP ZeroWindow",
    ZERO_WINDOW_PROBE: "TCP ZeroWindowProbe",
    ZERO_WINDOW_PROBE_ACK: "TCP ZeroWindowProbeAck",
    WINDOW_FULL: "TCP Window Full",
    WINDOW_UPDATE: "TCP Window Update",
    KEEP_ALIVE: "TCP Keep-Alive",
    KEEP_ALIVE_ACK: "TCP Keep-Alive ACK",
    PORTS_REUSED: "TCP Port numbers reused",
}

_M32 = 0xFFFFFFFF
_NO_FLAGS: frozenset[str] = frozenset()


def _gt(a: int, b: int) -> bool:
    d = (a - b) & _M32
    return 0 < d < 0x80000000


def _lt(a: int, b: int) -> bool:
    return _gt(b, a)


def _le(a: int, b: int) -> bool:
    return a == b or _gt(b, a)


@dataclass(slots=True)
class _Side:
    base_seq: int | None = None
    nextseq: int = 0
    nextseqtime: int = 0
    maxseqtobeacked: int = 0
    lastack: int = 0
    lastacktime: int = 0
    lastnondupack: int = 0
    dupacknum: int = 0
    window: int = _M32
    win_scale: int = -1
    lastsegmentflags: frozenset[str] = frozenset()
    saw_syn: bool = False
    is_first_ack: bool = False
    decoder: StreamDecoder = field(default_factory=StreamDecoder)
    packets: int = 0
    bytes: int = 0
    payload_bytes: int = 0
    first_ns: int | None = None
    last_ns: int = 0


@dataclass(slots=True)
class _Stream:
    index: int
    client: tuple[str, int]
    server: tuple[str, int]
    sides: dict[tuple[str, int], _Side] = field(default_factory=dict)
    mru_syn_ns: int = 0
    first_rtt_ns: int = 0
    first_ns: int = 0
    last_ns: int = 0


@dataclass(slots=True)  # not frozen: ~2x cheaper to build; treat as read-only
class TcpInfo:
    stream: int
    sport: int
    dport: int
    flags: int
    seq: int
    ack: int
    rel_seq: int
    rel_ack: int
    seglen: int
    window: int
    analysis: tuple[str, ...]
    from_client: bool
    #: for a duplicate ACK: (number of the frame it duplicates, how many duplicates so far)
    dup_ack: tuple[int, int] | None = None
    #: the other direction's initial sequence number (SACK blocks are shown relative to it)
    peer_base: int = 0


@dataclass(slots=True)  # not frozen: ~2x cheaper to build; treat as read-only
class PacketAnalysis:
    packet: DecodedPacket
    tcp: TcpInfo | None
    app: tuple[str, str] | None
    time_rel_ns: int

    @property
    def protocol(self) -> str:
        return self.app[0] if self.app else self.packet.protocol

    @property
    def flags(self) -> tuple[str, ...]:
        extra: tuple[str, ...] = ()
        if self.packet.ip_checksum_ok is False or self.packet.tcp_checksum_ok is False:
            extra = (BAD_CHECKSUM,)
        return (self.tcp.analysis if self.tcp else ()) + extra

    def tcp_summary(self) -> str:
        t = self.tcp
        p = self.packet
        if t is None:
            return ""
        text = (
            f"{t.sport} → {t.dport} [{flags_text(t.flags)}] Seq={t.rel_seq}"
            + (f" Ack={t.rel_ack}" if t.flags & ACK else "")
            + f" Win={t.window} Len={t.seglen}"
        )
        if p.tcp_options:
            text += _options_text(p.tcp_options, t.peer_base)
        return text

    @property
    def info(self) -> str:
        p = self.packet
        if self.tcp is None:
            if p.udp_ports:
                return f"{p.udp_ports[0]} → {p.udp_ports[1]} Len={len(p.payload)}"
            return p.problem or ""
        prefix = ""
        for f in self.tcp.analysis:
            if f == DUPLICATE_ACK and self.tcp.dup_ack is not None:
                prefix += f"[TCP Dup ACK {self.tcp.dup_ack[0]}#{self.tcp.dup_ack[1]}] "
            elif f in _INFO_PREFIX:
                prefix += f"[{_INFO_PREFIX[f]}] "
        if self.app:
            return prefix + self.app[1]
        return prefix + self.tcp_summary()


@dataclass(frozen=True, slots=True)
class Direction:
    """One direction of a conversation: frames, frame bytes, payload bytes, time span."""

    packets: int
    bytes: int
    payload: int
    start_rel_ns: int | None
    duration_ns: int


@dataclass(frozen=True, slots=True)
class Conversation:
    """A TCP conversation (tshark's ``tcp.stream``); *client* is the side that sent the SYN
    (or the first packet seen when the handshake was not captured)."""

    stream: int
    client: tuple[str, int]
    server: tuple[str, int]
    to_server: Direction
    to_client: Direction
    start_rel_ns: int
    duration_ns: int
    handshake_rtt_ns: int | None

    @property
    def packets(self) -> int:
        return self.to_server.packets + self.to_client.packets

    @property
    def bytes(self) -> int:
        return self.to_server.bytes + self.to_client.bytes


@dataclass(frozen=True, slots=True)
class Analysis:
    packets: tuple[PacketAnalysis, ...]
    conversations: tuple[Conversation, ...]


def _analyze_segment(
    st: _Stream, fwd: _Side, rev: _Side, p: DecodedPacket, num: int, seq: int, ack: int,
    flags: int, window: int, seglen: int,
) -> tuple[str, ...]:  # fmt: skip
    ta: set[str] = set()
    now = p.ts_ns
    if fwd.base_seq is None:
        fwd.base_seq = seq if flags & SYN else (seq - 1) & _M32
    if rev.base_seq is None and flags & ACK:
        rev.base_seq = (ack - 1) & _M32
    finished_fwd = False
    if seglen == 1 and seq == fwd.nextseq and rev.window == 0:
        ta.add(ZERO_WINDOW_PROBE)
        finished_fwd = True
    if not finished_fwd:
        if window == 0 and not flags & (RST | FIN | SYN):
            ta.add(ZERO_WINDOW)
        if fwd.nextseq and _gt(seq, fwd.nextseq) and not flags & RST:
            ta.add(LOST_SEGMENT)
        if seglen in (0, 1) and seq == (fwd.nextseq - 1) & _M32 and not flags & (SYN | FIN | RST):
            ta.add(KEEP_ALIVE)
        if (
            seglen == 0 and window and window != fwd.window and seq == fwd.nextseq
            and ack == fwd.lastack and not flags & (SYN | FIN | RST)
        ):  # fmt: skip
            ta.add(WINDOW_UPDATE)
        shift = 0 if rev.is_first_ack or rev.win_scale < 0 else rev.win_scale
        if (
            seglen > 0 and rev.win_scale != -1
            and (seq + seglen) & _M32 == (rev.lastack + (rev.window << shift)) & _M32
            and not flags & (SYN | FIN | RST)
        ):  # fmt: skip
            ta.add(WINDOW_FULL)
        same = (
            seglen == 0 and window == fwd.window and seq == fwd.nextseq and ack == fwd.lastack
            and not flags & (SYN | FIN | RST)
        )  # fmt: skip
        if same and window and KEEP_ALIVE in rev.lastsegmentflags:
            ta.add(KEEP_ALIVE_ACK)
        elif same and window == 0 and ZERO_WINDOW_PROBE in rev.lastsegmentflags:
            ta.add(ZERO_WINDOW_PROBE_ACK)
        elif same and window:
            fwd.dupacknum = 1 if fwd.dupacknum == -1 else fwd.dupacknum + 1
            ta.add(DUPLICATE_ACK)
    # "finished_fwd": the duplicate-ACK counter restarts when the ACK number moves
    if ack != fwd.lastack:
        fwd.lastnondupack = num
        fwd.dupacknum = 0
    if rev.maxseqtobeacked and _gt(ack, rev.maxseqtobeacked) and flags & ACK:
        if _lt(rev.maxseqtobeacked, rev.nextseq):
            rev.maxseqtobeacked = rev.nextseq  # report once per hole
            ta.add(ACK_LOST_SEGMENT)
        else:  # the other side is stalled with pure ACKs: report the same hole only once
            if rev.dupacknum == 0:
                ta.add(ACK_LOST_SEGMENT)
            rev.dupacknum = -1  # tshark's counter is unsigned: -1 also counts as ">= 2"
    if (seglen > 0 or flags & (SYN | FIN)) and KEEP_ALIVE not in ta:
        not_advanced = bool(fwd.nextseq) and _lt(seq, fwd.nextseq)
        if seglen > 1 and (fwd.nextseq - 1) & _M32 == seq:
            not_advanced = False
        extra = 1 if flags & (SYN | FIN) else 0
        if seglen > 0 and rev.lastack and _le((seq + seglen) & _M32, rev.lastack):
            ta.add(SPURIOUS_RETRANSMISSION)
        elif (
            not_advanced and (rev.dupacknum >= 2 or rev.dupacknum == -1) and rev.lastack == seq
            and 0 <= now - rev.lastacktime < 20_000_000
        ):  # fmt: skip
            ta.add(FAST_RETRANSMISSION)
        elif (
            not_advanced
            and 0 <= now - fwd.nextseqtime < (st.first_rtt_ns or 3_000_000)
            and fwd.nextseq != (seq + seglen + extra) & _M32
        ):
            ta.add(OUT_OF_ORDER)
        elif not_advanced:
            ta.add(RETRANSMISSION)
    nextseq = (seq + seglen + (1 if flags & (SYN | FIN) else 0)) & _M32
    if (_gt(nextseq, fwd.nextseq) or not fwd.nextseq) and ZERO_WINDOW_PROBE not in ta:
        fwd.nextseq = nextseq
        fwd.nextseqtime = now
    if (seq == fwd.maxseqtobeacked or not fwd.maxseqtobeacked) and ZERO_WINDOW_PROBE not in ta:
        fwd.maxseqtobeacked = fwd.nextseq
    fwd.window = window
    fwd.lastack = ack
    fwd.lastacktime = now
    if not ta:
        fwd.lastsegmentflags = _NO_FLAGS
        return (RESET,) if flags & RST else ()
    fwd.lastsegmentflags = frozenset(ta)
    if flags & RST:
        ta.add(RESET)
    return tuple(f for f in FLAG_ORDER if f in ta)


def analyze(packets: Sequence[DecodedPacket]) -> Analysis:
    """Streams, relative numbers, analysis flags and conversations for decoded packets."""
    streams: dict[frozenset[tuple[str, int]], _Stream] = {}
    ordered_streams: list[_Stream] = []
    out: list[PacketAnalysis] = []
    t0 = packets[0].ts_ns if packets else 0
    for p in packets:
        h = p.tcp_fields
        if h is None:
            out.append(PacketAnalysis(p, None, None, p.ts_ns - t0))
            continue
        me, peer = (p.src, h.sport), (p.dst, h.dport)
        key = frozenset((me, peer))
        st = streams.get(key)
        flags = h.flags
        reused = False
        if st is not None and flags & (SYN | ACK) == SYN:
            base = st.sides[me].base_seq
            if base is not None and h.seq != base:
                st = None  # the ports are reused: a new conversation (tshark's rule)
                reused = True
            elif base is not None:  # a retransmitted SYN restores the expected sequence number
                st.sides[me].nextseq = st.sides[me].maxseqtobeacked
        if st is None:
            client, server = (me, peer) if not (flags & SYN and flags & ACK) else (peer, me)
            st = _Stream(len(ordered_streams), client, server, first_ns=p.ts_ns)
            st.sides = {client: _Side(), server: _Side()}
            streams[key] = st
            ordered_streams.append(st)
        fwd, rev = st.sides[me], st.sides[peer]
        if flags & SYN:
            opts = _safe_wscale(p)
            if not flags & ACK:
                st.mru_syn_ns = p.ts_ns
                fwd.win_scale = opts if opts is not None else -2
                if opts is None:
                    rev.win_scale = -2
            else:
                if fwd.base_seq is not None and fwd.base_seq != h.seq:
                    fwd.base_seq = h.seq  # a SYN-ACK for a new incarnation: renumber
                    reused = True
                if opts is None or rev.win_scale == -2:
                    fwd.win_scale = -2
                    rev.win_scale = -2
                else:
                    fwd.win_scale = opts
            fwd.saw_syn = True
        window = h.window  # the analysis compares raw windows, like Wireshark
        if not flags & SYN and fwd.win_scale >= 0:
            window <<= fwd.win_scale
        seglen = len(p.payload)
        analysis = _analyze_segment(
            st, fwd, rev, p, p.number, h.seq, h.ack, flags, h.window, seglen
        )
        if flags & SYN:
            fwd.is_first_ack = True
        elif flags & ACK:
            fwd.is_first_ack = False
            if st.mru_syn_ns and not st.first_rtt_ns:
                st.first_rtt_ns = p.ts_ns - st.mru_syn_ns
        dup = (fwd.lastnondupack, fwd.dupacknum) if DUPLICATE_ACK in analysis else None
        if reused:
            analysis = (PORTS_REUSED, *analysis)
        st.last_ns = p.ts_ns
        fwd.packets += 1
        fwd.bytes += p.wire_len
        fwd.payload_bytes += seglen
        if fwd.first_ns is None:
            fwd.first_ns = p.ts_ns
        fwd.last_ns = p.ts_ns
        app = fwd.decoder.feed(h.seq, p.payload) if seglen else None
        if analysis and _NO_APP_DECODE.intersection(analysis):
            app = None  # like Wireshark: no application decoding of resent/reordered data
        elif app is None and FAST_RETRANSMISSION in analysis:
            first = http_first_line(p.payload)  # tshark does decode fast retransmissions
            app = ("HTTP", first) if first is not None else None
        base = fwd.base_seq if fwd.base_seq is not None else h.seq
        rbase = rev.base_seq if rev.base_seq is not None else h.ack
        info = TcpInfo(
            st.index, h.sport, h.dport, flags, h.seq, h.ack, (h.seq - base) & _M32,
            (h.ack - rbase) & _M32 if flags & ACK else 0, seglen, window, analysis,
            me == st.client, dup, rbase,
        )  # fmt: skip
        out.append(PacketAnalysis(p, info, app, p.ts_ns - t0))
    convs = tuple(
        Conversation(
            s.index,
            s.client,
            s.server,
            _direction(s.sides[s.client], t0),
            _direction(s.sides[s.server], t0),
            s.first_ns - t0,
            s.last_ns - s.first_ns,
            s.first_rtt_ns or None,
        )
        for s in ordered_streams
    )
    return Analysis(tuple(out), convs)


def _direction(side: _Side, t0: int) -> Direction:
    if side.first_ns is None:
        return Direction(0, 0, 0, None, 0)
    return Direction(
        side.packets, side.bytes, side.payload_bytes, side.first_ns - t0,
        side.last_ns - side.first_ns,
    )  # fmt: skip


def _options_text(raw: bytes, peer_base: int) -> str:
    """TCP options as tshark's Info column shows them, in the order they appear."""
    out = []
    i, n = 0, len(raw)
    while i < n:
        kind = raw[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n or raw[i + 1] < 2 or i + raw[i + 1] > n:
            out.append("[bad options]")
            break
        length = raw[i + 1]
        body = raw[i + 2 : i + length]
        if kind == 2 and length == 4:
            out.append(f"MSS={int.from_bytes(body, 'big')}")
        elif kind == 4 and length == 2:
            out.append("SACK_PERM")
        elif kind == 8 and length == 10:
            ts = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big")
            out.append(f"TSval={ts[0]} TSecr={ts[1]}")
        elif kind == 3 and length == 3:
            out.append(f"WS={1 << min(body[0], 14)}")
        elif kind == 5 and (length - 2) % 8 == 0:
            for j in range(0, length - 2, 8):
                left = (int.from_bytes(body[j : j + 4], "big") - peer_base) & _M32
                right = (int.from_bytes(body[j + 4 : j + 8], "big") - peer_base) & _M32
                out.append(f"SLE={left} SRE={right}")
        i += length
    return (" " + " ".join(out)) if out else ""


def _safe_wscale(p: DecodedPacket) -> int | None:
    if not p.tcp_options:
        return None
    try:
        ws = decode_options(p.tcp_options).wscale
    except ValueError:
        return None
    return None if ws is None else min(ws, 14)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """New bytes one side sent, in capture order (retransmitted bytes are left out)."""

    number: int
    time_rel_ns: int
    from_client: bool
    data: bytes
    text: str | None


def follow(analysis: Analysis, stream: int) -> list[StreamChunk]:
    """The conversation's data like Wireshark's "Follow TCP Stream". Chat directions give
    their decoded lines only (raw chat JSON could carry passwords); others the raw bytes."""
    every = sys.maxsize
    decoders = {True: StreamDecoder(max_lines=every), False: StreamDecoder(max_lines=every)}
    chunks: list[StreamChunk] = []
    for pa in analysis.packets:
        t = pa.tcp
        if t is None or t.stream != stream or not t.seglen:
            continue
        d = decoders[t.from_client]
        found = d.feed_lines(t.seq, pa.packet.payload)
        if d.is_chat:
            for line in found[1] if found is not None else ():
                chunks.append(
                    StreamChunk(pa.packet.number, pa.time_rel_ns, t.from_client, b"", line)
                )
        elif d.last_new:
            chunks.append(
                StreamChunk(pa.packet.number, pa.time_rel_ns, t.from_client, d.last_new, None)
            )
    return chunks


def endpoint_text(ep: tuple[str, int]) -> str:
    """``10.0.0.1:7878``, or ``[::1]:7878`` for IPv6."""
    return f"[{ep[0]}]:{ep[1]}" if ":" in ep[0] else f"{ep[0]}:{ep[1]}"


def retransmitted(flags: tuple[str, ...]) -> bool:
    """True when a segment's flags say its data was sent before."""
    return bool(set(flags) & {RETRANSMISSION, FAST_RETRANSMISSION, SPURIOUS_RETRANSMISSION})
