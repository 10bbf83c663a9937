"""Sans-I/O HTTP/1.1 message heads for the relay: request checks, hop-by-hop removal
(RFC 9110 §7.6.1, RFC 9112), X-Forwarded-* and Via.

Bodies are never touched here; the relay re-frames them itself (chunked or by length), so
whatever framing trick a client sends, the backend only ever sees the proxy's framing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "HOP_BY_HOP",
    "MAX_HEADERS",
    "REQUEST_LINE",
    "BadRequest",
    "RequestHead",
    "build_request_head",
    "build_response_head",
    "check_request_line",
    "connection_named",
    "connection_tokens",
    "drop_fields",
    "error_response",
    "response_tail",
    "split_absolute_form",
    "status_line",
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
# REQUEST_LINE.match(buf, start, end) checks buf[start:end] without a copy: match()
# anchors at `start` (no `^`/`\A`, which would not match there) and `\Z` matches at `end`
REQUEST_LINE = re.compile(_TOKEN + rb" [\x21-\x7e\x80-\xff]+ HTTP/1\.[01]\r?\Z")
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
    if not REQUEST_LINE.match(line):
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
    """Checks llhttp leaves to us: version, target form, Host, header count and framing
    headers."""
    if version != "1.1" and version != "1.0":  # (llhttp takes 0.9 — no version — and 2.0)
        raise BadRequest("unsupported HTTP version")
    if method == "CONNECT":
        raise BadRequest("CONNECT is not supported by a reverse proxy")
    if not url:
        raise BadRequest("empty request target")
    authority: bytes | None = None
    if url[0] != 47:  # not "/": absolute-form (RFC 9112 §3.2.2), or "*" for OPTIONS
        if url == b"*" and method == "OPTIONS":
            pass
        else:
            authority, url = split_absolute_form(url)
    if len(headers) > MAX_HEADERS:
        raise BadRequest("too many header fields")
    hosts = 0
    content_length: int | None = None
    chunked = False
    for name, value in headers:
        size = len(name)
        if size != 4 and size != 14 and size != 17:
            continue  # not Host, Content-Length or Transfer-Encoding
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
    if upgrade and (chunked or content_length):
        # after the head the connection becomes a tunnel: a body would be ambiguous (the
        # backend could read it as tunnel data or as the next request)
        raise BadRequest("upgrade request with a body")
    if version == "1.1" and hosts != 1:
        raise BadRequest("HTTP/1.1 request needs exactly one Host header")
    if hosts > 1:
        raise BadRequest("several Host headers")
    if authority is not None:
        # the target's authority is the Host (RFC 9112 §3.2.2: a server MUST ignore the
        # Host field then); the backend gets origin-form and that one Host
        kept = [(n, v) for n, v in headers if not (len(n) == 4 and n.lower() == b"host")]
        headers = [(b"Host", authority), *kept]
    # tuple.__new__ directly: the NamedTuple's generated __new__ is a Python call
    return _new_tuple(
        RequestHead, (method, url, version, tuple(headers), chunked, content_length, upgrade)
    )


# an authority without userinfo (RFC 3986 §3.2): a reg-name or IPv4 address, or an IPv6
# literal in brackets, and an optional port
_AUTHORITY = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?\Z")


def split_absolute_form(url: bytes) -> tuple[bytes, bytes]:
    """(authority, origin-form target) of an absolute-form `http(s)://authority/path?q`
    target; BadRequest for any other scheme, a missing or bad authority, or userinfo."""
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise BadRequest("bad request target")
    cut = len(rest)
    for mark in (b"/", b"?", b"#"):
        at = rest.find(mark)
        if 0 <= at < cut:
            cut = at
    authority, target = rest[:cut], rest[cut:]
    if b"@" in authority:
        raise BadRequest("userinfo in the request target")
    if not authority or not _AUTHORITY.match(authority) or authority.startswith(b":"):
        raise BadRequest("bad authority in the request target")
    if target.startswith(b"#"):
        target = b""
    if not target.startswith(b"/"):
        target = b"/" + target
    return authority, target


_new_tuple = tuple.__new__


_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade"})
# fields a Connection option never removes: dropping Content-Length from a message whose
# body is still relayed would let the body be read as the next message (request
# smuggling); dropping Host would change where it is routed. RFC 9110 §7.6.1 forbids
# senders to name end-to-end fields, so such an option is ignored rather than obeyed.
_NEVER_NAMED = frozenset({b"content-length", b"host", b"transfer-encoding"})


# what the head builders do with a field, by lower-cased name (one dict lookup per field)
_HOP, _XFF, _XFP, _XFH, _VIA_FIELD, _HOST, _LENGTH, _CLAIM, _SERVER = range(9)
_REQUEST_FIELDS: dict[bytes, int] = {name: _HOP for name in HOP_BY_HOP} | {
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFP,
    b"x-forwarded-host": _XFH,
    b"via": _VIA_FIELD,
    b"host": _HOST,
    # what a client says about where the request came from: kept only from a trusted
    # peer (trust_forwarded), like X-Forwarded-*
    b"forwarded": _CLAIM,
    b"x-real-ip": _CLAIM,
}
_RESPONSE_FIELDS: dict[bytes, int] = {name: _HOP for name in HOP_BY_HOP} | {
    b"content-length": _LENGTH,
    b"server": _SERVER,
}
_REQUEST_LENGTHS = frozenset(len(n) for n in _REQUEST_FIELDS)
_RESPONSE_LENGTHS = frozenset(len(n) for n in _RESPONSE_FIELDS)
# for the relay, which classifies response fields as llhttp reports them: names of these
# lengths may be hop-by-hop or Content-Length, no other name needs lower() (Server is
# looked at only when hide_server_header is on)
RESPONSE_SPECIAL_LENGTHS = frozenset(len(n) for n in HOP_BY_HOP) | {len(b"content-length")}
RESPONSE_HOP_BY_HOP = HOP_BY_HOP


def _connection_named(value: bytes) -> set[bytes]:
    """Field names a Connection header lists besides keep-alive/close/upgrade."""
    lowered = value.lower()
    if lowered in _PLAIN_CONNECTION:  # the usual case, no split needed
        return set()
    return {t.strip() for t in lowered.split(b",")} - _PLAIN_CONNECTION - _NEVER_NAMED - {b""}


connection_named = _connection_named


def _all_named(headers: Sequence[Header]) -> set[bytes]:
    """Field names listed by every Connection header (there may be several)."""
    named: set[bytes] = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            named |= _connection_named(value)
    return named


def _without(headers: Sequence[Header], named: set[bytes]) -> tuple[Header, ...]:
    """`headers` without the fields `named` and without Connection itself (rare path)."""
    return tuple(
        (n, v) for n, v in headers if (ln := n.lower()) not in named and ln != b"connection"
    )


def build_request_head(
    req: RequestHead,
    client_ip: str,
    *,
    trust_forwarded: bool,
    proto: str = "http",
    default_host: bytes = b"",
) -> bytes:
    """The head sent upstream: always HTTP/1.1, hop-by-hop removed, forwarding headers set."""
    method = req.method
    lines = [(_METHOD_BYTES.get(method) or method.encode("ascii") + b" ") + req.url + b" HTTP/1.1"]
    xff: bytes | None = None
    xfp: bytes | None = None
    xfh: bytes | None = None
    via: bytes | None = None
    host: bytes | None = None
    fields = _REQUEST_FIELDS
    lengths = _REQUEST_LENGTHS
    for name, value in req.headers:
        if len(name) not in lengths or (kind := fields.get(lname := name.lower())) is None:
            lines.append(name + b": " + value)
        elif kind == _HOP:
            if lname == b"connection":
                if _connection_named(value):  # drop the fields named, then build again
                    return build_request_head(
                        req._replace(headers=_without(req.headers, _all_named(req.headers))),
                        client_ip,
                        trust_forwarded=trust_forwarded,
                        proto=proto,
                        default_host=default_host,
                    )
            elif req.upgrade and lname == b"upgrade":
                lines.append(name + b": " + value)
        elif kind == _HOST:
            host = value
            lines.append(name + b": " + value)
        elif kind == _VIA_FIELD:
            via = value if via is None else via + b", " + value
        elif kind == _CLAIM:
            if trust_forwarded:
                lines.append(name + b": " + value)
        elif trust_forwarded:
            if kind == _XFF:
                xff = value if xff is None else xff + b", " + value
            elif kind == _XFP:
                xfp = value
            else:
                xfh = value
    if (
        host is not None
        and xff is None
        and xfp is None
        and xfh is None
        and via is None
        and not req.upgrade
        and not req.chunked
    ):  # the usual request: the tail is a constant per client, Host and version
        lines.append(_plain_request_tail(client_ip, host, req.version, proto))
        return b"\r\n".join(lines)
    if host is None and default_host:  # HTTP/1.0 without Host: upstream speaks 1.1
        lines.append(b"Host: " + default_host)
    ip = client_ip.encode("ascii")
    lines.append(b"X-Forwarded-For: " + (ip if xff is None else xff + b", " + ip))
    lines.append(b"X-Forwarded-Proto: " + (xfp or proto.encode("ascii")))
    if xfh is not None or host is not None:
        lines.append(b"X-Forwarded-Host: " + (xfh if xfh is not None else host or b""))
    req_via = b"1.0 parlour" if req.version == "1.0" else _VIA
    lines.append(b"Via: " + (req_via if via is None else via + b", " + req_via))
    if req.upgrade:
        lines.append(b"Connection: Upgrade")
    if req.chunked:
        lines.append(b"Transfer-Encoding: chunked")
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


@functools.lru_cache(maxsize=1024)
def _plain_request_tail(client_ip: str, host: bytes, version: str, proto: str) -> bytes:
    """build_request_head's forwarding fields when the request brought none of its own."""
    return (
        b"X-Forwarded-For: %b\r\nX-Forwarded-Proto: %b\r\nX-Forwarded-Host: %b\r\nVia: %b\r\n\r\n"
        % (
            client_ip.encode("ascii"),
            proto.encode("ascii"),
            host,
            b"1.0 parlour" if version == "1.0" else _VIA,
        )
    )


