"""TCP (L4) mode: each client connection is relayed byte for byte to one backend.

Flow control both ways: when one side's write buffer passes its high-water mark the other
side stops reading, so a peer that stops reading never makes the proxy buffer without
limit. Bytes a client sends before the backend connection is up are buffered up to
`buffer_size`, then reading pauses.

Response time in this mode (the backend's p50/p99) is the time from the backend connection
being established to the backend's first byte, one sample per connection: for protocols
where the server speaks first (a greeting) that is the server's reaction time; where the
client speaks first it includes the client's think time. Connections on which the backend
never sends anything give no sample.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import TYPE_CHECKING, cast

from parlour.proxy.proxy_protocol import proxy_header
from parlour.proxy.tls_reads import DecryptedReads

if TYPE_CHECKING:
    from parlour.proxy.pool import Backend
    from parlour.proxy.upstreams import Upstreams

__all__ = ["TcpClient", "TcpUpstream", "TlsTcpClient", "TlsTcpUpstream"]

log = logging.getLogger("parlour.proxy")


class TcpUpstream(asyncio.BaseProtocol):
    def __init__(self, client: TcpClient, backend: Backend) -> None:
        self.client = client
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.connected_at: float | None = None  # perf_counter; None once measured

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=self.client.buffer_size)
        self.connected_at = perf_counter()  # finer than uvloop's millisecond loop clock

    def data_received(self, data: bytes) -> None:
        if self.connected_at is not None:  # first byte: connect -> first byte time
            self.backend.latencies_ms.append((perf_counter() - self.connected_at) * 1000.0)
            self.connected_at = None
        self.backend.bytes_in += len(data)
        self.client.last_activity = self.client.loop.time()
        if self.client.transport is not None and not self.client.transport.is_closing():
            self.client.transport.write(data)

    def eof_received(self) -> bool:
        self.client.peer_eof(from_upstream=True)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None and not self.client.transport.is_closing():
            self.client.transport.resume_reading()


class TcpClient(asyncio.BaseProtocol):
    def __init__(self, upstreams: Upstreams) -> None:
        self.ups = upstreams
        self.loop = asyncio.get_running_loop()
        self.buffer_size = upstreams.pool.settings.buffer_size
        self.transport: asyncio.Transport | None = None
        self.upstream: TcpUpstream | None = None
        self.backend: Backend | None = None
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.last_activity = self.loop.time()
        # which sides have sent their FIN (flags, not a count: uvloop reports a client's
        # EOF again when reading resumes, and a count took that for "both sides done")
        self.client_eof = False
        self.upstream_eof = False
        self.closed = False
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ Reapable
    @property
    def busy(self) -> bool:
        return not self.closed

    def check_timeouts(self, now: float) -> None:
        s = self.ups.pool.settings
        limit = (
            s.tunnel_timeout_s
            if self.upstream is not None
            else s.connect_timeout_s * (s.retry_limit + 1) + s.queue_timeout_s
        )
        if now - self.last_activity > limit:
            log.info("tcp connection idle for %.0fs: closing", now - self.last_activity)
            self.shutdown()

    def shutdown(self) -> None:
        self._close()

    # ------------------------------------------------------------- client side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=self.buffer_size)
        if not self.ups.accept(self):  # (max_connections, or stopping)
            transport.abort()
            self.closed = True
            return
        self._task = self.ups.spawn(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        peer = self.transport.get_extra_info("peername") or ("0.0.0.0", 0)
        key = str(peer[0]).encode()
        kind = TcpUpstream if self.ups.backend_ssl is None else TlsTcpUpstream
        result = await self.ups.open_upstream(key, lambda b: kind(self, b))
        if isinstance(result, str):
            self.ups.counters.errors += 1
            log.warning("tcp client %s: no backend (%s): closing", peer[0], result)
            self._close()
            return
        backend, transport, protocol = result
        if self.closed:
            transport.close()
            self.ups.release(backend)
            return
        self.backend = backend
        self.upstream = protocol
        backend.requests += 1
        if self.ups.config.proxy_protocol:
            sock = self.transport.get_extra_info("sockname") or ("0.0.0.0", 0)
            header = proxy_header(
                self.ups.config.proxy_protocol, (peer[0], peer[1]), (sock[0], sock[1])
            )
            transport.write(header)
            backend.bytes_out += len(header)
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            self.pending_bytes = 0
            transport.write(data)
            backend.bytes_out += len(data)
            self.transport.resume_reading()
        if self.client_eof and transport.can_write_eof():
            transport.write_eof()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.write(data)
            assert self.backend is not None
            self.backend.bytes_out += len(data)
            return
        self.pending.append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes >= self.buffer_size and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.peer_eof(from_upstream=False)
        return True

    def peer_eof(self, *, from_upstream: bool) -> None:
        """One side shut its sending half: pass the FIN on; close once both have."""
        if from_upstream:
            if self.upstream_eof:
                return
            self.upstream_eof = True
        else:
            if self.client_eof:
                return
            self.client_eof = True
        if self.client_eof and self.upstream_eof:
            self._close()
            return
        if from_upstream:
            if self.transport is not None and self.transport.can_write_eof():
                self.transport.write_eof()
        else:
            up = self.upstream
            if up is not None and up.transport is not None and up.transport.can_write_eof():
                up.transport.write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self._close()

    def upstream_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.backend is not None:
            self.backend.response_errors += 1
        self._close()

    def pause_writing(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None and not up.transport.is_closing():
            up.transport.resume_reading()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ups.forget(self)
        if self.transport is not None:
            self.transport.close()
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.close()
        if self.backend is not None:
            self.ups.release(self.backend)
            self.backend = None
        if self._task is not None and not self._task.done() and self.upstream is None:
            self._task.cancel()


class TlsTcpClient(TcpClient, DecryptedReads):
    """A client connection on a TLS listener (reads decrypted into the shared buffer)."""


class TlsTcpUpstream(TcpUpstream, DecryptedReads):
    """A connection to a backend over TLS (reads decrypted into the shared buffer)."""
