"""The HTTP relay's sans-I/O decisions (`parlour.proxy.http_rules`), without sockets:
framing and keep-alive rules, the connection timers stepped by hand, and the scanners
that find message boundaries in reads, driven by httptools (llhttp) exactly as the relay
drives them, on pipelined streams cut at every place hypothesis likes."""

from __future__ import annotations

import itertools

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.proxy.http_rules import (
    ChunkScan,
    RequestScan,
    Wait,
    chunk,
    client_wait,
    request_keep_alive,
    response_framing,
    response_keep_alive,
)

MAX_HEAD = 4096

# ---------------------------------------------------------------------- framing


@pytest.mark.parametrize(
    ("method", "status", "version", "upgrade", "chunked", "length", "want"),
    [
        ("GET", 200, "1.1", False, False, True, "length"),
        ("GET", 200, "1.1", False, True, False, "chunked"),
        ("GET", 200, "1.0", False, True, False, "close"),  # a 1.0 client reads no chunks
        ("GET", 200, "1.1", False, False, False, "close"),  # read until the backend closes
        ("HEAD", 200, "1.1", False, False, True, "none"),
        ("GET", 204, "1.1", False, False, False, "none"),
        ("GET", 304, "1.1", False, True, False, "none"),
        ("GET", 101, "1.1", True, False, False, "upgrade"),
        ("GET", 101, "1.1", False, False, False, None),  # a switch nobody asked for
    ],
)
def test_response_framing(
    method: str,
    status: int,
    version: str,
    upgrade: bool,
    chunked: bool,
    length: bool,
    want: str | None,
) -> None:
    assert response_framing(method, status, version, upgrade, chunked, length) == want


def test_keep_alive_rules() -> None:
    assert request_keep_alive(True, False, False, "1.1")
    assert not request_keep_alive(True, True, False, "1.1")  # an upgrade becomes a tunnel
    assert not request_keep_alive(True, False, True, "1.0")  # RFC 9112 §6.1
    assert request_keep_alive(True, False, True, "1.1")
    assert not request_keep_alive(False, False, False, "1.1")
    assert response_keep_alive(True, True, "1.1")
    assert not response_keep_alive(True, True, "1.0")
    assert not response_keep_alive(False, False, "1.1")


# ---------------------------------------------------------------------- timers

TIMERS = {
    "client_timeout_s": 30.0,
    "server_timeout_s": 20.0,
    "idle_timeout_s": 60.0,
    "tunnel_timeout_s": 300.0,
}
IDLE = {
    "tunnel": False,
    "output_paused_at": 0.0,
    "in_head": False,
    "head_started": 0.0,
    "request": False,
    "queued": False,
    "request_complete": False,
    "request_sent": False,
    "last_client": 100.0,
    "last_backend": 100.0,
}


def wait(now: float, **state: object) -> Wait:
    return client_wait(now, **{**IDLE, **TIMERS, **state})  # type: ignore[arg-type]


def test_idle_connection_closes_after_idle_timeout() -> None:
    assert wait(160.0).action == "ok"
    assert wait(160.1) == Wait("close", detail="idle")
    assert wait(500.0, queued=True).action == "ok"  # a request waits: not idle


def test_slow_head_gets_408_from_its_first_byte() -> None:
    head = {"in_head": True, "head_started": 100.0, "last_client": 129.0}
    assert wait(130.0, **head).action == "ok"
    got = wait(130.5, **head)
    assert (got.action, got.status) == ("fail", 408) and not got.blame_backend


def test_stalled_body_gets_408_and_silent_backend_504() -> None:
    body = {"request": True, "request_sent": True, "last_client": 100.0}
    assert wait(130.5, **body).status == 408
    sent = {**body, "request_complete": True, "last_backend": 110.0}
    assert wait(130.0, **sent).action == "ok"  # 20 s from the backend's last byte
    got = wait(130.5, **sent)
    assert (got.action, got.status, got.blame_backend) == ("fail", 504, True)


def test_a_client_not_reading_is_its_own_fault() -> None:
    paused = {"request": True, "request_sent": True, "request_complete": True}
    paused |= {"output_paused_at": 120.0, "last_backend": 100.0}
    assert wait(149.0, **paused).action == "ok"  # no 504 while the client lags
    got = wait(150.5, **paused)
    assert got.action == "close" and not got.blame_backend


def test_tunnels_use_their_own_timeout_from_either_side() -> None:
    assert wait(399.0, tunnel=True, last_client=100.0, last_backend=99.0).action == "ok"
    assert wait(401.0, tunnel=True).action == "close"
    assert wait(401.0, tunnel=True, last_backend=200.0).action == "ok"


# ---------------------------------------------------------------------- scanners


