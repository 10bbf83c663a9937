"""The web listener: an aiohttp server beside the TCP door, serving the web client's files and
the chat protocol over WebSocket at ``/ws``.

* ``GET /`` — the page (no-cache); ``GET /static/<version>/<path>`` — the client's files from
  memory, gzipped when the browser accepts it, cached for a year (the version changes with
  the content, see ``parlour.web.assets``); anything else is 404.
* ``GET /ws`` — the WebSocket door (``parlour.transports.websocket``), after the ``Origin``
  check: a browser page may only connect from the configured public URL's origin, or, when
  none is configured, from the origin it was served from (the request's own scheme and
  ``Host``). A request without ``Origin`` is not from a browser page and is let through
  (cross-site WebSocket hijacking needs a browser); authentication is in the protocol.
* ``/files/...`` — files in chat when uploads are on (``parlour.files.http``: tus uploads,
  downloads), added by the server through ``routes``.
* Every response carries the security headers: a CSP without ``unsafe-inline`` (scripts and
  styles from this origin only, Trusted Types required so that no string can become HTML),
  ``frame-ancestors 'none'``, ``X-Content-Type-Options: nosniff``, no referrer, and HSTS
  over TLS.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from parlour.transports.endpoint import Endpoint
from parlour.transports.http_guard import HttpGuard
from parlour.transports.proxy_header import Networks
from parlour.transports.websocket import WebSocketDoor
from parlour.web.assets import Asset, Assets

__all__ = ["CSP", "WebListener", "origin_allowed", "origin_of", "web_location"]

log = logging.getLogger("parlour.transports.web")

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, normalised (lower case, default port
    left out); None when it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_allowed(origin: str | None, *, own: str | None, public: str | None) -> bool:
    """Whether a WebSocket upgrade with this ``Origin`` header may proceed. ``public`` is the
    configured public URL's origin (then only it is allowed), ``own`` the origin the request
    was addressed to (scheme + ``Host``). No ``Origin`` header: not a browser page, allowed."""
    if origin is None:
        return True
    given = origin_of(origin)
    if given is None:  # "null" (sandboxed frames, file: pages) or garbage
        return False
    expected = public if public is not None else own
    return expected is not None and given == expected


def web_location(host: str, port: int, *, tls: bool, public: str | None) -> tuple[str | None, int]:
    """(the listener's absolute URL when one is known, its port): the public origin when one
    is configured, else scheme, host and port — except for a listener on every address, whose
    URL depends on where a client is (clients then use the host they reached with the port)."""
    if public is not None:
        return public.rstrip("/") + "/", port
    if host in ("", "0.0.0.0", "::"):
        return None, port
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/", port


class WebListener:
    """Listens on host:port (HTTP, or HTTPS with ``ssl_context``) for the web client."""

    def __init__(
        self,
        endpoint: Endpoint,
        assets: Assets,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        public_url: str | None = None,
        max_frame: int,
        ping_interval: float,
        backlog: int = 1024,
        guard: HttpGuard | None = None,
        routes: Callable[[web.Application], None] | None = None,
        trusted_proxies: Networks = (),
    ) -> None:
        self.endpoint = endpoint
        self.assets = assets
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.public_origin = origin_of(public_url) if public_url else None
        self.door = WebSocketDoor(
            endpoint,
            max_frame=max_frame,
            ping_interval=ping_interval,
            trusted_proxies=trusted_proxies,
        )
        self.backlog = backlog
        #: HTTP connection limits and the header deadline (parlour.transports.http_guard)
        self.guard = (
            guard if guard is not None else HttpGuard(max_connections=10_000, per_address=256)
        )
        self.rejected_origins = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        #: more routes on the same application (the files endpoints, parlour.files.http)
        self._routes = routes
        self.app = self._make_app()

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=4096, middlewares=[self._started])
        app.on_response_prepare.append(self._headers)
        app.router.add_get("/", self._index)
        app.router.add_get("/index.html", self._index)
        app.router.add_get("/static/{version}/{path:.+}", self._static)
        app.router.add_get("/ws", self._websocket)
        if self._routes is not None:
            self._routes(app)
        return app

    # ------------------------------------------------------------------ handlers

    @web.middleware
    async def _started(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        self.guard.started(request.transport)  # its headers arrived in time
        return await handler(request)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if response.status == 101:
            return
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if self.ssl_context is not None:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")

    @staticmethod
    def _send(request: web.Request, asset: Asset, cache: str) -> web.Response:
        headers = {
            hdrs.CONTENT_TYPE: asset.content_type,
            hdrs.CACHE_CONTROL: cache,
            hdrs.ETAG: asset.etag,
            hdrs.VARY: "Accept-Encoding",
        }
        if request.headers.get(hdrs.IF_NONE_MATCH) == asset.etag:
            return web.Response(status=304, headers=headers)
        body = asset.body
        accepts = request.headers.get(hdrs.ACCEPT_ENCODING, "")
        if asset.gzipped is not None and "gzip" in accepts.lower():
            body = asset.gzipped
            headers[hdrs.CONTENT_ENCODING] = "gzip"
        return web.Response(body=body, headers=headers)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return self._send(request, self.assets.index, "no-cache")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        asset = self.assets.get(request.match_info["version"], request.match_info["path"])
        if asset is None:
            raise web.HTTPNotFound(text="not found")
        return self._send(request, asset, "public, max-age=31536000, immutable")

    def _own_origin(self, request: web.Request) -> str | None:
        host = request.headers.get(hdrs.HOST)
        if not host:
            return None
        scheme = "https" if self.ssl_context is not None else "http"
        return origin_of(f"{scheme}://{host}")

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if not origin_allowed(origin, own=self._own_origin(request), public=self.public_origin):
            self.rejected_origins += 1
            log.warning(
                "websocket refused: origin not allowed",
                extra={"fields": {"origin": origin, "peer": request.remote}},
            )
            raise web.HTTPForbidden(text="origin not allowed")
        return await self.door.handle(request)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> list[tuple[str, int]]:
        self._runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=5.0,
            keepalive_timeout=15.0,  # an idle keep-alive connection is not kept for an hour
        )
        await self._runner.setup()
        self._site = _GuardedSite(
            self._runner,
            self.guard,
            self.host,
            self.port,
            ssl_context=self.ssl_context,
            backlog=self.backlog,
            reuse_address=True,
        )
        await self._site.start()
        self.door.start()
        return self.addresses

    @property
    def addresses(self) -> list[tuple[str, int]]:
        if self._runner is None:
            return []
        out: list[tuple[str, int]] = []
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                out.append((str(address[0]), int(address[1])))
        return out

    @property
    def location(self) -> tuple[str | None, int]:
        """Where clients elsewhere find this listener (`web_location`), for ``hello``."""
        host, port = self.addresses[0] if self.addresses else (self.host, self.port)
        return web_location(host, port, tls=self.ssl_context is not None, public=self.public_origin)

    @property
    def url(self) -> str:
        """Where to open the client (the public URL when one is configured; on this machine
        when the listener takes every address)."""
        found, port = self.location
        if found is not None:
            return found
        host = self.addresses[0][0] if self.addresses else self.host
        loopback = "[::1]" if host == "::" else "127.0.0.1"
        return f"{'https' if self.ssl_context is not None else 'http'}://{loopback}:{port}/"

    async def stop_accepting(self) -> None:
        """Stop taking new connections (open WebSockets are closed by the endpoint)."""
        self.door.stop()
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()

    async def wait_closed(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None


class _GuardedSite(web.TCPSite):
    """aiohttp's TCP site with :class:`HttpGuard` around each connection's protocol."""

    def __init__(self, runner: web.AppRunner, guard: HttpGuard, *args: Any, **kwargs: Any) -> None:
        super().__init__(runner, *args, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
