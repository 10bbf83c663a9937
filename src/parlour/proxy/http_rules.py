"""Sans-I/O decisions of the HTTP relay (as h11 keeps them apart from sockets): where
request messages start and end in the reads of a connection, how a response is framed to
the client, whether a connection stays open, and when a connection has waited too long.

`http_relay` feeds these pieces with what llhttp (httptools) reports and does the I/O;
they are tested without sockets (tests/proxy/test_proxy_http_rules.py). The functions on
the relay's per-request path take positional arguments (cheaper calls in CPython).

- `RequestScan`: httptools gives no offsets, so the relay follows where each message
  sits in the read being parsed: a request line pipelined behind another in the same read
  is checked like the first one (llhttp tolerates shapes an origin may read differently),
  and a head straddling reads is found and bounded.
- `ChunkScan`: the end of a chunked request body in a read.
- `response_framing`, `request_keep_alive`, `response_keep_alive`: RFC 9112 §6 rules.
- `client_wait`: what a connection's timers say (RFC 9110 is silent: the proxy's own
  `client_timeout_s`, `server_timeout_s`, `idle_timeout_s`, `tunnel_timeout_s`).
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

from parlour.proxy.headers import REQUEST_LINE

__all__ = [
    "ChunkScan",
    "Framing",
    "RequestScan",
    "Wait",
    "chunk",
    "client_wait",
    "request_keep_alive",
    "response_framing",
    "response_keep_alive",
]

Framing = Literal["upgrade", "none", "chunked", "length", "close"]
_NO_BODY_STATUS = frozenset({204, 304})
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]*")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


# ---------------------------------------------------------------------- framing


def response_framing(
    method: str,
    status: int,
    client_version: str,
    upgrade_asked: bool,
    chunked: bool,
    has_length: bool,
) -> Framing | None:
    """How a final response is framed to the client (RFC 9112 §6.3): "upgrade" (a 101
    the client asked for; None: a 101 it did not ask for, a bad response), "none" (HEAD,
    204, 304), "chunked" (re-framed; "close" for an HTTP/1.0 client, which cannot read
    chunks), "length", or "close" (read until the backend closes)."""
    if status == 101:
        return "upgrade" if upgrade_asked else None
    if method == "HEAD" or status in _NO_BODY_STATUS:
        return "none"
    if chunked:
        return "chunked" if client_version == "1.1" else "close"
    if has_length:
        return "length"
    return "close"


def request_keep_alive(llhttp_keep_alive: bool, upgrade: bool, chunked: bool, version: str) -> bool:
    """Whether the client connection may carry another request after this one: llhttp's
    reading of Connection and the version, except that an upgrade becomes a tunnel and
    an HTTP/1.0 message with Transfer-Encoding has faulty framing (RFC 9112 §6.1: close
    after it)."""
    return llhttp_keep_alive and not upgrade and not (chunked and version == "1.0")


def response_keep_alive(llhttp_keep_alive: bool, chunked: bool, version: str) -> bool:
    """Whether the upstream connection may serve another request (same §6.1 rule)."""
    return llhttp_keep_alive and not (chunked and version == "1.0")


# ---------------------------------------------------------------------- timers


class Wait(NamedTuple):
    """What a connection's timers say: "ok", "close" (quietly), or "fail" with a status
    and detail for the client (`blame_backend`: a passive failure for it too)."""

    action: Literal["ok", "close", "fail"]
    status: int = 0
    detail: str = ""
    blame_backend: bool = False


OK = Wait("ok")


def client_wait(
    now: float,
    *,
    tunnel: bool,
    output_paused_at: float,
    in_head: bool,
    head_started: float,
    request: bool,
    queued: bool,
    request_complete: bool,
    request_sent: bool,
    last_client: float,
    last_backend: float,
    client_timeout_s: float,
    server_timeout_s: float,
    idle_timeout_s: float,
    tunnel_timeout_s: float,
) -> Wait:
    """The verdict for one client connection at `now` (all times in one clock):

    - a tunnel idle both ways for tunnel_timeout_s closes;
    - a client that has not taken response bytes for client_timeout_s (its output is
      paused, so the proxy is not reading the backend either) is closed: the backend is
      not to blame and a response is under way (no error page);
    - a head not complete within client_timeout_s of its first byte: 408;
    - between requests, idle_timeout_s of silence closes;
    - a request body stalled for client_timeout_s: 408;
    - a backend silent for server_timeout_s once the whole request is sent: 504, and
      the backend takes a passive failure."""
    if tunnel:
        if now - max(last_client, last_backend) > tunnel_timeout_s:
            return Wait("close", detail="tunnel idle")
        return OK
    if output_paused_at:
        if now - output_paused_at > client_timeout_s:
            return Wait("close", detail="client took no response bytes")
        return OK
    if in_head and now - head_started > client_timeout_s:
        return Wait("fail", 408, "request head not received in time")
    if not request:
        if not queued and not in_head and now - last_client > idle_timeout_s:
            return Wait("close", detail="idle")
        return OK
    if not request_complete and now - last_client > client_timeout_s:
        return Wait("fail", 408, "request body not received in time")
    quiet_since = max(last_backend, last_client)
    if request_sent and request_complete and now - quiet_since > server_timeout_s:
        return Wait("fail", 504, "the backend did not answer in time", blame_backend=True)
    return OK


# ---------------------------------------------------------------------- chunked ends


class ChunkScan:
    """Follows the framing of a chunked request body (already checked by llhttp, read by
    read) only to find the offset where the message ends in the read that completes it:
    httptools reports no offsets, and a pipelined request after it must have its request
    line checked like the first one."""

    __slots__ = ("digits", "left", "phase")

    def __init__(self) -> None:
        self.phase = 0  # 0 size digits, 1 rest of size line, 2 data + CRLF,
        # 3 at a trailer line start, 4 in a trailer line, 5 CR of the final empty line seen
        self.digits = b""
        self.left = 0

    def feed(self, data: bytes, pos: int) -> int:
        """Scan data[pos:]; the offset just past the message, or -1 if it goes on."""
        n = len(data)
        while pos < n:
            phase = self.phase
            if phase <= 1:
                nl = data.find(b"\n", pos)
                stop = n if nl < 0 else nl
                if phase == 0:
                    m = _HEX_DIGITS.match(data, pos, stop)
                    assert m is not None  # (matches the empty string at least)
                    self.digits += m.group()
                    if m.end() < stop:
                        self.phase = 1
                if nl < 0:
                    return -1
                size = int(self.digits or b"0", 16)
                self.digits = b""
                pos = nl + 1
                if size:
                    self.phase = 2
                    self.left = size + 2
                else:
                    self.phase = 3
            elif phase == 2:
                take = min(self.left, n - pos)
                pos += take
                self.left -= take
                if not self.left:
                    self.phase = 0
            elif phase == 3:
                if data[pos] == 13:
                    self.phase = 5
                    pos += 1
                else:
                    self.phase = 4
            elif phase == 4:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    return -1
                pos = nl + 1
                self.phase = 3
            else:
                return pos + 1  # (the LF llhttp has checked)
        return -1


# ---------------------------------------------------------------------- message boundaries


class RequestScan:
    """Where the request messages of one connection sit in the read being parsed.

    The relay calls, per read: `start` before llhttp parses it (a reason to refuse the
    request if its line is bad); then, from llhttp's callbacks, `head_ended` /
    `chunked_body` / `body_bytes` / `message_ended` (a reason if the request line that
    follows in the same read is bad); and `end` after llhttp has parsed the read. Every
    reason means: answer 400 and close (the relay's `_reject`)."""

    __slots__ = (
        "body_here",
        "body_start",
        "chunks",
        "data",
        "head_size",
        "line",
        "max_header_bytes",
        "msg_pos",
        "multi",
        "tail",
    )

    def __init__(self, max_header_bytes: int) -> None:
        self.max_header_bytes = max_header_bytes
        self.line: bytes | None = None  # a request line still arriving
        self.data = b""  # the read being parsed
        self.multi = False  # it may hold more than the end of one message
        self.msg_pos = 0  # offset of the message being parsed, -1: began in an earlier read
        self.body_start = 0  # offset where its body starts (0: in an earlier read)
        self.body_here = 0  # its Content-Length body bytes in this read
        self.tail = b""  # last bytes of a head still arriving (its end may straddle reads)
        self.chunks: ChunkScan | None = None
        self.head_size = 0  # bytes of the head being read (for max_header_bytes)

    def start(self, data: bytes, parsing: bool, in_head: bool) -> str | None:
        """A read arrives; `parsing`: a message began in an earlier read (and `in_head`:
        its head is not complete)."""
        self.data = data
        if not parsing and self.line is None:
            # the usual case inline: a whole request line at the start of the read
            end = data.find(b"\n", 0, self.max_header_bytes)
            if end < 0 or data[0] == 13 or not REQUEST_LINE.match(data, 0, end):
                bad = self._first_line(data)  # (pieces, leading CRLF, or bad)
                if bad is not None:
                    return bad
            self.head_size += len(data)
            self.msg_pos = 0
            # a read whose first empty line ends it holds at most one message, ending
            # there (the usual case): no other request line to find in it
            self.multi = data.find(b"\r\n\r\n") != len(data) - 4
            return None
        self.multi = True
        if not parsing:
            self.msg_pos = 0
        else:  # a message that began in an earlier read goes on
            self.msg_pos = -1
            self.body_start = self.body_here = 0
        if not parsing or self.line is not None:
            bad = self._first_line(data)
            if bad is not None:
                return bad
            if in_head or not parsing:
                self.head_size += len(data)
        elif in_head:
            self.head_size += len(data)
        return None

    def end(self, parsing: bool, in_head: bool) -> None:
        """llhttp has parsed the read; a message goes on into the next one."""
        if parsing:  # (rare: a message straddles reads)
            if in_head:
                self.tail = (self.tail + self.data)[-3:]
            elif self.chunks is not None:
                self.chunks.feed(self.data, self.body_start)

    def head_too_large(self, url: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        """The head that just ended is over max_header_bytes (counting its fields, not
        the bytes of other messages in the same reads)."""
        return (
            self.head_size > self.max_header_bytes
            and sum(len(n) + len(v) + 4 for n, v in headers) + len(url) > self.max_header_bytes
        )

    def head_ended(self) -> None:
        """A head ended in this read: find where, so its body's end can be found too
        (llhttp allows only CRLF line ends; the empty line may straddle reads)."""
        self.head_size = 0
        if not self.multi:
            return
        pos = self.msg_pos
        if pos >= 0:
            data = self.data
            while data[pos] == 13 or data[pos] == 10:  # (empty lines before the request)
                pos += 1
            self.body_start = data.find(b"\r\n\r\n", pos) + 4
        else:
            tail = self.tail
            self.body_start = (tail + self.data).find(b"\r\n\r\n") + 4 - len(tail)
        self.tail = b""
        self.body_here = 0

    def chunked_body(self) -> None:
        """The head that ended announced a chunked body."""
        self.chunks = ChunkScan()
        if not self.multi:  # (the head ends the read)
            self.body_start = len(self.data)

    def body_bytes(self, n: int) -> None:
        self.body_here += n

    def message_ended(self, chunked: bool, upgrade: bool) -> str | None:
        """A message ended in this read: if more follows, check the request line there
        (llhttp would take what it tolerates). A reason to refuse it, or None."""
        self.head_size = 0
        if not self.multi or upgrade:  # (after an upgrade: tunnel data)
            return None
        data = self.data
        if chunked:
            chunks = self.chunks
            self.chunks = None
            assert chunks is not None
            end = chunks.feed(data, self.body_start)
            if end < 0:  # (cannot happen: llhttp has just ended the body)
                return "cannot find the end of a chunked body"
        else:
            end = self.body_start + self.body_here
        if end < len(data):
            return self._next_line(data, end)
        return None

    def _first_line(self, data: bytes) -> str | None:
        """Check the request line once it is complete, even when it arrives in pieces."""
        buf = data if self.line is None else self.line + data
        start = 0
        while buf.startswith(b"\r\n", start):
            start += 2
        end = buf.find(b"\n", start, start + self.max_header_bytes)
        if end < 0:
            if len(buf) - start > self.max_header_bytes:
                self.line = None
                return "request line too long"
            self.line = buf  # wait for the rest (bounded by max_header_bytes)
            return None
        self.line = None
        if not REQUEST_LINE.match(buf, start, end):  # (headers.check_request_line)
            return "malformed request line"
        return None

    def _next_line(self, data: bytes, pos: int) -> str | None:
        n = len(data)
        while pos < n and (data[pos] == 13 or data[pos] == 10):
            if data.startswith(b"\r\n", pos):
                pos += 2
            elif pos + 1 == n and data[pos] == 13:
                break  # a CR whose LF has not arrived yet
            else:
                break  # (a stray CR or LF: llhttp rejects it, or the line check does)
        if pos >= n:
            return None
        self.msg_pos = pos
        self.tail = b""
        end = data.find(b"\n", pos, pos + self.max_header_bytes)
        if end < 0:
            if n - pos > self.max_header_bytes:
                return "request line too long"
            self.line = data[pos:]  # checked when the rest arrives (`_first_line`)
            return None
        if not REQUEST_LINE.match(data, pos, end):
            return "malformed request line"
        return None
