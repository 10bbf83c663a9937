"""TLS (issue 11, must fix 4): termination on the listener (TLS 1.2+, certificates chosen
by SNI, reload without dropping connections, X-Forwarded-Proto: https), TLS to backends
(verified against a CA file, or explicitly not), and HTTPS for the admin listener.

Real sockets on 127.0.0.1 and real handshakes, with certificates from a test CA
(`tls_helpers.pki`). The module runs in both data planes: the fast lane terminates TLS
itself (and hands what it does not relay to the Python relay through a socket pair);
TLS to backends always runs on the Python relay. test_proxy_tls_fast_lane.py has the
engine's own TLS cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import aiohttp
import pytest
from aiohttp import web
from proxy_helpers import (
    Backend,
    BackendFactory,
    ProxyFactory,
    backend_app,
    start_backend,
    wait_state,
)
from raw_backend import TIMEOUT, Resp, read_response
from tls_helpers import Certs, client_context

from parlour.proxy.config import ConfigError, ProxyConfig, load_config
from parlour.proxy.control import BackendSpec, ControlError, ProxySettings
from parlour.proxy.fastlane import native_module
from parlour.proxy.runtime import ProxyRuntime
from parlour.proxy.tls import (
    BackendTls,
    CertSpec,
    ServerTls,
    TlsConfig,
    TlsError,
    pick_certificate,
)

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def tls_client(
    port: int, ctx: ssl.SSLContext, server_name: str | None = "localhost"
) -> AsyncIterator[Conn]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=server_name),
        TIMEOUT,
    )
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def get(conn: Conn, path: str = "/", extra: str = "") -> Resp:
    reader, writer = conn
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode())
    return await read_response(reader)


def peer_names(conn: Conn) -> list[str]:
    sslobj = conn[1].get_extra_info("ssl_object")
    cert = sslobj.getpeercert()
    return [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]


def serial(conn: Conn) -> str:
    return str(conn[1].get_extra_info("ssl_object").getpeercert()["serialNumber"])


def tls_config(
    pki: Certs, *sni: tuple[str, ...], min_version: Literal["1.2", "1.3"] = "1.2"
) -> TlsConfig:
    default = pki.leaf("localhost", "127.0.0.1")
    specs = tuple(CertSpec(str(leaf.cert), str(leaf.key)) for leaf in (pki.leaf(*n) for n in sni))
    return TlsConfig(CertSpec(str(default.cert), str(default.key)), specs, min_version)


# ============================================================== listener


async def test_https_listener_relays_and_says_so_upstream(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory, data_plane: str
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki))
    async with tls_client(rt.listen_port or 0, client_context(pki.ca)) as conn:
        for _ in range(3):  # keep-alive over one TLS connection
            got = await get(conn)
            assert (got.status, got.body) == (200, b"a")
        posted = conn[1]
        posted.write(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello")
        echo = await read_response(conn[0])
        assert (echo.status, echo.body) == (200, b"hello")
    assert [h["X-Forwarded-Proto"] for h in a.headers] == ["https"] * 4
    assert [h["X-Forwarded-For"] for h in a.headers] == ["127.0.0.1"] * 4
    engine_tls = bool(getattr(native_module()[0], "TLS", False))
    assert (rt.fast_lane is not None) == (data_plane == "fast_lane" and engine_tls)


async def test_the_data_plane_for_tls_is_logged(
    pki: Certs,
    backends: BackendFactory,
    proxy: ProxyFactory,
    data_plane: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = await backends("a")
    with caplog.at_level(logging.INFO, logger="parlour.proxy"):
        await proxy([a.spec], tls=tls_config(pki))
    if data_plane == "fast_lane" and getattr(native_module()[0], "TLS", False):
        assert "data plane: fast lane (native, TLS)" in caplog.text
    elif data_plane == "fast_lane":
        assert "the fast lane was built without OpenSSL" in caplog.text
    else:
        assert "data plane: python relay (PARLOUR_PROXY_FAST_LANE=0)" in caplog.text


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_old_protocol_versions_are_refused(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki))
    port = rt.listen_port or 0
    old = client_context(pki.ca)
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # (so the client does offer TLS 1.0/1.1)
    # this client can speak TLS 1.1 to a server that allows it ...
    lax = server_ctx(pki, "localhost", "127.0.0.1")
    lax.minimum_version = ssl.TLSVersion.TLSv1
    lax.set_ciphers("DEFAULT:@SECLEVEL=0")
    lax_server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=lax)
    try:
        async with tls_client(lax_server.sockets[0].getsockname()[1], old) as conn:
            assert conn[1].get_extra_info("ssl_object").version() == "TLSv1.1"
    finally:
        lax_server.close()
    # ... but not to the proxy
    with pytest.raises((ssl.SSLError, ConnectionError)):
        async with tls_client(port, old):
            pass
    tls12 = client_context(pki.ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    async with tls_client(port, tls12) as conn:
        assert conn[1].get_extra_info("ssl_object").version() == "TLSv1.2"
        assert (await get(conn)).status == 200
    assert len(a.seen) == 1  # and nothing reached the backend before a handshake


async def test_tls13_only_refuses_tls12(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki, min_version="1.3"))
    tls12 = client_context(pki.ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        async with tls_client(rt.listen_port or 0, tls12):
            pass
    async with tls_client(rt.listen_port or 0, client_context(pki.ca)) as conn:
        assert conn[1].get_extra_info("ssl_object").version() == "TLSv1.3"


async def test_certificates_are_chosen_by_server_name(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    cfg = tls_config(pki, ("chat.example.org",), ("*.example.net", "example.net"))
    rt = await proxy([a.spec], tls=cfg)
    port, ctx = rt.listen_port or 0, client_context(pki.ca)
    cases = {
        "chat.example.org": ["chat.example.org"],
        "CHAT.Example.org": ["chat.example.org"],
        "x.example.net": ["*.example.net", "example.net"],
        "example.net": ["*.example.net", "example.net"],
        "localhost": ["localhost"],  # no certificate of its own: the default one
    }
    for name, want in cases.items():
        async with tls_client(port, ctx, name) as conn:
            assert peer_names(conn) == want, name
            assert (await get(conn)).status == 200
    # no SNI at all (a client that connects to an IP address): the default certificate
    async with tls_client(port, client_context(None), None) as conn:
        sslobj = conn[1].get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True)
        assert der == ssl.PEM_cert_to_DER_cert(Path(cfg.default.cert).read_text())


async def test_handshake_failures_and_plain_http_do_not_disturb_others(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], tls=tls_config(pki))
    port = rt.listen_port or 0
    async with tls_client(port, client_context(pki.ca)) as good:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to a TLS port
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed, no answer
        writer.close()
        other = Certs(pki.root / "other-ca")
        with pytest.raises(ssl.SSLCertVerificationError):
            async with tls_client(port, client_context(other.ca)):
                pass
        assert (await get(good)).status == 200
    assert len(a.seen) == 1


async def test_reload_swaps_certificates_without_dropping_connections(
    pki: Certs, backends: BackendFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    first = pki.leaf("localhost", "127.0.0.1", fresh=True)
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    a = await backends("a")
    rt = await proxy([a.spec], tls=TlsConfig(CertSpec(str(cert), str(key))))
    port, ctx = rt.listen_port or 0, client_context(pki.ca)
    async with tls_client(port, ctx) as before:
        old_serial = serial(before)
        assert (await get(before)).status == 200
        renewed = pki.leaf("localhost", "127.0.0.1", fresh=True)  # certbot renews in place
        shutil.copy(renewed.cert, cert)
        shutil.copy(renewed.key, key)
        await rt.reload()  # (no config file: the certificate files are read again)
        async with tls_client(port, ctx) as after:
            assert serial(after) != old_serial
            assert (await get(after)).status == 200
        assert (await get(before)).status == 200  # the old connection carries on
        # a broken renewal (key of another certificate) is refused; the current stays
        shutil.copy(first.key, key)
        with pytest.raises(ControlError, match="does not belong"):
            await rt.reload()
        async with tls_client(port, ctx) as again:
            assert serial(again) == serial(after)
        assert (await get(before)).status == 200


async def test_reload_from_the_config_file_reads_new_certificate_paths(
    pki: Certs, backends: BackendFactory, tmp_path: Path
) -> None:
    a = await backends("a")
    one, two = pki.leaf("localhost", fresh=True), pki.leaf("localhost", fresh=True)
    conf = tmp_path / "proxy.toml"

    def write(leaf_cert: Path, leaf_key: Path) -> None:
        conf.write_text(
            f"[proxy]\nlisten_port = 0\n[admin]\nport = 0\ntoken = 'abcdefgh12345'\n"
            f"[tls]\ncert = '{leaf_cert}'\nkey = '{leaf_key}'\n"
            f"[[backends]]\nhost = '127.0.0.1'\nport = {a.port}\n"
        )

    write(one.cert, one.key)
    rt = ProxyRuntime(load_config(conf), admin=False)
    await rt.start()
    try:
        ctx = client_context(pki.ca)
        async with tls_client(rt.listen_port or 0, ctx) as conn:
            first = serial(conn)
        write(two.cert, two.key)
        await rt.reload()
        async with tls_client(rt.listen_port or 0, ctx) as conn:
            assert serial(conn) != first
            assert (await get(conn)).status == 200
    finally:
        await rt.stop(drain_timeout_s=0.5)


async def test_tcp_mode_terminates_tls_too(pki: Certs, proxy: ProxyFactory) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        rt = await proxy([BackendSpec("127.0.0.1", port)], mode="tcp", tls=tls_config(pki))
        async with tls_client(rt.listen_port or 0, client_context(pki.ca)) as (r, w):
            w.write(b"hello over tls\n")
            assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"HELLO OVER TLS\n"
    finally:
        server.close()
        await server.wait_closed()


# ============================================================== backends over TLS


@contextlib.asynccontextmanager
async def https_backend(name: str, ctx: ssl.SSLContext) -> AsyncIterator[Backend]:
    b = Backend(name, 0, None)  # type: ignore[arg-type]
    runner = web.AppRunner(backend_app(b), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    b.runner = runner
    b.port = int(runner.addresses[0][1])
    try:
        yield b
    finally:
        await runner.cleanup()


def server_ctx(pki: Certs, *names: str, ca: Certs | None = None) -> ssl.SSLContext:
    leaf = pki.leaf(*names, ca=ca)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(leaf.cert, leaf.key)
    return ctx


async def plain_get(port: int) -> Resp:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await read_response(reader)
    finally:
        writer.close()


async def test_backends_over_tls_verified_against_a_ca_file(
    pki: Certs, proxy: ProxyFactory
) -> None:
    async with https_backend("secure", server_ctx(pki, "backend.internal")) as b:
        rt = await proxy(
            [b.spec],
            backend_tls=BackendTls(ca_file=str(pki.ca), server_name="backend.internal"),
            health_kind="http",
        )
        assert rt.fast_lane is None
        for _ in range(3):
            got = await plain_get(rt.listen_port or 0)
            assert (got.status, got.body) == (200, b"secure")
        (snap,) = rt.backends()
        assert snap.total_conns == 1  # pooled TLS connections are reused


async def test_backend_certificate_that_does_not_verify_is_a_502_and_a_failure(
    pki: Certs, proxy: ProxyFactory
) -> None:
    other = Certs(pki.root / "rogue")
    async with https_backend("rogue", server_ctx(pki, "backend.internal", ca=other)) as b:
        rt = await proxy(
            [b.spec],
            backend_tls=BackendTls(ca_file=str(pki.ca), server_name="backend.internal"),
            health_fall=1,
            retry_limit=0,
        )
        got = await plain_get(rt.listen_port or 0)
        assert got.status == 502
        await wait_state(rt, b.spec.id, "down")
        reason = rt.pool.get(b.spec.id).last_crash_reason or ""
        assert "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in reason
        assert b.seen == []


async def test_backend_name_mismatch_fails_verification(pki: Certs, proxy: ProxyFactory) -> None:
    async with https_backend("named", server_ctx(pki, "backend.internal")) as b:
        rt = await proxy(
            [b.spec], backend_tls=BackendTls(ca_file=str(pki.ca)), retry_limit=0
        )  # (verifies "127.0.0.1", which the certificate does not name)
        assert (await plain_get(rt.listen_port or 0)).status == 502
        assert b.seen == []


async def test_backends_over_tls_without_verification_when_asked(
    pki: Certs, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    other = Certs(pki.root / "self-signed")
    async with https_backend("lax", server_ctx(pki, "anything", ca=other)) as b:
        with caplog.at_level(logging.WARNING, logger="parlour.proxy"):
            rt = await proxy([b.spec], backend_tls=BackendTls(verify=False))
        assert "WITHOUT certificate verification" in caplog.text
        got = await plain_get(rt.listen_port or 0)
        assert (got.status, got.body) == (200, b"lax")


async def test_health_checks_use_tls_to_backends(pki: Certs, proxy: ProxyFactory) -> None:
    other = Certs(pki.root / "checks")
    async with https_backend("x", server_ctx(pki, "backend.internal", ca=other)) as b:
        rt = await proxy(
            [b.spec],
            backend_tls=BackendTls(ca_file=str(pki.ca), server_name="backend.internal"),
            health_interval_s=0.05,
            health_fall=2,
        )
        await wait_state(rt, b.spec.id, "down")
        assert "health check: TLS" in (rt.pool.get(b.spec.id).last_crash_reason or "")


# ============================================================== admin over HTTPS


async def test_admin_listener_over_https(pki: Certs, backends: BackendFactory) -> None:
    a = await backends("a")
    leaf = pki.leaf("localhost", "127.0.0.1")
    cfg = ProxyConfig(
        listen_port=0,
        admin_port=0,
        admin_token="admin-token-123",
        admin_tls_cert=str(leaf.cert),
        admin_tls_key=str(leaf.key),
        settings=ProxySettings(health_interval_s=60.0),
        backends=(a.spec,),
    )
    rt = ProxyRuntime(cfg)
    await rt.start()
    try:
        url = f"https://127.0.0.1:{rt.admin_port}/api/stats"
        auth = {"Authorization": "Bearer admin-token-123"}
        conn = aiohttp.TCPConnector(ssl=client_context(pki.ca))
        async with aiohttp.ClientSession(connector=conn) as session:
            async with session.get(url, headers=auth) as r:
                assert r.status == 200 and (await r.json())["totals"]["backends"] == 1
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served there
                await session.get(f"http://127.0.0.1:{rt.admin_port}/api/stats", headers=auth)
    finally:
        await rt.stop(drain_timeout_s=0.5)


# ============================================================== configuration


def test_tls_sections_and_flags(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(
        "[tls]\ncert = 'a.pem'\nkey = 'a.key'\nmin_version = '1.3'\n"
        "[[tls.sni]]\ncert = 'b.pem'\nkey = 'b.key'\nnames = ['b.example']\n"
        "[backend_tls]\nca_file = 'ca.pem'\nserver_name = 'internal'\n"
        "[admin]\ntls_cert = 'adm.pem'\ntls_key = 'adm.key'\n"
    )
    cfg = load_config(f)
    assert cfg.tls == TlsConfig(
        CertSpec("a.pem", "a.key"), (CertSpec("b.pem", "b.key", ("b.example",)),), "1.3"
    )
    assert cfg.backend_tls == BackendTls(ca_file="ca.pem", server_name="internal")
    assert (cfg.admin_tls_cert, cfg.admin_tls_key) == ("adm.pem", "adm.key")
    flags = load_config(f, tls_cert="c.pem", tls_key="c.key", backend_verify=False, backend_ca=None)
    assert flags.tls is not None and flags.tls.default == CertSpec("c.pem", "c.key")
    assert flags.tls.sni == cfg.tls.sni  # the flags replace the default certificate only
    lax = load_config(f, backend_verify=False)
    assert lax.backend_tls == BackendTls(verify=False, ca_file=None, server_name="internal")
    with pytest.raises(ConfigError, match="contradict"):
        load_config(f, backend_verify=False, backend_ca="other.pem")
    bare = load_config(None, tls_cert="x.pem", tls_key="x.key", backend_tls=True)
    assert bare.tls == TlsConfig(CertSpec("x.pem", "x.key"))
    assert bare.backend_tls == BackendTls()
    assert load_config(f, backend_tls=False).backend_tls is None


@pytest.mark.parametrize(
    "text",
    [
        "[tls]\ncert = 'a.pem'\n",
        "[tls]\ncert = 'a.pem'\nkey = 'a.key'\nmin_version = '1.1'\n",
        "[tls]\ncert = 'a.pem'\nkey = 'a.key'\nciphers = 'x'\n",
        "[tls]\ncert = 'a.pem'\nkey = 'a.key'\n[[tls.sni]]\ncert = 'b.pem'\n",
        "[tls]\ncert = 'a.pem'\nkey = 'a.key'\n[[tls.sni]]\ncert = 'b'\nkey = 'c'\nnames = 'x'\n",
        "[backend_tls]\nverify = 'no'\n",
        "[backend_tls]\ncert = 'c.pem'\n",
        "[backend_tls]\nverify = false\nca_file = 'ca.pem'\n",
        "[admin]\ntls_cert = 'a.pem'\n",
    ],
)
def test_bad_tls_configuration_is_a_clear_error(tmp_path: Path, text: str) -> None:
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(ConfigError):
        load_config(f)


def test_unusable_files_are_named_in_the_error(pki: Certs, tmp_path: Path) -> None:
    leaf, other = pki.leaf("localhost"), pki.leaf("other.example")
    cases = {
        str(tmp_path / "missing.pem"): "no such file",
        str(leaf.key): "is not a PEM certificate",  # a key where the cert should be
    }
    for cert, message in cases.items():
        with pytest.raises(TlsError, match=message):
            ServerTls(TlsConfig(CertSpec(cert, str(leaf.key))))
    garbage = tmp_path / "garbage.key"
    garbage.write_text("garbage\n")
    with pytest.raises(TlsError, match=f"the key {garbage} is not a PEM private key"):
        ServerTls(TlsConfig(CertSpec(str(leaf.cert), str(garbage))))
    with pytest.raises(TlsError, match="does not belong"):
        ServerTls(TlsConfig(CertSpec(str(leaf.cert), str(other.key))))
    twice = CertSpec(str(other.cert), str(other.key))
    with pytest.raises(TlsError, match="two certificates"):
        ServerTls(TlsConfig(CertSpec(str(leaf.cert), str(leaf.key)), (twice, twice)))


def test_pick_certificate_prefers_exact_names_and_wildcards_cover_one_label() -> None:
    table = [("*.example.org", 0), ("chat.example.org", 1), ("example.org", 2)]
    assert pick_certificate("chat.example.org", table) == 1
    assert pick_certificate("Chat.Example.Org.", table) == 1
    assert pick_certificate("www.example.org", table) == 0
    assert pick_certificate("example.org", table) == 2
    assert pick_certificate("a.b.example.org", table) is None
    assert pick_certificate("example.com", table) is None
    assert pick_certificate(None, table) is None
    assert pick_certificate("", table) is None


# ============================================================== reads into a shared buffer


@pytest.mark.python_relay
def test_tls_reads_share_one_buffer_and_stay_intact_on_uvloop(pki: Certs) -> None:
    """TLS relays read decrypted data into one shared buffer (uvloop otherwise allocates
    256 KiB per read, which glibc may serve with mmap/mremap/munmap every time): bodies
    larger than the buffer, from clients taking turns, arrive intact."""
    import uvloop

    from parlour.proxy.http_relay import TlsHttpClient

    async def main() -> None:
        backend = await start_backend("echo")
        cfg = ProxyConfig(
            listen_port=0,
            admin_port=None,
            settings=ProxySettings(health_interval_s=60.0),
            backends=(backend.spec,),
            tls=tls_config(pki),
        )
        rt = ProxyRuntime(cfg)
        await rt.start()
        try:
            ctx = client_context(pki.ca)
            async with (
                tls_client(rt.listen_port or 0, ctx) as one,
                tls_client(rt.listen_port or 0, ctx) as two,
            ):
                (client,) = [c for c in rt.upstreams.conns if isinstance(c, TlsHttpClient)][:1]
                assert isinstance(client, asyncio.BufferedProtocol)
                assert not isinstance(client, asyncio.Protocol)
                bodies = {one: bytes(range(256)) * 2500, two: b"xyz" * 200_000}
                for conn, body in bodies.items():
                    conn[1].write(
                        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                    )
                for i in range(0, 640_000, 50_000):  # the two uploads interleave
                    for conn, body in bodies.items():
                        conn[1].write(body[i : i + 50_000])
                for conn, body in bodies.items():
                    got = await read_response(conn[0])
                    assert (got.status, got.body) == (200, body)
        finally:
            await rt.stop(drain_timeout_s=0.5)
            await backend.stop()

    uvloop.run(main())
