"""`parlour chat --tls-ca / --tls-insecure` against a TLS server with a self-signed certificate."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import LiveServer, run_script


async def test_tls_options(tmp_path: Path, self_signed_cert: tuple[Path, Path]) -> None:
    cert, key = self_signed_cert
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
