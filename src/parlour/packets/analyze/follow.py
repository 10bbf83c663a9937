"""Follow a TCP stream: the bytes each side sent, each once, in order, gaps marked (pure).

A port of tshark 4.0's *Follow TCP Stream* (``follow_tcp_tap_listener``): retransmitted bytes
are shown once, segments that arrive ahead of a gap wait until the gap is filled — or until the
other side acknowledges data past it, which proves the bytes were sent but not captured, and
the gap is then shown as ``[N bytes missing in capture file]``, byte for byte as tshark
writes it. Two things tshark leaves out are shown too: bytes a snap length cut off
(``[N bytes cut by the snap length]``) and data still waiting behind a gap when the capture
ends. A Parlour chat conversation is shown as its decoded lines, every character of every line
(secrets are left out); anything else as the bytes themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parlour.packets.analyze.appdecode import chat_object, describe_chat_object, redact
from parlour.packets.analyze.chat import MAX_LINE_BYTES
from parlour.packets.analyze.dissect import PacketAnalysis

__all__ = ["MAX_PENDING", "Follower", "StreamChunk", "missing_text"]

_M32 = 0xFFFFFFFF
#: bytes held per direction while waiting for a gap to be filled (older ones are given up)
MAX_PENDING = 8 * 1024 * 1024


def missing_text(n: int) -> str:
    """tshark's marker for bytes the receiver got but the capture did not."""
    return f"[{n} bytes missing in capture file]"


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """New data one side sent (``data`` for raw streams, ``text`` for a decoded chat line),
    or ``missing`` bytes that were sent but are not in the capture (``snapped``: cut by the
    snap length rather than lost)."""

    number: int
    time_rel_ns: int
    from_client: bool
    data: bytes = b""
    text: str | None = None
    missing: int = 0
    snapped: bool = False


@dataclass(slots=True)
class _Fragment:
    seq: int
    data: bytes
    number: int
    when: int


@dataclass(slots=True)
class _Dir:
    seq: int = 0
    written: int = 0
    fragments: list[_Fragment] = field(default_factory=list)
    pending: int = 0
    line: bytearray = field(default_factory=bytearray)


def _lt(a: int, b: int) -> bool:
    d = (b - a) & _M32
    return 0 < d < 0x80000000


