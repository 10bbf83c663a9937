"""The admin HTTP application: JSON API, Prometheus metrics and the dashboard files."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Final

from aiohttp import web
from aiohttp.web_log import AccessLogger

from parlour.proxy.admin.validation import (
    parse_backend_spec,
    parse_settings_changes,
    parse_weight,
)
from parlour.proxy.control import BackendSnapshot, BackendSpec, ControlError, ProxyControl
from parlour.proxy.metrics import CONTENT_TYPE, render_snapshot, stats_json
from parlour.proxy.stats_store import StatsStore

__all__ = [
    "MAX_BODY",
    "RedactingAccessLogger",
    "create_admin_app",
    "status_for_code",
]

log = logging.getLogger("parlour.proxy.admin")

MAX_BODY: Final = 64 * 1024
_STATIC_TYPES: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_TOKEN_RE: Final = re.compile(r"(?i)([?&]token=)[^&\s\"]*")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_for_code(code: str) -> int:
    """HTTP status for a `ControlError` code from the data plane."""
    if code == "too_large":
        return 413
    if code in {"unknown_backend", "not_found"} or code.endswith("_not_found"):
        return 404
    if code in {"backend_exists", "exists", "duplicate", "conflict"} or code.endswith("_exists"):
        return 409
    return 400


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class RedactingAccessLogger(AccessLogger):
    """aiohttp's access log with `token=` query values replaced by `***`.

    Pass it as ``web.AppRunner(app, access_log_class=RedactingAccessLogger)``.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if "token=" in request.path_qs.lower():
            try:
                request = request.clone(rel_url=_TOKEN_RE.sub(r"\1***", request.path_qs))
            except Exception:  # never let logging break a response
                return
        super().log(request, response, time)


def _load_static() -> dict[str, bytes]:
    root = resources.files("parlour.proxy.admin") / "static"
    return {name: (root / name).read_bytes() for name in _STATIC_TYPES}


class _Api:
    def __init__(
        self, control: ProxyControl, store: StatsStore | None, clock: Callable[[], float]
    ) -> None:
        self.control = control
        self.store = store
        self.clock = clock
        self._persist_lock = asyncio.Lock()

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    async def _json_body(request: web.Request) -> object:
        try:
            raw = await request.read()  # bounded by client_max_size (413 beyond it)
        except web.HTTPRequestEntityTooLarge:
            raise ControlError("too_large", f"request body over {MAX_BODY} bytes") from None
        try:
            return json.loads(raw.decode("utf-8") or "null", parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ControlError("bad_json", f"request body is not valid JSON: {exc}") from exc

    async def _persist(self, event: tuple[str, str, str] | None = None) -> None:
        """Save backends + settings (and one event) so the change survives a restart."""
        store = self.store
        if store is None:
            return
        async with self._persist_lock:
            items = [
                (spec_of(b), b.state if b.state in ("disabled", "draining") else "up")
                for b in self.control.backends()
            ]
            settings = self.control.settings()
            at = self.clock()

            def write() -> None:
                store.save_backends(items)
                store.save_settings(settings)
                if event is not None:
                    store.record_event(event[0], event[1], event[2], at)

            try:
                await asyncio.to_thread(write)
            except Exception:
                log.exception("could not persist admin change")

    def _backend(self, backend_id: str) -> BackendSnapshot:
        for b in self.control.backends():
            if b.id == backend_id:
                return b
        raise ControlError("unknown_backend", f"no backend {backend_id!r}")

    # -- handlers -------------------------------------------------------------------------
    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(stats_json(self.control, self.clock()))

    async def list_backends(self, request: web.Request) -> web.Response:
        now = self.clock()
        data = stats_json(self.control, now)
        return web.json_response({"backends": data["backends"], "prompt": data["prompt"]})

    async def add_backend(self, request: web.Request) -> web.Response:
        spec = parse_backend_spec(await self._json_body(request))
        snap = self.control.add_backend(spec)
        await self._persist((snap.id, "added", "operator via admin API"))
        return web.json_response({"backend": dataclasses.asdict(snap)}, status=201)

    async def remove_backend(self, request: web.Request) -> web.Response:
        backend_id = request.match_info["backend_id"]
        self.control.remove_backend(backend_id)
        await self._persist((backend_id, "removed", "operator via admin API"))
        return web.json_response({"removed": backend_id})

    async def backend_action(self, request: web.Request) -> web.Response:
        backend_id = request.match_info["backend_id"]
        action = request.match_info["action"]
        if action == "enable":
            snap = self.control.enable_backend(backend_id)
        elif action == "disable":
            snap = self.control.disable_backend(backend_id)
        else:
            snap = self.control.drain_backend(backend_id)
        kind = {"enable": "enabled", "disable": "disabled", "drain": "draining"}[action]
        await self._persist((backend_id, kind, "operator via admin API"))
        return web.json_response({"backend": dataclasses.asdict(snap)})

    async def set_weight(self, request: web.Request) -> web.Response:
        backend_id = request.match_info["backend_id"]
        weight = parse_weight(await self._json_body(request))
        self._backend(backend_id)
        snap = self.control.set_weight(backend_id, weight)
        await self._persist((backend_id, "weight", f"weight set to {weight} via admin API"))
        return web.json_response({"backend": dataclasses.asdict(snap)})

    async def get_settings(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "settings": dataclasses.asdict(self.control.settings()),
                "listener": dataclasses.asdict(self.control.listener()),
            }
        )

    async def put_settings(self, request: web.Request) -> web.Response:
        changes = parse_settings_changes(await self._json_body(request))
        settings = self.control.update_settings(**changes)
        keys = ", ".join(sorted(changes))
        await self._persist(("*", "settings", f"changed via admin API: {keys}"))
        return web.json_response({"settings": dataclasses.asdict(settings)})

    async def reload(self, request: web.Request) -> web.Response:
        await self.control.reload()
        await self._persist(("*", "reload", "configuration reloaded via admin API"))
        return web.json_response(
            {"reloaded": True, "settings": dataclasses.asdict(self.control.settings())}
        )

    async def events(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise ControlError("invalid", "limit must be an integer between 1 and 1000")
        store = self.store
        if store is None:
            return web.json_response({"events": []})
        backend_id = request.query.get("backend")
        rows = await asyncio.to_thread(store.events, int(raw), backend_id)
        return web.json_response({"events": [dataclasses.asdict(e) for e in rows]})

    async def metrics(self, request: web.Request) -> web.Response:
        # snapshot on the loop (cheap), format in a thread (prometheus-client is slow-ish:
        # ~0.35 ms per backend), so a scrape never stalls the proxy's event loop
        totals, settings = self.control.totals(), self.control.settings()
        body = await asyncio.to_thread(render_snapshot, totals, settings, self.clock())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def spec_of(b: BackendSnapshot) -> BackendSpec:
    return BackendSpec(host=b.host, port=b.port, weight=b.weight, max_conns=b.max_conns)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


def _auth_middleware(
    token: str, metrics_public: bool
) -> Callable[..., Awaitable[web.StreamResponse]]:
    expected = token.encode("utf-8")

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        path = request.path
        protected = (
            path.startswith("/api/")
            or path == "/api"
            or (path == "/metrics" and not metrics_public)
        )
        if protected:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("utf-8"), expected
            ):
                resp = _error(401, "unauthorized", "missing or wrong admin token")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="parlour-proxy"'
                return resp
        return await handler(request)

    return middleware


