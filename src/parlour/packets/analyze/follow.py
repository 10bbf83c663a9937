"""Follow a TCP stream: the bytes each side sent, each once, in order, gaps marked (pure).

Like Wireshark's *Follow TCP Stream*: retransmitted bytes are shown once, segments that arrive
ahead of a gap wait until the gap is filled — or until the other side acknowledges past it,
which proves the bytes were sent but not captured, and the gap is then shown as
``[N bytes missing in capture file]``. Bytes a snap length cut off are missing too. A Parlour
chat conversation is shown as its decoded lines, every character of every line (secrets are
left out); anything else as the bytes themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parlour.packets.analyze.appdecode import chat_object, describe_chat_object, redact
from parlour.packets.analyze.chat import MAX_LINE_BYTES
from parlour.packets.analyze.dissect import PacketAnalysis

__all__ = ["MAX_PENDING", "Follower", "StreamChunk"]

_M32 = 0xFFFFFFFF
#: bytes held per direction while waiting for a gap to be filled
MAX_PENDING = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """New data one side sent (``data`` for raw streams, ``text`` for a decoded chat line),
    or ``missing`` bytes that were sent but are not in the capture."""

    number: int
    time_rel_ns: int
    from_client: bool
    data: bytes = b""
    text: str | None = None
    missing: int = 0


@dataclass(slots=True)
class _Dir:
    next_seq: int | None = None
    pending: dict[int, tuple[int, int, bytes, int]] = field(default_factory=dict)
    pending_bytes: int = 0
    line: bytearray = field(default_factory=bytearray)
    user: str = ""


class Follower:
    """Feed the analysed packets of one conversation (any order the capture has them);
    :meth:`feed` returns the chunks each packet makes visible, :meth:`finish` the rest."""

    def __init__(self, stream: int, chat: bool = False) -> None:
        self.stream = stream
        self.chat = chat
        self._dirs = {True: _Dir(), False: _Dir()}
        self._last = (0, 0)

    def feed(self, pa: PacketAnalysis) -> list[StreamChunk]:
        t = pa.tcp
        if t is None or t.stream != self.stream:
            return []
        self._last = (pa.packet.number, pa.time_rel_ns)
        out: list[StreamChunk] = []
        d = self._dirs[t.from_client]
        seq = t.seq + (1 if t.flags & 0x02 else 0)
        if t.seglen:
            if d.next_seq is None:
                d.next_seq = seq
            data = pa.packet.payload  # shorter than seglen when a snap length cut it
            self._segment(d, pa, t.from_client, seq & _M32, t.seglen, data, out)
        if t.flags & 0x10:  # an ACK proves what the other side sent
            other = self._dirs[not t.from_client]
            if other.next_seq is not None and _gt(t.ack, other.next_seq):
                self._flush_to(other, pa, not t.from_client, t.ack, out)
        return out

    def _segment(
        self, d: _Dir, pa: PacketAnalysis, from_client: bool, seq: int, seglen: int,
        data: bytes, out: list[StreamChunk],
    ) -> None:  # fmt: skip
        assert d.next_seq is not None
        delta = (seq - d.next_seq) & _M32
        if delta >= 0x80000000:  # starts before what we have: keep only the new part
            overlap = 0x100000000 - delta
            if overlap >= seglen:
                return
            seq = (seq + overlap) & _M32
            seglen -= overlap
            data = data[overlap:]
        elif delta:  # ahead of a gap: wait for it
            if seq not in d.pending and d.pending_bytes + len(data) <= MAX_PENDING:
                d.pending[seq] = (pa.packet.number, pa.time_rel_ns, data, seglen)
                d.pending_bytes += len(data)
            elif d.pending_bytes + len(data) > MAX_PENDING:
                self._flush_to(d, pa, from_client, seq, out)
                self._segment(d, pa, from_client, seq, seglen, data, out)
            return
        self._emit(d, pa.packet.number, pa.time_rel_ns, from_client, data, seglen, out)
        self._drain(d, from_client, out)

    def _emit(
        self, d: _Dir, number: int, when: int, from_client: bool, data: bytes, seglen: int,
        out: list[StreamChunk],
    ) -> None:  # fmt: skip
        assert d.next_seq is not None
        d.next_seq = (d.next_seq + seglen) & _M32
        if data:
            self._data(d, number, when, from_client, data, out)
        if seglen > len(data):
            self._gap(d, number, when, from_client, seglen - len(data), out)

    def _drain(self, d: _Dir, from_client: bool, out: list[StreamChunk]) -> None:
        while d.pending:
            assert d.next_seq is not None
            ready = None
            for seq in d.pending:
                if not _gt(seq, d.next_seq):
                    ready = seq
                    break
            if ready is None:
                return
            number, when, data, seglen = d.pending.pop(ready)
            d.pending_bytes -= len(data)
            overlap = (d.next_seq - ready) & _M32
            if overlap < seglen:
                self._emit(d, number, when, from_client, data[overlap:], seglen - overlap, out)

    def _flush_to(
        self, d: _Dir, pa: PacketAnalysis, from_client: bool, upto: int, out: list[StreamChunk]
    ) -> None:
        """Bytes before *upto* were sent: what is still missing is a gap."""
        while d.next_seq is not None and _gt(upto, d.next_seq):
            base = d.next_seq
            waiting = [s for s in d.pending if _gt(upto, s)]
            target = min(waiting, key=lambda s: (s - base) & _M32) if waiting else upto
            gap = (target - base) & _M32
            if gap:
                number, when = pa.packet.number, pa.time_rel_ns
                self._gap(d, number, when, from_client, gap, out)
                d.next_seq = target
            self._drain(d, from_client, out)
            if not waiting:
                return

    def _gap(
        self, d: _Dir, number: int, when: int, from_client: bool, n: int, out: list[StreamChunk]
    ) -> None:
        if self.chat and d.line:
            out.append(StreamChunk(number, when, from_client, text="…partial line"))
            d.line.clear()
        out.append(StreamChunk(number, when, from_client, missing=n))
        if self.chat:
            d.line += b"\0"  # the next line's start is lost: skip to the next newline

    def _data(
        self, d: _Dir, number: int, when: int, from_client: bool, data: bytes,
        out: list[StreamChunk],
    ) -> None:  # fmt: skip
        if not self.chat:
            out.append(StreamChunk(number, when, from_client, data=data))
            return
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
                self._login(d, obj, from_client)
                text = describe_chat_object(redact(obj), full=True, me=d.user)
            out.append(StreamChunk(number, when, from_client, text=text))

    def _login(self, d: _Dir, obj: dict[str, object], from_client: bool) -> None:
        if from_client and obj.get("type") in ("login", "signup", "register"):
            self._dirs[False].user = str(obj.get("username", obj.get("user", "")))

    def finish(self) -> list[StreamChunk]:
        """What is left when the capture ends: data after gaps nobody acknowledged."""
        out: list[StreamChunk] = []
        number, when = self._last
        for from_client, d in self._dirs.items():
            while d.pending and d.next_seq is not None:
                base = d.next_seq
                first = min(d.pending, key=lambda s: (s - base) & _M32)
                gap = (first - base) & _M32
                if gap and gap < 0x80000000:
                    self._gap(d, number, when, from_client, gap, out)
                    d.next_seq = first
                self._drain(d, from_client, out)
            if self.chat and d.line.strip(b"\0 \r\n"):
                out.append(StreamChunk(number, when, from_client, text="…partial line"))
                d.line.clear()
        return out


def _gt(a: int, b: int) -> bool:
    d = (a - b) & _M32
    return 0 < d < 0x80000000
