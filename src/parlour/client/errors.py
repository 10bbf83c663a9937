"""Exceptions raised by :mod:`parlour.client`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parlour.protocol import ErrorCode

__all__ = [
    "ChecksumMismatch",
    "ClientClosed",
    "ClientError",
    "ConnectionLost",
    "FileChanged",
    "FileTooLarge",
    "FilesUnavailable",
    "QuotaExceeded",
    "ServerError",
    "TooManyUploads",
    "TransferFailed",
    "server_error",
]


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


# ---------------------------------------------------------------------- files (uploads)


class FileTooLarge(ServerError):
    """``file_too_large``: the file is over the server's ``max_file_size`` (in ``extra`` when
    the server says it)."""


class QuotaExceeded(ServerError):
    """``quota_exceeded``: your stored files plus this one would be over your quota."""


class TooManyUploads(ServerError):
    """``too_many_uploads``: you already have the server's maximum of unfinished uploads."""


class FilesUnavailable(ServerError):
    """``unavailable`` for a ``file_token``: the server takes no uploads (no web listener)."""


_FILE_ERRORS: dict[str, type[ServerError]] = {
    "file_too_large": FileTooLarge,
    "quota_exceeded": QuotaExceeded,
    "too_many_uploads": TooManyUploads,
}


def server_error(
    code: str, message: str, extra: Mapping[str, Any] | None = None, *, files: bool = False
) -> ServerError:
    """The :class:`ServerError` for an error reply: with ``files`` (a ``file_token`` or an
    upload's HTTP refusal) the typed subclass of a files code."""
    if files:
        if code == "unavailable":
            return FilesUnavailable(code, message, extra)
        typed = _FILE_ERRORS.get(code)
        if typed is not None:
            return typed(code, message, extra)
    return ServerError(code, message, extra)


class TransferFailed(ClientError):
    """An upload or download over HTTP failed (``status``: the HTTP status when the server
    answered, else None). What was transferred is kept: trying again resumes."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ChecksumMismatch(TransferFailed):
    """A downloaded file's SHA-256 is not the attachment's: the partial file was removed."""

    def __init__(self, message: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class FileChanged(TransferFailed):
    """The file being uploaded changed on disk during the upload (upload it again)."""
