"""Server settings: one typed, frozen object built from defaults, a TOML file, env vars and flags.

Precedence (highest first): command-line flags > ``PARLOUR_*`` environment variables > the TOML
file given with ``--config`` > built-in defaults. Every setting is listed in ``SETTINGS`` with its
TOML key, environment variable, flag and default; ``docs/configuration.md`` is the reference.

The admin password is never part of the file or the flags: it is read from
``PARLOUR_ADMIN_PASSWORD`` only and kept out of ``repr``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from parlour.protocol.names import InvalidName, name_key, normalize_name

__all__ = [
    "ADMIN_PASSWORD_ENV",
    "SECRET_KEY_ENV",
    "SETTINGS",
    "ConfigError",
    "SettingSpec",
    "Settings",
    "describe",
    "env_var",
    "load_settings",
    "replace",
]

ADMIN_PASSWORD_ENV = "PARLOUR_ADMIN_PASSWORD"
#: the key file tokens are signed with: every node of a cluster needs the same one
SECRET_KEY_ENV = "PARLOUR_SECRET_KEY"
#: shortest `secret_key` accepted (characters)
MIN_SECRET_KEY = 16
ENV_PREFIX = "PARLOUR_"

#: "sqlite", "memory", or a PostgreSQL DSN (``postgresql://…``: several nodes)
StoreKind = str
LogFormat = Literal["text", "json"]
DuplicateLogin = Literal["replace", "reject", "allow"]


class ConfigError(ValueError):
    """A setting is missing, unknown, of the wrong type or out of range. The message says which."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `parlour serve` can be told. Immutable; build it with :func:`load_settings`."""

    host: str = "127.0.0.1"
    port: int = 7878
    data_dir: Path = Path("data")
    store: StoreKind = "sqlite"
    sqlite_synchronous: Literal["full", "normal"] = "full"
    bus: str = "memory"
    bus_prefix: str = "parlour"
    node_name: str | None = None
    pg_pool: int = 10
    tls_cert: Path | None = None
    tls_key: Path | None = None
    proxy_port: int | None = None
    trusted_proxies: tuple[str, ...] = ()
    web: bool = True
    web_host: str | None = None
    web_port: int | None = None
    public_url: str | None = None
    max_frame: int = 65536
    max_message: int = 4000
    min_password: int = 8
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    rate: float = 20.0
    burst: int = 10
    read_rate: float = 20.0
    read_burst: int = 40
    max_connections: int = 10000
    max_connections_per_address: int = 256
    idle_timeout: float = 90.0
    login_timeout: float = 30.0
    abuse_cooldown: float = 10.0
    heartbeat: float = 30.0
    send_queue_max: int = 1 << 20
    history_on_join: int = 50
    lockout_attempts: int = 3
    lockout_seconds: float = 60.0
    address_lockout_attempts: int = 20
    account_lockout_attempts: int = 50
    password_queue: int = 256
    duplicate_login: DuplicateLogin = "allow"
    broadcast: Literal["admins", "everyone"] = "admins"
    log_message_text: bool = False
    presence_window: float = 3600.0
    session_token_ttl: float = 30 * 86400.0
    default_rooms: tuple[str, ...] = ("general", "random", "help")
    log_level: str = "INFO"
    log_format: LogFormat = "text"
    p2p: bool = True
    p2p_offer_ttl: float = 600.0
    p2p_offers_per_user: int = 20
    p2p_max_offers: int = 10000
    p2p_relay: bool = True
    p2p_relay_host: str | None = None
    p2p_relay_port: int = 0
    p2p_relay_public_host: str | None = None
    p2p_relay_rate: float = 4_000_000.0
    p2p_relay_total_rate: float = 50_000_000.0
    p2p_relay_max_transfers: int = 1024
    uploads: bool = True
    files_dir: Path | None = None
    max_file_size: int = 100 * 1024 * 1024
    user_quota: int = 1024 * 1024 * 1024
    max_concurrent_uploads: int = 4
    upload_expiry: float = 86400.0
    admin_password: str | None = field(default=None, repr=False)
    #: signs the files endpoints' tokens (PARLOUR_SECRET_KEY only; the same on every node)
    secret_key: str | None = field(default=None, repr=False)

    @property
    def files_path(self) -> Path:
        """Where uploaded files are kept: ``files_dir``, else ``data_dir/files``."""
        return self.files_dir if self.files_dir is not None else self.data_dir / "files"

    @property
    def postgres(self) -> bool:
        """The store is PostgreSQL (several nodes may share it)."""
        return is_postgres(self.store)

    @property
    def redis(self) -> bool:
        """The bus is Redis (several nodes)."""
        return is_redis(self.bus)

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    @property
    def web_listen_host(self) -> str:
        """The web listener's address: ``web_host``, or ``host`` when unset."""
        return self.web_host if self.web_host is not None else self.host

    @property
    def web_listen_port(self) -> int:
        """The web listener's port: ``web_port``, or the chat port + 1 when unset (a free
        port when the chat port is 0)."""
        if self.web_port is not None:
            return self.web_port
        return self.port + 1 if self.port else 0


