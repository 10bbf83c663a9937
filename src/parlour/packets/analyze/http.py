"""HTTP/1.x as tshark 4.0 shows it in the packet list (pure).

A port of the parts of ``packet-http.c`` (``dissect_http_message``) and ``req_resp_hdrs.c``
that decide the Protocol and Info columns and when TCP must reassemble: the request or status
line (with tshark's trailing space), ``Continuation`` for data of a known HTTP conversation,
the body's media type (``(text/html)``, ``, JavaScript Object Notation (application/json)``),
reassembly of headers and of ``Content-Length``/chunked bodies, and the exceptions a capture
cut short by a snap length causes. Other application protocols tshark would hand the body to
(images, XML, forms ...) get the generic media text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from parlour.packets.analyze.columns import Columns, Tvb
from parlour.packets.analyze.reassembly import DESEGMENT_ONE_MORE_SEGMENT, DESEGMENT_UNTIL_FIN

__all__ = [
    "HTTP_PORTS",
    "HttpConversation",
    "dissect_http",
    "format_text",
    "looks_like_http",
]

#: TCP ports tshark 4.0 decodes as HTTP (TCP_DEFAULT_RANGE in packet-http.c)
HTTP_PORTS = frozenset({80, 3128, 3132, 5985, 8080, 8088, 11371, 1900, 2869, 2710})

_REQUEST, _RESPONSE, _NOTIFICATION, _OTHERS = 0, 1, 2, 3
_METHODS = {
    3: ({b"GET", b"PUT"}, _REQUEST),
    4: ({b"COPY", b"HEAD", b"LOCK", b"MOVE", b"POLL", b"POST"}, _REQUEST),
    5: ({b"BCOPY", b"BMOVE", b"MKCOL", b"TRACE", b"PATCH", b"LABEL", b"MERGE"}, _REQUEST),
    6: ({b"DELETE", b"SEARCH", b"UNLOCK", b"REPORT", b"UPDATE"}, _REQUEST),
    7: ({b"BDELETE", b"CONNECT", b"OPTIONS", b"CHECKIN"}, _REQUEST),
    8: ({b"PROPFIND", b"CHECKOUT", b"CCM_POST"}, _REQUEST),
    9: ({b"PROPPATCH", b"BPROPFIND"}, _REQUEST),
    10: ({b"BPROPPATCH", b"UNCHECKOUT", b"MKACTIVITY"}, _REQUEST),
    11: ({b"MKWORKSPACE", b"RPC_CONNECT", b"RPC_IN_DATA"}, _REQUEST),
    12: ({b"RPC_OUT_DATA"}, _REQUEST),
    15: ({b"VERSION-CONTROL"}, _REQUEST),
    16: ({b"BASELINE-CONTROL", b"SSTP_DUPLEX_POST"}, _REQUEST),
}
_NOTIFY = {6: b"NOTIFY", 9: b"SUBSCRIBE", 11: b"UNSUBSCRIBE"}

#: media types whose dissector appends ``(type)`` after reading the body as text lines
_TEXT_LINES = frozenset({
    "text/plain", "text/richtext", "text/enriched", "text/parameters", "text/html",
    "text/xml-external-parsed-entity", "text/css", "application/xml-external-parsed-entity",
    "text/javascript", "application/x-javascript", "application/x-tia-p25-issi",
    "application/x-tia-p25-sndcp", "application/x-ns-proxy-autoconfig",
    "text/vnd.sun.j2me.app-descriptor", "application/vnd.poc.refer-to",
    "application/vnd.drm.message", "application/x-wms-logplaystats",
    "application/x-rtsp-udp-packetpair",
})  # fmt: skip
_JSON = frozenset({
    "application/json", "application/senml+json", "application/sensml+json",
    "application/json-rpc", "application/jsonrequest", "application/dds-web+json",
    "application/vnd.oma.lwm2m+json", "application/problem+json",
    "application/merge-patch+json", "application/json-patch+json", "application/x-ndjson",
})  # fmt: skip
#: media types handed to the plain data dissector (no Info text)
_DATA = frozenset({"application/octet-stream"})

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_PRINTABLE = bytes(range(0x20, 0x7F))
_ESCAPES = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}
_TE_NONE, _TE_UNKNOWN, _TE_COMPRESS, _TE_DEFLATE, _TE_GZIP, _TE_IDENTITY = range(6)


def format_text(raw: bytes) -> str:
    """Text as Wireshark's ``format_text`` shows it: printable ASCII and printable UTF-8 as
    is, C escapes for control characters, U+FFFD for invalid UTF-8."""
    if not raw.translate(None, _PRINTABLE):
        return raw.decode("ascii")
    out: list[str] = []
    for ch in raw.decode("utf-8", "replace"):
        code = ord(ch)
        if code < 0x80:
            if 0x20 <= code < 0x7F:
                out.append(ch)
            else:
                out.append(_ESCAPES.get(code) or f"\\{code:03o}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


@dataclass(slots=True)
class HttpConversation:
    """What tshark's ``http_conv_t`` remembers about one TCP conversation."""

    request_uri: bytes | None = None
    request_method: bytes | None = None
    response_code: int = 0
    #: after ``101 Switching Protocols``: from this frame/offset on the data is not HTTP
    startframe: int = 0
    startoffset: int = 0
    #: request/status lines dissected since the caller last took them (for narration)
    seen: list[str] = field(default_factory=list)


