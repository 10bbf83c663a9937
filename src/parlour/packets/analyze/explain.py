"""Plain-words narration of TCP conversations, packet by packet (pure).

For every conversation: who opens it and what each side offers, every data segment with what
it carries (``HTTP 'GET / HTTP/1.1'``, ``Parlour 'login alice'``), every ACK with what it
acknowledges — delayed ACKs, ACKs piggybacked on data, duplicate ACKs and their SACK blocks —
keep-alives, windows, resets (a refused connection: nobody listening), the teardown, and for
each packet tshark flags, *which* flag and *why*. A chat capture then gets the story across
its connections: the message alice sent in one packet is the one the server relays to bob in
another. The client is named after the user who logged in on it — once the server accepted
the login, not before, and not after a failed one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from parlour.packets.analyze.dissect import Analysis, Dissector, PacketAnalysis
from parlour.packets.analyze.reassembly import SEGMENT_OF_PDU
from parlour.packets.analyze.tcp_analysis import (
    A_ACK_LOST_PACKET,
    A_DUPLICATE_ACK,
    A_FAST_RETRANSMISSION,
    A_KEEP_ALIVE,
    A_KEEP_ALIVE_ACK,
    A_LOST_PACKET,
    A_OUT_OF_ORDER,
    A_RETRANSMISSION,
    A_REUSED_PORTS,
    A_SPURIOUS_RETRANSMISSION,
    A_WINDOW_FULL,
    A_WINDOW_UPDATE,
    A_ZERO_WINDOW,
    A_ZERO_WINDOW_PROBE,
    A_ZERO_WINDOW_PROBE_ACK,
    Conversation,
    TcpInfo,
    endpoint_text,
)
from parlour.packets.build.conversation import BuiltPacket
from parlour.packets.files.records import Record
from parlour.packets.wire.linktypes import LINKTYPE_RAW
from parlour.packets.wire.tcp import TcpOptions, decode_options

__all__ = ["explain_analysis", "explain_built", "narrate_conversation"]

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_M32 = 0xFFFFFFFF
#: an ACK for data that arrived this long ago was held back on purpose (Linux waits 40 ms)
DELAYED_ACK_NS = 20_000_000


def _offers(o: TcpOptions) -> str:
    parts = []
    if o.mss is not None:
        parts.append(f"MSS {o.mss}")
    if o.wscale is not None:
        parts.append(f"window scale {o.wscale} (×{1 << min(o.wscale, 14)})")
    if o.sack_permitted:
        parts.append("SACK permitted")
    if o.timestamps is not None:
        parts.append("timestamps")
    return (", offering " + ", ".join(parts)) if parts else ""


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.3f} ms"


def _sack_blocks(pa: PacketAnalysis) -> list[tuple[int, int]]:
    t = pa.tcp
    if t is None or not pa.packet.tcp_options:
        return []
    try:
        blocks = decode_options(pa.packet.tcp_options).sack_blocks
    except ValueError:
        return []
    return [((a - t.peer_base) & _M32, (b - t.peer_base) & _M32) for a, b in blocks]


@dataclass(slots=True)
class _Side:
    """What the narrator remembers about one direction."""

    name: str
    sent_end: int = 0  # highest relative sequence number sent (end of data)
    last_data_ns: int = 0
    acked: int = 0  # highest ACK this side sent
    unacked: list[tuple[int, int, int]] = field(default_factory=list)  # (end, ts, number)
    fin: bool = False
    syn: bool = False
    kind: str = ""  # "http" or "chat" once data shows it
    #: the first bytes seen at each relative sequence number, and in which packet
    sent: dict[int, tuple[bytes, int]] = field(default_factory=dict)


@dataclass(slots=True)
class _Login:
    rid: Any
    user: str
    number: int


@dataclass(slots=True)
class _State:
    conv: Conversation
    sides: dict[bool, _Side]
    established: bool = False
    synack: bool = False
    closed: int = 0
    login: _Login | None = None
    user: str = ""
    #: (packet number of the server's "ok", user) for every accepted login, in order
    logins: list[tuple[int, str]] = field(default_factory=list)
    http_requests: list[tuple[int, str]] = field(default_factory=list)


def narrate_conversation(
    packets: Sequence[PacketAnalysis],
    conv: Conversation,
    names: tuple[str, str] | None = None,
    renames: bool = True,
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """``(number, sentence)`` for every packet of *conv*, and the logins the server accepted
    on it: ``(number of its reply, user)``.

    *names* are how to call the client and the server (default: ``the client
    10.0.0.2:40000``); with *renames* the client is called by the user who logs in on it.
    """
    client = endpoint_text(conv.client)
    server = endpoint_text(conv.server)
    cname, sname = names or (f"the client {client}", f"the server {server}")
    st = _State(conv, {True: _Side(cname), False: _Side(sname)})
    out: list[tuple[int, str]] = []
    for pa in packets:
        t = pa.tcp
        if t is None or t.stream != conv.stream:
            continue
        out.append((pa.packet.number, _sentence(st, pa, t) + _why(st, pa, t)))
        if renames:
            _follow_login(st, pa, t, client, out)
    return out, st.logins


def _sentence(st: _State, pa: PacketAnalysis, t: TcpInfo) -> str:
    me, peer = st.sides[t.from_client], st.sides[not t.from_client]
    f = t.flags
    now = pa.packet.ts_ns
    new_ack = (
        bool(f & ACK) and (t.rel_ack - me.acked) & _M32 < 0x80000000 and t.rel_ack != (me.acked)
    )
    acked_segments = _take_acked(peer, t.rel_ack) if f & ACK else []
    if f & ACK:
        me.acked = t.rel_ack if new_ack or not me.acked else me.acked
    if f & RST:
        if not st.synack and peer.syn and not st.established:
            return (
                f"{me.name} refuses the connection: RST, ACK (ack {t.rel_ack}) — nobody is "
                f"listening on port {t.sport}, so the kernel answers the SYN itself"
            )
        if not st.synack and not peer.syn and not me.syn:
            how = (
                f"seq {t.rel_seq}, the number the data acknowledged" if not f & ACK
                else f"ack {t.rel_ack}, the end of the data"
            )  # fmt: skip
            return (
                f"{me.name} answers with RST ({how}): there is no connection on port "
                f"{t.sport} — no handshake opened one and no socket owns these ports, so the "
                "kernel resets data that belongs to nothing"
            )
        return (
            f"{me.name} resets the connection (RST, seq {t.rel_seq}): {peer.name} must stop; "
            "anything still in flight is thrown away"
        )
    if f & SYN and not f & ACK:
        me.syn = True
        return f"{me.name} opens a connection to {peer.name}: SYN, seq 0{_offers(_options(pa))}"
    if f & SYN:
        st.synack = True
        return (
            f"{me.name} answers with SYN-ACK: seq 0, ack {t.rel_ack} (acknowledges the SYN)"
            f"{_offers(_options(pa))}"
        )
    if f & FIN:
        first = st.closed == 0
        st.closed += 1
        me.fin = True
        text = (
            f"{me.name} {'closes' if first else 'also closes'} its side: FIN, ACK, seq "
            f"{t.rel_seq}, ack {t.rel_ack}"
        )
        if t.seglen:
            text += f", with {t.seglen} last bytes of data: {_carries(st, pa, t, me)}"
        return text + (" (it will send nothing more)" if first else "")
    if t.bits & A_KEEP_ALIVE:
        idle = (now - me.last_data_ns) / 1e9 if me.last_data_ns else 0.0
        what = "one old byte" if t.seglen else "no data"
        return (
            f"{me.name} sends a TCP keep-alive probe: seq {t.rel_seq}, one below the next byte, "
            f"{what} — after {idle:.1f} s of silence it checks that {peer.name} is still there"
        )
    if t.bits & A_KEEP_ALIVE_ACK:
        return f"{me.name} answers the keep-alive: still here (ack {t.rel_ack})"
    if t.bits & A_ZERO_WINDOW_PROBE:
        return (
            f"{me.name} probes the closed window: 1 byte at seq {t.rel_seq}, to learn when "
            f"{peer.name} has room again"
        )
    if t.seglen:
        me.last_data_ns = now
        end = (t.rel_seq + t.seglen) & _M32
        if (end - me.sent_end) & _M32 < 0x80000000:
            me.sent_end = end
        me.unacked.append((end, now, pa.packet.number))
        me.sent.setdefault(t.rel_seq, (pa.packet.payload, pa.packet.number))
        flag = "PSH, ACK" if f & PSH else "ACK"
        text = (
            f"{me.name} sends {t.seglen} bytes to {peer.name} ({flag}), seq {t.rel_seq}, next "
            f"seq {end}, ack {t.rel_ack}: {_carries(st, pa, t, me)}"
        )
        if new_ack and acked_segments:
            text += (
                f"; the same segment acknowledges {peer.name}'s bytes up to {t.rel_ack} "
                "(a piggybacked ACK: no separate ACK needed)"
            )
        return text
    if st.synack and not st.established:
        st.established = True
        return (
            f"{me.name} completes the three-way handshake: ACK, seq {t.rel_seq}, ack "
            f"{t.rel_ack}; the connection is established"
        )
    if st.closed >= 2 and peer.fin:
        return f"{me.name} acknowledges the last FIN (ack {t.rel_ack}); the connection is closed"
    if t.bits & A_DUPLICATE_ACK and t.dup_ack is not None:
        frame, count = t.dup_ack
        text = (
            f"{me.name} repeats its ACK for byte {t.rel_ack} (duplicate #{count} of packet "
            f"{frame}): it is still waiting for the bytes from {t.rel_ack} on"
        )
        blocks = _sack_blocks(pa)
        if blocks:
            text += "; its SACK blocks say it already holds " + ", ".join(
                f"{a}–{b}" for a, b in blocks
            )
        return text
    if t.bits & A_WINDOW_UPDATE:
        return (
            f"{me.name} only announces a bigger window: {t.window} bytes (nothing new to "
            "acknowledge)"
        )
    text = (
        f"{me.name} acknowledges all bytes before {t.rel_ack} from {peer.name} (ACK, no data, "
        f"window {t.window})"
    )
    if acked_segments:
        oldest = min(ts for _e, ts, _n in acked_segments)
        newest = max(ts for _e, ts, _n in acked_segments)
        if len(acked_segments) >= 2:
            text += f"; one ACK for {len(acked_segments)} segments (TCP need not ACK each one)"
        if now - newest >= DELAYED_ACK_NS:
            text += (
                f"; a delayed ACK: it waited {_ms(now - oldest)} for data of its own to send "
                "the ACK with"
            )
    return text


def _take_acked(side: _Side, ack: int) -> list[tuple[int, int, int]]:
    """The data segments of *side* an ACK for *ack* acknowledges (removed from the list)."""
    done = [u for u in side.unacked if (ack - u[0]) & _M32 < 0x80000000]
    if done:
        side.unacked = [u for u in side.unacked if u not in done]
    return done


def _options(pa: PacketAnalysis) -> TcpOptions:
    with contextlib.suppress(ValueError):
        return decode_options(pa.packet.tcp_options)
    return TcpOptions()


def _carries(st: _State, pa: PacketAnalysis, t: TcpInfo, me: _Side) -> str:
    if pa.app is not None:
        proto, text = pa.app
        me.kind = "chat" if proto == "Parlour" else "http"
        if proto == "HTTP":
            what = _http_pairing(st, pa, t, text)
            return f"HTTP {text!r}{what}"
        return f"{proto} {text!r}"
    if pa.info.endswith(SEGMENT_OF_PDU):
        kind = {"chat": "a chat line", "http": "an HTTP message"}.get(
            me.kind or st.sides[not t.from_client].kind, "a message"
        )
        return f"{t.seglen} bytes of {kind} a later segment completes ({SEGMENT_OF_PDU})"
    if t.bits & (A_RETRANSMISSION | A_SPURIOUS_RETRANSMISSION | A_OUT_OF_ORDER):
        if _reused(me, pa, t):
            head = pa.packet.payload.split(b"\n", 1)[0].rstrip(b"\r")[:60]
            return (
                f"{t.seglen} new bytes under sequence numbers already used "
                f"(starting {head.decode('latin-1')!r}; see why below)"
            )
        return "data sent before (see why below)"
    return f"{t.seglen} bytes of data"


def _http_pairing(st: _State, pa: PacketAnalysis, t: TcpInfo, text: str) -> str:
    if t.from_client:
        st.http_requests.append((pa.packet.number, text))
        return ""
    if st.http_requests:
        number, request = st.http_requests.pop(0)
        return f" (the answer to {request!r} in packet {number})"
    return ""


def _follow_login(
    st: _State, pa: PacketAnalysis, t: TcpInfo, client: str, out: list[tuple[int, str]]
) -> None:
    """Rename the client once the server accepts a login; say so when it refuses one."""
    for line in pa.chat:
        obj = line.obj or {}
        kind = obj.get("type")
        if line.from_client and kind in ("login", "signup", "register"):
            st.login = _Login(obj.get("id"), str(obj.get("username", "?")), pa.packet.number)
        elif not line.from_client and st.login is not None and kind in ("ok", "error"):
            if obj.get("id") != st.login.rid:
                continue
            if kind == "ok":
                st.user = st.login.user
                st.logins.append((pa.packet.number, st.user))
                st.sides[True].name = f"{st.user} ({client})"
            else:
                code = obj.get("code", "?")
                who = st.sides[True].name
                out.append((pa.packet.number, (
                    f"  (the server refuses the login of {st.login.user!r} from packet "
                    f"{st.login.number}: {code}; the connection stays {who})"
                )))  # fmt: skip
            st.login = None
    _ = t


def _why(st: _State, pa: PacketAnalysis, t: TcpInfo) -> str:
    """What tshark will flag on this packet, and why, in plain words."""
    b = t.bits
    if not b & ~0x8000:
        return ""
    me, peer = st.sides[t.from_client], st.sides[not t.from_client]
    parts: list[str] = []
    if b & A_REUSED_PORTS:
        parts.append(
            "[TCP Port numbers reused]: a new SYN on the addresses and ports of an earlier "
            "connection, with another initial sequence number — a new conversation"
        )
    if b & A_SPURIOUS_RETRANSMISSION:
        parts.append(
            f"[TCP Spurious Retransmission]: {peer.name} had already acknowledged these bytes"
        )
    elif b & A_FAST_RETRANSMISSION:
        parts.append(
            "[TCP Fast Retransmission]: resent at once, because duplicate ACKs asked for "
            f"byte {t.rel_seq}"
        )
    elif b & A_RETRANSMISSION:
        parts.append(
            f"[TCP Retransmission]: seq {t.rel_seq} is below the {me.sent_end} already sent — "
            "the same sequence numbers again, so the receiver keeps the first copy"
        )
    if b & (A_RETRANSMISSION | A_SPURIOUS_RETRANSMISSION) and t.seglen:
        parts.extend(_reused(me, pa, t))
    if b & A_OUT_OF_ORDER:
        parts.append(
            "[TCP Out-Of-Order]: these bytes come after later ones (within one round trip), "
            "so they were reordered rather than resent"
        )
    if b & A_LOST_PACKET:
        parts.append(
            f"[TCP Previous segment not captured]: seq {t.rel_seq} jumps past the next byte "
            "expected — the bytes between were lost on the way, or the capture missed them"
        )
    if b & A_ACK_LOST_PACKET:
        parts.append(
            f"[TCP ACKed unseen segment]: it acknowledges bytes of {peer.name} the capture "
            "never saw"
        )
    if b & A_WINDOW_FULL:
        parts.append(
            f"[TCP Window Full]: with it {me.name} has sent everything {peer.name}'s window "
            "allows; it must wait for an ACK"
        )
    if b & A_WINDOW_UPDATE:
        parts.append("[TCP Window Update]: same ACK, bigger window")
    if b & A_KEEP_ALIVE:
        parts.append("[TCP Keep-Alive]: the sequence number is one below the next byte")
    if b & A_KEEP_ALIVE_ACK:
        parts.append("[TCP Keep-Alive ACK]: the answer to a keep-alive")
    if b & A_DUPLICATE_ACK and t.dup_ack is not None:
        parts.append(
            f"[TCP Dup ACK {t.dup_ack[0]}#{t.dup_ack[1]}]: the same ACK number and window as "
            "before, and no data"
        )
    if b & A_ZERO_WINDOW:
        parts.append(
            f"[TCP ZeroWindow]: {me.name}'s receive buffer is full; {peer.name} must stop sending"
        )
    if b & A_ZERO_WINDOW_PROBE:
        parts.append("[TCP ZeroWindowProbe]: one byte sent into a closed window")
    if b & A_ZERO_WINDOW_PROBE_ACK:
        parts.append("[TCP ZeroWindowProbeAck]: the window is still closed")
    return "".join(
        ("\n        tshark: " if part.startswith("[") else "\n        note: ") + part
        for part in parts
    )


def _reused(me: _Side, pa: PacketAnalysis, t: TcpInfo) -> list[str]:
    """Say so when a "retransmission" carries other bytes than the first copy did: new data
    sent under sequence numbers already used (the source design's lab did exactly that)."""
    first = me.sent.get(t.rel_seq)
    if first is None or first[1] == pa.packet.number:
        return []
    old, number = first
    new = pa.packet.payload
    n = min(len(old), len(new))
    if old[:n] == new[:n] and len(old) >= len(new):
        return []
    return [
        f"these are not the bytes seq {t.rel_seq} carried in packet {number}: new data under "
        "sequence numbers already used — the sender reuses sequence numbers, and the "
        "receiver, which has those numbers already, throws the new bytes away"
    ]


def explain_analysis(analysis: Analysis, stream: int | None = None) -> list[str]:
    """A lab-report narration of analysed TCP conversations: for each one a heading, one
    numbered sentence per packet and a summary; then, for chat captures, how the messages
    travel from one connection to another."""
    out: list[str] = []
    users: dict[int, list[tuple[int, str]]] = {}
    for conv in analysis.conversations:
        if stream is not None and conv.stream != stream:
            continue
        client, server = endpoint_text(conv.client), endpoint_text(conv.server)
        out.append(f"Conversation {conv.stream}: client {client} ↔ server {server}")
        sentences, logins = narrate_conversation(analysis.packets, conv)
        users[conv.stream] = logins
        for number, text in sentences:
            out.append(f"{number:>6}  {text}" if not text.startswith("  ") else f"      {text}")
        out.append("        Summary: " + _summary(analysis, conv) + ".")
        out.append("")
    story = _across(analysis, users)
    if story and stream is None:
        out.append("Across the conversations:")
        out.extend(story)
        out.append("")
    return out


def _summary(analysis: Analysis, conv: Conversation) -> str:
    lines = {True: 0, False: 0}
    anomalies: dict[str, int] = {}
    for pa in analysis.packets:
        t = pa.tcp
        if t is None or t.stream != conv.stream:
            continue
        for line in pa.chat:
            lines[line.from_client] += 1
        for flag in pa.flags:
            anomalies[flag] = anomalies.get(flag, 0) + 1
    parts = [
        f"{conv.packets} packets in {_ms(conv.duration_ns)}",
        f"{conv.to_server.payload} bytes of data to the server, {conv.to_client.payload} back",
    ]
    if conv.handshake_rtt_ns is not None:
        parts.append(f"handshake round trip {_ms(conv.handshake_rtt_ns)}")
    if lines[True] or lines[False]:
        parts.append(f"{lines[True]} chat lines from the client, {lines[False]} from the server")
    if anomalies:
        parts.append("TCP analysis: " + ", ".join(f"{n}× {f}" for f, n in anomalies.items()))
    else:
        parts.append("no retransmissions, losses or resets")
    return "; ".join(parts)


def _user_at(logins: list[tuple[int, str]], number: int) -> str:
    """Who was logged in on a connection when packet *number* went by."""
    user = ""
    for at, name in logins:
        if at >= number:
            break
        user = name
    return user


def _across(analysis: Analysis, users: dict[int, list[tuple[int, str]]]) -> list[str]:
    """Chat messages followed from the sender's connection to the recipients' (or to the
    server's refusal)."""
    sent: list[tuple[int, int, str, dict[str, Any]]] = []  # (number, stream, user, request)
    got: list[tuple[int, int, str, dict[str, Any]]] = []  # (number, stream, user, event)
    replies: dict[tuple[int, Any], list[tuple[int, dict[str, Any]]]] = {}
    for pa in analysis.packets:
        t = pa.tcp
        if t is None or not pa.chat:
            continue
        number = pa.packet.number
        user = _user_at(users.get(t.stream, []), number)
        for line in pa.chat:
            obj = line.obj
            if obj is None:
                continue
            kind = obj.get("type")
            if line.from_client and kind in ("send", "dm"):
                sent.append((number, t.stream, user, obj))
            elif line.from_client:
                continue
            elif kind == "event" and obj.get("event") in ("message", "dm"):
                got.append((number, t.stream, user, obj))
            elif kind in ("ok", "error") and obj.get("id") is not None:
                with contextlib.suppress(TypeError):  # an unhashable id: no pairing
                    replies.setdefault((t.stream, obj.get("id")), []).append((number, obj))
    out = []
    used: set[int] = set()
    for number, stream, user, req in sent:
        who = user or f"the client of conversation {stream}"
        text = str(req.get("text", ""))
        hops = []
        for i, (gnum, gstream, guser, ev) in enumerate(got):
            if i in used or gnum < number or str(ev.get("text", "")) != text:
                continue
            if user and ev.get("from") not in (user, None):
                continue
            if req.get("type") == "send" and (
                ev.get("event") != "message" or str(ev.get("room", "")) != str(req.get("room"))
            ):
                continue
            if req.get("type") == "dm" and ev.get("event") != "dm":
                continue
            used.add(i)
            whom = guser or f"the client of conversation {gstream}"
            if gstream == stream:
                hops.append(f"echoes it back to {whom} in packet {gnum}")
            else:
                hops.append(f"relays it to {whom} in packet {gnum} (conversation {gstream})")
        what = (
            f"message to {_room(req.get('room'))}" if req.get("type") == "send"
            else f"DM to {req.get('to', '?')}"
        )  # fmt: skip
        head = f"  {who}'s {what} in packet {number} ({_quote(text)})"
        reply = None
        with contextlib.suppress(TypeError):
            reply = next(
                (r for r in replies.get((stream, req.get("id")), []) if r[0] > number), None
            )
        if hops:
            out.append(f"{head}: the server " + ", and ".join(hops))
        elif reply is not None and reply[1].get("type") == "error":
            out.append(
                f"{head}: the server refuses it in packet {reply[0]} "
                f"({reply[1].get('code', '?')}); nobody else sees it"
            )
        else:
            out.append(f"{head} reaches nobody else in this capture")
    return out


def _room(value: object) -> str:
    text = str(value)
    return text if text.startswith("#") else "#" + text


def _quote(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:59] + "…")


def explain_built(packets: Sequence[BuiltPacket]) -> list[str]:
    """Narrate packets made by :func:`~parlour.packets.build.conversation.build_conversations`
    (one sentence per packet, in order; hosts by their CSV names)."""
    dissector = Dissector(verify_checksums=False)
    analysed = [
        dissector.record(Record(p.ts_ns, p.datagram, len(p.datagram), LINKTYPE_RAW))
        for p in packets
    ]
    result = Analysis(tuple(analysed), dissector.conversations)
    names: dict[tuple[str, int], str] = {}
    for p in packets:
        names.setdefault(
            (p.src.ip, p.src.port), p.src.name or endpoint_text((p.src.ip, p.src.port))
        )
        names.setdefault(
            (p.dst.ip, p.dst.port), p.dst.name or endpoint_text((p.dst.ip, p.dst.port))
        )
    sentences: dict[int, str] = {}
    for conv in result.conversations:
        pair = (names.get(conv.client, "the client"), names.get(conv.server, "the server"))
        for number, text in narrate_conversation(result.packets, conv, pair, renames=False)[0]:
            sentences.setdefault(number, text)
    return [sentences.get(i + 1, "") for i in range(len(packets))]
