"""A TLS listener's connections until their handshake is done.

Each accepted connection starts TLS with the contexts current at that moment
(`ServerTls.context()`), so reloaded certificates apply to new connections while the
established ones keep theirs. After the handshake the relay's protocol (`HttpClient`
or `TcpClient`) takes the TLS transport over as if it had just been accepted. A client
in its handshake counts against `max_connections`, is closed by `stop()`, and must finish
the handshake within `client_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from parlour.proxy.runtime import ProxyRuntime
    from parlour.proxy.tls import ServerTls

__all__ = ["TlsAccept"]

log = logging.getLogger("parlour.proxy")


class TlsAccept(asyncio.Protocol):
    def __init__(
        self, runtime: ProxyRuntime, tls: ServerTls, app: Callable[[], asyncio.Protocol]
    ) -> None:
        self.runtime = runtime
        self.tls = tls
        self.app = app
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []  # application data read with the handshake's end
        self.eof = False
        self.closed = False
        self.started = self.loop.time()
        self.peer = "?"

    # ------------------------------------------------------------ Reapable
    @property
    def busy(self) -> bool:
        return False  # (nothing to finish: stopping closes it)

    def check_timeouts(self, now: float) -> None:
        # start_tls has its own handshake timeout; this one only guards against a
        # transport that never reports back
        if not self.closed and now - self.started > 2 * self.runtime.pool.settings.client_timeout_s:
            self.shutdown()

    def shutdown(self) -> None:
        self.closed = True
        self.runtime.conns.discard(self)
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------ protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0])
        rt = self.runtime
        if len(rt.conns) >= rt.pool.settings.max_connections or rt.stopping:
            rt.rejected += 1  # (no page: there is no TLS session to send one in)
            transport.abort()
            self.closed = True
            return
        rt.conns.add(self)
        rt.spawn(self._handshake(transport))

    def data_received(self, data: bytes) -> None:
        self.early.append(data)  # (decrypted: start_tls delivers it here until handed over)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.runtime.conns.discard(self)

    async def _handshake(self, transport: asyncio.Transport) -> None:
        rt = self.runtime
        try:
            secure = await self.loop.start_tls(
                transport,
                self,
                self.tls.context(),
                server_side=True,
                ssl_handshake_timeout=rt.pool.settings.client_timeout_s,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError) as exc:
            log.info("client %s: TLS handshake failed: %s", self.peer, exc or type(exc).__name__)
            self.shutdown()
            return
        rt.conns.discard(self)
        if self.closed or secure is None or secure.is_closing():
            if secure is not None:
                secure.abort()
            return
        self.closed = True  # (handed over)
        app = self.app()
        secure.set_protocol(app)
        app.connection_made(secure)
        if self.early:
            app.data_received(b"".join(self.early))
            self.early.clear()
        if self.eof and not app.eof_received():
            secure.close()