# --------------------------------------------------------------------------------------------
# the table of settings (drives parsing, env vars, flags and the docs)


@dataclass(frozen=True, slots=True)
class SettingSpec:
    name: str
    kind: str  # "str" "int" "float" "bool" "path" "optional_path" "optional_str"
    # "optional_int" "rooms" "networks" "choice" "store" or "bus"
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    flag: bool = True

    @property
    def env(self) -> str:
        return env_var(self.name)

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("host", "str", "Address to listen on (use 0.0.0.0 or :: to listen on all)."),
    SettingSpec("port", "int", "TCP port for the chat protocol (0 picks a free one).", minimum=0),
    SettingSpec("data_dir", "path", "Directory holding the SQLite database."),
    SettingSpec(
        "store",
        "store",
        "Storage backend: sqlite, memory, or postgresql://user@host/db (several nodes).",
    ),
    SettingSpec(
        "bus",
        "bus",
        "Fan-out between nodes: memory (one node), or redis://host:6379/0 (several nodes).",
    ),
    SettingSpec(
        "bus_prefix",
        "str",
        "Prefix of this deployment's Redis keys and channel (several deployments, one Redis).",
    ),
    SettingSpec(
        "node_name",
        "optional_str",
        "This node's name in logs and in the node registry (default: the host name).",
    ),
    SettingSpec("pg_pool", "int", "Connections to PostgreSQL per node.", minimum=2),
    SettingSpec(
        "sqlite_synchronous",
        "choice",
        "SQLite durability: full survives power loss, normal only process crashes.",
        choices=("full", "normal"),
    ),
    SettingSpec("tls_cert", "optional_path", "PEM certificate chain; enables TLS."),
    SettingSpec("tls_key", "optional_path", "PEM private key for --tls-cert."),
    SettingSpec(
        "proxy_port",
        "optional_int",
        "A second chat port for a proxy that sends the PROXY protocol (v1/v2): every "
        "connection must begin with its header, and only trusted_proxies may connect.",
        minimum=0,
    ),
    SettingSpec(
        "trusted_proxies",
        "networks",
        "Proxies believed about the client's address (comma-separated addresses or CIDR "
        "blocks): PROXY headers on proxy_port, X-Forwarded-For on the web listener.",
    ),
    SettingSpec("web", "bool", "Serve the web client and the WebSocket door (true/false)."),
    SettingSpec("web_host", "optional_str", "Address of the web listener (default: host)."),
    SettingSpec(
        "web_port",
        "optional_int",
        "Port of the web listener (default: port + 1; 0 picks a free one).",
        minimum=0,
    ),
    SettingSpec(
        "public_url",
        "optional_str",
        "URL users open the web client at (https://chat.example.org); WebSocket Origin check.",
    ),
    SettingSpec("max_frame", "int", "Largest accepted frame in bytes.", minimum=256),
    SettingSpec("max_message", "int", "Longest message text in characters.", minimum=1),
    SettingSpec("min_password", "int", "Minimum password length.", minimum=1),
    SettingSpec(
        "argon2_time_cost", "int", "Argon2id passes per hash (lower only for tests).", minimum=1
    ),
    SettingSpec(
        "argon2_memory_kib",
        "int",
        "Argon2id memory per hash in KiB (lower only for tests).",
        minimum=32,
    ),
    SettingSpec(
        "rate",
        "float",
        "Messages per second per connection (send, dm, edit, delete, broadcast).",
        minimum=0.001,
    ),
    SettingSpec("burst", "int", "Token-bucket burst above the sustained rate.", minimum=1),
    SettingSpec(
        "read_rate",
        "float",
        "Read requests per second per connection (history, since, join, who...).",
        minimum=0.001,
    ),
    SettingSpec("read_burst", "int", "Token-bucket burst of read requests.", minimum=1),
    SettingSpec("max_connections", "int", "Connections beyond this get server_full.", minimum=1),
    SettingSpec(
        "max_connections_per_address",
        "int",
        "Connections from one address beyond this get server_full (0: no limit).",
        minimum=0,
    ),
    SettingSpec("idle_timeout", "float", "Close connections silent this long (s).", minimum=1),
    SettingSpec(
        "login_timeout", "float", "Close connections not logged in this long (s).", minimum=1
    ),
    SettingSpec(
        "abuse_cooldown",
        "float",
        "Seconds an address closed for too many invalid inputs may not reconnect (0: off).",
        minimum=0,
    ),
    SettingSpec(
        "heartbeat",
        "float",
        "Ping interval clients are told to keep (hello heartbeat_s).",
        minimum=1,
    ),
    SettingSpec("send_queue_max", "int", "Bytes queued for a client before cut-off.", minimum=1024),
    SettingSpec("history_on_join", "int", "Messages returned when joining a room.", minimum=0),
    SettingSpec("lockout_attempts", "int", "Failed logins before a lockout.", minimum=1),
    SettingSpec("lockout_seconds", "float", "How long a lockout lasts (s).", minimum=0),
    SettingSpec(
        "address_lockout_attempts",
        "int",
        "Failed logins from one address (any names) before it is locked out.",
        minimum=1,
    ),
    SettingSpec(
        "account_lockout_attempts",
        "int",
        "Failed logins of one account (any addresses) before it counts as under attack.",
        minimum=1,
    ),
    SettingSpec(
        "password_queue", "int", "Password hashes that may wait for the Argon2 pool.", minimum=1
    ),
    SettingSpec(
        "duplicate_login",
        "choice",
        "Second login of a live user: replace the old session, reject, or allow both.",
        choices=("replace", "reject", "allow"),
    ),
    SettingSpec(
        "broadcast",
        "choice",
        "Who may broadcast to every user: admins or everyone.",
        choices=("admins", "everyone"),
    ),
    SettingSpec("presence_window", "float", "Window of `who` with recent=true (s).", minimum=1),
    SettingSpec(
        "session_token_ttl",
        "float",
        "Lifetime of the session tokens logins hand out (s; 0: none).",
        minimum=0,
    ),
    SettingSpec("default_rooms", "rooms", "Rooms created on first start (comma-separated)."),
    SettingSpec(
        "log_level",
        "choice",
        "Logging level.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
    SettingSpec("log_format", "choice", "Log line format.", choices=("text", "json")),
    SettingSpec(
        "log_message_text",
        "bool",
        "Log the text of every message (sender, target and size are logged anyway).",
    ),
    SettingSpec("p2p", "bool", "Let users offer each other files (sent directly, over UDP)."),
    SettingSpec("p2p_offer_ttl", "float", "How long a file offer stays open (s).", minimum=1),
    SettingSpec(
        "p2p_offers_per_user", "int", "Open file offers one user may have made.", minimum=1
    ),
    SettingSpec("p2p_max_offers", "int", "Open file offers on this server.", minimum=1),
    SettingSpec(
        "uploads",
        "bool",
        "Files in chat: take tus uploads at /files/uploads on the web listener (true/false).",
    ),
    SettingSpec(
        "files_dir",
        "optional_path",
        "Where uploaded files are kept (default: data_dir/files); several nodes share one.",
    ),
    SettingSpec("max_file_size", "int", "Largest file one upload may be (bytes).", minimum=0),
    SettingSpec(
        "user_quota", "int", "Bytes of uploads one user may keep on the server.", minimum=0
    ),
    SettingSpec(
        "max_concurrent_uploads", "int", "Unfinished uploads one user may have.", minimum=1
    ),
    SettingSpec(
        "upload_expiry",
        "float",
        "Seconds after which an abandoned upload (or one no message uses) is removed.",
        minimum=60,
    ),
    SettingSpec(
        "p2p_relay",
        "bool",
        "Run the UDP relay: clients' public addresses, and a fallback path for transfers.",
    ),
    SettingSpec(
        "p2p_relay_host", "optional_str", "Address the UDP relay listens on (default: host)."
    ),
    SettingSpec(
        "p2p_relay_port",
        "int",
        "UDP port of the relay (0: the chat port's number, or a free one if that is taken).",
        minimum=0,
    ),
    SettingSpec(
        "p2p_relay_public_host",
        "optional_str",
        "Address clients are told to reach the relay at (default: the host they connected to).",
    ),
    SettingSpec("p2p_relay_rate", "float", "Relayed bytes per second per transfer.", minimum=1000),
    SettingSpec("p2p_relay_total_rate", "float", "Relayed bytes per second in all.", minimum=1000),
    SettingSpec(
        "p2p_relay_max_transfers", "int", "Transfers the relay carries at once.", minimum=1
    ),
)

