"""An in-memory `ProxyControl` for control-plane tests (no sockets, clock passed in)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any, get_args

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from parlour.proxy.admin import create_admin_app
from parlour.proxy.config import validate_settings
from parlour.proxy.control import (
    Algorithm,
    BackendSnapshot,
    BackendSpec,
    BackendState,
    ControlError,
    ListenerInfo,
    ProxyControl,
    ProxySettings,
    SelectionMode,
    TotalsSnapshot,
)
from parlour.proxy.stats_store import StatsStore

__all__ = ["TOKEN", "FakeClock", "FakeControl", "admin_client", "auth"]


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeControl:
    """Behaves like the data plane's control surface, with counters the test can bump."""

    def __init__(
        self, specs: list[BackendSpec] | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        self.clock = clock or FakeClock()
        self.started_at = self.clock()
        self._settings = ProxySettings()
        self._backends: dict[str, BackendSnapshot] = {}
        self.reloads = 0
        self.reload_error: ControlError | None = None
        self.errors = 0
        for spec in specs or []:
            self.add_backend(spec)

    # -- test helpers -------------------------------------------------------------------
    def bump(self, backend_id: str, **deltas: int) -> None:
        snap = self._get(backend_id)
        changes = {k: getattr(snap, k) + v for k, v in deltas.items()}
        self._backends[backend_id] = dataclasses.replace(snap, **changes)

    def put(self, backend_id: str, **fields: object) -> None:
        self._backends[backend_id] = dataclasses.replace(self._get(backend_id), **fields)  # type: ignore[arg-type]

    def insert_raw(self, snap: BackendSnapshot) -> None:
        """Insert a snapshot bypassing validation (e.g. hostile host names)."""
        self._backends[snap.id] = snap

    # -- ProxyControl -------------------------------------------------------------------
    def settings(self) -> ProxySettings:
        return self._settings

    def listener(self) -> ListenerInfo:
        return ListenerInfo(
            mode="http",
            listen_host="127.0.0.1",
            listen_port=8080,
            backlog=1024,
            workers=1,
            load_from="config",
            store=None,
            tls=False,
            backend_tls=False,
            data_plane="fast lane (native)",
            config_path=None,
        )

    def update_settings(self, **changes: object) -> ProxySettings:
        fields = {f.name for f in dataclasses.fields(ProxySettings)}
        for key, value in changes.items():
            if key not in fields:
                raise ControlError("unknown_setting", f"unknown setting {key!r}")
            if key == "algorithm" and value not in get_args(Algorithm):
                raise ControlError("invalid_setting", f"unknown algorithm {value!r}")
            if key == "selection_mode" and value not in get_args(SelectionMode):
                raise ControlError("invalid_setting", f"unknown selection mode {value!r}")
            if key == "retry_limit" and (not isinstance(value, int) or value > 10):
                raise ControlError("invalid_setting", "retry_limit must be at most 10")
        fresh = dataclasses.replace(self._settings, **changes)  # type: ignore[arg-type]
        self._settings = validate_settings(fresh)  # (ranges: the data plane's own checks)
        return self._settings

    def backends(self) -> list[BackendSnapshot]:
        return list(self._backends.values())

    def totals(self) -> TotalsSnapshot:
        bs = tuple(self._backends.values())
        return TotalsSnapshot(
            started_at=self.started_at,
            active_conns=sum(b.active_conns for b in bs),
            total_conns=sum(b.total_conns for b in bs),
            requests=sum(b.requests for b in bs),
            bytes_in=sum(b.bytes_in for b in bs),
            bytes_out=sum(b.bytes_out for b in bs),
            errors=self.errors + sum(b.connect_errors + b.response_errors for b in bs),
            backends=bs,
        )

    def add_backend(self, spec: BackendSpec) -> BackendSnapshot:
        if spec.id in self._backends:
            raise ControlError("backend_exists", f"backend {spec.id} already exists")
        snap = BackendSnapshot(
            id=spec.id,
            host=spec.host,
            port=spec.port,
            weight=spec.weight,
            max_conns=spec.max_conns,
            state="up",
            state_since=self.clock(),
        )
        self._backends[spec.id] = snap
        return snap

    def _get(self, backend_id: str) -> BackendSnapshot:
        try:
            return self._backends[backend_id]
        except KeyError:
            raise ControlError("unknown_backend", f"no backend {backend_id!r}") from None

    def _set_state(self, backend_id: str, state: BackendState) -> BackendSnapshot:
        snap = dataclasses.replace(self._get(backend_id), state=state, state_since=self.clock())
        self._backends[backend_id] = snap
        return snap

    def remove_backend(self, backend_id: str) -> None:
        self._get(backend_id)
        del self._backends[backend_id]

    def enable_backend(self, backend_id: str) -> BackendSnapshot:
        return self._set_state(backend_id, "up")

    def disable_backend(self, backend_id: str) -> BackendSnapshot:
        return self._set_state(backend_id, "disabled")

    def drain_backend(self, backend_id: str) -> BackendSnapshot:
        return self._set_state(backend_id, "draining")

    def set_weight(self, backend_id: str, weight: int) -> BackendSnapshot:
        if weight < 1:
            raise ControlError("invalid_weight", "weight must be at least 1")
        snap = dataclasses.replace(self._get(backend_id), weight=weight)
        self._backends[backend_id] = snap
        return snap

    async def reload(self) -> None:
        if self.reload_error is not None:
            raise self.reload_error
        self.reloads += 1


def _check_protocol(fake: FakeControl) -> ProxyControl:
    return fake  # mypy: FakeControl satisfies ProxyControl


TOKEN = "s3cret-admin-token"


@contextlib.asynccontextmanager
async def admin_client(
    control: FakeControl, store: StatsStore | None = None, **kwargs: Any
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A test client for the admin app on 127.0.0.1, port 0."""
    kwargs.setdefault("clock", control.clock)
    app = create_admin_app(control, TOKEN, store, **kwargs)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield client


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
