"""`parlour chat --tls-ca / --tls-insecure` against a TLS server with a self-signed certificate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cli_helpers import LiveServer, run_script

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def make_cert(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


async def test_tls_options(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    live = LiveServer(tmp_path / "data", tls_cert=cert, tls_key=key)
    await live.start()
    try:
        script = "/join general\nover tls\n"
        code, out, err = await run_script(
            live.port, script, "--user", "alice", "--signup", "--tls-ca", str(cert)
        )
        assert code == 0, err
        assert "#general <alice> over tls [1]" in out
        # the system trust store does not know a self-signed certificate: say what to do
        code, _, err = await run_script(live.port, "hi\n", "--user", "alice", "--tls")
        assert code == 2 and "--tls-ca" in err and "certificate" in err
        code, out, err = await run_script(live.port, "again\n", "--user", "alice", "--tls-insecure")
        assert code == 0, err
        assert "#general <alice> again [2]" in out
        # plain TCP to a TLS port: the hint is to add --tls
        code, _, err = await run_script(live.port, "hi\n", "--user", "alice")
        assert code == 2 and "--tls" in err
    finally:
        await live.stop()
