"""TCP stream tracking and Wireshark's ``tcp.analysis`` decisions (pure, one segment at a time).

The per-direction bookkeeping is a port of ``tcp_analyze_sequence_number`` in Wireshark
4.0's ``packet-tcp.c`` (the tshark the test suite compares with): next expected sequence
number, last ACK, duplicate-ACK counter, highest contiguous sequence to be ACKed, raw window
and scale, the previous segment's flags, with the same checks in the same order, so the flags
agree with tshark packet for packet. :class:`TcpTracker` adds tshark's conversation rules
(``tcp.stream``, port reuse, relative sequence numbers, window scaling) and writes the TCP
part of the Info column: the analysis prefixes in tshark's order and the summary
(see docs/design/packets-analysis.md).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from parlour.packets.analyze.decode import DecodedPacket
from parlour.packets.wire.tcp import decode_options, flags_text

_FLAGS_TEXT = [flags_text(value) for value in range(256)]
_TS_PAIR = struct.Struct("!II")

__all__ = [
    "ACK_LOST_SEGMENT",
    "BAD_CHECKSUM",
    "DUPLICATE_ACK",
    "FAST_RETRANSMISSION",
    "FLAG_ORDER",
    "KEEP_ALIVE",
    "KEEP_ALIVE_ACK",
    "LOST_SEGMENT",
    "OUT_OF_ORDER",
    "PORTS_REUSED",
    "RESET",
    "RETRANSMISSION",
    "SPURIOUS_RETRANSMISSION",
    "TSHARK_FIELDS",
    "WINDOW_FULL",
    "WINDOW_UPDATE",
    "ZERO_WINDOW",
    "ZERO_WINDOW_PROBE",
    "ZERO_WINDOW_PROBE_ACK",
    "Conversation",
    "Direction",
    "TcpInfo",
    "TcpTracker",
    "endpoint_text",
    "options_text",
    "retransmitted",
]

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

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

# tshark's TCP_A_* bits (packet-tcp.h), plus one for RST (tcp.connection.rst)
A_RETRANSMISSION = 0x0001
A_LOST_PACKET = 0x0002
A_ACK_LOST_PACKET = 0x0004
A_KEEP_ALIVE = 0x0008
A_DUPLICATE_ACK = 0x0010
A_ZERO_WINDOW = 0x0020
A_ZERO_WINDOW_PROBE = 0x0040
A_ZERO_WINDOW_PROBE_ACK = 0x0080
A_KEEP_ALIVE_ACK = 0x0100
A_OUT_OF_ORDER = 0x0200
A_FAST_RETRANSMISSION = 0x0400
A_WINDOW_UPDATE = 0x0800
A_WINDOW_FULL = 0x1000
A_REUSED_PORTS = 0x2000
A_SPURIOUS_RETRANSMISSION = 0x4000
A_RESET = 0x8000
#: segments whose data tshark does not hand to application dissectors
A_NOT_DISSECTED = A_RETRANSMISSION | A_OUT_OF_ORDER

#: display order of the flags (lists, JSON), each with its bit
FLAG_ORDER = (
    PORTS_REUSED, RETRANSMISSION, FAST_RETRANSMISSION, SPURIOUS_RETRANSMISSION, OUT_OF_ORDER,
    LOST_SEGMENT, ACK_LOST_SEGMENT, DUPLICATE_ACK, ZERO_WINDOW, ZERO_WINDOW_PROBE,
    ZERO_WINDOW_PROBE_ACK, WINDOW_FULL, WINDOW_UPDATE, KEEP_ALIVE, KEEP_ALIVE_ACK, RESET,
)  # fmt: skip
_BITS = {
    PORTS_REUSED: A_REUSED_PORTS, FAST_RETRANSMISSION: A_FAST_RETRANSMISSION,
    SPURIOUS_RETRANSMISSION: A_SPURIOUS_RETRANSMISSION, OUT_OF_ORDER: A_OUT_OF_ORDER,
    LOST_SEGMENT: A_LOST_PACKET, ACK_LOST_SEGMENT: A_ACK_LOST_PACKET,
    DUPLICATE_ACK: A_DUPLICATE_ACK, ZERO_WINDOW: A_ZERO_WINDOW,
    ZERO_WINDOW_PROBE: A_ZERO_WINDOW_PROBE, ZERO_WINDOW_PROBE_ACK: A_ZERO_WINDOW_PROBE_ACK,
    WINDOW_FULL: A_WINDOW_FULL, WINDOW_UPDATE: A_WINDOW_UPDATE, KEEP_ALIVE: A_KEEP_ALIVE,
    KEEP_ALIVE_ACK: A_KEEP_ALIVE_ACK, RESET: A_RESET,
}  # fmt: skip
#: tshark's generic tcp.analysis.retransmission: set on fast and spurious ones too
_ANY_RETRANSMISSION = A_RETRANSMISSION | A_FAST_RETRANSMISSION | A_SPURIOUS_RETRANSMISSION
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
#: Info prefixes in the order tshark shows them (each print step prepends, so the last
#: printed comes first); the duplicate ACK's text carries numbers and is made per packet
_PREFIXES = (
    (A_ZERO_WINDOW_PROBE_ACK, "[TCP ZeroWindowProbeAck] "),
    (A_ZERO_WINDOW, "[TCP ZeroWindow] "),
    (A_ZERO_WINDOW_PROBE, "[TCP ZeroWindowProbe] "),
    (A_DUPLICATE_ACK, ""),
    (A_KEEP_ALIVE_ACK, "[TCP Keep-Alive ACK] "),
    (A_KEEP_ALIVE, "[TCP Keep-Alive] "),
    (A_WINDOW_FULL, "[TCP Window Full] "),
    (A_WINDOW_UPDATE, "[TCP Window Update] "),
    (A_ACK_LOST_PACKET, "[TCP ACKed unseen segment] "),
    (A_LOST_PACKET, "[TCP Previous segment not captured] "),
    (A_OUT_OF_ORDER, "[TCP Out-Of-Order] "),
    (A_SPURIOUS_RETRANSMISSION, "[TCP Spurious Retransmission] "),
    (A_FAST_RETRANSMISSION, "[TCP Fast Retransmission] "),
    (A_RETRANSMISSION, "[TCP Retransmission] "),
    (A_REUSED_PORTS, "[TCP Port numbers reused] "),
)

_M32 = 0xFFFFFFFF
_names_cache: dict[int, tuple[str, ...]] = {0: ()}
_prefix_cache: dict[int, tuple[str, str]] = {0: ("", "")}


def flag_names(bits: int) -> tuple[str, ...]:
    """The analysis flags of *bits* in :data:`FLAG_ORDER` (generic retransmission included)."""
    names = _names_cache.get(bits)
    if names is None:
        shown = bits | (A_RETRANSMISSION if bits & _ANY_RETRANSMISSION else 0)
        names = tuple(
            f for f in FLAG_ORDER if shown & (A_RETRANSMISSION if f == RETRANSMISSION else _BITS[f])
        )
        _names_cache[bits] = names
    return names


def _prefix_parts(bits: int) -> tuple[str, str]:
    """Info prefix text before and after the duplicate-ACK slot."""
    parts = _prefix_cache.get(bits)
    if parts is None:
        before: list[str] = []
        after: list[str] = []
        target = before
        for bit, text in _PREFIXES:
            if bit == A_DUPLICATE_ACK:
                target = after
            elif bits & bit:
                target.append(text)
        parts = ("".join(before), "".join(after))
        _prefix_cache[bits] = parts
    return parts


def _gt(a: int, b: int) -> bool:
    d = (a - b) & _M32
    return 0 < d < 0x80000000


def _lt(a: int, b: int) -> bool:
    return _gt(b, a)


def _le(a: int, b: int) -> bool:
    return a == b or _gt(b, a)


@dataclass(slots=True)
class _Side:
    """One direction of a TCP conversation (tshark's ``tcp_flow_t``)."""

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
    lastsegmentflags: int = 0
    is_first_ack: bool = False
    packets: int = 0
    bytes: int = 0
    payload_bytes: int = 0
    first_ns: int | None = None
    last_ns: int = 0
    #: reassembly state (parlour.packets.analyze.reassembly), created on first use
    reassembly: Any = None


@dataclass(slots=True)
class _Stream:
    index: int
    client: tuple[str, int]
    server: tuple[str, int]
    #: the client's and the server's direction
    cside: _Side = field(default_factory=lambda: _Side())
    sside: _Side = field(default_factory=lambda: _Side())
    mru_syn_ns: int = 0
    first_rtt_ns: int = 0
    first_ns: int = 0
    last_ns: int = 0
    #: number of the stream's latest packet
    last_frame: int = 0
    server_port: int = 0
    #: the application dissector and its conversation state (decided on the first payload)
    app: Any = None


@dataclass(slots=True)  # not frozen: ~2x cheaper to build; treat as read-only
class TcpInfo:
    """What the TCP layer of one segment says, as tshark shows it."""

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
    #: analysis flags (names, :data:`FLAG_ORDER`); fast/spurious include the generic one
    analysis: tuple[str, ...]
    from_client: bool
    #: for a duplicate ACK: (number of the frame it duplicates, how many duplicates so far)
    dup_ack: tuple[int, int] | None = None
    #: the other direction's initial sequence number (SACK blocks are shown relative to it)
    peer_base: int = 0
    #: tshark's TCP_A_* bits (the names above are derived from them)
    bits: int = 0
    #: the analysis prefixes of the Info column, e.g. ``"[TCP Window Full] "``
    prefix: str = ""
    #: ``51874 → 80 [PSH, ACK] Seq=1 Ack=1 Win=502 Len=28 TSval=... TSecr=...``
    summary: str = ""


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


def _analyze_segment(
    st: _Stream, fwd: _Side, rev: _Side, now: int, num: int, seq: int, ack: int, flags: int,
    window: int, seglen: int,
) -> int:  # fmt: skip
    """tshark's ``tcp_analyze_sequence_number`` for one segment: its TCP_A_* bits.

    (Written with local variables and inline modular comparisons: it runs for every
    segment.)"""
    ta = 0
    if fwd.base_seq is None:
        fwd.base_seq = seq if flags & SYN else (seq - 1) & _M32
    if rev.base_seq is None and flags & ACK:
        rev.base_seq = (ack - 1) & _M32
    nextseq = fwd.nextseq
    lastack = fwd.lastack
    if seglen == 1 and seq == nextseq and rev.window == 0:
        ta = A_ZERO_WINDOW_PROBE
    else:
        nosfr = not flags & (SYN | FIN | RST)
        if window == 0 and nosfr:
            ta = A_ZERO_WINDOW
        if nextseq and 0 < (seq - nextseq) & _M32 < 0x80000000 and not flags & RST:
            ta |= A_LOST_PACKET
        if seglen <= 1 and seq == (nextseq - 1) & _M32 and nosfr:
            ta |= A_KEEP_ALIVE
        if seglen == 0:
            if (
                window and window != fwd.window and seq == nextseq and ack == lastack and nosfr
            ):  # fmt: skip
                ta |= A_WINDOW_UPDATE
            if window == fwd.window and seq == nextseq and ack == lastack and nosfr:
                if window and rev.lastsegmentflags & A_KEEP_ALIVE:
                    ta |= A_KEEP_ALIVE_ACK
                elif window == 0 and rev.lastsegmentflags & A_ZERO_WINDOW_PROBE:
                    ta |= A_ZERO_WINDOW_PROBE_ACK
                elif window:
                    fwd.dupacknum = 1 if fwd.dupacknum == -1 else fwd.dupacknum + 1
                    ta |= A_DUPLICATE_ACK
        elif rev.win_scale != -1 and nosfr:
            shift = 0 if rev.is_first_ack or rev.win_scale < 0 else rev.win_scale
            if (seq + seglen) & _M32 == (rev.lastack + (rev.window << shift)) & _M32:
                ta |= A_WINDOW_FULL
    # the duplicate-ACK counter restarts when the ACK number moves
    if ack != lastack:
        fwd.lastnondupack = num
        fwd.dupacknum = 0
    rmax = rev.maxseqtobeacked
    if rmax and flags & ACK and 0 < (ack - rmax) & _M32 < 0x80000000:
        if 0 < (rev.nextseq - rmax) & _M32 < 0x80000000:
            rev.maxseqtobeacked = rev.nextseq  # report once per hole
            ta |= A_ACK_LOST_PACKET
        else:  # the other side is stalled with pure ACKs: report the same hole only once
            if rev.dupacknum == 0:
                ta |= A_ACK_LOST_PACKET
            rev.dupacknum = -1  # tshark's counter is unsigned: -1 also counts as ">= 2"
    if (seglen > 0 or flags & (SYN | FIN)) and not ta & A_KEEP_ALIVE:
        not_advanced = bool(nextseq) and 0 < (nextseq - seq) & _M32 < 0x80000000
        if seglen > 1 and (nextseq - 1) & _M32 == seq:
            not_advanced = False
        rlastack = rev.lastack
        if (
            seglen > 0 and rlastack
            and (rlastack - ((seq + seglen) & _M32)) & _M32 < 0x80000000
        ):  # fmt: skip
            ta |= A_SPURIOUS_RETRANSMISSION
        elif not_advanced:
            if (
                (rev.dupacknum >= 2 or rev.dupacknum == -1) and rlastack == seq
                and 0 <= now - rev.lastacktime < 20_000_000
            ):  # fmt: skip
                ta |= A_FAST_RETRANSMISSION
            elif (
                0 <= now - fwd.nextseqtime < (st.first_rtt_ns or 3_000_000)
                and nextseq != (seq + seglen + (1 if flags & (SYN | FIN) else 0)) & _M32
            ):
                ta |= A_OUT_OF_ORDER
            else:
                ta |= A_RETRANSMISSION
    if not ta & A_ZERO_WINDOW_PROBE:
        new = (seq + seglen + (1 if flags & (SYN | FIN) else 0)) & _M32
        if not nextseq or 0 < (new - nextseq) & _M32 < 0x80000000:
            fwd.nextseq = nextseq = new
            fwd.nextseqtime = now
        if seq == fwd.maxseqtobeacked or not fwd.maxseqtobeacked:
            fwd.maxseqtobeacked = nextseq
    fwd.window = window
    fwd.lastack = ack
    fwd.lastacktime = now
    fwd.lastsegmentflags = ta
    return ta


class TcpTracker:
    """Conversations (tshark's ``tcp.stream``) and the TCP layer of every segment.

    :meth:`segment` takes a decoded TCP packet and returns its :class:`TcpInfo` and the
    stream it belongs to; the stream carries the per-direction state the reassembly and the
    application dissectors keep.
    """

    def __init__(self, t0: int = 0) -> None:
        self.t0 = t0
        self.streams: dict[tuple[str, int, str, int], _Stream] = {}
        self.ordered: list[_Stream] = []

    def segment(
        self, p: DecodedPacket, checksum_note: str = ""
    ) -> tuple[TcpInfo, _Stream, _Side, _Side]:
        """The TCP layer of *p*; *checksum_note* goes where tshark puts a checksum error."""
        h = p.tcp
        assert h is not None
        sport, dport, seq, ack, hlen, flags, raw_window, _cs, urgent, options = h
        src, dst = p.src, p.dst
        key = (src, sport, dst, dport)  # both directions are in the table
        st = self.streams.get(key)
        me, peer = (src, sport), (dst, dport)
        reused = 0
        if st is not None and flags & (SYN | ACK) == SYN:
            mine = st.cside if st.client == me else st.sside
            base = mine.base_seq
            if base is not None and seq != base:
                st = None  # the ports are reused: a new conversation (tshark's rule)
                reused = A_REUSED_PORTS
            elif base is not None:  # a retransmitted SYN restores the expected sequence number
                mine.nextseq = mine.maxseqtobeacked
        if st is None:
            client, server = (me, peer) if not (flags & SYN and flags & ACK) else (peer, me)
            st = _Stream(len(self.ordered), client, server, first_ns=p.ts_ns)
            self.streams[key] = self.streams[(dst, dport, src, sport)] = st
            self.ordered.append(st)
        from_client = st.client == me
        fwd, rev = (st.cside, st.sside) if from_client else (st.sside, st.cside)
        cut = len(options) < hlen - 20  # the snap length cut the options short
        if flags & SYN and cut:
            # tshark stops at the cut option: a window scale before it is learnt, and the
            # check that settles "no scaling" is never reached
            st.server_port = sport if flags & ACK else dport
            ws = _wscale(options)
            if not flags & ACK:
                st.mru_syn_ns = p.ts_ns
            if ws is not None:
                fwd.win_scale = ws
        elif flags & SYN:
            st.server_port = sport if flags & ACK else dport
            ws = _wscale(options)
            if not flags & ACK:
                st.mru_syn_ns = p.ts_ns
                fwd.win_scale = ws if ws is not None else -2
                if ws is None:
                    rev.win_scale = -2
            else:
                if fwd.base_seq is not None and fwd.base_seq != seq:
                    fwd.base_seq = seq  # a SYN-ACK for a new incarnation: renumber
                    reused = A_REUSED_PORTS
                if ws is None or rev.win_scale == -2:
                    fwd.win_scale = -2
                    rev.win_scale = -2
                else:
                    fwd.win_scale = ws
        window = raw_window
        if not flags & SYN and fwd.win_scale >= 0:
            window <<= fwd.win_scale
        seglen = p.seglen
        bits = (
            _analyze_segment(st, fwd, rev, p.ts_ns, p.number, seq, ack, flags, raw_window, seglen)
            | reused
        )
        if flags & SYN:
            fwd.is_first_ack = True
        elif flags & ACK:
            fwd.is_first_ack = False
            if st.mru_syn_ns and not st.first_rtt_ns:
                st.first_rtt_ns = p.ts_ns - st.mru_syn_ns
        st.last_ns = p.ts_ns
        st.last_frame = p.number
        fwd.packets += 1
        fwd.bytes += p.wire_len
        fwd.payload_bytes += seglen
        if fwd.first_ns is None:
            fwd.first_ns = p.ts_ns
        fwd.last_ns = p.ts_ns
        base = fwd.base_seq if fwd.base_seq is not None else seq
        rbase = rev.base_seq if rev.base_seq is not None else ack
        rel_seq = (seq - base) & _M32
        rel_ack = (ack - rbase) & _M32 if flags & ACK else 0
        if flags & URG or checksum_note:
            summary = (
                f"{sport} → {dport} [{_FLAGS_TEXT[flags]}] Seq={rel_seq}"
                + (f" Ack={rel_ack}" if flags & ACK else "")
                + f" Win={window}{checksum_note}"
                + (f" Urg={urgent}" if flags & URG else "")
                + f" Len={seglen}"
            )
        elif flags & ACK:
            summary = (
                f"{sport} → {dport} [{_FLAGS_TEXT[flags]}] Seq={rel_seq} Ack={rel_ack} "
                f"Win={window} Len={seglen}"
            )
        else:
            summary = (
                f"{sport} → {dport} [{_FLAGS_TEXT[flags]}] Seq={rel_seq} Win={window} Len={seglen}"
            )
        if len(options) == 12 and not cut and options[:4] == b"\x01\x01\x08\x0a":
            tsval, tsecr = _TS_PAIR.unpack_from(options, 4)  # Linux's layout
            summary += f" TSval={tsval} TSecr={tsecr}"
        elif options or cut:
            summary += options_text(options, rbase, hlen - 20)
        dup = None
        if flags & RST:
            bits |= A_RESET
        if cut:  # the analysis is printed after the options: tshark never got there
            prefix = ""
            names = flag_names(bits & A_RESET)
        elif bits:
            before, after = _prefix_parts(bits)
            if bits & A_DUPLICATE_ACK:
                dup = (fwd.lastnondupack, fwd.dupacknum)
                before += f"[TCP Dup ACK {dup[0]}#{dup[1]}] "
            prefix = before + after
            names = flag_names(bits)
        else:
            prefix = ""
            names = ()
        info = TcpInfo(
            st.index, sport, dport, flags, seq, ack, rel_seq, rel_ack, seglen, window, names,
            from_client, dup, rbase, bits, prefix, summary,
        )  # fmt: skip
        return info, st, fwd, rev

    def conversations(self) -> tuple[Conversation, ...]:
        t0 = self.t0
        return tuple(
            Conversation(
                s.index,
                s.client,
                s.server,
                _direction(s.cside, t0),
                _direction(s.sside, t0),
                s.first_ns - t0,
                s.last_ns - s.first_ns,
                s.first_rtt_ns or None,
            )
            for s in self.ordered
        )


def _direction(side: _Side, t0: int) -> Direction:
    if side.first_ns is None:
        return Direction(0, 0, 0, None, 0)
    return Direction(
        side.packets, side.bytes, side.payload_bytes, side.first_ns - t0,
        side.last_ns - side.first_ns,
    )  # fmt: skip


#: what tshark appends when the snap length cut a packet short where it was reading
SNAPPED = "[Packet size limited during capture]"


def options_text(raw: bytes, peer_base: int, total: int | None = None) -> str:
    """TCP options as tshark's Info column shows them, in the order they appear. *total* is
    the options' length according to the header; when the capture holds less (*raw* was cut
    by the snap length), the text stops at the cut option with tshark's exception text."""
    out = []
    n = len(raw)
    total = n if total is None else total
    i = 0
    cut = False
    while i < total:
        if i >= n:
            cut = True
            break
        kind = raw[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n:  # the length byte was not captured (or is missing altogether)
            cut = i + 1 < total
            break
        length = raw[i + 1]
        if length < 2 or i + length > total:
            break  # a malformed option
        if i + length > n and kind != 5:
            cut = True
            break
        body = raw[i + 2 : i + length]
        if kind == 8 and length == 10:
            ts = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big")
            out.append(f"TSval={ts[0]} TSecr={ts[1]}")
        elif kind == 2 and length == 4:
            out.append(f"MSS={int.from_bytes(body, 'big')}")
        elif kind == 4 and length == 2:
            out.append("SACK_PERM")
        elif kind == 3 and length == 3:
            out.append(f"WS={1 << min(body[0], 14)}")
        elif kind == 5 and (length - 2) % 8 == 0 and i + length > n:
            for j in range(0, n - i - 2 - 7, 8):  # tshark shows the blocks it could read
                left = (int.from_bytes(body[j : j + 4], "big") - peer_base) & _M32
                right = (int.from_bytes(body[j + 4 : j + 8], "big") - peer_base) & _M32
                out.append(f"SLE={left} SRE={right}")
            cut = True
            break
        elif kind == 5 and (length - 2) % 8 == 0:
            for j in range(0, length - 2, 8):
                left = (int.from_bytes(body[j : j + 4], "big") - peer_base) & _M32
                right = (int.from_bytes(body[j + 4 : j + 8], "big") - peer_base) & _M32
                out.append(f"SLE={left} SRE={right}")
        i += length
    text = (" " + " ".join(out)) if out else ""
    return text + SNAPPED if cut else text


def _wscale(options: bytes) -> int | None:
    if not options:
        return None
    try:
        ws = decode_options(options).wscale
    except ValueError:
        return None
    return None if ws is None else min(ws, 14)


def endpoint_text(ep: tuple[str, int]) -> str:
    """``10.0.0.1:7878``, or ``[::1]:7878`` for IPv6."""
    return f"[{ep[0]}]:{ep[1]}" if ":" in ep[0] else f"{ep[0]}:{ep[1]}"


def retransmitted(flags: tuple[str, ...]) -> bool:
    """True when a segment's flags say its data was sent before."""
    return RETRANSMISSION in flags
