"""Response desync (issue 11, must fix 1): a backend that sends bytes past the end of its
framed response must not get them relayed as the answer to the client's next request.

The upstream connection that did it is closed, never reused, and the requests after it
go to the backend on fresh connections and get their own answers. Runs in both data
planes (a GET stays in the fast lane, a POST is the Python relay's).
"""

from __future__ import annotations

import asyncio

import pytest
from proxy_helpers import ProxyFactory
from raw_backend import TIMEOUT, RawBackendFactory, Req, client, get, ok, read_response

POISON_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nPOISON!"
EXTRAS = {
    "a whole response": POISON_RESPONSE,
    "garbage": b"POISON!POISON",
    "a response head": b"HTTP/1.1 200 OK\r\n",
}
FIRSTS = {
    "GET": get("/extra"),
    "POST": b"POST /extra HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nA",
}


def chunked(body: bytes) -> bytes:
    framed = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + framed


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("extra", sorted(EXTRAS))
@pytest.mark.parametrize("method", sorted(FIRSTS))
async def test_bytes_past_a_response_never_answer_the_next_request(
    raw_backends: RawBackendFactory, proxy: ProxyFactory, method: str, extra: str, framing: str
) -> None:
    def answer(req: Req) -> bytes:
        if req.url == b"/extra":
            first = ok(b"hello") if framing == "length" else chunked(b"hello")
            return first + EXTRAS[extra]  # one write: the extra bytes come with the answer
        return ok(req.url)

    a = await raw_backends("a", answer)
    rt = await proxy([a.spec])
    async with client(rt.listen_port or 0) as (r, w):
        w.write(FIRSTS[method] + get("/second") + get("/third", b"Connection: close\r\n"))
        first = await read_response(r)
        second = await read_response(r)
        third = await read_response(r)
        rest = await asyncio.wait_for(r.read(), TIMEOUT)
    assert (first.status, first.body) == (200, b"hello")
    assert (second.status, second.body) == (200, b"/second")
    assert (third.status, third.body) == (200, b"/third")
    assert b"POISON" not in rest and rest == b""
    # the connection that answered /extra carried nothing after it
    (extra_conn,) = [req.conn for req in a.requests if req.url == b"/extra"]
    assert extra_conn.nreq == 1
    await asyncio.wait_for(extra_conn.lost, TIMEOUT)  # and the proxy closed it
    assert [req.url for req in a.requests] == [b"/extra", b"/second", b"/third"]


async def test_idle_pooled_connection_that_speaks_is_closed_not_reused(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    a = await raw_backends("a", lambda req: ok(req.url))
    rt = await proxy([a.spec])
    async with client(rt.listen_port or 0) as (r, w):
        w.write(get("/a"))
        assert (await read_response(r)).body == b"/a"
        (used,) = a.used_conns()
        used.write(POISON_RESPONSE)  # unasked, while the connection waits in the pool
        await asyncio.wait_for(used.lost, TIMEOUT)
        w.write(get("/b"))
        got = await read_response(r)
    assert (got.status, got.body) == (200, b"/b")
    assert used.nreq == 1
