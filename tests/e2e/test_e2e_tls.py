"""TLS: a self-signed certificate made with the openssl CLI; clients verify it."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from e2e_helpers import PASSWORD, ClientFactory, ServerFactory


async def test_tls_chat_and_plain_tcp_gets_nothing(
    self_signed_cert: tuple[Path, Path], make_server: ServerFactory, connect: ClientFactory
) -> None:
    cert, key = self_signed_cert
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
