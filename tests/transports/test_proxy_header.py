"""The PROXY protocol header reader, sans-I/O: every v1 and v2 header our proxy (and the
`proxy-protocol` library) writes is read to its last byte and no further, fed in the sizes
the reader asks for; anything else is refused with `ProxyHeaderError`, never another
exception, and never by reading more than a header may hold."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parlour.proxy.proxy_protocol import proxy_header
from parlour.transports.proxy_header import (
    MAX_HEADER,
    ProxyHeaderError,
    ProxyHeaderReader,
    networks,
    trusted,
)

ports = st.integers(1, 65535)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)


def read(data: bytes) -> tuple[ProxyHeaderReader, bytes]:
    """Feed `data` the way the door reads: exactly `want()` bytes at a time."""
    reader = ProxyHeaderReader()
    pos = 0
    while not reader.done:
        n = reader.want()
        assert 0 < n <= MAX_HEADER
        if pos >= len(data):
            return reader, b""
        reader.feed(data[pos : pos + n])
        pos += len(data[pos : pos + n])
    return reader, data[pos:]


@given(
    version=st.sampled_from(["v1", "v2"]),
    addresses=st.one_of(st.tuples(v4, v4), st.tuples(v6, v6)),
    sport=ports,
    dport=ports,
    rest=st.binary(max_size=64),
)
def test_a_header_is_read_exactly_and_names_the_client(
    version: str, addresses: tuple[str, str], sport: int, dport: int, rest: bytes
) -> None:
    src, dst = addresses
    header = proxy_header(version, (src, sport), (dst, dport))  # type: ignore[arg-type]
    reader, left = read(header + rest)
    assert reader.done
    assert reader.source is not None
    assert ipaddress.ip_address(reader.source[0]) == ipaddress.ip_address(src)
    assert reader.source[1] == sport
    assert left == rest  # not a byte of what follows was taken


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY UNKNOWN\r\n",
        b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00",  # v2 LOCAL: the proxy's own health check
    ],
)
def test_the_proxy_speaking_for_itself_names_nobody(header: bytes) -> None:
    reader, left = read(header + b"{}")
    assert reader.done and reader.source is None and left == b"{}"


@pytest.mark.parametrize(
    "data",
    [
        b'{"id":1,"type":"hello"}\n',  # a chat client that is not behind the proxy
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",  # too many fields
        b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY " + b"A" * 120 + b"\r\n",  # longer than a v1 line may be
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff",  # v2 announcing 65535 bytes
        b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c",  # a broken v2 signature
    ],
)
def test_what_is_not_a_header_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        read(data)


@given(st.binary(min_size=1, max_size=300))
def test_any_bytes_are_a_header_an_error_or_a_wait(data: bytes) -> None:
    try:
        reader, _ = read(data)
    except ProxyHeaderError:
        return
    assert reader.done or reader.want() > 0


def test_trusted_networks() -> None:
    nets = networks(["127.0.0.1", "10.0.0.0/8", "::1"])
    assert trusted("127.0.0.1", nets) and trusted("10.200.3.4", nets) and trusted("::1", nets)
    assert trusted("::ffff:10.1.1.1", nets)  # IPv4-mapped
    assert not trusted("127.0.0.2", nets) and not trusted("11.0.0.1", nets)
    assert not trusted("not an address", nets) and not trusted("", nets)
    with pytest.raises(ValueError):
        networks(["10.0.0.0/33"])