def looks_like_http(tvb: Tvb) -> bool:
    """tshark's HTTP heuristic for TCP: the first line starts or ends with ``HTTP/1.``."""
    linelen, _next = tvb.find_line_end(0, -1, True)
    if linelen in (-1, 8):
        return False
    return tvb.strncaseeql(linelen - 8, b"HTTP/1.") or tvb.strncaseeql(0, b"HTTP/1.")


def _request_or_reply(line: bytes, linelen: int) -> tuple[int, bytes | None]:
    """``(type, method)``; type ``_OTHERS`` when *line* starts no request or response."""
    if linelen >= 2 and line.startswith(b"M-"):
        line = line[2:]
        linelen -= 2
    if (linelen >= 5 and line.startswith(b"HTTP/")) or (linelen >= 3 and line.startswith(b"ICY")):
        return _RESPONSE, None
    if linelen <= 0:
        return _OTHERS, None
    space = line.find(b" ", 0, linelen)
    indx = linelen if space < 0 else space
    method = line[:indx]
    found = _METHODS.get(indx)
    if found is not None and method in found[0]:
        return found[1], method
    if _NOTIFY.get(indx) == method:
        return _NOTIFICATION, method
    return _OTHERS, None


def _token(line: bytes, start: int) -> tuple[int, int]:
    """``get_token_len``: the token at *start* and where the next one starts."""
    end = len(line)
    i = start
    while i < end and line[i] not in b" \r\n":
        i += 1
    n = i - start
    while i < end and line[i] == 0x20:
        i += 1
    return n, i


def _status_code(line: bytes) -> int:
    n, nxt = _token(line, 0)
    if n == 0:
        return 0
    n, _ = _token(line, nxt)
    if n != 3:
        return 0
    text = line[nxt : nxt + 3]
    return int(text) if re.fullmatch(rb"[+-]?\d+", text) else 0


def _strtol_prefix(text: bytes, base: int) -> int:
    m = re.match(
        rb"\s*([+-]?)(0[xX])?([0-9a-fA-F]+)" if base == 16 else rb"\s*([+-]?)()(\d+)", text
    )
    if not m:
        return 0
    try:
        value = int(m.group(3), base)
    except ValueError:
        return 0
    return -value if m.group(1) == b"-" else value


@dataclass(slots=True)
class _Headers:
    content_type: str | None = None
    content_type_params: str | None = None
    have_content_length: bool = False
    content_length: int = 0
    content_encoding: bytes | None = None
    chunked: bool = False
    transfer_encoding: int = _TE_NONE
    upgrade: bytes | None = None