_SPECS = {s.name: s for s in SETTINGS}


def is_postgres(store: str) -> bool:
    return store.startswith(("postgresql://", "postgres://"))


def is_redis(bus: str) -> bool:
    return bus.startswith(("redis://", "rediss://", "unix://"))


def redact(url: str) -> str:
    """A DSN or URL without its password (for logs and messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def _convert(spec: SettingSpec, value: object, source: str) -> object:
    """Turn a raw value (str from env/flags, or a TOML value) into the typed setting value."""
    where = f"{spec.name} (from {source})"
    kind = spec.kind
    if kind in ("store", "bus"):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        text = value.strip()
        lowered = text.lower()
        if kind == "store" and (lowered in ("sqlite", "memory") or is_postgres(text)):
            return lowered if lowered in ("sqlite", "memory") else text
        if kind == "bus" and (lowered == "memory" or is_redis(text)):
            return lowered if lowered == "memory" else text
        wanted = "sqlite, memory or postgresql://…" if kind == "store" else "memory or redis://…"
        raise ConfigError(f"{where}: {redact(text)!r} is not one of {wanted}")
    if kind in ("str", "choice"):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        text = value.strip()
        if kind == "choice":
            norm = text.upper() if spec.name == "log_level" else text.lower()
            if norm not in spec.choices:
                raise ConfigError(f"{where}: {value!r} is not one of {', '.join(spec.choices)}")
            return norm
        if not text:
            raise ConfigError(f"{where}: must not be empty")
        return text
    if kind == "optional_str":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value.strip() or None
    if kind == "optional_int" and isinstance(value, str) and not value.strip():
        return None
    if kind in ("int", "optional_int"):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, str):
            try:
                value = int(value.strip().replace("_", ""))
            except ValueError:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return _check_min(spec, value, where)
    if kind == "float":
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return _check_min(spec, float(value), where)
    if kind in ("path", "optional_path"):
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        text = str(value).strip()
        if not text:
            if kind == "optional_path":
                return None
            raise ConfigError(f"{where}: must not be empty")
        return Path(text).expanduser()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind == "networks":
        raw_items: list[object]
        if isinstance(value, str):
            raw_items = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, list | tuple):
            raw_items = list(value)
        else:
            raise ConfigError(f"{where}: expected a list of addresses, got {value!r}")
        found: list[str] = []
        for item in raw_items:
            try:
                net = ipaddress.ip_network(str(item).strip(), strict=False)
            except ValueError:
                raise ConfigError(
                    f"{where}: {item!r} is not an IP address or CIDR block (10.0.0.0/8)"
                ) from None
            found.append(str(net))
        return tuple(found)
    if kind == "rooms":
        items: list[object]
        if isinstance(value, str):
            items = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise ConfigError(f"{where}: expected a list of room names, got {value!r}")
        rooms: list[str] = []
        for item in items:
            if not isinstance(item, str):
                raise ConfigError(f"{where}: bad room name {item!r}")
            try:
                item = normalize_name(item)
            except InvalidName as exc:
                raise ConfigError(f"{where}: bad room name {item!r}: it {exc}") from None
            if name_key(item) in (name_key(r) for r in rooms):
                raise ConfigError(f"{where}: room {item!r} listed twice")
            rooms.append(item)
        return tuple(rooms)
    raise AssertionError(kind)  # pragma: no cover


def _check_min(spec: SettingSpec, value: float, where: str) -> Any:
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{where}: must be at least {spec.minimum:g}, got {value:g}")
    return value


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    # Allow an optional [server] table as well as top-level keys.
    flat: dict[str, object] = {}
    for key, value in data.items():
        if key == "server" and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def load_settings(
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
) -> Settings:
    """Build settings: flags > env > file > defaults. Raises :class:`ConfigError` on bad input.

    ``flags`` holds only the options given on the command line (None values are ignored).
    ``env`` defaults to ``os.environ``; unknown ``PARLOUR_*`` variables are ignored (other
    Parlour parts use the prefix too), unknown TOML keys are an error (likely typos).
    """
    environ = os.environ if env is None else env
    values: dict[str, object] = {}
    if config_file is not None:
        for key, raw in _read_toml(config_file).items():
            spec = _SPECS.get(key)
            if spec is None:
                known = ", ".join(sorted(_SPECS))
                raise ConfigError(f"{config_file}: unknown setting {key!r} (known: {known})")
            values[key] = _convert(spec, raw, str(config_file))
    for spec in SETTINGS:
        raw_env = environ.get(spec.env)
        if raw_env is not None and raw_env != "":
            values[spec.name] = _convert(spec, raw_env, spec.env)
    for key, raw in (flags or {}).items():
        if raw is None:
            continue
        spec = _SPECS.get(key)
        if spec is None:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _convert(spec, raw, spec.option)
    admin = environ.get(ADMIN_PASSWORD_ENV) or None
    secret = environ.get(SECRET_KEY_ENV) or None
    settings = Settings(**values, admin_password=admin, secret_key=secret)  # type: ignore[arg-type]
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if s.port > 65535:
        raise ConfigError(f"port: must be at most 65535, got {s.port}")
    if s.proxy_port is not None and s.proxy_port > 65535:
        raise ConfigError(f"proxy_port: must be at most 65535, got {s.proxy_port}")
    if s.proxy_port is not None and not s.trusted_proxies:
        raise ConfigError(
            "proxy_port needs trusted_proxies: the addresses of the proxies that may connect "
            "to it (127.0.0.1 for a proxy on this machine)"
        )
    if s.proxy_port and s.proxy_port == s.port:
        raise ConfigError(f"proxy_port: {s.proxy_port} is the chat port; pick another")
    if s.web_port is not None and s.web_port > 65535:
        raise ConfigError(f"web_port: must be at most 65535, got {s.web_port}")
    if s.web and s.web_listen_port == s.port and s.port and s.web_listen_host == s.host:
        raise ConfigError(f"web_port: {s.web_port} is the chat port; pick another")
    if s.public_url is not None:
        parts = urlsplit(s.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"public_url: expected an http:// or https:// URL, got {s.public_url!r}"
            )
    if (s.tls_cert is None) != (s.tls_key is None):
        raise ConfigError("tls_cert and tls_key must be given together")
    for name in ("tls_cert", "tls_key"):
        p = getattr(s, name)
        if p is not None and not p.is_file():
            raise ConfigError(f"{name}: file {p} does not exist")
    if s.max_message * 4 + 512 > s.max_frame:
        raise ConfigError(
            f"max_frame ({s.max_frame}) must leave room for a max_message of {s.max_message} "
            f"characters (needs at least {s.max_message * 4 + 512} bytes)"
        )
    if s.send_queue_max < s.max_frame:
        raise ConfigError(
            f"send_queue_max ({s.send_queue_max}) must be at least max_frame ({s.max_frame})"
        )
    if s.heartbeat >= s.idle_timeout:
        raise ConfigError(
            f"heartbeat ({s.heartbeat:g}s) must be shorter than idle_timeout ({s.idle_timeout:g}s)"
        )
    if s.admin_password is not None and len(s.admin_password) < s.min_password:
        raise ConfigError(
            f"{ADMIN_PASSWORD_ENV} is shorter than min_password ({s.min_password} characters)"
        )
    if s.secret_key is not None and len(s.secret_key) < MIN_SECRET_KEY:
        raise ConfigError(
            f"{SECRET_KEY_ENV} is shorter than {MIN_SECRET_KEY} characters (use e.g. "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    if not s.default_rooms:
        raise ConfigError("default_rooms: at least one room is needed")
    if s.redis and not s.postgres:
        raise ConfigError(
            "bus: a Redis bus joins several nodes, and they need one shared store: "
            "use --store postgresql://… (SQLite and memory belong to one node)"
        )
    if s.p2p_relay_port > 65535:
        raise ConfigError(f"p2p_relay_port: must be at most 65535, got {s.p2p_relay_port}")
    if s.p2p_relay_total_rate < s.p2p_relay_rate:
        raise ConfigError("p2p_relay_total_rate must be at least p2p_relay_rate")


def replace(settings: Settings, **changes: object) -> Settings:
    """A copy with some fields changed, validated like a loaded one (used by tests and wiring)."""
    new = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    _validate(new)
    return new


def describe(settings: Settings) -> Mapping[str, object]:
    """The settings as a plain mapping for logging; never contains the admin password (nor
    the password of a database or Redis URL)."""
    out: dict[str, object] = {spec.name: getattr(settings, spec.name) for spec in SETTINGS}
    out["store"] = redact(settings.store)
    out["bus"] = redact(settings.bus)
    return out
