"""The contract between the proxy's data plane and its control plane.

The data plane (listeners, balancing, health checks, relays) implements `ProxyControl`.
The control plane (admin HTTP API, dashboard, Prometheus/JSON stats) only talks to the
proxy through this protocol, so either side can change without touching the other.
Statistics persistence (`StatsStore`) is owned by the control-plane side and used by the
data plane to load backends/settings at start and to persist counters periodically.

All methods are called on the event loop thread. Mutating methods apply live, without
dropping established connections, and raise `ControlError` for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "LISTENER_KEYS",
    "Algorithm",
    "BackendSnapshot",
    "BackendSpec",
    "BackendState",
    "ControlError",
    "ListenerInfo",
    "ProxyControl",
    "ProxySettings",
    "SelectionMode",
    "TotalsSnapshot",
]

Algorithm = Literal[
    "round_robin",
    "weighted_round_robin",
    "least_conn",
    "random",
    "p2c",
    "ip_hash",
    "uri_hash",
    "header_hash",
]
SelectionMode = Literal["per_connection", "interval"]
# up: healthy, gets traffic; down: failed health checks; disabled: operator took it out;
# draining: finishes existing connections, takes no new ones; checking: added while the
# proxy runs, no traffic until its first health check passes.
BackendState = Literal["up", "down", "disabled", "draining", "checking"]


class ControlError(Exception):
    """Bad request to the control API (unknown backend, invalid value ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class BackendSpec:
    host: str
    port: int
    weight: int = 1
    max_conns: int = 0  # 0 = unlimited

    @property
    def id(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """Settings changeable live. Listener host/port/backlog/workers need a restart."""

    algorithm: Algorithm = "round_robin"
    selection_mode: SelectionMode = "per_connection"
    interval_s: float = 10.0
    hash_header: str = "X-User"
    retry_limit: int = 2
    buffer_size: int = 65536
    connect_timeout_s: float = 3.0
    client_timeout_s: float = 30.0
    server_timeout_s: float = 30.0
    tunnel_timeout_s: float = 3600.0
    idle_timeout_s: float = 60.0
    queue_timeout_s: float = 5.0
    health_kind: Literal["tcp", "http"] = "tcp"
    health_path: str = "/"
    health_expect_status: int = 200
    health_interval_s: float = 2.0
    health_timeout_s: float = 1.0
    health_rise: int = 2
    health_fall: int = 3
    max_connections: int = 10000
    trust_forwarded: bool = False
    hide_server_header: bool = False  # leave the backends' Server field out of responses


@dataclass(frozen=True, slots=True)
class BackendSnapshot:
    """Everything the dashboard and stats endpoints show for one backend."""

    id: str
    host: str
    port: int
    weight: int
    max_conns: int
    state: BackendState
    active_conns: int = 0
    total_conns: int = 0
    requests: int = 0
    bytes_in: int = 0  # from backend to proxy
    bytes_out: int = 0  # from proxy to backend
    connect_errors: int = 0
    response_errors: int = 0
    retries: int = 0
    queued: int = 0
    state_since: float = 0.0  # unix time of last state change ("air time" = now - this if up)
    total_up_s: float = 0.0
    last_connected: float | None = None
    last_crashed: float | None = None
    last_crash_reason: str | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass(frozen=True, slots=True)
class ListenerInfo:
    """How the proxy listens and runs: fixed for the life of the process (the config file
    or the command line says; a restart changes them). Shown read-only by the dashboard."""

    mode: Literal["http", "tcp"]
    listen_host: str
    listen_port: int
    backlog: int
    workers: int
    load_from: Literal["previous", "config"]
    store: str | None
    tls: bool  # TLS on the listener
    backend_tls: bool  # TLS to backends
    data_plane: str  # "fast lane" or "python relay (why)"
    config_path: str | None


# keys of ListenerInfo that are configuration (a settings change naming one is refused
# with "restart_required" rather than "unknown setting")
LISTENER_KEYS = frozenset(
    {"mode", "listen_host", "listen_port", "backlog", "workers", "load_from", "store"}
)


@dataclass(frozen=True, slots=True)
class TotalsSnapshot:
    started_at: float
    active_conns: int
    total_conns: int
    requests: int
    bytes_in: int
    bytes_out: int
    errors: int
    backends: tuple[BackendSnapshot, ...] = field(default_factory=tuple)


class ProxyControl(Protocol):
    def settings(self) -> ProxySettings: ...
    def listener(self) -> ListenerInfo: ...
    def update_settings(self, **changes: object) -> ProxySettings: ...
    def backends(self) -> list[BackendSnapshot]: ...
    def totals(self) -> TotalsSnapshot: ...
    def add_backend(self, spec: BackendSpec) -> BackendSnapshot: ...
    def remove_backend(self, backend_id: str) -> None: ...
    def enable_backend(self, backend_id: str) -> BackendSnapshot: ...
    def disable_backend(self, backend_id: str) -> BackendSnapshot: ...
    def drain_backend(self, backend_id: str) -> BackendSnapshot: ...
    def set_weight(self, backend_id: str, weight: int) -> BackendSnapshot: ...
    async def reload(self) -> None:
        """Re-read the configuration file (same as SIGHUP)."""
        ...
