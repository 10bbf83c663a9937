"""Malformed and smuggling-shaped requests: 400 + close, the backend never sees them."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy_helpers import BackendFactory, ProxyFactory, raw_exchange

from parlour.proxy.headers import BadRequest, check_request_line, validate_request
from parlour.transports.testing import FakeTransport

H = b"Host: x\r\n"
CASES: dict[str, bytes] = {
    "bad request line": b"GET\r\n" + H + b"\r\n",
    "two spaces in request line": b"GET  / HTTP/1.1\r\n" + H + b"\r\n",
    "bad version": b"GET / HTTP/9.9\r\n" + H + b"\r\n",
    "not http": b"HELLO THERE\r\n\r\n",
    "target not origin form": b"GET foo HTTP/1.1\r\n" + H + b"\r\n",
    "connect": b"CONNECT a:443 HTTP/1.1\r\n" + H + b"\r\n",
    "missing host": b"GET / HTTP/1.1\r\n\r\n",
    "two hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "invalid header byte": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n",
    "nul in header": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\n" + H + b"X-A : b\r\n\r\n",
    "obs fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\n" + H + b"\n",
    "CL and TE": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE and CL": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    "duplicate CL": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "conflicting CL": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "signed CL +": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc",
    "signed CL -": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -3\r\n\r\nabc",
    "underscored CL": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1_0\r\n\r\n0123456789",
    "CL list": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc",
    "TE not chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nabc",
    "TE chunked not last": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "TE with space before colon": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "underscored chunk size": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n1_0\r\n0123456789012345\r\n0\r\n\r\n",
    "negative chunk size": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    "chunk size bare LF": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
    "upgrade with chunked body": b"GET /ws HTTP/1.1\r\n"
    + H
    + b"Connection: Upgrade\r\nUpgrade: websocket\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"0\r\n\r\n",
    "upgrade with length body": b"POST /ws HTTP/1.1\r\n"
    + H
    + b"Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\nabc",
    "oversize headers": b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n",
    "too many headers": b"GET / HTTP/1.1\r\n"
    + H
    + b"".join(b"X-%d: 1\r\n" % i for i in range(150))
    + b"\r\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_malformed_request_gets_400_and_never_reaches_backend(
    name: str, backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    out = await raw_exchange(rt.listen_port or 0, CASES[name])
    assert out.startswith(b"HTTP/1.1 400 Bad Request"), (name, out[:200])
    assert b"Connection: close" in out
    assert a.seen == []
    assert rt.backends()[0].requests == 0


async def test_smuggled_request_after_valid_one_is_not_forwarded(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    payload = (
        b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    out = await raw_exchange(rt.listen_port or 0, payload)
    assert out.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 400 Bad Request" in out
    assert [r.path for r in a.seen] == ["/ok"]


async def test_bad_chunk_later_in_stream_aborts_upstream(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    await writer.drain()

    # wait until the backend has the request head, then send a bad chunk
    await a.seen_at_least(1, 5)
    writer.write(b"zz\r\nbad\r\n0\r\n\r\n")
    out = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert b"hello" not in out or out.startswith(b"HTTP/1.1 200")
    assert a.bodies == []  # the backend never got a complete body


async def test_slowloris_head_times_out(backends: BackendFactory, proxy: ProxyFactory) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], client_timeout_s=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ")
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 5)  # the proxy closes on its own
    writer.close()
    assert out.startswith(b"HTTP/1.1 408")
    assert a.seen == []


async def test_idle_keep_alive_client_is_closed(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], idle_timeout_s=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    out = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"a")
    assert not rt.upstreams.conns


@given(st.binary(max_size=300))
@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_request_line_check_never_crashes(line: bytes) -> None:
    try:
        check_request_line(line)
    except BadRequest:
        return
    method, target, version = line.rstrip(b"\r").split(b" ")
    assert version in (b"HTTP/1.0", b"HTTP/1.1") and method and target


@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"X-A"]),
            st.sampled_from([b"1", b"x", b"chunked", b"+1", b"", b"10", b"gzip, chunked"]),
        ),
        max_size=6,
    )
)
@settings(deadline=None, max_examples=300)
def test_validate_request_framing_is_unambiguous(headers: list[tuple[bytes, bytes]]) -> None:
    try:
        head = validate_request("POST", b"/", "1.1", headers, upgrade=False)
    except BadRequest:
        return
    names = [n.lower() for n, _ in headers]
    assert names.count(b"host") == 1
    assert names.count(b"content-length") + names.count(b"transfer-encoding") <= 1
    assert not (head.chunked and head.content_length is not None)


async def test_request_line_checked_when_it_arrives_in_pieces(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
    for piece in (b"GE", b"T  /", b" HTTP/1.1\r\nHo", b"st: x\r\n\r\n"):
        writer.write(piece)
        await writer.drain()
    out = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert out.startswith(b"HTTP/1.1 400")
    assert a.seen == []
    # a well-formed request in pieces is fine
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.listen_port)
    for piece in (b"GE", b"T / HT", b"TP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
        writer.write(piece)
        await writer.drain()
    out = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert out.startswith(b"HTTP/1.1 200")


async def test_fragmented_request_line_is_checked_deterministically() -> None:
    from parlour.proxy.config import ProxyConfig
    from parlour.proxy.http_relay import HttpClient
    from parlour.proxy.runtime import ProxyRuntime

    rt = ProxyRuntime(ProxyConfig(admin_port=None))
    conn = HttpClient(rt.upstreams)
    tr = FakeTransport(("127.0.0.1", 5555))
    conn.connection_made(tr)
    for piece in (b"GE", b"T  /", b" HTTP/1.1\r\nHo", b"st: x\r\n\r\n"):
        conn.data_received(piece)
    assert bytes(tr.out).startswith(b"HTTP/1.1 400") and tr.closing and not tr.aborted


async def test_connection_option_naming_content_length_cannot_smuggle(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    """`Connection: content-length` must not strip the framing of a relayed body: the
    backend would read the body as a second request (the body here is one)."""
    a = await backends("a")
    rt = await proxy([a.spec])
    smuggled = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    payload = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(smuggled), smuggled)
    )
    out = await raw_exchange(
        rt.listen_port or 0, payload + b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    assert [r.path for r in a.seen] == ["/echo", "/ok"]
    assert a.bodies == [smuggled]


def test_connection_option_never_removes_framing_or_host() -> None:
    from parlour.proxy.headers import build_request_head, build_response_head

    head = validate_request(
        "POST",
        b"/",
        "1.1",
        [(b"Host", b"x"), (b"Content-Length", b"5"), (b"Connection", b"content-length, host")],
        upgrade=False,
    )
    out = build_request_head(head, "192.0.2.1", trust_forwarded=False)
    assert b"\r\nContent-Length: 5\r\n" in out and b"\r\nHost: x\r\n" in out
    resp = build_response_head(
        200,
        b"OK",
        [(b"Content-Length", b"3"), (b"Connection", b"content-length")],
        client_version="1.1",
        framing="length",
        keep_alive=True,
    )
    assert b"\r\nContent-Length: 3\r\n" in resp