_METHOD_BYTES = {
    m: m.encode() + b" " for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
}


def build_response_head(
    status: int,
    reason: bytes,
    headers: Sequence[Header],
    *,
    client_version: str,
    framing: str,
    keep_alive: bool,
    hide_server: bool = False,
) -> bytes:
    """The head sent to the client. `framing` is "chunked", "length", "none" or "close"
    (body ends when the connection closes); "upgrade" keeps Upgrade/Connection.
    `hide_server`: leave the backend's Server field out."""
    upgrade = framing == "upgrade"
    lines = [b"HTTP/%b %d %b" % (client_version.encode("ascii"), status, reason)]
    drop_length = framing not in ("length", "none")
    fields = _RESPONSE_FIELDS
    lengths = _RESPONSE_LENGTHS
    for name, value in headers:  # one pass: hop-by-hop fields dropped as they come
        # most names cannot be special by their length alone: no lower() needed
        if len(name) not in lengths or (kind := fields.get(name.lower())) is None:
            lines.append(name + b": " + value)
        elif kind == _HOP:
            if len(name) == 10 and name.lower() == b"connection":
                if _connection_named(value):  # drop the fields named, then build again
                    return build_response_head(
                        status,
                        reason,
                        _without(headers, _all_named(headers)),
                        client_version=client_version,
                        framing=framing,
                        keep_alive=keep_alive,
                        hide_server=hide_server,
                    )
            elif upgrade and name.lower() == b"upgrade":
                lines.append(name + b": " + value)
        elif kind == _SERVER:
            if not hide_server:
                lines.append(name + b": " + value)
        elif not drop_length:  # Content-Length
            lines.append(name + b": " + value)
    lines.append(response_tail(framing, keep_alive, client_version))
    return b"\r\n".join(lines)


