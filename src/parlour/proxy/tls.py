"""TLS for the proxy: what the configuration says, and the `ssl.SSLContext`s made from it.

Three places speak TLS (docs/proxy.md, "TLS"):

- the **client side** (`[tls]`): the listener terminates TLS 1.2+ with a default
  certificate and, optionally, more certificates chosen by the name the client asks for
  (SNI). `ServerTls` holds the current contexts; `reload` builds new ones from the files
  and swaps them in only when every file loaded, so new connections get the new
  certificates and established ones keep theirs;
- the **backend side** (`[backend_tls]`): connections to backends use TLS, verified
  against a CA file (or the system store), or explicitly not verified;
- the **admin listener** (`[admin] tls_cert`/`tls_key`): HTTPS for the API and dashboard.

Choosing a certificate by name (`pick_certificate`) is pure and tested without sockets.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "BackendTls",
    "CertSpec",
    "ServerTls",
    "TlsConfig",
    "TlsError",
    "admin_context",
    "backend_context",
    "certificate_names",
    "normalise_name",
    "pick_certificate",
    "server_context",
]

log = logging.getLogger("parlour.proxy")

TlsVersion = Literal["1.2", "1.3"]
_VERSIONS: dict[str, ssl.TLSVersion] = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
_MAX_NAME = 253


class TlsError(Exception):
    """A certificate, key or CA file cannot be used (the message says which and why)."""


@dataclass(frozen=True, slots=True)
class CertSpec:
    """A certificate chain and its key (PEM files), and the server names it answers for
    (empty: the DNS names in the certificate, else its common name)."""

    cert: str
    key: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """`[tls]`: TLS termination on the client side."""

    default: CertSpec
    sni: tuple[CertSpec, ...] = ()
    min_version: TlsVersion = "1.2"


@dataclass(frozen=True, slots=True)
class BackendTls:
    """`[backend_tls]`: TLS on the connections to backends."""

    verify: bool = True
    ca_file: str | None = None  # None: the system's trusted CAs
    server_name: str | None = None  # SNI and the name checked; None: each backend's host
    cert: str | None = None  # a client certificate, for backends that ask for one
    key: str | None = None
    min_version: TlsVersion = "1.2"


# ------------------------------------------------------------------ names (sans-I/O)


def normalise_name(name: str) -> str:
    """A server name as compared: lower case, no trailing dot."""
    return name.strip().rstrip(".").lower()


def _valid_name(name: str) -> bool:
    if not name or len(name) > _MAX_NAME or not name.isascii():
        return False
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:  # "*.org" would cover a whole top-level domain
            return False
    return all(
        0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        for label in labels
    )


def pick_certificate(server_name: str | None, table: Sequence[tuple[str, int]]) -> int | None:
    """The index of the certificate for `server_name` in `table` ((name, index) pairs,
    names normalised, wildcards as "*.example.org"), or None for the default one.
    An exact name wins over a wildcard; a wildcard covers exactly one more label."""
    if not server_name:
        return None
    name = normalise_name(server_name)
    wildcard: int | None = None
    parent = "*." + name.split(".", 1)[1] if "." in name else None
    for candidate, index in table:
        if candidate == name:
            return index
        if wildcard is None and candidate == parent:
            wildcard = index
    return wildcard


def certificate_names(path: str) -> tuple[str, ...]:
    """The DNS names a certificate is for (subjectAltName; the common name when it has
    none), read with the ssl module's decoder."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:  # pragma: no cover - CPython has had it since 2.7
        raise TlsError(f"{path}: cannot read its names here; list them with `names = [...]`")
    try:
        info: Mapping[str, Any] = decode(path)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsError(f"cannot read the certificate {path}: {exc}") from None
    names = [str(v) for kind, v in info.get("subjectAltName", ()) if kind == "DNS"]
    if not names:
        for rdn in info.get("subject", ()):
            names += [str(v) for k, v in rdn if k == "commonName"]
    return tuple(normalise_name(n) for n in names)


# ------------------------------------------------------------------ contexts


def _check_readable(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise TlsError(f"{what} {path}: no such file")
    if not os.access(path, os.R_OK):
        raise TlsError(f"{what} {path}: not readable (permissions)")


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    _check_readable(cert, "certificate")
    _check_readable(key, "key")

    def no_password() -> str:
        raise TlsError(f"the key {key} is encrypted; give an unencrypted key file")

    try:
        ctx.load_cert_chain(cert, key, password=no_password)
    except TlsError:
        raise
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in str(exc) or reason == "KEY_VALUES_MISMATCH":
            raise TlsError(f"the key {key} does not belong to the certificate {cert}") from None
        raise TlsError(_which_file(cert, key, reason)) from None
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot load the certificate {cert} / key {key}: {exc}") from None


def _which_file(cert: str, key: str, reason: str) -> str:
    """Say which of the two files OpenSSL's "PEM lib" error is about."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is not None:
        try:
            decode(cert)
        except (OSError, ssl.SSLError, ValueError):
            return f"the certificate {cert} is not a PEM certificate"
    try:
        with open(key, "rb") as f:
            text = f.read(1 << 20)
    except OSError as exc:
        return f"cannot read the key {key}: {exc.strerror or exc}"
    if b"PRIVATE KEY-----" not in text:
        return f"the key {key} is not a PEM private key"
    return f"cannot load the certificate {cert} / key {key}: {reason}"


def _harden(ctx: ssl.SSLContext, min_version: str) -> None:
    ctx.minimum_version = _VERSIONS[min_version]
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def server_context(spec: CertSpec, min_version: str = "1.2") -> ssl.SSLContext:
    """A server-side context for one certificate: TLS 1.2+ (or 1.3 only), no compression
    or renegotiation, ALPN "http/1.1" (the relays speak HTTP/1.1)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, min_version)
    ctx.set_alpn_protocols(["http/1.1"])
    _load_chain(ctx, spec.cert, spec.key)
    return ctx