class Follower:
    """Feed the analysed packets of a capture in order; :meth:`feed` returns the chunks of
    conversation *stream* each packet makes visible, :meth:`finish` what is left at the end."""

    def __init__(self, stream: int, chat: bool = False) -> None:
        self.stream = stream
        self.chat = chat
        self._dirs = {True: _Dir(), False: _Dir()}
        self._client: tuple[str, int] | None = None
        self._last = (0, 0)
        self._user = ""

    def feed(self, pa: PacketAnalysis) -> list[StreamChunk]:
        t = pa.tcp
        if t is None or t.stream != self.stream:
            return []
        p = pa.packet
        if self._client is None:
            self._client = (p.src, t.sport)
        from_client = (p.src, t.sport) == self._client
        self._last = (p.number, pa.time_rel_ns)
        out: list[StreamChunk] = []
        other = self._dirs[not from_client]
        ack = t.rel_ack
        while other.fragments and self._check(other, not from_client, ack, p.number, True, out):
            pass
        d = self._dirs[from_client]
        seq = (t.rel_seq + (1 if t.flags & 0x02 else 0)) & _M32
        length = t.seglen
        data = p.payload
        if d.written == 0 and d.seq == 0:
            d.seq = seq
        if _lt(seq, d.seq):  # starts before what was seen: keep what is new
            nxt = (seq + length) & _M32
            if _lt(d.seq, nxt):
                skip = (d.seq - seq) & _M32
                data = data[skip:]
                seq = d.seq
                length = (nxt - d.seq) & _M32
        if not data or _lt(seq, d.seq):
            return out
        if seq == d.seq:
            d.seq = (d.seq + length) & _M32
            d.written += len(data)
            self._data(d, p.number, pa.time_rel_ns, from_client, data, out)
            if length > len(data):
                out.append(StreamChunk(p.number, pa.time_rel_ns, from_client,
                                       missing=length - len(data), snapped=True))  # fmt: skip
            while d.fragments and self._check(d, from_client, 0, p.number, False, out):
                pass
        else:  # ahead of a gap: wait for the bytes before it
            d.fragments.append(_Fragment(seq, data, p.number, pa.time_rel_ns))
            d.pending += len(data)
            while d.pending > MAX_PENDING and self._check(d, from_client, seq, p.number, True, out):
                pass
        return out

    def _check(
        self, d: _Dir, from_client: bool, acknowledged: int, number: int, use_ack: bool,
        out: list[StreamChunk],
    ) -> bool:  # fmt: skip
        """tshark's ``check_follow_fragments``: apply one waiting fragment, or mark a gap an
        ACK proved; False when nothing can move yet."""
        lowest = d.fragments[0].seq
        for i, frag in enumerate(d.fragments):
            if _lt(frag.seq, lowest):
                lowest = frag.seq
            if _lt(frag.seq, d.seq):
                end = (frag.seq + len(frag.data)) & _M32
                if _lt(d.seq, end):
                    new = frag.data[(d.seq - frag.seq) & _M32 :]
                    d.seq = (d.seq + len(new)) & _M32
                    self._data(d, frag.number, frag.when, from_client, new, out)
                del d.fragments[i]
                d.pending -= len(frag.data)
                return True
            if frag.seq == d.seq:
                d.seq = (d.seq + len(frag.data)) & _M32
                self._data(d, frag.number, frag.when, from_client, frag.data, out)
                del d.fragments[i]
                d.pending -= len(frag.data)
                return True
        if use_ack and _lt(lowest, acknowledged):
            when = next((f.when for f in d.fragments if f.seq == lowest), self._last[1])
            self._gap(d, number, when, from_client, (lowest - d.seq) & _M32, out)
            d.seq = lowest
            return True
        return False

    def _gap(
        self, d: _Dir, number: int, when: int, from_client: bool, n: int, out: list[StreamChunk]
    ) -> None:
        if self.chat and d.line:
            out.append(StreamChunk(number, when, from_client, text="…partial line"))
            d.line.clear()
        out.append(StreamChunk(number, when, from_client, missing=n))
        if self.chat:
            d.line += b"\0"  # what follows may be the rest of a lost line: skip to a newline

    def _data(
        self, d: _Dir, number: int, when: int, from_client: bool, data: bytes,
        out: list[StreamChunk],
    ) -> None:  # fmt: skip
        if not self.chat:
            out.append(StreamChunk(number, when, from_client, data=data))
            return
        if d.line == b"\0" and data.startswith(b'{"'):
            d.line.clear()  # the gap ended where a line starts
        d.line += data
        end = d.line.rfind(b"\n")
        if end < 0:
            if len(d.line) > MAX_LINE_BYTES:
                out.append(
                    StreamChunk(
                        number, when, from_client, text=f"…line longer than {MAX_LINE_BYTES} bytes"
                    )
                )
                d.line.clear()  # fmt: skip
            return
        complete = bytes(d.line[: end + 1])
        del d.line[: end + 1]
        for raw in complete.split(b"\n")[:-1]:
            if raw.startswith(b"\0"):
                continue  # the rest of a line whose start was not captured
            raw = raw.strip()
            if not raw:
                continue
            obj = chat_object(raw)
            if obj is None:
                text = "…not a chat line"
            else:
                if from_client and obj.get("type") in ("login", "signup", "register"):
                    self._user = str(obj.get("username", obj.get("user", "")))
                text = describe_chat_object(redact(obj), full=True, me=self._user)
            out.append(StreamChunk(number, when, from_client, text=text))

    def finish(self) -> list[StreamChunk]:
        """Data still waiting behind a gap when the capture ends (tshark drops it)."""
        out: list[StreamChunk] = []
        number, when = self._last
        for from_client, d in self._dirs.items():
            while d.fragments:
                if not self._check(d, from_client, 0, number, False, out):
                    first = min(d.fragments, key=lambda f: (f.seq - d.seq) & _M32)
                    self._gap(d, number, first.when, from_client, (first.seq - d.seq) & _M32, out)
                    d.seq = first.seq
            if self.chat and d.line.strip(b"\0 \r\n"):
                out.append(StreamChunk(number, when, from_client, text="…partial line"))
                d.line.clear()
        return out
