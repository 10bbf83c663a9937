"""TCP reassembly as tshark 4.0 does it on its single pass (``desegment_tcp``, pure).

An application dissector that needs more bytes than a segment holds asks for them; the
segment then shows ``[TCP segment of a reassembled PDU]`` and becomes the first fragment of a
*multi-segment PDU* (MSP) that runs to the announced end. Later segments inside the MSP are
added to it, and the one that completes it is dissected as the whole message — which is why
tshark writes the HTTP response line on the *last* segment of a response. Retransmissions
(tshark's TCP_A_RETRANSMISSION and spurious retransmissions) are never added; a segment whose
sequence number starts a known MSP is a retransmission of its first segment.

The port keeps tshark's rules, including its limits: an MSP is only started when the segment
carries at most 1 MiB from the start of the message, and out-of-order reassembly is off
(tshark's default). Reassembled bytes are kept in memory up to :data:`MAX_KEEP` per message;
past that only the first bytes are kept (the HTTP headers and the start of the body, all the
Info column needs) while coverage is still tracked exactly.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Callable
from typing import TypeAlias

from parlour.packets.analyze.columns import Columns, ReassemblyError, Tvb
from parlour.packets.analyze.tcp_analysis import A_RETRANSMISSION, A_SPURIOUS_RETRANSMISSION

__all__ = [
    "DESEGMENT_ONE_MORE_SEGMENT",
    "DESEGMENT_UNTIL_FIN",
    "MAX_KEEP",
    "SEGMENT_OF_PDU",
    "Flow",
    "Payload",
    "desegment",
    "fin_reassembly",
]

DESEGMENT_ONE_MORE_SEGMENT = 0x0FFFFFFF
DESEGMENT_UNTIL_FIN = 0x0FFFFFFE
SEGMENT_OF_PDU = "[TCP segment of a reassembled PDU]"
#: bytes of one reassembled message kept in memory (the rest is counted, not stored)
MAX_KEEP = 16 * 1024 * 1024
_M32 = 0xFFFFFFFF
_ENTIRE_SEGMENT = 1  # MSP_FLAGS_REASSEMBLE_ENTIRE_SEGMENT


def _lt(a: int, b: int) -> bool:
    d = (b - a) & _M32
    return 0 < d < 0x80000000


def _le(a: int, b: int) -> bool:
    return a == b or _lt(a, b)


#: hands bytes to the application dissector (tshark's ``process_tcp_payload``): the buffer
#: from its start, the sequence number of its first byte, whether the dissector may ask for
#: more. It returns ``(desegment_offset, desegment_len)``: ``(0, 0)`` when done (or when
#: nothing recognised the data), else where the bytes it could not dissect yet start and how
#: many more it needs (or one of the ``DESEGMENT_*`` values).
Payload: TypeAlias = Callable[[Tvb, int, bool], tuple[int, int]]


class _Msp:
    """A multi-segment PDU and its fragments (tshark's MSP plus its fragment head)."""

    __slots__ = (
        "ahead", "complete_data", "contig", "datalen", "defragmented", "first_frame", "flags",
        "frags", "kept", "last_frame", "max_frame", "nxtpdu", "partial", "seq",
    )  # fmt: skip

    def __init__(self, seq: int, nxtpdu: int, frame: int) -> None:
        self.seq = seq
        self.nxtpdu = nxtpdu
        self.first_frame = frame
        self.last_frame = frame
        self.max_frame = 0
        self.flags = 0
        #: (offset, length, frame, data), sorted by offset
        self.frags: list[tuple[int, int, int, bytes]] = []
        #: bytes covered from the start without a hole
        self.contig = 0
        #: fragments that start beyond ``contig`` (arrived ahead of a hole)
        self.ahead = 0
        self.datalen: int | None = None
        self.defragmented = False
        self.partial = False
        self.kept = 0
        self.complete_data = b""

    def add(self, frame: int, frag_offset: int, data: bytes, more: bool) -> bytes | None:
        """``fragment_add``: the reassembled bytes when this fragment completes the PDU."""
        length = len(data)
        if self.defragmented:
            assert self.datalen is not None
            if frag_offset + length >= self.datalen and self.partial:
                self._reset()
            elif frag_offset >= self.datalen:
                raise ReassemblyError("New fragment past old data limits")
            else:
                raise ReassemblyError("New fragment overlaps old data (retransmission?)")
        if frame <= self.max_frame and any(
            f == frame and o == frag_offset for o, _n, f, _d in self.frags
        ):
            return None  # already added (the same frame, the same place)
        self.max_frame = max(self.max_frame, frame)
        if not more and self.datalen is None:
            self.datalen = frag_offset + length
        if self.kept + length > MAX_KEEP:
            data = data[: max(0, MAX_KEEP - self.kept)]
        self.kept += len(data)
        item = (frag_offset, length, frame, data)
        frags = self.frags
        if not frags or frags[-1][0] <= frag_offset:
            frags.append(item)
        else:
            insort(frags, item, key=lambda it: it[0])
        contig = self.contig
        if frag_offset <= contig < frag_offset + length:
            contig = frag_offset + length
            if self.ahead:  # absorb fragments that now join up
                ahead = 0
                for o, n, _f, _d in frags:
                    if o <= contig < o + n:
                        contig = o + n
                    elif o > contig:
                        ahead += 1
                self.ahead = ahead
            self.contig = contig
        elif frag_offset > contig:
            self.ahead += 1
        if self.datalen is None or self.contig < self.datalen:
            return None
        return self._assemble()

    def _assemble(self) -> bytes:
        assert self.datalen is not None
        parts = []
        pos = 0
        for o, n, _f, d in self.frags:
            end = min(o + n, self.datalen)
            if end > pos and o <= pos:
                parts.append(d[pos - o : end - o] if (pos - o or end - o < len(d)) else d)
                pos = end
        self.defragmented = True
        self.complete_data = b"".join(parts)
        return self.complete_data

    def release(self) -> None:
        """The PDU was dissected and nothing more is asked of it: keep only what later
        segments are checked against (its extent), not its bytes."""
        if not self.partial:
            self.frags = []
            self.complete_data = b""

    def _reset(self) -> None:
        self.defragmented = False
        self.partial = False
        self.datalen = None


class Flow:
    """One direction's MSPs, ordered by sequence number (tshark's ``multisegment_pdus``)."""

    __slots__ = ("fin", "keys", "msps", "until_fin")

    def __init__(self) -> None:
        self.msps: dict[int, _Msp] = {}
        self.keys: list[int] = []
        self.until_fin = False
        self.fin = 0

    def lookup_le(self, key: int) -> _Msp | None:
        """The PDU starting at the highest sequence number not above *key*."""
        keys = self.keys
        key &= _M32
        if keys and keys[-1] <= key:  # the usual case: after the latest PDU
            return self.msps[keys[-1]]
        i = bisect_right(keys, key)
        return self.msps[keys[i - 1]] if i else None

    def inside(self, seq: int, nxtseq: int) -> _Msp | None:
        """The latest PDU, when [*seq*, *nxtseq*) lies strictly inside it and adding the
        segment cannot complete it (no other PDU starts at *seq*, the PDU's end is past
        *nxtseq*, nothing waits beyond a hole): the segment is then only one more fragment."""
        keys = self.keys
        if not keys:
            return None
        start = keys[-1]
        seq &= _M32
        if not start < seq:
            return None
        msp = self.msps[start]
        if (
            nxtseq < msp.nxtpdu and not msp.flags and msp.datalen is None and not msp.ahead
            and not msp.defragmented and msp.contig == seq - start
        ):  # fmt: skip
            return msp
        return None

    def drop_data(self) -> None:
        """Forget the bytes of every PDU (the conversation is over): an unfinished one can
        no longer complete; the extents stay, so later segments are still placed."""
        for msp in self.msps.values():
            if msp.frags or msp.complete_data:
                msp.frags = []
                msp.complete_data = b""
                msp.kept = 0
                if not msp.defragmented:
                    msp.contig = -1  # never complete: the bytes before are gone

    def store(self, seq: int, nxtpdu: int, frame: int) -> _Msp:
        msp = _Msp(seq, nxtpdu & _M32, frame)
        seq &= _M32
        if seq not in self.msps:
            insort(self.keys, seq)
        self.msps[seq] = msp
        if len(self.keys) > 4096:  # old, finished PDUs: forget them, keeping memory bounded
            for old in self.keys[:1024]:
                del self.msps[old]
            del self.keys[:1024]
        return msp


def _segment_of_pdu(cols: Columns) -> None:
    cols.set_protocol("TCP")
    cols.append_sep(" ", SEGMENT_OF_PDU)


def desegment(
    flow: Flow, cols: Columns, frame: int, payload: bytes, seq: int, nxtseq: int, bits: int,
    process: Payload,
) -> None:  # fmt: skip
    """Dissect one complete segment's *payload* with reassembly (``desegment_tcp``).

    *seq*/*nxtseq* are relative sequence numbers; *bits* the segment's TCP_A_* analysis bits;
    *process* hands a buffer to the application dissector the way ``process_tcp_payload``
    does (it skips retransmissions and keep-alives, returning ``(0, 0)``).
    """
    tvb = Tvb(payload)
    offset = 0
    first_pdu = True
    orig_writable = cols.protocol_writable
    while True:
        ipfd: bytes | None = None
        last_fragment_len = 0
        must_desegment = False
        called = False
        another = 0
        deseg_offset = offset
        d_off = d_len = 0
        msp = flow.msps.get(seq & _M32)
        if (
            msp is not None and nxtseq <= msp.nxtpdu and msp.last_frame != frame
        ):  # the first segment of a known PDU again: a retransmission
            if msp.first_frame == frame and first_pdu:
                cols.append_sep(" ", SEGMENT_OF_PDU)
            break
        if bits & (A_SPURIOUS_RETRANSMISSION | A_RETRANSMISSION):
            break
        if msp is None:
            msp = flow.lookup_le(seq - 1)
        if msp is not None and _le(msp.seq, seq) and _lt(seq, msp.nxtpdu):
            msp.last_frame = frame
            if msp.flags & _ENTIRE_SEGMENT:
                length = tvb.captured_remaining(offset)
            else:
                length = min((nxtseq - seq) & _M32, (msp.nxtpdu - seq) & _M32)
            last_fragment_len = length
            ipfd = msp.add(
                frame, (seq - msp.seq) & _M32, payload[offset : offset + length],
                _lt(nxtseq, msp.nxtpdu),
            )  # fmt: skip
            if ipfd is not None and msp.flags & _ENTIRE_SEGMENT:
                msp.flags &= ~_ENTIRE_SEGMENT
                if msp.nxtpdu < nxtseq:
                    msp.nxtpdu = nxtseq
            if msp.nxtpdu < nxtseq and msp.nxtpdu >= seq and length > 0:
                another = msp.nxtpdu - seq
        else:
            d_off, d_len = process(Tvb(payload[offset:]), seq, True)
            called = True
            if d_len:
                must_desegment = True
                deseg_offset = offset + d_off
        if ipfd is not None and msp is not None:
            d_off, d_len = process(Tvb(ipfd, msp.datalen), msp.seq, True)
            called = True
            if not d_len:
                msp.release()
            else:
                if d_off == 0:
                    msp.partial = True
                elif not _le((msp.seq + d_off) & _M32, seq):
                    msp = _split(flow, msp, d_off, frame)
                else:
                    msp.partial = True
                if d_len == DESEGMENT_ONE_MORE_SEGMENT:
                    msp.nxtpdu = max((seq + tvb.reported_remaining(offset)) & _M32, msp.nxtpdu) + 1
                    msp.flags |= _ENTIRE_SEGMENT
                elif d_len == DESEGMENT_UNTIL_FIN:
                    flow.until_fin = True
                    msp.nxtpdu = (msp.seq + 0x40000000) & _M32
                elif seq + last_fragment_len >= msp.nxtpdu:
                    msp.nxtpdu = (seq + last_fragment_len + d_len) & _M32
                else:
                    msp.nxtpdu = (msp.nxtpdu + d_len) & _M32
                another = 0
                offset += last_fragment_len
                seq = (seq + last_fragment_len) & _M32
                if tvb.captured_remaining(offset) > 0:
                    continue
        if must_desegment:
            deseg_seq = (seq + (deseg_offset - offset)) & _M32
            if d_len == DESEGMENT_UNTIL_FIN:
                flow.until_fin = True
            if (nxtseq - deseg_seq) & _M32 <= 1024 * 1024:
                if d_len == DESEGMENT_ONE_MORE_SEGMENT:
                    new = flow.store(deseg_seq, nxtseq + 1, frame)
                    new.flags |= _ENTIRE_SEGMENT
                elif d_len == DESEGMENT_UNTIL_FIN:
                    new = flow.store(deseg_seq, nxtseq + 0x40000000, frame)
                else:
                    new = flow.store(deseg_seq, nxtseq + d_len, frame)
                new.add(frame, 0, payload[deseg_offset:], _lt(nxtseq, new.nxtpdu))
        _finish(cols, called, d_off, d_len, first_pdu)
        if another:
            cols.set_fence()
            cols.protocol_writable = False
            first_pdu = False
            offset += another
            seq = (seq + another) & _M32
            continue
        break
    cols.protocol_writable = orig_writable


def _finish(cols: Columns, called: bool, d_off: int, d_len: int, first_pdu: bool) -> None:
    if (not called or d_len) and d_off == 0:
        cols.set_protocol("TCP")
        if first_pdu:
            cols.append_sep(" ", SEGMENT_OF_PDU)


def _split(flow: Flow, msp: _Msp, split: int, frame: int) -> _Msp:
    """``split_msp``: the bytes after *split* of a reassembled PDU start a new one."""
    rest = msp.complete_data[split:]
    new = flow.store((msp.seq + split) & _M32, msp.nxtpdu, frame)
    new.add(frame, 0, rest, True)
    msp.nxtpdu = (msp.seq + split) & _M32
    return new


def fin_reassembly(flow: Flow, frame: int, payload: bytes, seq: int, process: Payload) -> bool:
    """A FIN ends a message that runs to the end of the connection: add the FIN segment's
    data and dissect the whole message. True when that happened (the segment needs no other
    dissection)."""
    if not flow.until_fin or (flow.fin and flow.fin != frame):
        return False
    flow.fin = frame
    msp = flow.lookup_le(seq - 1)
    if msp is None:
        return False
    data = msp.add(frame, (seq - msp.seq) & _M32, payload, False)
    if data is None:
        return False
    process(Tvb(data), msp.seq, False)
    return True
