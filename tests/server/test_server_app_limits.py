"""`ChatServer.start` warns when the open-file limit cannot hold max_connections sockets."""

from __future__ import annotations

import dataclasses
import logging
import resource
from pathlib import Path

import pytest

from parlour.core.passwords import Argon2Hasher
from parlour.server.app import SPARE_FILES, ChatServer, check_open_file_limit
from parlour.server.config import Settings


def test_a_low_limit_is_reported_and_a_sufficient_one_is_not(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 4096))
    with caplog.at_level(logging.WARNING, logger="parlour.server"):
        assert check_open_file_limit(10_000) == 1024
        assert check_open_file_limit(1024 - SPARE_FILES) is None
    [record] = caplog.records
    assert record.getMessage() == "open-file limit too low for max_connections"
    assert record.fields["needed"] == 10_000 + SPARE_FILES  # type: ignore[attr-defined]
    assert "ulimit -n" in record.fields["hint"]  # type: ignore[attr-defined]


async def test_the_server_starts_anyway_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (256, 256))
    settings = dataclasses.replace(
        Settings(port=0, data_dir=tmp_path, admin_password="admin-password-1"),
        store="memory",
        max_connections=1000,
    )
    with caplog.at_level(logging.WARNING, logger="parlour.server"):
        server = await ChatServer.start(
            settings, password_hasher=Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1)
        )
    try:
        assert server.port > 0
        assert any("open-file limit" in r.getMessage() for r in caplog.records)
    finally:
        await server.stop()
