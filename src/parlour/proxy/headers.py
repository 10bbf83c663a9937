"""Sans-I/O HTTP/1.1 message heads for the relay: request checks, hop-by-hop removal
(RFC 9110 §7.6.1, RFC 9112), X-Forwarded-* and Via.

Bodies are never touched here; the relay re-frames them itself (chunked or by length), so
whatever framing trick a client sends, the backend only ever sees the proxy's framing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "HOP_BY_HOP",
    "MAX_HEADERS",
    "BadRequest",
    "RequestHead",
    "build_request_head",
    "build_response_head",
    "check_request_line",
    "connection_tokens",
    "error_response",
    "validate_request",
]

Header = tuple[bytes, bytes]

HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
MAX_HEADERS = 100
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"\A" + _TOKEN + rb" [\x21-\x7e\x80-\xff]+ HTTP/1\.[01]\r?\Z")
_VIA = b"1.1 parlour"


class BadRequest(Exception):
    """The client's request cannot be relayed; answer 400 and close."""


class RequestHead(NamedTuple):
    """A validated request head (a NamedTuple: one is built per request)."""

    method: str
    url: bytes
    version: str  # "1.0" / "1.1"
    headers: tuple[Header, ...]
    chunked: bool
    content_length: int | None
    upgrade: bool


def check_request_line(line: bytes) -> None:
    """Reject request lines llhttp tolerates but an origin might read differently
    (several spaces between parts, control bytes in the target)."""
    if not _REQUEST_LINE.match(line):
        raise BadRequest("malformed request line")


