"""Checks on admin API request bodies, before anything reaches `ProxyControl`."""

from __future__ import annotations

import dataclasses
from typing import Final, Literal, get_args, get_origin, get_type_hints

from parlour.proxy.control import LISTENER_KEYS, BackendSpec, ControlError, ProxySettings

__all__ = [
    "MAX_WEIGHT",
    "SETTING_TYPES",
    "parse_backend_spec",
    "parse_settings_changes",
    "parse_weight",
]

MAX_WEIGHT: Final = 1000
_MAX_HOST: Final = 253


def _setting_types() -> dict[str, tuple[type, tuple[object, ...]]]:
    """For every setting: its base type and, for Literal settings, the allowed values."""
    hints = get_type_hints(ProxySettings)
    result: dict[str, tuple[type, tuple[object, ...]]] = {}
    for f in dataclasses.fields(ProxySettings):
        hint = hints[f.name]
        args = get_args(hint)
        if get_origin(hint) is Literal:
            result[f.name] = (str, args)
        elif isinstance(hint, type):
            result[f.name] = (hint, ())
        else:  # pragma: no cover - every field is a plain type or a Literal today
            raise TypeError(f"unsupported setting type for {f.name}: {hint!r}")
    return result


SETTING_TYPES: Final = _setting_types()


def _invalid(message: str) -> ControlError:
    return ControlError("invalid", message)


def _int(body: dict[str, object], key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{key} must be an integer")
    if not lo <= value <= hi:
        raise _invalid(f"{key} must be between {lo} and {hi}")
    return value


def parse_backend_spec(body: object) -> BackendSpec:
    if not isinstance(body, dict):
        raise _invalid("expected a JSON object with host and port")
    unknown = set(body) - {"host", "port", "weight", "max_conns"}
    if unknown:
        raise _invalid(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    host = body.get("host")
    if not isinstance(host, str) or not host.strip():
        raise _invalid("host must be a non-empty string")
    host = host.strip()
    if len(host) > _MAX_HOST or any(c.isspace() or not c.isprintable() for c in host):
        raise _invalid("host must be a host name or IP address without spaces")
    if "port" not in body:
        raise _invalid("port is required")
    port = _int(body, "port", 0, 1, 65535)
    weight = _int(body, "weight", 1, 1, MAX_WEIGHT)
    max_conns = _int(body, "max_conns", 0, 0, 1_000_000)
    return BackendSpec(host=host, port=port, weight=weight, max_conns=max_conns)


def parse_weight(body: object) -> int:
    if not isinstance(body, dict) or "weight" not in body:
        raise _invalid("expected a JSON object with weight")
    return _int(body, "weight", 1, 1, MAX_WEIGHT)


def parse_settings_changes(body: object) -> dict[str, object]:
    """Type-check a partial settings update; range checks are the data plane's job."""
    if not isinstance(body, dict):
        raise _invalid("expected a JSON object of settings to change")
    if not body:
        raise _invalid("no settings given")
    changes: dict[str, object] = {}
    for key, value in body.items():
        if key in LISTENER_KEYS:
            raise ControlError(
                "restart_required",
                f"{key} needs a restart: change it in the config file (or its flag) and "
                "restart the proxy",
            )
        if key not in SETTING_TYPES:
            raise ControlError("unknown_setting", f"unknown setting {key!r}")
        kind, choices = SETTING_TYPES[key]
        if kind is bool:
            if not isinstance(value, bool):
                raise _invalid(f"{key} must be true or false")
        elif kind is int:  # (the range is the data plane's to check: one message per key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise _invalid(f"{key} must be an integer")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _invalid(f"{key} must be a number")
            value = float(value)
        elif kind is str:
            if not isinstance(value, str):
                raise _invalid(f"{key} must be a string")
            if choices and value not in choices:
                allowed = ", ".join(map(str, choices))
                raise _invalid(f"{key} must be one of: {allowed}")
            if len(value) > 1000:
                raise _invalid(f"{key} is too long")
        changes[key] = value
    return changes
