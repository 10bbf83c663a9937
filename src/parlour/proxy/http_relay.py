"""HTTP/1.1 (L7) relay: asyncio Protocols + httptools on both sides.

Per client connection, requests are served one at a time in arrival order (pipelined
requests wait, with their bodies, in a bounded queue), so responses go back in order.
Each request gets a backend from the pool, and a pooled idle keep-alive connection to it
when there is one. Bodies stream through in both directions without being collected:
request bodies are re-framed by the proxy (chunked or by length), so the backend never
sees the client's framing. A parse error answers 400 and closes; nothing of a request is
sent upstream before its head has been parsed and checked, and a request whose body turns
out malformed has its upstream connection aborted so the backend never gets it whole.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, cast

import httptools

from parlour.proxy.admission import may_retry
from parlour.proxy.headers import (
    RESPONSE_HOP_BY_HOP,
    RESPONSE_SPECIAL_LENGTHS,
    BadRequest,
    RequestHead,
    build_request_head,
    connection_named,
    drop_fields,
    response_tail,
    status_line,
    validate_request,
)
from parlour.proxy.http_rules import (
    RequestScan,
    chunk,
    client_wait,
    request_keep_alive,
    response_framing,
    response_keep_alive,
)
from parlour.proxy.tls_reads import DecryptedReads

if TYPE_CHECKING:
    from parlour.proxy.pool import Backend
    from parlour.proxy.upstreams import Upstreams

__all__ = ["HttpClient", "HttpUpstream", "TlsHttpClient", "TlsHttpUpstream"]

log = logging.getLogger("parlour.proxy")

MAX_PIPELINED = 16
_SPECIAL_LENGTHS = RESPONSE_SPECIAL_LENGTHS
_HOP_BY_HOP = RESPONSE_HOP_BY_HOP
_connection_named = connection_named
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_HASHED = frozenset({"ip_hash", "uri_hash", "header_hash"})


class _StopParsing(Exception):
    """Raised from a parser callback to stop llhttp at a message boundary."""


class _Request:
    """One request's state. Class-level defaults, no __init__: one is created per request,
    and most fields keep their default for a plain GET."""

    head: RequestHead | None = None
    error: str | None = None
    body: deque[bytes] | None = None  # body parts received before a backend is bound
    body_bytes = 0
    complete = False
    keep_alive = True
    has_body = False
    key: bytes | None = None
    backend: Backend | None = None
    attempt = 0
    sent = False
    sent_at = 0.0
    response_started = False
    framing = "length"
    interim = False
    status = 0  # of the final response


class HttpUpstream(asyncio.BaseProtocol):
    """One connection to a backend; pooled while idle. (A BaseProtocol with
    `data_received`, not an `asyncio.Protocol`: `TlsHttpUpstream` adds buffered reads,
    which uvloop ignores for Protocol subclasses.)"""

    def __init__(self, upstreams: Upstreams, backend: Backend) -> None:
        self.ups = upstreams
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: HttpClient | None = None
        self.reused = False
        self.idle_since = 0.0
        self.closed = False
        self.tunnel = False
        self.read_paused = False
        self._reason = b""
        self._lines: list[bytes] = [b""]
        self._drop: set[bytes] | None = None  # fields to leave out (rare)
        self.chunked = False
        self.has_length = False
        self.hide_server = False  # (read per response from the settings)
        # the response to a HEAD ends at its head, whatever Content-Length says; llhttp
        # (through httptools) cannot be told, so the relay ends it after `feed_data`
        self.skip_body = False
        self.skipped_bytes = False
        self.skip_keep_alive = False  # read at the head (llhttp resets it at a message end)
        # the final response ended in the read being parsed: it is finished after
        # `feed_data` returns (never from inside it, where a pipelined request could take
        # this connection and be answered by what follows); `extra`: bytes followed it
        self.done = False
        self.done_keep_alive = False
        self.extra = False

    # --- pool helpers
    def expired(self, now: float) -> bool:
        if self.closed:
            return True
        if now - self.idle_since > self.ups.pool.settings.idle_timeout_s:
            self.close()
            return True
        return False

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def set_read_paused(self, paused: bool) -> None:
        if self.transport is None or paused == self.read_paused or self.transport.is_closing():
            return
        self.read_paused = paused
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=self.ups.pool.settings.buffer_size)

    def data_received(self, data: bytes) -> None:
        self.backend.bytes_in += len(data)
        client = self.client
        if client is None:  # an idle pooled connection must not talk
            self.close()
            return
        client.upstream_activity = client.loop.time()
        if self.tunnel:
            client.write(data)
            return
        # cork: a response's head, body and end usually arrive together; send them to
        # the client in one write (one syscall) instead of one per callback
        client.corked = True
        try:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                if self.done:  # (a 101 after the response: bytes it should not have sent)
                    self.extra = True
                elif self.client is client:
                    client.start_tunnel(self, data[exc.args[0] :])
                    return
            except httptools.HttpParserError as exc:
                if self.done:  # (stopped by on_message_begin, or garbage after the end)
                    self.extra = True
                elif self.client is client:
                    client.upstream_broken(self, f"bad response from backend: {exc}")
                    return
            if self.skip_body:
                self._end_bodiless(client)
            elif self.done:
                self._end_message(client)
        finally:
            client.uncork()

    def _end_message(self, client: HttpClient) -> None:
        """The final response ended in this read. The connection may serve another request
        only if the backend sent nothing after it: bytes past a framed response would
        otherwise be read as the answer to the next request (a response desync)."""
        keep = self.done_keep_alive and not self.extra
        if self.extra:
            log.warning("backend %s sent bytes after its response: closing", self.backend.id)
        self.done = self.extra = False
        if self.client is client:
            client.response_complete(self, keep)

    def _end_bodiless(self, client: HttpClient) -> None:
        """The head of a response to HEAD is in: end the message here. The parser
        (which would wait for Content-Length body bytes) is replaced for the next
        response; bytes the backend sent after the head make the connection unusable."""
        keep = self.skip_keep_alive and not self.skipped_bytes and not self.extra
        self.skip_body = self.skipped_bytes = self.done = self.extra = False
        self.parser = httptools.HttpResponseParser(self)
        if self.client is client:
            client.response_complete(self, keep)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ups.unpark(self)
        if self.client is not None:
            self.client.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading("upstream")

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading("upstream")

    # --- httptools callbacks
    def on_message_begin(self) -> None:
        if self.done:  # another message after the response, in the same read: stop here
            raise _StopParsing
        self._lines = [b""]  # [0]: the status line, set by the client
        self._reason = b""
        self.chunked = False
        self.has_length = False
        self._drop = None
        self.hide_server = self.ups.pool.settings.hide_server_header

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        # the response head is built as the fields arrive: "Name: value" lines for the
        # client, hop-by-hop fields left out (Content-Length/Upgrade kept, dropped later
        # when the framing says so)
        if len(name) in _SPECIAL_LENGTHS:
            lname = name.lower()
            if lname in _HOP_BY_HOP:
                self._hop_field(lname, name, value)
                return
            if lname == b"content-length":
                self.has_length = True
        elif self.hide_server and len(name) == 6 and name.lower() == b"server":
            return  # (hide_server_header: the backend's software stays private)
        self._lines.append(name + b": " + value)

    def _hop_field(self, lname: bytes, name: bytes, value: bytes) -> None:
        if lname == b"transfer-encoding":
            self.chunked = b"chunked" in value.lower()
        elif lname == b"upgrade":
            self._lines.append(name + b": " + value)  # kept for a 101 only
            self._drop_field(b"upgrade", upgrade_only=True)
        elif lname == b"connection":
            for named in _connection_named(value):
                self._drop_field(named)

    def _drop_field(self, lname: bytes, *, upgrade_only: bool = False) -> None:
        if self._drop is None:
            self._drop = set()
        self._drop.add(b"upgrade?" if upgrade_only else lname)

    def on_headers_complete(self) -> None:
        if self.client is not None:
            self.client.response_head(self, self.parser.get_status_code(), self._reason)
            if self.skip_body:
                self.skip_keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.skip_body:
            self.skipped_bytes = True
            return
        if self.client is not None:
            self.client.response_body(body)

    def on_message_complete(self) -> None:
        if self.skip_body:  # (Content-Length: 0) `_end_bodiless` ends it
            self.done = True
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim response: the final one follows
            if self.client is not None:
                self.client.response_complete(self, True)
            return
        # the end of the final response: `data_received` finishes it after `feed_data`
        self.done = True
        # an HTTP/1.0 message with Transfer-Encoding has faulty framing: close after it
        # (RFC 9112 §6.1), whatever its Connection field says
        self.done_keep_alive = response_keep_alive(
            self.parser.should_keep_alive(), self.chunked, self.parser.get_http_version()
        )


class HttpClient(asyncio.BaseProtocol):
    """One client connection (a BaseProtocol with `data_received`: see HttpUpstream)."""

    def __init__(
        self, upstreams: Upstreams, adopted: bytes | None = None, *, tls: bool = False
    ) -> None:
        self.ups = upstreams
        # a connection the fast lane hands over (already admitted), with the bytes it read
        self.adopted = adopted
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = "0.0.0.0"
        self.queue: deque[_Request] = deque()
        self.cur: _Request | None = None
        self.upstream: HttpUpstream | None = None
        self.closed = False
        self.tunnel = False
        self.upgrading = False
        self.early: list[bytes] = []
        self.buffered = 0
        self.paused: set[str] = set()
        self.corked = False
        self.out: list[bytes] = []
        self.last_activity = self.loop.time()
        self.upstream_activity = self.last_activity
        self.buffer_size = upstreams.pool.settings.buffer_size
        self.proto = "https" if tls else "http"  # (X-Forwarded-Proto)
        # when output to the client stalled (its write buffer went over high water);
        # 0.0 while it flows. Meanwhile the wait is on the client, not on the backend.
        self.out_paused_at = 0.0
        # parse state of the message being read (keep HttpClient at 29 instance
        # attributes: a 30th made every request of the relay loop bench ~6% slower, as
        # CPython 3.11's instance dict then no longer serves the fast attribute paths)
        self._parsing: _Request | None = None
        self._in_head = False
        self._head_started = 0.0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._rejected = False
        self._st = RequestScan(upstreams.config.max_header_bytes)

    # ============================================================ Reapable
    @property
    def busy(self) -> bool:
        return not self.closed and (self.cur is not None or bool(self.queue) or self.tunnel)

    def check_timeouts(self, now: float) -> None:
        if self.closed:
            return
        s = self.ups.pool.settings
        cur = self.cur
        wait = client_wait(
            now,
            tunnel=self.tunnel,
            output_paused_at=self.out_paused_at,
            in_head=self._in_head,
            head_started=self._head_started,
            request=cur is not None,
            queued=bool(self.queue),
            request_complete=cur is not None and cur.complete,
            request_sent=cur is not None and cur.sent,
            last_client=self.last_activity,
            last_backend=self.upstream_activity,
            client_timeout_s=s.client_timeout_s,
            server_timeout_s=s.server_timeout_s,
            idle_timeout_s=s.idle_timeout_s,
            tunnel_timeout_s=s.tunnel_timeout_s,
        )
        if wait.action == "ok":
            return
        if wait.action == "close":
            if wait.detail != "idle":
                log.info("client %s: %s: closing", self.client_ip, wait.detail)
            self._close()
            return
        log.info("client %s: %d %s", self.client_ip, wait.status, wait.detail)
        if wait.blame_backend and cur is not None and cur.backend is not None:
            cur.backend.response_errors += 1
            self.ups.pool.passive_failure(cur.backend.id, self.ups.clock(), "response timeout")
        self._fail(wait.status, wait.detail)

    def shutdown(self) -> None:
        self._close()

    # ===================================================== flow control helpers
    def pause_reading(self, reason: str) -> None:
        if reason not in self.paused:
            self.paused.add(reason)
            if len(self.paused) == 1 and self.transport is not None:
                self.transport.pause_reading()

    def resume_reading(self, reason: str) -> None:
        if reason in self.paused:
            self.paused.discard(reason)
            if not self.paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.out_paused_at = self.loop.time()
        if self.upstream is not None:
            self.upstream.set_read_paused(True)

    def resume_writing(self) -> None:
        self.out_paused_at = 0.0
        # the proxy reads the backend again: from now on the wait is on it
        self.upstream_activity = self.loop.time()
        if self.upstream is not None:
            self.upstream.set_read_paused(False)

    def write(self, data: bytes) -> None:
        if self.corked:
            self.out.append(data)
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    def uncork(self) -> None:
        self.corked = False
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            if self.transport is not None and not self.closed:
                self.transport.write(data)

    # ========================================================== client side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=self.buffer_size)
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = str(peer[0])
        ups = self.ups
        adopted = self.adopted
        if adopted is not None:  # from the fast lane: admitted and counted there
            self.adopted = None
            ups.conns.add(self)
            if adopted:
                self.data_received(adopted)
            return
        if not ups.accept(self):  # (max_connections, or stopping)
            transport.write(ups.error_page(503, "The proxy is at its connection limit.", busy=True))
            transport.close()
            self.closed = True

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        if self.tunnel:
            up = self.upstream
            if up is not None and up.transport is not None:
                up.transport.write(data)
                up.backend.bytes_out += len(data)
            return
        if self.upgrading:
            self._buffer_early(data)
            return
        if self._rejected or self.closed:
            return
        bad = self._st.start(data, self._parsing is not None, self._in_head)
        if bad is not None:
            self._reject(bad)
            self._pump()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgrading = True
            rest = data[exc.args[0] :]
            if rest:
                self._buffer_early(rest)
        except httptools.HttpParserError as exc:
            self._reject(f"malformed request: {exc}")  # (already done for _StopParsing)
        st = self._st
        if self._parsing is not None and not self._rejected:  # a message goes on: rare
            st.end(True, self._in_head)
        if self._in_head and st.head_size > st.max_header_bytes:
            self._reject("request head too large")
        if self.cur is None and self.queue:
            self._pump()

    def _buffer_early(self, data: bytes) -> None:
        self.early.append(data)
        self.buffered += len(data)
        if self.buffered > self.buffer_size:
            self.pause_reading("buffer")

    def _reject(self, reason: str) -> None:
        """Mark the message being parsed as bad; it (and anything after) gets 400 + close."""
        if self._rejected:
            return
        self._rejected = True
        self._in_head = False
        req = self._parsing
        if req is None or req.head is None:
            req = _Request()
            self.queue.append(req)
        req.error = reason
        log.info("client %s: 400 %s", self.client_ip, reason)
        if req is self.cur:
            # the head may have gone upstream but the body is bad: abort the upstream
            # connection so the backend never gets the request whole
            self._fail(400, reason)

    # --- httptools request callbacks
    def on_message_begin(self) -> None:
        req = _Request()
        self._parsing = req
        self._in_head = True
        self._head_started = self.last_activity  # (set by data_received, which calls us)
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        req = self._parsing
        assert req is not None
        self._in_head = False
        st = self._st
        if self._rejected:
            st.head_size = 0
            return
        too_large = st.head_size > st.max_header_bytes and st.head_too_large(
            self._url, self._headers
        )
        if st.multi:
            st.head_ended()
        else:  # (the usual read: one whole head, nothing to locate)
            st.head_size = 0
        p = self.parser
        try:
            if too_large:
                raise BadRequest("request head too large")
            method = p.get_method()
            head = validate_request(
                _METHODS.get(method) or method.decode("ascii", "replace"),
                self._url,
                p.get_http_version(),
                self._headers,
                upgrade=p.should_upgrade(),
            )
        except BadRequest as exc:
            self._reject(str(exc))
            return
        req.head = head
        req.keep_alive = request_keep_alive(
            p.should_keep_alive(), head.upgrade, head.chunked, head.version
        )
        req.has_body = head.chunked or bool(head.content_length)
        if head.chunked:
            st.chunked_body()
        self.queue.append(req)
        if len(self.queue) > MAX_PIPELINED:
            self.pause_reading("pipeline")

    def on_body(self, body: bytes) -> None:
        req = self._parsing
        if req is None or req.error is not None or self._rejected:
            return
        self._st.body_here += len(body)
        if req is self.cur and req.sent and self.upstream is not None:
            self._send_body(req, body)
            return
        if req.body is None:
            req.body = deque()
        req.body.append(body)
        req.body_bytes += len(body)
        self.buffered += len(body)
        if self.buffered > self.buffer_size:
            self.pause_reading("buffer")

    def on_message_complete(self) -> None:
        req = self._parsing
        self._parsing = None
        st = self._st
        if req is None or req.error is not None or self._rejected:
            st.head_size = 0
            return
        req.complete = True
        head = req.head
        assert head is not None
        if req is self.cur and req.sent and self.upstream is not None and head.chunked:
            self._write_upstream(b"0\r\n\r\n")
        st.head_size = 0
        if not st.multi:  # (the usual read: nothing after this message)
            return
        bad = st.message_ended(head.chunked, head.upgrade)
        if bad is not None:
            # the request line pipelined behind it is bad: it (and what follows) gets 400;
            # stop llhttp here, before it takes what it would tolerate
            self._reject(bad)
            raise _StopParsing

    # =========================================================== dispatch
    def _pump(self) -> None:
        while self.cur is None and self.queue and not self.closed:
            req = self.queue[0]
            if req.error is not None:
                self._fail(400, req.error)
                return
            self.cur = req
            self._dispatch(req)

    def _hash_key(self, head: RequestHead) -> bytes | None:
        algo = self.ups.pool.settings.algorithm
        if algo == "ip_hash":
            return self.client_ip.encode()
        if algo == "uri_hash":
            return head.url
        if algo == "header_hash":
            wanted = self.ups.pool.settings.hash_header.lower().encode()
            for name, value in head.headers:
                if name.lower() == wanted:
                    return value
        return None

    def _dispatch(self, req: _Request) -> None:
        assert req.head is not None
        rt = self.ups
        rt.counters.requests += 1
        if rt.pool.settings.algorithm in _HASHED:
            req.key = self._hash_key(req.head)
        got = rt.try_acquire(req.key)
        if got is None:
            self._fail(503, "No backend server is available right now. Please retry shortly.")
            return
        if isinstance(got, str):  # all at max_conns: wait in the queue
            rt.spawn(self._wait_and_connect(req))
            return
        self._use_backend(req, got)

    def _use_backend(self, req: _Request, b: Backend) -> None:
        req.backend = b
        while True:
            conn: HttpUpstream | None = self.ups.take_idle(b.id)
            if conn is None:
                break
            if conn.transport is None or conn.transport.is_closing():
                continue
            conn.reused = True
            self._bind(req, conn)
            return
        # the slot on b now belongs to the connect task (it releases it on failure)
        req.backend = None
        self.ups.spawn(self._connect(req, b))

    async def _wait_and_connect(self, req: _Request) -> None:
        got = await self.ups.acquire(req.key)
        if isinstance(got, str):
            if req is self.cur:
                detail = "No backend server is available right now. Please retry shortly."
                if got != "down":
                    detail = "All backend servers are busy. Please retry shortly."
                self._fail(503, detail, busy=got != "down")
            return
        if req is not self.cur or self.closed:
            self.ups.release(got)
            return
        self._use_backend(req, got)

    async def _connect(self, req: _Request, b: Backend | None) -> None:
        rt = self.ups
        kind = HttpUpstream if rt.backend_ssl is None else TlsHttpUpstream
        result = await rt.open_upstream(req.key, lambda bk: kind(rt, bk), first=b)
        if isinstance(result, str):
            req.backend = None
            if req is self.cur:
                if result == "down":
                    self._fail(503, "No backend server is available right now.")
                else:
                    self._fail(502, "Could not connect to a backend server.")
            return
        backend, _transport, conn = result
        if req is not self.cur or self.closed:
            rt.release(backend)
            self._park(conn)
            return
        req.backend = backend
        self._bind(req, conn)

    def _bind(self, req: _Request, conn: HttpUpstream) -> None:
        assert req.head is not None and req.backend is not None
        self.upstream = conn
        conn.client = self
        req.sent = True
        req.attempt += 1
        self.upstream_activity = self.loop.time()
        req.sent_at = perf_counter()  # uvloop's loop.time() has millisecond resolution
        req.backend.requests += 1
        head = build_request_head(
            req.head,
            self.client_ip,
            trust_forwarded=self.ups.pool.settings.trust_forwarded,
            proto=self.proto,
            default_host=req.backend.host_header,
        )
        chunked = req.head.chunked
        pending = req.body
        if pending is None and not chunked:  # the usual request: just the head
            transport = conn.transport
            if transport is not None:
                transport.write(head)
                conn.backend.bytes_out += len(head)
            if self.paused:
                self._resume_after_bind(conn)
            return
        parts = [head]
        while pending:
            piece = pending.popleft()
            parts.append(chunk(piece) if chunked else piece)
        self.buffered -= req.body_bytes
        req.body_bytes = 0
        if req.complete and chunked:
            parts.append(b"0\r\n\r\n")
        self._write_upstream(b"".join(parts))
        if self.paused:
            self._resume_after_bind(conn)

    def _resume_after_bind(self, conn: HttpUpstream) -> None:
        if self.paused:
            if self.buffered <= self.buffer_size:
                self.resume_reading("buffer")
            if conn.transport is not None and conn.transport.get_write_buffer_size() == 0:
                self.resume_reading("upstream")

    def _write_upstream(self, data: bytes) -> None:
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.write(data)
            up.backend.bytes_out += len(data)

    def _send_body(self, req: _Request, body: bytes) -> None:
        assert req.head is not None
        self._write_upstream(chunk(body) if req.head.chunked else body)

    def _park(self, conn: HttpUpstream) -> None:
        """Return a connection to its backend's idle pool (only if healthy and wanted)."""
        conn.client = None
        if conn.read_paused:
            conn.set_read_paused(False)
        if not self.ups.park_idle(conn, self.loop.time()):  # (see Upstreams.park_idle)
            conn.close()

    def _release_cur(self) -> None:
        req = self.cur
        if req is not None and req.backend is not None:
            self.ups.release(req.backend)
            req.backend = None
        self.upstream = None

    # ===================================================== response side
    def response_head(self, up: HttpUpstream, status: int, reason: bytes) -> None:
        req = self.cur
        if req is None or up is not self.upstream or req.head is None:
            return
        head = req.head
        version = head.version
        if 100 <= status < 200 and status != 101:
            req.interim = True
            if version == "1.1":
                self.write(b"HTTP/1.1 %d %b\r\n\r\n" % (status, reason))
            return
        req.interim = False
        req.response_started = True
        req.status = status
        if req.backend is not None:
            req.backend.latencies_ms.append((perf_counter() - req.sent_at) * 1000.0)
        framing = response_framing(
            head.method, status, version, head.upgrade, up.chunked, up.has_length
        )
        if framing is None:
            self.upstream_broken(up, "backend switched protocols unasked")
            return
        req.framing = framing
        if framing == "close" or self.ups.stopping:
            req.keep_alive = False
        if req.has_body and not req.complete:
            req.keep_alive = False  # answered before the body was read: cannot resync
        lines = up._lines
        lines[0] = status_line(version, status, reason)
        drop = up._drop
        if drop is not None or (up.has_length and framing != "length" and framing != "none"):
            # (same result as headers.build_response_head, which tests compare against)
            names = set() if drop is None else set(drop)
            if b"upgrade?" in names:
                names.discard(b"upgrade?")
                if framing != "upgrade":
                    names.add(b"upgrade")
            if up.has_length and framing != "length" and framing != "none":
                names.add(b"content-length")
            if names:
                lines = drop_fields(lines, names)
        lines.append(response_tail(framing, req.keep_alive, version))
        self.write(b"\r\n".join(lines))
        if head.method == "HEAD" and framing != "upgrade":
            up.skip_body = True  # no body follows: `HttpUpstream._end_bodiless` ends it

    def response_body(self, body: bytes) -> None:
        req = self.cur
        if req is None or not req.response_started:
            return
        framing = req.framing
        if framing == "none":
            return
        if framing == "chunked":
            body = chunk(body)
        if self.corked:
            self.out.append(body)
        else:
            self.write(body)

    def response_complete(self, up: HttpUpstream, upstream_keep_alive: bool) -> None:
        req = self.cur
        if req is None or up is not self.upstream:
            return
        if req.interim:
            req.interim = False
            return
        if req.framing == "upgrade":
            return  # start_tunnel follows
        if req.framing == "chunked":
            self.write(b"0\r\n\r\n")
        self._finish(up, reusable=upstream_keep_alive and req.complete)

    def _finish(self, up: HttpUpstream, *, reusable: bool) -> None:
        req = self.cur
        assert req is not None
        b = req.backend
        if b is not None:
            if b.health.passive_failures:  # (pool.passive_success: nothing to reset otherwise)
                self.ups.pool.passive_success(b.id, self.ups.clock(), req.status)
            self.ups.release(b)
            req.backend = None
        self.upstream = None
        if reusable:
            self._park(up)
        else:
            up.client = None
            up.close()
        self.queue.popleft()
        self.cur = None
        self.last_activity = self.loop.time()  # idle_timeout_s runs from the end of the answer
        if not req.keep_alive:
            self._close()
            return
        if self.paused and len(self.queue) <= MAX_PIPELINED:
            self.resume_reading("pipeline")
        if self.queue:
            self._pump()

    def start_tunnel(self, up: HttpUpstream, rest: bytes) -> None:
        req = self.cur
        if req is None or req.framing != "upgrade":
            self.upstream_broken(up, "unexpected upgrade from backend")
            return
        self.tunnel = True
        up.tunnel = True
        self.upgrading = False
        if rest:
            self.write(rest)
        if self.early:
            data = b"".join(self.early)
            self.early.clear()
            self._write_upstream(data)
        self.buffered = 0
        self.resume_reading("buffer")

    def upstream_broken(self, up: HttpUpstream, reason: str) -> None:
        req = self.cur
        if req is not None and req.backend is not None:
            req.backend.response_errors += 1
        up.client = None
        up.abort()
        log.warning("client %s: %s", self.client_ip, reason)
        self._release_cur()
        if req is not None and not req.response_started:
            self._fail(502, "The backend server sent an invalid response.")
        else:
            self._close()

    def upstream_lost(self, up: HttpUpstream, exc: Exception | None) -> None:
        req = self.cur
        if up is not self.upstream or req is None:
            return
        up.client = None
        if self.tunnel:
            self._release_cur()
            self._close()
            return
        if req.response_started:
            if req.framing == "close":
                self._release_cur()
                self._close()  # the close ends the body
                return
            if req.backend is not None:
                req.backend.response_errors += 1
            self._release_cur()
            self._close()  # truncated response: the client must see the break
            return
        b = req.backend
        assert req.head is not None and b is not None
        s = self.ups.pool.settings
        decision = may_retry(
            attempt=req.attempt,
            retry_limit=s.retry_limit,
            request_sent=True,
            method=req.head.method,
            reused_connection=up.reused,
            response_started=False,
        )
        if decision.retry and not req.has_body:
            # a stale pooled connection: try again on a fresh one (same backend)
            b.retries += 1
            self.upstream = None
            req.sent = False
            req.backend = None  # the slot passes to the connect task
            self.ups.spawn(self._connect(req, b))
            return
        b.response_errors += 1
        self.ups.pool.passive_failure(b.id, self.ups.clock(), "connection lost mid-request")
        log.warning(
            "client %s: backend %s closed before answering (%s)",
            self.client_ip,
            b.id,
            decision.reason,
        )
        self._release_cur()
        self._fail(502, "The backend server closed the connection before answering.")

    # ============================================================= closing
    def _fail(self, status: int, detail: str, *, busy: bool = False) -> None:
        """Answer with an error page (unless a response already started) and close.
        `busy`: a 503 because every backend is at max_conns (retry soon)."""
        req = self.cur
        if self.upstream is not None:
            self.upstream.client = None
            self.upstream.abort()
            self._release_cur()
        self.ups.counters.errors += 1
        if status == 503:
            log.warning("client %s: 503 %s", self.client_ip, detail)
        if not (req is not None and req.response_started):
            self.write(self.ups.error_page(status, detail, busy=busy))
        self._close()

    def _close(self) -> None:
        if self.closed:
            return
        if self.corked:
            self.uncork()
        self.closed = True
        self.ups.forget(self)
        if self.upstream is not None:
            up = self.upstream
            up.client = None
            up.close()
            self._release_cur()
        elif self.cur is not None and self.cur.backend is not None:
            self._release_cur()
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool:
        """The client shut its sending side (`shutdown(SHUT_WR)`, `nc -N`) after sending
        its requests: answer every complete one, in order, then close. With nothing to
        answer (or a tunnel, an upgrade under way), close now, as before."""
        if self.closed or self.tunnel or self.upgrading:
            return False
        req = self._parsing
        if req is not None:  # a message the EOF cut short: nothing to answer for it
            self._parsing = None
            self._in_head = False
            if req.head is not None:  # queued at its head; its body will never end
                if req is self.cur:
                    return False
                self.queue.remove(req)
                self.buffered -= req.body_bytes
        if not self.queue:
            return False
        self.queue[-1].keep_alive = False  # ("Connection: close" on the last answer)
        self.pause_reading("eof")  # never resumed: no more input
        if self.cur is None:
            self._pump()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._close()


class TlsHttpClient(HttpClient, DecryptedReads):
    """A client connection on a TLS listener (reads decrypted into the shared buffer)."""


class TlsHttpUpstream(HttpUpstream, DecryptedReads):
    """A connection to a backend over TLS (reads decrypted into the shared buffer)."""