def connection_tokens(headers: Sequence[Header]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def validate_request(
    method: str, url: bytes, version: str, headers: Sequence[Header], *, upgrade: bool
) -> RequestHead:
    """Checks llhttp leaves to us: target form, Host, header count and framing headers."""
    if method == "CONNECT":
        raise BadRequest("CONNECT is not supported by a reverse proxy")
    if not url:
        raise BadRequest("empty request target")
    origin_or_absolute = url.startswith((b"/", b"http://", b"https://"))
    if not origin_or_absolute and not (url == b"*" and method == "OPTIONS"):
        raise BadRequest("bad request target")
    if len(headers) > MAX_HEADERS:
        raise BadRequest("too many header fields")
    hosts = 0
    content_length: int | None = None
    chunked = False
    for name, value in headers:
        lname = name.lower()
        if lname == b"host":
            hosts += 1
        elif lname == b"content-length":
            if content_length is not None or not value.isdigit() or len(value) > 18:
                raise BadRequest("bad Content-Length")
            content_length = int(value)
        elif lname == b"transfer-encoding":
            if chunked or value.strip().lower() != b"chunked":
                raise BadRequest("unsupported Transfer-Encoding")
            chunked = True
    if chunked and content_length is not None:
        raise BadRequest("both Content-Length and Transfer-Encoding")
    if version == "1.1" and hosts != 1:
        raise BadRequest("HTTP/1.1 request needs exactly one Host header")
    if hosts > 1:
        raise BadRequest("several Host headers")
    return RequestHead(method, url, version, tuple(headers), chunked, content_length, upgrade)


_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade"})


def _strip_hop_by_hop(headers: Sequence[Header], keep_upgrade: bool) -> list[Header]:
    """One pass: drop hop-by-hop fields and any field named in Connection."""
    out: list[Header] = []
    extra: set[bytes] | None = None
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection":
                named = {t.strip().lower() for t in value.split(b",")} - _PLAIN_CONNECTION
                if named:
                    extra = named if extra is None else extra | named
            elif keep_upgrade and lname == b"upgrade":
                out.append((name, value))
            continue
        out.append((name, value))
    if extra:
        out = [(n, v) for n, v in out if n.lower() not in extra]
    return out


def build_request_head(
    req: RequestHead,
    client_ip: str,
    *,
    trust_forwarded: bool,
    proto: str = "http",
    default_host: bytes = b"",
) -> bytes:
    """The head sent upstream: always HTTP/1.1, hop-by-hop removed, forwarding headers set."""
    out = [req.method.encode("ascii"), b" ", req.url, b" HTTP/1.1\r\n"]
    xff: bytes | None = None
    xfp: bytes | None = None
    xfh: bytes | None = None
    via: bytes | None = None
    host: bytes | None = None
    for name, value in _strip_hop_by_hop(req.headers, keep_upgrade=req.upgrade):
        lname = name.lower()
        if lname == b"x-forwarded-for":
            if trust_forwarded:
                xff = value if xff is None else xff + b", " + value
            continue
        if lname == b"x-forwarded-proto":
            if trust_forwarded:
                xfp = value
            continue
        if lname == b"x-forwarded-host":
            if trust_forwarded:
                xfh = value
            continue
        if lname == b"via":
            via = value if via is None else via + b", " + value
            continue
        if lname == b"host":
            host = value
        out += (name, b": ", value, b"\r\n")
    if host is None and default_host:  # HTTP/1.0 without Host: upstream speaks 1.1
        out += (b"Host: ", default_host, b"\r\n")
    ip = client_ip.encode("ascii")
    out += (b"X-Forwarded-For: ", ip if xff is None else xff + b", " + ip, b"\r\n")
    out += (b"X-Forwarded-Proto: ", xfp or proto.encode("ascii"), b"\r\n")
    if xfh is not None or host is not None:
        out += (b"X-Forwarded-Host: ", xfh if xfh is not None else host or b"", b"\r\n")
    req_via = b"1.0 parlour" if req.version == "1.0" else _VIA
    out += (b"Via: ", req_via if via is None else via + b", " + req_via, b"\r\n")
    if req.upgrade:
        out.append(b"Connection: Upgrade\r\n")
    if req.chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def build_response_head(
    status: int,
    reason: bytes,
    headers: Sequence[Header],
    *,
    client_version: str,
    framing: str,
    keep_alive: bool,
) -> bytes:
    """The head sent to the client. `framing` is "chunked", "length", "none" or "close"
    (body ends when the connection closes); "upgrade" keeps Upgrade/Connection."""
    upgrade = framing == "upgrade"
    out = [b"HTTP/%b %d " % (client_version.encode("ascii"), status), reason, b"\r\n"]
    drop_length = framing not in ("length", "none")
    named: set[bytes] | None = None
    for name, value in headers:  # one pass: hop-by-hop fields dropped as they come
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")} - _PLAIN_CONNECTION
                if tokens:
                    named = tokens if named is None else named | tokens
            elif upgrade and lname == b"upgrade":
                out += (name, b": ", value, b"\r\n")
            continue
        if drop_length and lname == b"content-length":
            continue
        out += (name, b": ", value, b"\r\n")
    if named:  # fields the Connection header named (rare): filter them out afterwards
        return build_response_head(
            status,
            reason,
            [(n, v) for n, v in headers if (ln := n.lower()) not in named and ln != b"connection"],
            client_version=client_version,
            framing=framing,
            keep_alive=keep_alive,
        )
    out.append(b"Via: 1.1 parlour\r\n")
    if upgrade:
        out.append(b"Connection: Upgrade\r\n")
    elif framing == "chunked":
        out.append(b"Transfer-Encoding: chunked\r\n")
    if not upgrade:
        if not keep_alive or framing == "close":
            out.append(b"Connection: close\r\n")
        elif client_version == "1.0":
            out.append(b"Connection: keep-alive\r\n")
    out.append(b"\r\n")
    return b"".join(out)


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def error_response(status: int, detail: str) -> bytes:
    """A complete small HTML error response that closes the connection."""
    reason = _REASONS.get(status, "Error")
    safe = detail.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    body = (
        f"<!doctype html><html><head><title>{status} {reason}</title></head><body>"
        f"<h1>{status} {reason}</h1><p>{safe}</p><hr><p>parlour proxy</p></body></html>\n"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
    ).encode()
    return head + body