def _do_reassembly(
    tvb: Tvb, offset: int, can_desegment: bool, desegment_body: bool, until_fin: bool
) -> tuple[int, int] | None:
    """``req_resp_hdrs_do_reassembly``: ``None`` when the message is all there (or nothing
    more can be had), else the desegmentation request ``(offset, length)``."""
    nxt = offset
    content_length = 0
    length_found = type_found = chunked = False
    content_type = b""
    if can_desegment:
        while True:
            saved = nxt
            reported_rem = tvb.reported_remaining(nxt)
            if reported_rem < 1:
                return offset, DESEGMENT_ONE_MORE_SEGMENT
            length_rem = tvb.captured_remaining(nxt)
            linelen, nxt2 = tvb.find_line_end(nxt, length_rem, True)
            if linelen == -1 and length_rem >= reported_rem:
                return offset, DESEGMENT_ONE_MORE_SEGMENT
            nxt = nxt2
            if linelen == 0:
                break
            if desegment_body:
                if tvb.u8(saved) not in b"cCtT":
                    continue
                line = tvb.data[saved : saved + linelen]
                low = line[:18].lower()
                if low.startswith(b"content-length:"):
                    value = line[15:].strip()
                    if re.fullmatch(rb"[+-]?\d+", value) and 0 <= int(value) < 2**31:
                        content_length = int(value)
                        length_found = True
                elif low.startswith(b"content-type:"):
                    type_found = True
                    content_type = line[13:].lstrip(b" ")
                elif (
                    low.startswith(b"transfer-encoding:")
                    and line[18:].lstrip(b" \t")[:7].lower() == b"chunked"
                ):
                    chunked = True
    if not desegment_body:
        return None
    if chunked:
        while True:
            reported_rem = tvb.reported_remaining(nxt)
            if reported_rem < 1:
                return offset, DESEGMENT_ONE_MORE_SEGMENT
            length_rem = tvb.captured_remaining(nxt)
            linelen, chunk_off = tvb.find_line_end(nxt, length_rem, True)
            if linelen == -1 and length_rem >= reported_rem:
                return offset, DESEGMENT_ONE_MORE_SEGMENT
            text = tvb.data[nxt : nxt + max(linelen, 0)].split(b";", 1)[0]
            m = re.match(rb"\s*(?:0[xX])?([0-9a-fA-F]+)", text)
            if not m:
                return None
            size = int(m.group(1), 16)
            if size > 1 << 31:
                return None
            if size == 0:
                linelen, chunk_off = tvb.find_line_end(chunk_off, length_rem, True)
                if linelen == -1 and length_rem >= reported_rem:
                    return offset, DESEGMENT_ONE_MORE_SEGMENT
                return None
            if reported_rem > size:
                nxt = chunk_off + size + 2
            else:
                return offset, DESEGMENT_ONE_MORE_SEGMENT
    if length_found:
        if content_length >= 128 * 1024:
            if type_found and content_type.startswith(b"application/rpc"):
                return None
            head = tvb.data[: len("RPC_OUT_DATA")]
            if head.startswith((b"RPC_IN_DATA", b"RPC_OUT_DATA")):
                return None
        if not tvb.bytes_exist(nxt, content_length):
            length_rem = tvb.captured_remaining(nxt)
            if length_rem < tvb.reported_remaining(nxt):
                return None  # the bytes were not captured: asking for them will not help
            return offset, content_length - length_rem
        return None
    if until_fin and can_desegment:
        if tvb.captured_remaining(nxt) < tvb.reported_remaining(nxt):
            return None
        return offset, DESEGMENT_UNTIL_FIN
    return None


def _process_header(line: bytes, colon: int, headers: _Headers) -> None:
    name = line[:colon]
    if not name or any(c not in _TOKEN for c in name):
        return
    key = name.lower()
    value = line[colon + 1 :].lstrip(b" \t")
    if key == b"content-type":
        i = 0
        n = len(value)
        while i < n and value[i] != 0x3B and value[i] not in b" \t\n\v\f\r":
            i += 1
        headers.content_type = value[:i].lower().decode("latin-1")
        i += 1
        while i < n and (value[i] == 0x3B or value[i] in b" \t\n\v\f\r"):
            i += 1
        headers.content_type_params = value[i:].decode("latin-1") if i < n else None
    elif key == b"content-length":
        m = re.match(rb"\s*([+-]?\d+)(.*)", value, re.S)
        if m is None or (m.group(2) and m.group(2)[:1] not in b" \t\n\v\f\r"):
            headers.have_content_length = False
        else:
            length = int(m.group(1))
            headers.have_content_length = 0 <= length < 2**63
            headers.content_length = length
    elif key == b"content-encoding":
        headers.content_encoding = value
    elif key == b"transfer-encoding":
        headers.transfer_encoding = _TE_UNKNOWN
        v = value
        while v:
            v = v.lstrip(b" \t,")
            if not v:
                break
            if v.startswith(b"chunked"):
                headers.chunked = True
                v = v[7:]
                continue
            if headers.transfer_encoding != _TE_UNKNOWN:
                break
            for prefix, te in (
                (b"compress", _TE_COMPRESS), (b"deflate", _TE_DEFLATE), (b"gzip", _TE_GZIP),
                (b"identity", _TE_IDENTITY), (b"x-compress", _TE_COMPRESS),
                (b"x-gzip", _TE_GZIP),
            ):  # fmt: skip
                if v.startswith(prefix):
                    headers.transfer_encoding = te
                    v = v[len(prefix) :]
                    break
            else:
                break
    elif key == b"upgrade":
        headers.upgrade = value.lower()