def admin_context(cert: str, key: str) -> ssl.SSLContext:
    """HTTPS for the admin listener."""
    return server_context(CertSpec(cert, key))


def backend_context(cfg: BackendTls) -> ssl.SSLContext:
    """The client-side context for connections to backends."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx, cfg.min_version)
    ctx.set_alpn_protocols(["http/1.1"])
    if cfg.verify:
        if cfg.ca_file:
            _check_readable(cfg.ca_file, "CA file")
            try:
                ctx.load_verify_locations(cafile=cfg.ca_file)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise TlsError(f"cannot load the CA file {cfg.ca_file}: {exc}") from None
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.cert or cfg.key:
        if not (cfg.cert and cfg.key):
            raise TlsError("[backend_tls] cert and key go together")
        _load_chain(ctx, cfg.cert, cfg.key)
    return ctx


@dataclass
class _Contexts:
    default: ssl.SSLContext
    by_index: list[ssl.SSLContext] = field(default_factory=list)
    table: list[tuple[str, int]] = field(default_factory=list)


class ServerTls:
    """The client-side TLS contexts in use.

    The listener handshakes with one fixed context, `front` (protocol versions, options,
    ALPN; no certificate of its own). OpenSSL calls its server-name callback for every
    ClientHello, with or without SNI, and the callback moves the connection to the
    context of the certificate chosen for the name, from the set current at that moment.
    `reload(config)` builds a whole new set from the files and swaps it in only when
    every file loaded (else TlsError, and nothing changes): new connections get the new
    certificates, established ones keep theirs.

    The fast lane terminates TLS natively with the same certificate files: it sets
    `native`, which `reload` calls with the new configuration once the Python contexts
    are built and before anything is swapped (it raises TlsError if the engine cannot
    load them); `pick(server_name)` is its certificate choice (0 default, i + 1 the i-th
    `sni` entry), `chains(config)` the files in that order."""

    def __init__(self, config: TlsConfig) -> None:
        self.front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.front.set_alpn_protocols(["http/1.1"])
        self.front.sni_callback = self._choose
        self._current = self._build(config)
        self.config = config
        self.native: Callable[[TlsConfig], None] | None = None
        _harden(self.front, config.min_version)

    def context(self) -> ssl.SSLContext:
        """The context a listener is created with."""
        return self.front

    def names(self) -> list[str]:
        """The server names with a certificate of their own (for the logs)."""
        return [name for name, _ in self._current.table]

    def reload(self, config: TlsConfig | None = None) -> None:
        config = config or self.config
        fresh = self._build(config)  # (raises before anything changes)
        if self.native is not None:
            self.native(config)  # (the fast lane's copy; raises before anything changes)
        self.config = config
        self._current = fresh
        self.front.minimum_version = _VERSIONS[config.min_version]

    @staticmethod
    def chains(config: TlsConfig) -> list[tuple[str, str]]:
        """(certificate, key) files in the order `pick` numbers them."""
        return [(spec.cert, spec.key) for spec in (config.default, *config.sni)]

    @staticmethod
    def version_number(config: TlsConfig) -> int:
        """The minimum version as OpenSSL numbers it (TLS1_2_VERSION, TLS1_3_VERSION)."""
        return 0x0304 if config.min_version == "1.3" else 0x0303

    def pick(self, server_name: str) -> int:
        """The certificate for `server_name`: 0 the default, i + 1 the i-th `sni` entry."""
        current = self._current
        index = pick_certificate(server_name, current.table) if current.table else None
        return 0 if index is None else index + 1

    def _choose(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        current = self._current
        index = pick_certificate(server_name, current.table) if current.table else None
        sslobj.context = current.default if index is None else current.by_index[index]

    def _build(self, config: TlsConfig) -> _Contexts:
        if config.min_version not in _VERSIONS:
            raise TlsError('[tls] min_version must be "1.2" or "1.3"')
        built = _Contexts(server_context(config.default, config.min_version))
        seen: dict[str, str] = {}
        for spec in config.sni:
            ctx = server_context(spec, config.min_version)
            names = spec.names or certificate_names(spec.cert)
            if not names:
                raise TlsError(f"the certificate {spec.cert} names no server; add names = [...]")
            index = len(built.by_index)
            built.by_index.append(ctx)
            for raw in names:
                name = normalise_name(raw)
                if not _valid_name(name):
                    raise TlsError(f"{raw!r} ({spec.cert}) is not a server name")
                if name in seen:
                    raise TlsError(f"{name} has two certificates: {seen[name]} and {spec.cert}")
                seen[name] = spec.cert
                built.table.append((name, index))
        return built
