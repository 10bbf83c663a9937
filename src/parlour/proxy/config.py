"""Proxy configuration: a TOML file, then CLI flags on top, into one typed object.

```toml
[proxy]        # listener and process settings (restart to change)
[tls]          # TLS on the listener: cert, key, min_version, [[tls.sni]] certificates
[backend_tls]  # TLS to the backends: verify, ca_file, server_name, cert, key
[admin]        # admin API / dashboard listener (tls_cert / tls_key for HTTPS)
[settings]     # live settings: the fields of ProxySettings
[[backends]]   # host, port, weight, max_conns
```
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from parlour.proxy.balancing import ALGORITHMS
from parlour.proxy.control import BackendSpec, ControlError, ProxySettings
from parlour.proxy.tls import BackendTls, CertSpec, TlsConfig

__all__ = [
    "ConfigError",
    "ProxyConfig",
    "apply_setting_changes",
    "load_config",
    "parse_backend",
    "validate_settings",
]

Mode = Literal["http", "tcp"]


class ConfigError(Exception):
    """The configuration file or a flag is invalid."""


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    mode: Mode = "http"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    backlog: int = 1024
    workers: int = 1
    load_from: Literal["previous", "config"] = "config"
    store: str | None = None  # SQLite path; None = no persistence
    proxy_protocol: Literal["", "v1", "v2"] = ""
    max_header_bytes: int = 16384
    max_queue: int = 1024
    max_idle_upstream: int = 64  # pooled idle connections per backend
    fast_lane: bool = True  # the native data plane for plain requests (http mode, if built)
    admin_host: str = "127.0.0.1"
    admin_port: int | None = 9090  # None = no admin listener
    admin_token: str | None = None
    metrics_public: bool = False  # /metrics without the token
    admin_tls_cert: str | None = None  # HTTPS for the admin listener (with admin_tls_key)
    admin_tls_key: str | None = None
    tls: TlsConfig | None = None  # TLS termination on the listener
    backend_tls: BackendTls | None = None  # TLS on connections to backends
    settings: ProxySettings = field(default_factory=ProxySettings)
    backends: tuple[BackendSpec, ...] = ()
    path: str | None = None  # the file it came from (for reload)
    # what the command line set (field or setting names, "backends" for -b): it wins over
    # the previous run's state with load_from = "previous"
    explicit: frozenset[str] = frozenset()


def parse_backend(text: str) -> BackendSpec:
    """`host:port[:weight[:max_conns]]`"""
    parts = text.rsplit(":", 3) if text.count(":") <= 3 else [text]
    try:
        host, port = parts[0], int(parts[1])
        weight = int(parts[2]) if len(parts) > 2 else 1
        max_conns = int(parts[3]) if len(parts) > 3 else 0
    except (IndexError, ValueError):
        raise ConfigError(
            f"bad backend {text!r}: expected host:port[:weight[:max_conns]]"
        ) from None
    return _check_backend(BackendSpec(host, port, weight, max_conns))


def _check_backend(spec: BackendSpec) -> BackendSpec:
    if not spec.host or not 0 < spec.port < 65536:
        raise ConfigError(f"bad backend address {spec.host!r}:{spec.port}")
    if not 1 <= spec.weight <= 1000 or spec.max_conns < 0:
        raise ConfigError(f"bad weight/max_conns for backend {spec.id}")
    return spec


_SETTING_TYPES: dict[str, type] = {
    f.name: (
        float
        if f.type in ("float", float)
        else int
        if f.type in ("int", int)
        else bool
        if f.type in ("bool", bool)
        else object
    )
    for f in dataclasses.fields(ProxySettings)
}


def validate_settings(s: ProxySettings) -> ProxySettings:
    def bad(msg: str) -> ControlError:
        return ControlError("invalid", msg)

    if s.algorithm not in ALGORITHMS:
        raise bad(f"unknown algorithm {s.algorithm!r}; one of {', '.join(ALGORITHMS)}")
    if s.selection_mode not in ("per_connection", "interval"):
        raise bad("selection_mode must be per_connection or interval")
    if s.health_kind not in ("tcp", "http"):
        raise bad("health_kind must be tcp or http")
    for name in (
        "interval_s",
        "connect_timeout_s",
        "client_timeout_s",
        "server_timeout_s",
        "tunnel_timeout_s",
        "idle_timeout_s",
        "queue_timeout_s",
        "health_interval_s",
        "health_timeout_s",
    ):
        value = getattr(s, name)
        if not isinstance(value, int | float) or not 0 < value <= 86400:
            raise bad(f"{name} must be a number of seconds in (0, 86400]")
    if not 0 <= s.retry_limit <= 10:
        raise bad("retry_limit must be between 0 and 10")
    if not 1024 <= s.buffer_size <= 16 * 1024 * 1024:
        raise bad("buffer_size must be between 1024 and 16777216")
    if not 1 <= s.health_rise <= 100 or not 1 <= s.health_fall <= 100:
        raise bad("health_rise and health_fall must be between 1 and 100")
    if not 100 <= s.health_expect_status <= 599:
        raise bad("health_expect_status must be an HTTP status")
    if not s.health_path.startswith("/"):
        raise bad("health_path must start with /")
    if not 1 <= s.max_connections <= 1_000_000:
        raise bad("max_connections must be between 1 and 1000000")
    if (
        not s.hash_header
        or len(s.hash_header) > 127
        or not s.hash_header.isascii()
        or not s.hash_header.replace("-", "").isalnum()
    ):
        raise bad("hash_header must be a header name (letters, digits, -; at most 127)")
    return s


def apply_setting_changes(current: ProxySettings, changes: Mapping[str, object]) -> ProxySettings:
    """Validated copy of `current` with `changes`; ints are accepted for float fields."""
    clean: dict[str, object] = {}
    for key, value in changes.items():
        kind = _SETTING_TYPES.get(key)
        if kind is None:
            raise ControlError("invalid", f"unknown setting {key!r}")
        if kind is bool:
            if not isinstance(value, bool):
                raise ControlError("invalid", f"{key} must be true or false")
        elif isinstance(value, bool):
            raise ControlError("invalid", f"{key} must not be a boolean")
        elif kind is float:
            if not isinstance(value, int | float):
                raise ControlError("invalid", f"{key} must be a number")
            value = float(value)
        elif kind is int and not isinstance(value, int):
            raise ControlError("invalid", f"{key} must be an integer")
        elif kind is object and not isinstance(value, str):
            raise ControlError("invalid", f"{key} must be a string")
        clean[key] = value
    return validate_settings(dataclasses.replace(current, **clean))  # type: ignore[arg-type]


_PROXY_KEYS = {
    "mode",
    "listen_host",
    "listen_port",
    "backlog",
    "workers",
    "load_from",
    "store",
    "proxy_protocol",
    "max_header_bytes",
    "max_queue",
    "max_idle_upstream",
    "fast_lane",
}
_ADMIN_KEYS = {
    "host": "admin_host",
    "port": "admin_port",
    "token": "admin_token",
    "metrics_public": "metrics_public",
    "tls_cert": "admin_tls_cert",
    "tls_key": "admin_tls_key",
}
_TLS_KEYS = {"cert", "key", "min_version", "sni"}
_SNI_KEYS = {"cert", "key", "names"}
_BACKEND_TLS_KEYS = {"enabled", "verify", "ca_file", "server_name", "cert", "key", "min_version"}
# command-line flags that build [tls] / [backend_tls] (see `load_config`)
_TLS_FLAGS = {"tls_cert", "tls_key", "tls_min_version"}
_BACKEND_TLS_FLAGS = {"backend_tls", "backend_ca", "backend_verify"}


def _table(data: Mapping[str, object], name: str) -> Mapping[str, object]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def _string(table: str, key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"[{table}] {key} must be a non-empty string")
    return value


def _version(table: str, value: object) -> Literal["1.2", "1.3"]:
    if value not in ("1.2", "1.3"):
        raise ConfigError(f'[{table}] min_version must be "1.2" or "1.3"')
    return "1.2" if value == "1.2" else "1.3"


def _parse_tls(raw: Mapping[str, object]) -> TlsConfig | None:
    unknown = set(raw) - _TLS_KEYS
    if unknown:
        raise ConfigError(f"unknown key [tls] {', '.join(sorted(unknown))}")
    if not raw:
        return None
    if "cert" not in raw or "key" not in raw:
        raise ConfigError("[tls] needs cert and key (the default certificate)")
    sni: list[CertSpec] = []
    items = raw.get("sni", [])
    if not isinstance(items, list):
        raise ConfigError("[tls] sni must be an array of tables ([[tls.sni]])")
    for item in items:
        if not isinstance(item, dict) or set(item) - _SNI_KEYS or not {"cert", "key"} <= set(item):
            raise ConfigError(f"bad [[tls.sni]] entry {item!r}: cert, key and optional names")
        names = item.get("names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError("[[tls.sni]] names must be a list of server names")
        sni.append(
            CertSpec(
                _string("tls.sni", "cert", item["cert"]),
                _string("tls.sni", "key", item["key"]),
                tuple(names),
            )
        )
    return TlsConfig(
        CertSpec(_string("tls", "cert", raw["cert"]), _string("tls", "key", raw["key"])),
        tuple(sni),
        _version("tls", raw.get("min_version", "1.2")),
    )


def _parse_backend_tls(raw: Mapping[str, object]) -> BackendTls | None:
    unknown = set(raw) - _BACKEND_TLS_KEYS
    if unknown:
        raise ConfigError(f"unknown key [backend_tls] {', '.join(sorted(unknown))}")
    if not raw or raw.get("enabled", True) is False:
        return None
    for flag in ("enabled", "verify"):
        if not isinstance(raw.get(flag, True), bool):
            raise ConfigError(f"[backend_tls] {flag} must be true or false")
    opt: dict[str, str | None] = {}
    for key in ("ca_file", "server_name", "cert", "key"):
        opt[key] = _string("backend_tls", key, raw[key]) if key in raw else None
    if bool(opt["cert"]) != bool(opt["key"]):
        raise ConfigError("[backend_tls] cert and key go together")
    verify = bool(raw.get("verify", True))
    if not verify and opt["ca_file"]:
        raise ConfigError("[backend_tls] ca_file is for verify = true")
    return BackendTls(
        verify=verify,
        ca_file=opt["ca_file"],
        server_name=opt["server_name"],
        cert=opt["cert"],
        key=opt["key"],
        min_version=_version("backend_tls", raw.get("min_version", "1.2")),
    )


def _tls_flags(current: TlsConfig | None, flags: Mapping[str, object]) -> TlsConfig | None:
    """--tls-cert/--tls-key replace the default certificate of [tls] (or make one)."""
    cert, key, version = flags.get("tls_cert"), flags.get("tls_key"), flags.get("tls_min_version")
    if cert is None and key is None:
        if version is not None and current is not None:
            return dataclasses.replace(current, min_version=_version("tls", version))
        if version is not None:
            raise ConfigError("--tls-min-version needs --tls-cert and --tls-key")
        return current
    if cert is None or key is None:
        raise ConfigError("--tls-cert and --tls-key go together")
    default = CertSpec(_string("tls", "cert", cert), _string("tls", "key", key))
    base = current or TlsConfig(default)
    return dataclasses.replace(
        base,
        default=default,
        min_version=_version("tls", version) if version is not None else base.min_version,
    )


def _backend_tls_flags(
    current: BackendTls | None, flags: Mapping[str, object]
) -> BackendTls | None:
    """--backend-tls/--no-backend-tls, --backend-ca FILE, --backend-no-verify."""
    enabled, ca, verify = (flags.get(k) for k in ("backend_tls", "backend_ca", "backend_verify"))
    if enabled is False:
        return None
    if enabled is None and ca is None and verify is None:
        return current
    if verify is False and ca is not None:
        raise ConfigError("--backend-ca and --backend-no-verify contradict each other")
    base = current or BackendTls()
    if ca is not None:
        base = dataclasses.replace(base, verify=True, ca_file=_string("backend_tls", "ca_file", ca))
    if verify is False:  # (the flag wins over the file's ca_file)
        base = dataclasses.replace(base, verify=False, ca_file=None)
    return base


def load_config(path: str | Path | None, **overrides: object) -> ProxyConfig:
    """Read `path` (if given) and apply overrides: ProxyConfig fields, or ProxySettings
    fields (routed into `settings`), or `backends` (a list of BackendSpec), or the TLS
    flags (`tls_cert`, `tls_key`, `tls_min_version`, `backend_tls`, `backend_ca`,
    `backend_verify`)."""
    data: dict[str, object] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
    unknown = set(data) - {"proxy", "admin", "settings", "backends", "tls", "backend_tls"}
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(sorted(unknown))}")
    fields: dict[str, object] = {}
    proxy = _table(data, "proxy")
    for key, value in proxy.items():
        if key not in _PROXY_KEYS:
            raise ConfigError(f"unknown key [proxy] {key}")
        fields[key] = value
    for key, value in _table(data, "admin").items():
        if key not in _ADMIN_KEYS:
            raise ConfigError(f"unknown key [admin] {key}")
        fields[_ADMIN_KEYS[key]] = value
    setting_changes: dict[str, object] = dict(_table(data, "settings"))
    raw_backends = data.get("backends", [])
    if not isinstance(raw_backends, list):
        raise ConfigError("backends must be an array of tables ([[backends]])")
    backends: list[BackendSpec] = []
    for item in raw_backends:
        if not isinstance(item, dict) or set(item) - {"host", "port", "weight", "max_conns"}:
            raise ConfigError(f"bad [[backends]] entry {item!r}")
        try:
            spec = BackendSpec(
                str(item["host"]),
                int(item["port"]),
                int(item.get("weight", 1)),
                int(item.get("max_conns", 0)),
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"bad [[backends]] entry {item!r}") from None
        backends.append(_check_backend(spec))
    explicit = frozenset(
        k for k, v in overrides.items() if v is not None and (k != "backends" or v)
    )
    flags = {k: overrides.pop(k) for k in list(overrides) if k in _TLS_FLAGS | _BACKEND_TLS_FLAGS}
    flags = {k: v for k, v in flags.items() if v is not None}
    fields["tls"] = _tls_flags(_parse_tls(_table(data, "tls")), flags)
    fields["backend_tls"] = _backend_tls_flags(
        _parse_backend_tls(_table(data, "backend_tls")), flags
    )
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "backends":
            assert isinstance(value, list | tuple)
            if value:
                backends = list(value)
        elif key in _SETTING_TYPES:
            setting_changes[key] = value
        else:
            fields[key] = value
    try:
        settings = apply_setting_changes(ProxySettings(), setting_changes)
    except ControlError as exc:
        raise ConfigError(f"[settings] {exc.message}") from None
    ids = [b.id for b in backends]
    if len(ids) != len(set(ids)):
        raise ConfigError("duplicate backend in the list")
    try:
        cfg = ProxyConfig(
            settings=settings,
            backends=tuple(backends),
            path=str(path) if path is not None else None,
            explicit=explicit,
            **fields,  # type: ignore[arg-type]
        )
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
    return _check(cfg)


def _check(cfg: ProxyConfig) -> ProxyConfig:
    if cfg.mode not in get_args(Mode):
        raise ConfigError("mode must be http or tcp")
    if cfg.load_from not in ("previous", "config"):
        raise ConfigError("load_from must be previous or config")
    if cfg.proxy_protocol not in ("", "v1", "v2"):
        raise ConfigError('proxy_protocol must be "", "v1" or "v2"')
    if cfg.proxy_protocol and cfg.mode != "tcp":
        raise ConfigError("proxy_protocol is supported in tcp mode only")
    for name in ("listen_port", "backlog", "workers", "max_header_bytes", "max_queue"):
        if not isinstance(getattr(cfg, name), int):
            raise ConfigError(f"{name} must be an integer")
    if not isinstance(cfg.fast_lane, bool):
        raise ConfigError("fast_lane must be true or false")
    if not 0 <= cfg.listen_port < 65536:
        raise ConfigError("listen_port must be 0..65535")
    if cfg.admin_port is not None and not 0 <= cfg.admin_port < 65536:
        raise ConfigError("admin port must be 0..65535")
    if not 1 <= cfg.workers <= 64:
        raise ConfigError("workers must be between 1 and 64")
    if not 1 <= cfg.backlog <= 65535:
        raise ConfigError("backlog must be between 1 and 65535")
    if not 1024 <= cfg.max_header_bytes <= 1024 * 1024:
        raise ConfigError("max_header_bytes must be between 1024 and 1048576")
    if not 0 <= cfg.max_queue <= 100_000:
        raise ConfigError("max_queue must be between 0 and 100000")
    if bool(cfg.admin_tls_cert) != bool(cfg.admin_tls_key):
        raise ConfigError("[admin] tls_cert and tls_key go together")
    for name in ("admin_tls_cert", "admin_tls_key"):
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"[admin] {name.removeprefix('admin_')} must be a file name")
    return cfg