def _dechunk(tvb: Tvb, offset: int, datalen: int) -> tuple[int, int]:
    """``chunked_encoding_dissector``: ``(bytes consumed, de-chunked length)``."""
    orig = tvb.reported_remaining(offset)
    remaining = orig
    size_total = 0
    while remaining > 0:
        linelen, chunk_off = tvb.find_line_end(offset, -1, True)
        if linelen <= 0:
            break
        size = _strtol_prefix(tvb.data[offset : offset + linelen].split(b";", 1)[0], 16)
        size &= 0xFFFFFFFF
        size = min(size, remaining)
        tvb.ensure_bytes_exist(chunk_off, size)
        size_total += size
        offset = chunk_off + size + (2 if size else 0)
        remaining = tvb.reported_remaining(offset)
        if size == 0:
            trailer = offset
            while True:
                header_len, trailer2 = tvb.find_line_end(
                    trailer, remaining - (trailer - offset), True
                )
                if header_len <= 0:
                    break
                trailer = trailer2
            if trailer > offset:
                remaining -= trailer - offset
                offset = trailer
            if header_len == 0:
                remaining -= trailer2 - offset
            break
    _ = datalen
    return orig - remaining, size_total


def _body(cols: Columns, headers: _Headers, body: bytes) -> None:
    """The Info text the media-type dissector of the body adds."""
    ctype = headers.content_type
    if ctype is None or ctype in _DATA:
        return
    name = ctype or headers.content_type_params
    if ctype in _JSON:
        cols.append_protocol("JSON", "/")
        cols.append_sep(", ", "JavaScript Object Notation")
        if name:
            cols.append_sep(" ", f"({name})")
        return
    if ctype in _TEXT_LINES:
        if len(body) > 38 and body[:5].lower() == b"<?xml":
            return  # tshark hands it to its XML dissector
        if name:
            cols.append_sep(" ", f"({name})")
        return
    cols.append(f" ({ctype})")  # the generic media dissector


def dissect_http(
    conv: HttpConversation, cols: Columns, tvb: Tvb, frame: int, can_desegment: bool,
    end_of_stream: bool,
) -> tuple[int, int]:  # fmt: skip
    """``dissect_http_on_stream``: every HTTP message in *tvb*; returns the desegmentation
    request ``(offset, length)`` or ``(0, 0)``."""
    offset = 0
    while tvb.reported_remaining(offset) > 0:
        if conv.startframe and (
            frame > conv.startframe or (frame == conv.startframe and offset >= conv.startoffset)
        ):
            break  # an upgraded connection: the rest is another protocol's data
        done, request = _message(conv, cols, tvb, offset, frame, can_desegment, end_of_stream)
        if done == -1:
            return request or (0, 0)
        offset += done
        cols.set_fence()
    return 0, 0


