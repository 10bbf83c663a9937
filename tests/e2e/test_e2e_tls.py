"""TLS: a self-signed certificate made with the openssl CLI; clients verify it."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from e2e_helpers import PASSWORD, ClientFactory, ServerFactory

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def make_cert(tmp_path: Path) -> tuple[Path, Path]:
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


async def test_tls_chat_and_plain_tcp_gets_nothing(
    tmp_path: Path, make_server: ServerFactory, connect: ClientFactory
) -> None:
    cert, key = make_cert(tmp_path)
    srv = await make_server(tls_cert=cert, tls_key=key)
    ctx = ssl.create_default_context(cafile=str(cert))
    a = await connect(srv.port, ssl_context=ctx)
    b = await connect(srv.port, ssl_context=ctx)
    await a.signup("alice", PASSWORD)
    await b.signup("bob", PASSWORD)
    await a.ok("dm", to="bob", text="over TLS", client_id="t1")
    assert (await b.event("dm"))["text"] == "over TLS"

    # a client that does not trust the certificate cannot connect
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(srv.port, ssl_context=ssl.create_default_context())
    # plain text to the TLS port never reaches the chat protocol
    plain = await connect(srv.port)
    plain.send_raw(b'{"id":1,"type":"hello","version":1}\n')
    await plain.wait_closed()
    assert not plain.unmatched and not plain.events
    await a.ok("ping")
