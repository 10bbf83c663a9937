"""The two packet-list columns a dissector writes (Protocol, Info) and the byte buffer it reads.

Wireshark's dissectors write the Info column through a handful of operations with a *fence*
(text before the fence is kept when a later dissector replaces the column), and read packet
bytes through a "tvbuff" that knows both the captured length and the length the packet had on
the wire. Reading past the captured bytes raises :class:`BoundsError` ("[Packet size limited
during capture]" in the Info column), past the wire length :class:`ReportedBoundsError`
("[Malformed Packet]"). Emulating exactly these two small things is what lets the HTTP and TCP
reassembly logic ported from tshark 4.0 produce its Info column character for character.
"""

from __future__ import annotations

__all__ = [
    "COL_MAX_INFO_LEN",
    "BoundsError",
    "Columns",
    "DissectorException",
    "ReassemblyError",
    "ReportedBoundsError",
    "Tvb",
]

#: Wireshark keeps at most this many bytes of Info (COL_MAX_INFO_LEN - 1 characters)
COL_MAX_INFO_LEN = 4096


class DissectorException(Exception):
    """Raised while dissecting; the frame's Info column gets :attr:`text` appended."""

    text = "[Malformed Packet]"


class BoundsError(DissectorException):
    """Read past the captured bytes (but not past the packet's real length)."""

    text = "[Packet size limited during capture]"


class ReportedBoundsError(DissectorException):
    """Read past the packet's real length: the packet is malformed."""

    text = "[Malformed Packet]"


class ReassemblyError(DissectorException):
    """TCP reassembly found a segment that overlaps data already reassembled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.text = f"[Reassembly error, protocol TCP: {message}]"


class Columns:
    """Protocol and Info of one frame, with Wireshark's fence and writability rules."""

    __slots__ = ("fence", "info", "protocol", "protocol_writable")

    def __init__(self, protocol: str, info: str, fence: int = 0) -> None:
        self.protocol = protocol
        self.protocol_writable = True
        self.info = info
        self.fence = fence

    def set_protocol(self, name: str) -> None:
        if self.protocol_writable:
            self.protocol = name

    def append_protocol(self, name: str, sep: str) -> None:
        if self.protocol_writable:
            self.protocol = self.protocol + sep + name if self.protocol else name

    def add(self, text: str) -> None:
        """``col_add_str``/``col_set_str``: replace what follows the fence."""
        self.info = self.info[: self.fence] + text

    def clear(self) -> None:
        self.info = self.info[: self.fence]

    def append(self, text: str) -> None:
        self.info += text

    def append_sep(self, sep: str, text: str) -> None:
        """``col_append_sep_str``: *sep* only when the column is not empty."""
        self.info += (sep + text) if self.info else text

    def set_fence(self) -> None:
        self.fence = len(self.info)

    def text(self) -> str:
        info = self.info
        if len(info) >= COL_MAX_INFO_LEN:  # the column buffer's limit (bytes, in UTF-8)
            raw = info.encode()[: COL_MAX_INFO_LEN - 1]
            info = raw.decode("utf-8", "ignore")
        return info


class Tvb:
    """Bytes a dissector reads: *data* was captured, *reported* is the length on the wire
    (at least ``len(data)``). Offsets are relative to the start of *data*."""

    __slots__ = ("captured", "data", "reported")

    def __init__(self, data: bytes, reported: int | None = None) -> None:
        self.data = data
        self.captured = len(data)
        self.reported = self.captured if reported is None else max(reported, self.captured)

    def _fail(self, end: int) -> DissectorException:
        return ReportedBoundsError() if end > self.reported else BoundsError()

    def ensure_bytes_exist(self, offset: int, length: int) -> None:
        if length < 0:
            raise ReportedBoundsError()
        if offset + length > self.captured:
            raise self._fail(offset + length)

    def bytes_exist(self, offset: int, length: int) -> bool:
        return offset >= 0 and length >= 0 and offset + length <= self.captured

    def u8(self, offset: int) -> int:
        if offset >= self.captured:
            raise self._fail(offset + 1)
        return self.data[offset]

    def u16(self, offset: int) -> int:
        if offset + 2 > self.captured:
            raise self._fail(offset + 2)
        return (self.data[offset] << 8) | self.data[offset + 1]

    def captured_remaining(self, offset: int) -> int:
        return max(0, self.captured - offset) if offset <= self.captured else 0

    def reported_remaining(self, offset: int) -> int:
        return max(0, self.reported - offset)

    def ensure_captured_remaining(self, offset: int) -> int:
        """At least one byte at *offset*, or the exception for reading it."""
        if offset > self.reported:
            raise ReportedBoundsError()
        rem = self.captured - offset
        if rem <= 0:
            raise self._fail(offset + 1)
        return rem

    def find_line_end(self, offset: int, length: int, desegment: bool) -> tuple[int, int]:
        """``(line length, offset after the terminator)`` like ``tvb_find_line_end``: a line
        ends at CR, LF or CR LF within *length* bytes (-1: to the captured end). Without a
        terminator: ``(-1, -1)`` when *desegment*, else the rest is the line."""
        if length == -1:
            length = self.captured_remaining(offset)
        eob = offset + length
        data = self.data
        cr = data.find(b"\r", offset, eob)
        lf = data.find(b"\n", offset, eob)
        if cr < 0 and lf < 0:
            if desegment:
                return -1, -1
            return eob - offset, eob
        eol = lf if cr < 0 or (0 <= lf < cr) else cr
        linelen = eol - offset
        if eol == cr:
            if eol + 1 >= eob:
                if desegment:
                    return -1, -1
            elif data[eol + 1] == 0x0A:
                eol += 1
        return linelen, eol + 1

    def get(self, offset: int, length: int) -> bytes:
        """The bytes at *offset* (length -1: to the captured end); bounds-checked."""
        if length == -1:
            length = self.captured_remaining(offset)
            if length == 0 and offset >= self.captured:
                raise self._fail(offset + 1)
        self.ensure_bytes_exist(offset, length)
        return self.data[offset : offset + length]

    def strncaseeql(self, offset: int, text: bytes) -> bool:
        if offset < 0:
            offset += self.captured
            if offset < 0:
                return False
        part = self.data[offset : offset + len(text)]
        return len(part) == len(text) and part.lower() == text.lower()