def _message(
    conv: HttpConversation, cols: Columns, tvb: Tvb, offset: int, frame: int,
    can_desegment: bool, end_of_stream: bool,
) -> tuple[int, tuple[int, int] | None]:  # fmt: skip
    """``dissect_http_message``: ``(bytes consumed or -1, desegmentation request)``."""
    orig = offset
    reported = tvb.reported_remaining(offset)
    if reported < 1:
        return -1, None
    if reported > 3 and tvb.u16(offset) == 0x0D0A:
        offset += 2
    have_seen_http = conv.request_uri is not None
    if not 0x20 <= tvb.u8(offset) < 0x7F:
        if have_seen_http:
            cols.set_protocol("HTTP")
            cols.add("Continuation")
        return -1, None
    first_len, _nxt = tvb.find_line_end(offset, tvb.ensure_captured_remaining(offset), True)
    if first_len == -1:
        request = _do_reassembly(tvb, offset, can_desegment, True, False)
        if request is not None:
            return -1, request
    firstline = tvb.get(offset, first_len)
    first_type, _method = _request_or_reply(firstline, first_len)
    is_rr = first_type != _OTHERS
    if is_rr:
        text = format_text(firstline)
        cols.add(text + " ")
        conv.seen.append(text)
        try_body = not end_of_stream
        if try_body and first_type == _RESPONSE:
            code = _status_code(firstline)
            method = conv.request_method
            if (
                method == b"HEAD"
                or (code // 100 == 2 and method in (b"CONNECT", b"SSTP_DUPLEX_POST"))
                or code // 100 == 1 or code in (204, 304)
            ):  # fmt: skip
                try_body = False
        request = _do_reassembly(tvb, offset, can_desegment, try_body, first_type == _RESPONSE)
        if request is not None:
            conv.seen.pop()  # told again when the whole message is there
            return -1, request
    elif have_seen_http:
        cols.add("Continuation")
    if is_rr or have_seen_http:
        cols.set_protocol("HTTP")
    http_type = _OTHERS
    headers = _Headers()
    response_code = 0
    saw = False
    while offset < tvb.captured:
        linelen, nxt = tvb.find_line_end(offset, tvb.ensure_captured_remaining(offset), False)
        line = tvb.data[offset : offset + linelen]
        line_type, method = _request_or_reply(line, linelen)
        colon = -1
        if line_type != _OTHERS:
            http_type = line_type
        elif linelen != 0:
            colon = line.find(b":")
            if colon < 0:
                if saw:
                    tvb.ensure_bytes_exist(offset, linelen + 1)
                break
        if linelen == 0:
            offset = nxt
            break
        saw = True
        if line_type != _OTHERS:
            if line_type == _RESPONSE:
                n, nt = _token(line, 0)
                if n:
                    n, _ = _token(line, nt)
                    if n >= 3:
                        response_code = _strtol_prefix(line[nt : nt + 3], 10)
                        conv.response_code = response_code
            else:
                conv.request_method = method
                n, nt = _token(line, 0)
                if n:
                    if nt > 2 and line[nt - 1] == 0x20 and line[nt - 2] == 0x20:
                        nt -= 1
                    n, _ = _token(line, nt)
                    conv.request_uri = line[nt : nt + n]
        else:
            _process_header(line, colon, headers)
        offset = nxt
    reported_datalen = tvb.reported_remaining(offset)
    datalen = tvb.captured_remaining(offset)
    if headers.have_content_length and headers.transfer_encoding == _TE_NONE:
        datalen = min(datalen, headers.content_length)
        reported_datalen = min(reported_datalen, headers.content_length)
    elif (http_type == _REQUEST and headers.transfer_encoding == _TE_NONE) or (
        http_type == _RESPONSE and (response_code // 100 == 1 or response_code in (204, 304))
    ):
        datalen = 0  # no Content-Length: a request has no body, these responses neither
    if datalen > 0:
        body = tvb.data[offset : offset + datalen]
        dissect_body = True
        if headers.chunked:
            sub = Tvb(body, reported_datalen if reported_datalen >= 0 else None)
            consumed, size = _dechunk(sub, 0, datalen)
            if consumed == 0:
                dissect_body = False
            else:
                datalen = consumed
                if size == 0:
                    dissect_body = False
        if dissect_body and headers.transfer_encoding in (_TE_COMPRESS, _TE_DEFLATE, _TE_GZIP):
            dissect_body = False
        if (
            dissect_body
            and headers.content_encoding is not None
            and (headers.content_encoding.lower() != b"identity")
        ):  # compressed: tshark inflates it first; the media dissector still runs
            pass
        if dissect_body:
            _body(cols, headers, body)
        offset += datalen
    if (
        conv.request_method
        and http_type == _RESPONSE
        and headers.upgrade
        and (conv.response_code == 101)
    ):
        conv.startframe = frame
        conv.startoffset = offset
    return offset - orig, None
