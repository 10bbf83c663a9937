"""Fixtures shared by every test area (each area's own live in its conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# No timing thresholds in tests: Hypothesis' default 200 ms per-example deadline turned a busy
# CI machine (a browser test's Chromium still exiting) into a failure of a pure codec property;
# its too_slow health check measures time the same way.
settings.register_profile("parlour", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("parlour")


@pytest.fixture
def self_signed_cert(tmp_path: Path) -> tuple[Path, Path]:
    """(certificate, key): PEM files in tmp_path for a self-signed P-256 certificate, valid
    for a day, for CN=localhost and the names 127.0.0.1 and localhost, made with the openssl
    CLI (the test is skipped where there is none). A client trusts it with
    ``ssl.create_default_context(cafile=str(cert))`` (or `parlour chat --tls-ca CERT`)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key
