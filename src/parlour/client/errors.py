"""Exceptions raised by :mod:`parlour.client`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parlour.protocol import ErrorCode

__all__ = ["ClientClosed", "ClientError", "ConnectionLost", "ServerError"]


class ClientError(Exception):
    """Base class of every client-side failure."""


class ServerError(ClientError):
    """The server answered a request with an ``error`` reply."""

    def __init__(self, code: str, message: str, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        try:
            self.code: ErrorCode | str = ErrorCode(code)
        except ValueError:  # a newer server's code: keep the text
            self.code = code
        self.message = message
        self.extra: dict[str, Any] = dict(extra or {})


class ConnectionLost(ClientError):
    """The connection dropped before the reply arrived and the request was not retried."""


class ClientClosed(ClientError):
    """The client was closed (by :meth:`Client.close` or because reconnecting gave up)."""