@web.middleware
async def _error_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ControlError as exc:
        return _error(status_for_code(exc.code), exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "http_error"
        )
        return _error(exc.status, code, exc.reason)
    except Exception:
        log.exception("admin API error on %s %s", request.method, request.path)
        return _error(500, "internal", "internal error; see the proxy log")
    return response


@web.middleware
async def _headers_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith("/api") or request.path == "/metrics":
        response.headers.setdefault("Cache-Control", "no-store")
    else:
        response.headers.setdefault("Content-Security-Policy", _CSP)
    return response


def create_admin_app(
    control: ProxyControl,
    token: str,
    store: StatsStore | None = None,
    *,
    metrics_public: bool = False,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The admin application. `token` guards /api (and /metrics unless `metrics_public`).

    With a `store`, every change made through the API is persisted (backends, settings)
    and logged as an event, and GET /api/events reads the store's event log.
    """
    if not token or len(token) < 8:
        raise ValueError("the admin token must be at least 8 characters")
    api = _Api(control, store, clock)
    static = _load_static()
    app = web.Application(
        middlewares=[
            _headers_middleware,
            _error_middleware,
            _auth_middleware(token, metrics_public),
        ],
        client_max_size=MAX_BODY,
    )

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=static["index.html"], content_type="text/html", charset="utf-8")

    async def static_file(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in static:
            raise web.HTTPNotFound(reason="no such file")
        return web.Response(
            body=static[name],
            headers={"Content-Type": _STATIC_TYPES[name], "Cache-Control": "no-cache"},
        )

    r = app.router
    r.add_get("/", index)
    r.add_get("/static/{name}", static_file)
    r.add_get("/metrics", api.metrics)
    r.add_get("/api/stats", api.stats)
    r.add_get("/api/backends", api.list_backends)
    r.add_post("/api/backends", api.add_backend)
    r.add_delete("/api/backends/{backend_id}", api.remove_backend)
    r.add_post("/api/backends/{backend_id}/{action:enable|disable|drain}", api.backend_action)
    r.add_put("/api/backends/{backend_id}/weight", api.set_weight)
    r.add_get("/api/settings", api.get_settings)
    r.add_put("/api/settings", api.put_settings)
    r.add_post("/api/reload", api.reload)
    r.add_get("/api/events", api.events)
    return app