@st.composite
def chunked_body(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=4))
    out = b""
    for p in parts:
        ext = draw(st.sampled_from([b"", b";a=1", b";name"]))
        out += b"%x%b\r\n%b\r\n" % (len(p), ext, p)
    trailer = draw(st.sampled_from([b"", b"X-T: 1\r\n", b"A: b\r\nC: d\r\n"]))
    return out + b"0\r\n" + trailer + b"\r\n"


@st.composite
def request(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(url, whole message)"""
    url = b"/" + draw(st.text("abcxyz/=?&", max_size=8)).encode()
    kind = draw(st.sampled_from(["get", "length", "chunked"]))
    if kind == "get":
        return url, b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % url
    if kind == "length":
        body = draw(st.binary(max_size=50))
        return url, b"POST %b HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (
            url,
            len(body),
            body,
        )
    body = draw(chunked_body())
    return url, b"POST %b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%b" % (
        url,
        body,
    )


# request lines llhttp takes but an origin may read differently (the relay's 400s)
BAD_LINES = [
    b"GET  /x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /\x01x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /x HTTP/2.0\r\nHost: x\r\n\r\n",
    b"GET /0HTTP/1.1\r\nHost: x\r\n\r\n",
]


class _Stop(Exception):
    pass


class Harness:
    """Feeds reads to llhttp and to a RequestScan the way HttpClient does."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.scan = RequestScan(MAX_HEAD)
        self.parsing = False
        self.in_head = False
        self.chunked = False
        self.url = b""
        self.found: list[bytes] = []
        self.rejected: str | None = None

    def feed(self, data: bytes) -> None:
        if self.rejected is not None:
            return
        bad = self.scan.start(data, self.parsing, self.in_head)
        if bad is not None:
            self.rejected = bad
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.rejected is None:
                self.rejected = "llhttp"
            return
        if self.parsing:
            self.scan.end(True, self.in_head)

    def on_message_begin(self) -> None:
        self.parsing = self.in_head = True
        self.chunked = False
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"transfer-encoding":
            self.chunked = True

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.scan.multi:
            self.scan.head_ended()
        else:
            self.scan.head_size = 0
        if self.chunked:
            self.scan.chunked_body()

    def on_body(self, body: bytes) -> None:
        self.scan.body_bytes(len(body))

    def on_message_complete(self) -> None:
        self.parsing = False
        self.found.append(self.url)
        self.scan.head_size = 0
        if self.scan.multi:
            bad = self.scan.message_ended(self.chunked, False)
            if bad is not None:
                self.rejected = bad
                raise _Stop


def cut(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points})
    edges = [0, *marks, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@settings(max_examples=300, deadline=None)
@given(st.lists(request(), min_size=1, max_size=5), st.lists(st.integers(0, 10_000), max_size=6))
def test_every_pipelined_request_is_found_in_any_cut(
    messages: list[tuple[bytes, bytes]], points: list[int]
) -> None:
    h = Harness()
    for piece in cut(b"".join(m for _, m in messages), points):
        h.feed(piece)
    assert h.rejected is None
    assert h.found == [url for url, _ in messages]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(request(), max_size=4),
    st.sampled_from(BAD_LINES),
    st.lists(st.integers(0, 10_000), max_size=6),
)
def test_a_bad_request_line_behind_others_is_caught_in_any_cut(
    messages: list[tuple[bytes, bytes]], bad: bytes, points: list[int]
) -> None:
    h = Harness()
    for piece in cut(b"".join(m for _, m in messages) + bad, points):
        h.feed(piece)
    # refused (by the scan, or by llhttp when a piece shows it a byte it rejects itself:
    # both are a 400 in the relay), and never taken as a request
    assert h.rejected is not None
    assert h.found == [url for url, _ in messages]


def test_head_size_is_bounded_across_reads() -> None:
    h = Harness()
    h.feed(b"GET / HTTP/1.1\r\nHost: x\r\n")
    for _ in range(MAX_HEAD // 20 + 2):
        h.feed(b"X-Pad: " + b"a" * 11 + b"\r\n")
    assert h.scan.head_size > MAX_HEAD and h.in_head


@settings(max_examples=200, deadline=None)
@given(chunked_body(), st.binary(max_size=20), st.lists(st.integers(0, 1000), max_size=5))
def test_chunk_scan_finds_the_end_of_a_body_in_any_cut(
    body: bytes, after: bytes, points: list[int]
) -> None:
    scan = ChunkScan()
    data = body + after
    offset = 0
    end = -1
    for piece in cut(data, points):
        got = scan.feed(piece, 0)
        if got >= 0:
            end = offset + got
            break
        offset += len(piece)
    assert end == len(body)


def test_chunk_framing() -> None:
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
