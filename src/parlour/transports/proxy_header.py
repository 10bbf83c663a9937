"""The PROXY protocol header (HAProxy's proxy-protocol.txt, v1 text and v2 binary) that a
trusted proxy sends first on a connection: who the client really is. Sans-I/O.

`ProxyHeaderReader.want()` says how many bytes to read next — never more than the header
still holds, because what follows it belongs to the chat or to a TLS handshake, and the door
reads exactly that much — and `feed()` takes them. Once `done`, `source` is the client's
address, or None when the proxy speaks for itself (v2 LOCAL, v1 UNKNOWN: a health check), in
which case the connection's own address stands. Parsing the header is the `proxy-protocol`
library's; finding where it ends, and the bounds, are here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from proxyprotocol import (
    ProxyProtocolChecksumError,
    ProxyProtocolIncompleteError,
    ProxyProtocolSyntaxError,
)
from proxyprotocol.result import is_ipv4, is_ipv6
from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

__all__ = [
    "MAX_HEADER",
    "Networks",
    "ProxyHeaderError",
    "ProxyHeaderReader",
    "networks",
    "trusted",
]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: the longest v1 line the specification allows (CRLF included)
V1_MAX = 107
#: the longest v2 header taken (16 fixed bytes, addresses, a few TLVs)
MAX_HEADER = 16 + 1024

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


class ProxyHeaderError(ValueError):
    """Bytes that are not a PROXY protocol header this server takes."""


def networks(items: Iterable[str]) -> Networks:
    """Addresses and CIDR blocks (`10.0.0.0/8`, `::1`) as networks (ValueError if bad)."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items)


def trusted(host: str, among: Networks) -> bool:
    """Whether address `host` is in one of `among` (IPv4-mapped IPv6 counts as IPv4)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in among)


class ProxyHeaderReader:
    __slots__ = ("_buf", "_need", "done", "source")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 8  # enough to tell v1 from v2
        self.done = False
        self.source: tuple[str, int] | None = None

    def want(self) -> int:
        """Bytes to read next (0 once the header is complete)."""
        return 0 if self.done else self._need

    def feed(self, data: bytes) -> None:
        """Take the bytes read (at most `want()`); raises `ProxyHeaderError`."""
        if self.done:
            raise ProxyHeaderError("the header is complete")
        buf = self._buf
        buf += data
        if len(buf) < 8:
            self._need = 8 - len(buf)
            return
        if buf.startswith(V2_SIGNATURE[:8]):
            self._v2(buf)
        elif buf.startswith(b"PROXY "):
            self._v1(buf)
        else:
            raise ProxyHeaderError("the connection did not start with a PROXY protocol header")

    def _v2(self, buf: bytearray) -> None:
        if len(buf) < 16:
            self._need = 16 - len(buf)
            return
        if not buf.startswith(V2_SIGNATURE):
            raise ProxyHeaderError("bad PROXY protocol v2 signature")
        total = 16 + int.from_bytes(buf[14:16], "big")
        if total > MAX_HEADER:
            raise ProxyHeaderError(f"PROXY protocol v2 header of {total} bytes is too long")
        if len(buf) < total:
            self._need = total - len(buf)
            return
        self._finish(ProxyProtocolV2(), bytes(buf))

    def _v1(self, buf: bytearray) -> None:
        if not buf.endswith(b"\n"):
            if len(buf) >= V1_MAX:
                raise ProxyHeaderError("PROXY protocol v1 line longer than 107 bytes")
            self._need = 1  # a byte at a time: the line's end is not known in advance
            return
        self._finish(ProxyProtocolV1(), bytes(buf))

    def _finish(self, version: ProxyProtocolV1 | ProxyProtocolV2, header: bytes) -> None:
        try:
            result = version.unpack(header)
        except (
            ProxyProtocolSyntaxError,
            ProxyProtocolChecksumError,
            ProxyProtocolIncompleteError,
            ValueError,
            IndexError,
        ) as exc:
            raise ProxyHeaderError(f"bad PROXY protocol header: {exc}") from None
        if result.proxied and (is_ipv4(result) or is_ipv6(result)):
            host, port = result.source
            self.source = (str(host), int(port))
        self.done = True
        self._need = 0