def drop_fields(lines: list[bytes], names: set[bytes]) -> list[bytes]:
    """`lines` ("Name: value" byte strings after a first line) without the fields `names`
    (lower-case)."""
    return [lines[0]] + [ln for ln in lines[1:] if ln.split(b":", 1)[0].lower() not in names]


@functools.lru_cache(maxsize=64)
def response_tail(framing: str, keep_alive: bool, client_version: str) -> bytes:
    """What `build_response_head` puts after the relayed fields (Via, framing, Connection,
    the empty line) — a constant per combination, so the relay takes it from a cache."""
    upgrade = framing == "upgrade"
    lines = [b"Via: 1.1 parlour"]
    if upgrade:
        lines.append(b"Connection: Upgrade")
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
    if not upgrade:
        if not keep_alive or framing == "close":
            lines.append(b"Connection: close")
        elif client_version == "1.0":
            lines.append(b"Connection: keep-alive")
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


_STATUS_LINES: dict[tuple[str, int, bytes], bytes] = {}


def status_line(client_version: str, status: int, reason: bytes) -> bytes:
    """b"HTTP/1.1 200 OK", from a bounded cache (a backend uses a handful)."""
    key = (client_version, status, reason)
    line = _STATUS_LINES.get(key)
    if line is None:
        line = b"HTTP/%b %d %b" % (client_version.encode("ascii"), status, reason)
        if len(_STATUS_LINES) < 256:
            _STATUS_LINES[key] = line
    return line


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def error_response(status: int, detail: str, retry_after: int | None = None) -> bytes:
    """A complete small HTML error response that closes the connection; `retry_after`
    (seconds) adds Retry-After (RFC 9110 §10.2.3), for 503s."""
    reason = _REASONS.get(status, "Error")
    safe = detail.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    body = (
        f"<!doctype html><html><head><title>{status} {reason}</title></head><body>"
        f"<h1>{status} {reason}</h1><p>{safe}</p><hr><p>parlour proxy</p></body></html>\n"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n"
        + (f"Retry-After: {retry_after}\r\n" if retry_after is not None else "")
        + "\r\n"
    ).encode()
    return head + body
