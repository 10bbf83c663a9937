"""One pass over a capture, packet by packet, as tshark's first (and only) pass does (pure).

:class:`Dissector` takes frames in capture order and returns a :class:`PacketAnalysis` for
each: the TCP layer (:mod:`~parlour.packets.analyze.tcp_analysis`), reassembly
(:mod:`~parlour.packets.analyze.reassembly`) and the application dissectors (HTTP, Parlour
chat), ICMP/ICMPv6 and UDP, giving the Protocol and Info columns tshark 4.0 gives. Nothing is
kept per packet: memory grows with the number of conversations, not with the capture, so
:func:`iter_analysis` streams captures of any size. :func:`analyze` keeps every result, for
small captures and the commands that look back (``--explain``, ``--plot``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from parlour.packets.analyze.chat import (
    CHAT_PORTS,
    ChatConversation,
    ChatLine,
    dissect_chat,
    looks_like_chat,
)
from parlour.packets.analyze.columns import (
    BoundsError,
    Columns,
    DissectorException,
    ReportedBoundsError,
    Tvb,
)
from parlour.packets.analyze.decode import DecodedPacket, decode_record
from parlour.packets.analyze.http import HTTP_PORTS, HttpConversation, dissect_http, looks_like_http
from parlour.packets.analyze.icmp import IcmpMatcher, icmp_info, icmpv6_info, quote_cut
from parlour.packets.analyze.reassembly import SEGMENT_OF_PDU, Flow, desegment, fin_reassembly
from parlour.packets.analyze.tcp_analysis import (
    A_FAST_RETRANSMISSION,
    A_KEEP_ALIVE,
    A_NOT_DISSECTED,
    A_SPURIOUS_RETRANSMISSION,
    BAD_CHECKSUM,
    FIN,
    RST,
    SNAPPED,
    SYN,
    Conversation,
    TcpInfo,
    TcpTracker,
    _Stream,
)
from parlour.packets.files.records import Record
from parlour.packets.files.stream import CaptureStream

_SEGMENT_TAIL = " " + SEGMENT_OF_PDU
#: analysis results that send a segment down desegment()'s general path
_NOT_PLAIN = A_NOT_DISSECTED | A_KEEP_ALIVE | A_SPURIOUS_RETRANSMISSION | A_FAST_RETRANSMISSION
#: packets after which a closed, silent conversation's unfinished reassembly bytes are dropped
RELEASE_AFTER = 10_000

__all__ = [
    "Analysis",
    "Dissector",
    "PacketAnalysis",
    "analyze",
    "iter_analysis",
]


@dataclass(slots=True)  # not frozen: ~2x cheaper to build; treat as read-only
class PacketAnalysis:
    """One packet as the packet list shows it, plus what the analysis found."""

    packet: DecodedPacket
    tcp: TcpInfo | None
    #: tshark's Protocol column
    protocol: str
    #: tshark's Info column
    info: str
    time_rel_ns: int
    #: the application message this packet completed: ``("HTTP", "GET / HTTP/1.1")`` or
    #: ``("Parlour", "login alice | ok #2")``
    app: tuple[str, str] | None = None
    #: the chat lines this packet completed (secrets replaced)
    chat: tuple[ChatLine, ...] = ()
    #: what the packet's TCP conversation carries, once known: "http" or "chat"
    app_kind: str | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        extra: tuple[str, ...] = ()
        if self.packet.ip_checksum_ok is False or self.packet.tcp_checksum_ok is False:
            extra = (BAD_CHECKSUM,)
        return (self.tcp.analysis if self.tcp else ()) + extra


@dataclass(frozen=True, slots=True)
class Analysis:
    """Every packet of a capture and its TCP conversations."""

    packets: tuple[PacketAnalysis, ...]
    conversations: tuple[Conversation, ...]
    #: why reading stopped before the end of the file (cut short, damaged), if it did
    problem: str | None = None


@dataclass(slots=True)
class _App:
    """The application layer of one TCP conversation."""

    #: the dissector a heuristic settled on for the rest of the conversation
    settled: str | None = None
    #: the dissector that last took the conversation's data (by port or heuristic)
    kind: str | None = None
    #: the chat heuristic looks at the first data of a conversation only
    tried_chat: bool = False
    http: HttpConversation = field(default_factory=HttpConversation)
    chat: ChatConversation = field(default_factory=ChatConversation)


class Dissector:
    """Analyse frames one at a time, in capture order (see the module). Checksums are
    verified only with *verify_checksums* (tshark's default is not to)."""

    def __init__(self, verify_checksums: bool = False) -> None:
        self.verify_checksums = verify_checksums
        self.tracker: TcpTracker | None = None
        self._icmp = IcmpMatcher()
        self._number = 0
        self._t0: int | None = None
        #: conversations that sent a FIN or RST: (packet number to look again from, stream)
        self._closing: deque[tuple[int, _Stream]] = deque()
        self._closing_ids: set[int] = set()

    @property
    def conversations(self) -> tuple[Conversation, ...]:
        return () if self.tracker is None else self.tracker.conversations()

    def record(self, rec: Record) -> PacketAnalysis:
        """Decode and analyse the next frame of the capture."""
        self._number += 1
        return self.packet(decode_record(self._number, rec, self.verify_checksums))

    def packet(self, p: DecodedPacket) -> PacketAnalysis:
        """Analyse the next decoded packet (packets must come in capture order)."""
        if self._t0 is None:
            self._t0 = p.ts_ns
            self.tracker = TcpTracker(p.ts_ns)
        tracker = self.tracker
        assert tracker is not None
        rel = p.ts_ns - self._t0
        if p.tcp is not None:
            return self._tcp(p, tracker, rel)
        proto = p.protocol
        if proto == "UDP" and p.udp_ports is not None:
            sport, dport = p.udp_ports
            ulen = p.seglen + 8
            if ulen < 8:
                info = f"{sport} → {dport} [BAD UDP LENGTH {ulen} < 8]"
            else:
                info = f"{sport} → {dport}"
                if ulen > p.l4_len:
                    info += f" [BAD UDP LENGTH {ulen} > IP PAYLOAD LENGTH]"
                info += f" Len={ulen - 8}"
                if not p.complete and len(p.payload) < 4 < p.seglen:
                    info += SNAPPED  # tshark's UDP heuristics read past the cut
        elif proto == "ICMP":
            info = icmp_info(p.payload, p.ttl, p.src, p.dst, p.number, self._icmp)
            if not p.complete and quote_cut(p.payload, 4):
                info += SNAPPED
        elif proto == "ICMPv6":
            info = icmpv6_info(p.payload, p.ttl, p.src, p.dst, p.number, self._icmp)
            if not p.complete and quote_cut(p.payload, 6):
                info += SNAPPED
        elif proto == "TCP" and len(p.payload) < 20 and p.l4_len >= 20:
            # the snap length cut the TCP header itself: tshark gets as far as the ports
            head = p.payload
            info = SNAPPED
            if len(head) >= 4:
                info = f"{int.from_bytes(head[:2], 'big')} → {int.from_bytes(head[2:4], 'big')}"
                info += SNAPPED
        else:
            info = p.problem or ""
        return PacketAnalysis(p, None, proto, info, rel)

    def _release(self, number: int) -> None:
        """Drop the reassembly bytes of conversations that closed and stayed silent for
        :data:`RELEASE_AFTER` packets (what a closed connection left unfinished — a message
        with a lost segment — would otherwise be kept to the end of the capture)."""
        closing = self._closing
        while closing and closing[0][0] <= number - RELEASE_AFTER:
            _n, st = closing.popleft()
            if st.last_frame > number - RELEASE_AFTER:  # still talking: look again later
                closing.append((st.last_frame, st))
                continue
            self._closing_ids.discard(st.index)
            for side in (st.cside, st.sside):
                if side.reassembly is not None:
                    side.reassembly.drop_data()

    def _tcp(self, p: DecodedPacket, tracker: TcpTracker, rel: int) -> PacketAnalysis:
        can_desegment = p.complete
        reason = note = ""
        if p.tcp_checksum_ok is False:
            note = " [TCP CHECKSUM INCORRECT]"
            can_desegment = False
            reason = " [incorrect TCP checksum]"
        t, st, fwd, _rev = tracker.segment(p, note)
        closing = self._closing
        if t.flags & (FIN | RST) and st.index not in self._closing_ids:
            self._closing_ids.add(st.index)
            closing.append((p.number, st))
        if closing and closing[0][0] <= p.number - RELEASE_AFTER:
            self._release(p.number)
        info = t.prefix + t.summary
        payload = p.payload
        flags = t.flags
        h = p.tcp
        assert h is not None
        if len(h.options_raw) < h.header_len - 20:
            return PacketAnalysis(p, t, "TCP", info, rel)  # dissection stopped in the options
        if not payload and not (flags & FIN and fwd.reassembly is not None):
            kind = st.app.kind if st.app is not None else None
            return PacketAnalysis(p, t, "TCP", info, rel, app_kind=kind)
        app = st.app
        if app is None:
            app = st.app = _App()
        flow = fwd.reassembly
        if (
            flow is not None and can_desegment and not flags & (RST | FIN | SYN)
            and not t.bits & _NOT_PLAIN
        ):  # fmt: skip
            # the bulk of a long message: a segment inside the PDU being reassembled, neither
            # its start nor its end (what desegment() would do, without its generality)
            msp = flow.inside(t.rel_seq, t.rel_seq + t.seglen)
            if msp is not None:
                msp.last_frame = p.number
                msp.add(p.number, (t.rel_seq - msp.seq) & 0xFFFFFFFF, payload, True)
                return PacketAnalysis(p, t, "TCP", info + _SEGMENT_TAIL, rel, app_kind=app.kind)
        http_seen = app.http.seen
        chat_lines = app.chat.lines
        cols = Columns("TCP", info, len(t.prefix))
        seq = t.rel_seq + (1 if flags & SYN else 0)
        nxtseq = (seq + t.seglen) & 0xFFFFFFFF
        end_of_stream = bool(flags & FIN)
        from_client = t.from_client

        def process(tvb: Tvb, _seq: int, desegment_ok: bool) -> tuple[int, int]:
            return self._payload(
                app, st, cols, tvb, p, t.bits, desegment_ok, end_of_stream, from_client
            )

        try:
            if (
                flags & FIN and can_desegment and flow is not None
                and fin_reassembly(flow, p.number, payload, seq, process)
            ):  # fmt: skip
                pass
            elif payload and not flags & RST:
                if can_desegment:
                    if flow is None:
                        flow = fwd.reassembly = Flow()
                    desegment(flow, cols, p.number, payload, seq, nxtseq, t.bits, process)
                else:
                    try:
                        process(Tvb(payload, t.seglen), seq, False)
                    except ReportedBoundsError:
                        cols.append(f"[BoundErrorUnreassembled Packet{reason}]")
        except BoundsError as exc:
            cols.append(exc.text)
        except DissectorException as exc:
            cols.append(exc.text)
        app_text: tuple[str, str] | None = None
        lines: tuple[ChatLine, ...] = ()
        if http_seen:
            app_text = ("HTTP", " | ".join(http_seen))
            http_seen.clear()
        if chat_lines:
            lines = tuple(chat_lines)
            chat_lines.clear()
            app_text = ("Parlour", " | ".join(line.text for line in lines))
        return PacketAnalysis(p, t, cols.protocol, cols.text(), rel, app_text, lines, app.kind)

    def _payload(
        self, app: _App, st: _Stream, cols: Columns, tvb: Tvb, p: DecodedPacket, bits: int,
        can_desegment: bool, end_of_stream: bool, from_client: bool,
    ) -> tuple[int, int]:  # fmt: skip
        """tshark's ``decode_tcp_ports``: which dissector gets the data, and its answer."""
        if bits & A_KEEP_ALIVE or bits & A_NOT_DISSECTED:
            return 0, 0  # keep-alive garbage, resent or reordered data: not dissected
        kind = app.settled
        if kind is None:
            h = p.tcp
            assert h is not None
            if h.sport in HTTP_PORTS or h.dport in HTTP_PORTS:
                kind = "http"
            elif looks_like_http(tvb):
                kind = app.settled = "http"
            elif (
                not app.tried_chat or h.sport in CHAT_PORTS or h.dport in CHAT_PORTS
            ) and looks_like_chat(tvb.data):
                kind = app.settled = "chat"
            else:
                # chat is recognised on a conversation's first data (on Parlour's port, on
                # any data: a capture may start in the middle of a conversation)
                app.tried_chat = True
                return 0, 0
        app.kind = kind
        if kind == "http":
            return dissect_http(app.http, cols, tvb, p.number, can_desegment, end_of_stream)
        return dissect_chat(app.chat, cols, tvb, from_client, can_desegment)


def iter_analysis(
    source: str | Path | bytes | Iterable[Record], verify_checksums: bool = False
) -> Generator[PacketAnalysis, None, Analysis]:
    """Analyse a capture (path, bytes, or records) packet by packet, in constant memory.

    The conversations and any reading problem are available afterwards through the
    generator's return value (``StopIteration.value``, an :class:`Analysis` without packets).
    """
    dissector = Dissector(verify_checksums)
    stream = CaptureStream(source) if isinstance(source, str | Path | bytes) else None
    records: Iterable[Record] = stream if stream is not None else source  # type: ignore[assignment]
    for rec in records:
        yield dissector.record(rec)
    return Analysis((), dissector.conversations, stream.problem if stream else None)


def analyze(
    packets: Iterable[DecodedPacket] | str | Path | bytes, verify_checksums: bool = False
) -> Analysis:
    """Every packet's analysis and the conversations: for decoded packets in capture order
    (e.g. a :class:`~parlour.packets.analyze.decode.PacketTable`), or a capture's path or
    bytes."""
    if isinstance(packets, str | Path | bytes):
        gen = iter_analysis(packets, verify_checksums)
        out: list[PacketAnalysis] = []
        try:
            while True:
                out.append(next(gen))
        except StopIteration as stop:
            summary: Analysis = stop.value
        return Analysis(tuple(out), summary.conversations, summary.problem)
    dissector = Dissector(verify_checksums)
    result = [dissector.packet(p) for p in packets]
    return Analysis(tuple(result), dissector.conversations)
