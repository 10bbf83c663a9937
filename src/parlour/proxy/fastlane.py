"""The Python side of the proxy's native fast lane (docs/design/proxy-fast-lane.md).

`parlour.proxy._fastlane.Engine` relays plain HTTP/1.1 keep-alive requests in C on the
worker's event loop thread; every policy decision stays here, in Python. `FastLane` is the
engine's handler (the callbacks of the design's contract table) on top of `Upstreams`:
admission, backend choice (`try_acquire`/`acquire`, so every algorithm, health state,
max_conns and the wait queue apply unchanged), connecting (`connect_upstream`, with the
Python relay's retries, timeouts and statistics), slot release, passive health, error
pages and logging. A connection the engine does not relay itself is handed over
(`escape`) to the Python relay's `HttpClient`.

On a TLS listener the engine terminates TLS itself (OpenSSL, with the certificate files
`ServerTls` validated; `tls_pick` chooses by server name). A TLS connection it hands over
reaches the relay as one end of a socket pair carrying the decrypted stream; the engine
keeps encrypting and decrypting for it (docs/design/proxy-tls.md).

Backends are known to the engine by small integer indices: `_backends` only grows, so an
index is never reused for another `Backend` object (a removed backend keeps its index
for the requests still in flight on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import os
import socket
from typing import TYPE_CHECKING, Any, Protocol

from parlour.proxy.pool import Backend
from parlour.proxy.tls import ServerTls, TlsConfig, TlsError

if TYPE_CHECKING:
    from parlour.proxy.upstreams import Upstreams

__all__ = ["ENV_VAR", "EngineLike", "FastLane", "engine_class", "native_module"]

log = logging.getLogger("parlour.proxy")

ENV_VAR = "PARLOUR_PROXY_FAST_LANE"
HASH_MODES = {"ip_hash": 1, "uri_hash": 2, "header_hash": 3}
_SLOT_MASK = 0xFFFFFFFF  # token = generation << 32 | slot

_NO_BACKEND = "No backend server is available right now. Please retry shortly."
_BUSY = "All backend servers are busy. Please retry shortly."

# (requests, errors, [(backend, requests, bytes_in, bytes_out, response_errors, retries,
# [latency_ms, ...]), ...]): the engine's counters since the previous harvest
# getaddrinfo's answer: (family, type, proto, canonname, sockaddr)
_AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]

Harvest = tuple[int, int, list[tuple[int, int, int, int, int, int, list[float]]]]


class EngineLike(Protocol):
    """What `FastLane` uses of `parlour.proxy._fastlane.Engine`."""

    def fileno(self) -> int: ...
    def poll(self) -> None: ...
    def sweep(self) -> None: ...
    def configure(self, **settings: object) -> None: ...
    def attach(self, token: int, fd: int, backend: int) -> None: ...
    def proceed(self, token: int, backend: int) -> None: ...
    def fail(self, token: int, page: bytes) -> None: ...
    def drop_backend(self, backend: int) -> None: ...
    def tls_load(self, min_version: int, chains: list[tuple[str, str]]) -> None: ...
    def harvest(self) -> Harvest: ...
    def stop_accepting(self) -> None: ...
    def shutdown_idle(self) -> None: ...
    def close(self) -> None: ...
    @property
    def clients(self) -> int: ...
    @property
    def busy(self) -> bool: ...


class EngineFactory(Protocol):
    def __call__(self, listen_fd: int, handler: FastLane) -> EngineLike: ...


def native_module() -> tuple[Any, str]:
    """`parlour.proxy._fastlane` if it is built (else None), and what was found."""
    try:
        module = importlib.import_module("parlour.proxy._fastlane")
    except ImportError as exc:
        return None, f"parlour.proxy._fastlane cannot be imported: {exc}"
    if not hasattr(module, "Engine"):  # (the source directory imports as an empty package)
        return None, "parlour.proxy._fastlane is not built"
    return module, "parlour.proxy._fastlane"


def engine_class(
    mode: str, enabled: bool, tls: bool = False, backend_tls: bool = False
) -> tuple[EngineFactory | None, str]:
    """The engine to run, or None and why the Python relay runs instead. `tls`: the
    listener terminates TLS (the engine must be built with OpenSSL); `backend_tls`: TLS
    to backends (the engine speaks plain HTTP to them: the Python relay runs)."""
    if mode != "http":
        return None, f"{mode} mode"
    if not enabled:
        return None, "fast_lane = false"
    if os.environ.get(ENV_VAR, "").strip().lower() in ("0", "false", "no", "off"):
        return None, f"{ENV_VAR}={os.environ[ENV_VAR]}"
    if backend_tls:
        return None, "TLS to backends"
    module, why = native_module()
    if module is None:
        return None, why
    if tls and not getattr(module, "TLS", False):
        return None, "TLS listener; the fast lane was built without OpenSSL"
    engine: EngineFactory = module.Engine
    return engine, why


class FastLane:
    """The engine's handler, and the runtime's handle on the engine."""

    def __init__(self, upstreams: Upstreams) -> None:
        self.ups = upstreams
        # the engine's clients count toward max_connections like the Python relay's
        upstreams.other_clients = lambda: self.clients
        self.loop = asyncio.get_running_loop()
        self.engine: EngineLike | None = None
        self._backends: list[Backend] = []  # index -> Backend; only grows
        self._index: dict[int, int] = {}  # id(Backend) -> index (the list keeps it alive)
        # hashed algorithms: slot -> (token, key) of the last selected request, for the
        # key of a later `connect` (retries on other backends choose by it too)
        self._keys: dict[int, tuple[int, bytes]] = {}
        # sockets handed over by `escape` whose HttpClient does not exist yet (closed by
        # `close` if the runtime stops first)
        self._adopting: set[socket.socket] = set()
        self.tls: ServerTls | None = None  # TLS on the listener, terminated by the engine

    # ================================================================ runtime side
    def start(
        self, factory: EngineFactory, sock: socket.socket, tls: ServerTls | None = None
    ) -> None:
        """Take over `sock` (bound, listening, non-blocking); with `tls`, terminate TLS
        with its certificates (and the ones each reload brings)."""
        fd = sock.detach()
        try:
            self.engine = factory(fd, self)
        except BaseException:
            os.close(fd)  # (the engine owns the fd only once it exists)
            raise
        self.configure()
        if tls is not None:
            self.tls = tls
            self._load_certificates(tls.config)
            tls.native = self._load_certificates
        self.loop.add_reader(self.engine.fileno(), self.engine.poll)

    def _load_certificates(self, config: TlsConfig) -> None:
        """The engine's certificates for new handshakes (all of them or none: TlsError)."""
        if self.engine is None:
            return
        try:
            self.engine.tls_load(ServerTls.version_number(config), ServerTls.chains(config))
        except (ValueError, OSError, RuntimeError) as exc:
            raise TlsError(f"the fast lane cannot load the certificates: {exc}") from None

    def configure(self) -> None:
        """Pass the current settings on (at start and after every settings change)."""
        engine = self.engine
        if engine is None:
            return
        rt = self.ups
        s = rt.pool.settings
        hash_mode = HASH_MODES.get(s.algorithm, 0)
        header = s.hash_header.encode("ascii")  # (validate_settings: ASCII, <= 127 bytes)
        engine.configure(
            max_header_bytes=rt.config.max_header_bytes,
            buffer_size=s.buffer_size,
            max_idle_upstream=rt.config.max_idle_upstream,
            idle_timeout_s=s.idle_timeout_s,
            server_timeout_s=s.server_timeout_s,
            client_timeout_s=s.client_timeout_s,
            hash_mode=hash_mode,
            hash_header=header,
            stopping=rt.stopping,
            hide_server=s.hide_server_header,
            retry_limit=s.retry_limit,
        )

    @property
    def clients(self) -> int:
        return 0 if self.engine is None else self.engine.clients

    @property
    def busy(self) -> bool:
        return self.engine is not None and self.engine.busy

    def sweep(self) -> None:
        if self.engine is not None:
            self.engine.sweep()

    def drop_backend(self, b: Backend) -> None:
        """Close the engine's idle connections to `b` (removed, disabled or draining)."""
        i = self._index.get(id(b))
        if i is not None and self.engine is not None:
            self.engine.drop_backend(i)

    def harvest(self) -> None:
        """Add the engine's counters since the last harvest to the Backend objects and
        the proxy's counters."""
        if self.engine is None:
            return
        requests, errors, per_backend = self.engine.harvest()
        counters = self.ups.counters
        counters.requests += requests
        counters.errors += errors
        backends = self._backends
        for i, n, bytes_in, bytes_out, response_errors, retries, latencies in per_backend:
            if not 0 <= i < len(backends):
                continue
            b = backends[i]
            b.requests += n
            b.bytes_in += bytes_in
            b.bytes_out += bytes_out
            b.response_errors += response_errors
            b.retries += retries
            b.latencies_ms.extend(latencies)

    def stop_accepting(self) -> None:
        """Stopping: no new clients, close the idle ones, no keep-alive from now on."""
        if self.engine is None:
            return
        self.configure()  # (stopping=True: responses end with Connection: close)
        self.engine.stop_accepting()
        self.engine.shutdown_idle()

    def close(self) -> None:
        engine = self.engine
        if engine is None:
            return
        with contextlib.suppress(Exception):  # (the loop may be closing too)
            self.loop.remove_reader(engine.fileno())
        engine.close()
        if self.tls is not None and self.tls.native == self._load_certificates:
            self.tls.native = None
        for sock in self._adopting:
            sock.close()
        self._adopting.clear()
        self.harvest()
        self.engine = None

    def index(self, b: Backend) -> int:
        i = self._index.get(id(b))
        if i is None:
            i = len(self._backends)
            self._backends.append(b)
            self._index[id(b)] = i
        return i

    # ================================================================ engine side
    def admit(self, ip: str) -> bytes | None:
        if not self.ups.accept(None):  # (counted: the engine keeps the client)
            return self.ups.error_page(503, "The proxy is at its connection limit.", busy=True)
        return None

    def select(self, token: int, key: bytes | None) -> int | bytes | None:
        got = self.ups.try_acquire(key)
        if isinstance(got, Backend):
            i = self._index.get(id(got))
            if i is None:
                i = self.index(got)
            if key is not None:
                self._keys[token & _SLOT_MASK] = (token, key)
            return i
        if got is None:
            log.warning("fast lane client: 503 %s", _NO_BACKEND)
            return self.ups.error_page(503, _NO_BACKEND)
        # every backend is at max_conns: wait in the queue (the engine counts the error
        # if the wait fails: `fail` writes the page)
        self.ups.spawn(self._wait_and_connect(token, key))
        return None

    def connect(self, token: int, backend: int) -> None:
        key = None
        if self._keys:
            entry = self._keys.get(token & _SLOT_MASK)
            if entry is not None and entry[0] == token:
                key = entry[1]
        self.ups.spawn(self._connect(token, self._backends[backend], key))

    def release(self, backend: int, ok: bool) -> bool:
        b = self._backends[backend]
        rt = self.ups
        rt.release(b)
        if ok and b.health.passive_failures:  # (pool.passive_success: nothing to reset)
            rt.pool.passive_success(b.id, rt.clock())
        return (
            b.health.state == "up"  # (b.state without the property call)
            and b.admin == "enabled"
            and not rt.stopping
            and rt.pool.find(b.id) is b
        )

    def failure(self, backend: int, reason: str) -> None:
        b = self._backends[backend]
        rt = self.ups
        if rt.pool.find(b.id) is b:  # (not a new backend of the same address)
            rt.pool.passive_failure(b.id, rt.clock(), reason)
        log.info("backend %s: %s", b.id, reason)

    def escape(self, fd: int, data: bytes, peer: str | None = None) -> None:
        """`fd` is the client's socket, or (`peer` given: a TLS client, its address) the
        relay's end of a socket pair carrying the decrypted stream."""
        sock = socket.socket(fileno=fd)
        self._adopting.add(sock)
        self.ups.spawn(self._adopt(sock, data, peer))

    def tls_pick(self, server_name: bytes) -> int:
        """SNI: the index of the certificate for `server_name` in the engine's list."""
        if self.tls is None:
            return 0
        return self.tls.pick(server_name.decode("ascii", "replace"))

    def page(self, status: int, detail: str) -> bytes:
        return self.ups.error_page(status, detail)

    def log(self, level: int, message: str) -> None:
        log.log(level, "%s", message)

    # ================================================================ tasks
    async def _adopt(self, sock: socket.socket, data: bytes, peer: str | None = None) -> None:
        """The Python relay takes the connection over; `data` is parsed first."""
        from parlour.proxy.http_relay import HttpClient

        ups = self.ups

        def client() -> HttpClient:
            made = HttpClient(ups, adopted=data, tls=peer is not None)
            if peer is not None:  # (the pair has no peer address of its own)
                made.client_ip = peer
            return made

        try:
            await self.loop.connect_accepted_socket(client, sock)
        except BaseException:
            sock.close()
            raise
        finally:
            self._adopting.discard(sock)

    async def _wait_and_connect(self, token: int, key: bytes | None) -> None:
        got = await self.ups.acquire(key)
        if isinstance(got, str):
            self._fail(token, 503, _NO_BACKEND if got == "down" else _BUSY)
            return
        if self.engine is None:  # stopped meanwhile
            self.ups.release(got)
            return
        # back to the engine with the slot: it uses an idle pooled connection if it has
        # one, else asks `connect`; if the client has gone it just releases the slot
        self.engine.proceed(token, self.index(got))

    async def _connect(self, token: int, b: Backend, key: bytes | None) -> None:
        """Connect for the request `token` (the slot on `b` is ours), then attach."""
        rt = self.ups
        result = await rt.connect_upstream(key, self._open_socket, first=b)
        if isinstance(result, str):
            if result == "down":
                self._fail(token, 503, "No backend server is available right now.")
            else:
                self._fail(token, 502, "Could not connect to a backend server.")
            return
        backend, sock = result
        engine = self.engine
        if engine is None:  # stopped meanwhile
            sock.close()
            rt.release(backend)
            return
        # the engine sends the request, or (its client gone) parks the connection or
        # closes it; either way it releases the slot
        engine.attach(token, sock.detach(), self.index(backend))

    def _fail(self, token: int, status: int, detail: str) -> None:
        if status == 503:
            log.warning("fast lane client: 503 %s", detail)
        if self.engine is not None:
            self.engine.fail(token, self.ups.error_page(status, detail, busy=detail == _BUSY))

    async def _resolve(self, host: str, port: int) -> list[_AddrInfo]:
        """getaddrinfo, skipped for a numeric address (it costs a thread hand-off per call,
        and the fast lane connects whenever its pool runs short)."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            found = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            return [(int(f), int(k), p, c, tuple(a)) for f, k, p, c, a in found]
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        addr: tuple[Any, ...] = (host, port) if ip.version == 4 else (host, port, 0, 0)
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", addr)]

    async def _open_socket(self, b: Backend) -> socket.socket:
        """A connected non-blocking TCP socket to `b` (each address in turn, like
        loop.create_connection)."""
        loop = self.loop
        infos = await self._resolve(b.spec.host, b.spec.port)
        errors: list[OSError] = []
        for family, kind, proto, _, addr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                if family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, addr)
            except OSError as exc:
                sock.close()
                errors.append(exc)
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise OSError("Multiple exceptions: " + ", ".join(str(e) for e in errors))
        raise OSError(f"no address for {b.spec.host}")
