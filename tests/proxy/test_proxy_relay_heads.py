"""The relay builds response heads field by field as llhttp reports them (no list of
fields, no second pass); whatever the backend sends, the head the client gets must be the
one `headers.build_response_head` (the reference, tested on its own) builds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.proxy.config import ProxyConfig
from parlour.proxy.control import BackendSpec
from parlour.proxy.headers import build_response_head
from parlour.proxy.http_relay import HttpClient, HttpUpstream
from parlour.proxy.runtime import ProxyRuntime
from parlour.transports.testing import FakeTransport

PEER = ("127.0.0.1", 4000)


_NAMES = [
    b"Server",
    b"X-Secret",
    b"x-other",
    b"Keep-Alive",
    b"TE",
    b"Trailer",
    b"Upgrade",
    b"Proxy-Connection",
    b"Content-Type",
    b"Via",
    b"Date",
]
_field = st.tuples(st.sampled_from(_NAMES), st.sampled_from([b"1", b"a b", b"h2c", b"x, y"]))
_connection = st.lists(
    st.sampled_from([b"keep-alive", b"close", b"upgrade", b"X-Secret", b"te", b"content-length"]),
    min_size=1,
    max_size=3,
).map(lambda ts: (b"Connection", b", ".join(ts)))


async def _relay(
    request: bytes, response: bytes, status_fields: list[tuple[bytes, bytes]]
) -> bytes:
    rt = ProxyRuntime(ProxyConfig(admin_port=None), admin=False, persist=False)
    b = rt.pool.add(BackendSpec("127.0.0.1", 9000), rt.clock())
    up = HttpUpstream(rt.upstreams, b)
    up.connection_made(FakeTransport(PEER))
    rt.upstreams.idle[b.id] = [up]
    client = HttpClient(rt.upstreams)
    tr = FakeTransport(PEER)
    client.connection_made(tr)
    client.data_received(request)
    assert client.upstream is up
    up.data_received(response)
    return bytes(tr.out)


@settings(max_examples=150, deadline=None)
@given(
    fields=st.lists(st.one_of(_field, _connection), max_size=8),
    framing=st.sampled_from(["length", "chunked", "close"]),
    version=st.sampled_from(["1.0", "1.1"]),
    head_request=st.booleans(),
)
async def test_relayed_response_head_matches_reference(
    fields: list[tuple[bytes, bytes]], framing: str, version: str, head_request: bool
) -> None:
    headers = list(fields)
    body = b""
    if framing == "length":
        headers.insert(len(headers) // 2, (b"Content-Length", b"3"))
        body = b"abc"
    elif framing == "chunked":
        headers.insert(len(headers) // 2, (b"Transfer-Encoding", b"chunked"))
        body = b"3\r\nabc\r\n0\r\n\r\n"
    raw = b"HTTP/1.1 200 OK\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    method = b"HEAD" if head_request else b"GET"
    request = method + b" / HTTP/" + version.encode() + b"\r\nHost: x\r\n\r\n"
    out = await _relay(request, raw + b"\r\n" + (b"" if head_request else body), headers)
    expected_framing = framing
    if head_request:
        expected_framing = "none"
    elif framing == "chunked" and version == "1.0":
        expected_framing = "close"
    keep_alive = expected_framing != "close" and version == "1.1"
    expected = build_response_head(
        200,
        b"OK",
        headers,
        client_version=version,
        framing=expected_framing,
        keep_alive=keep_alive,
    )
    assert out[: len(expected)] == expected
