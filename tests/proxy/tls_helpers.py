"""Certificates for the proxy's TLS tests, made with the openssl CLI: a test CA and leaf
certificates it signs for given names (session-scoped: made once per test run), and
client contexts that trust that CA."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Certs", "Leaf", "client_context", "pki"]


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


class Certs:
    """A CA in `root`, and leaves it signs on demand (cached by name list)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = root / "ca.pem"
        self.ca_key = root / "ca.key"
        _run(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-keyout", str(self.ca_key), "-out", str(self.ca),
            "-subj", "/CN=Parlour test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        self._made: dict[tuple[str, ...], Leaf] = {}
        self._serial = 0

    def leaf(self, *names: str, fresh: bool = False, ca: Certs | None = None) -> Leaf:
        """A certificate for `names` (DNS names; "127.0.0.1" also becomes an IP entry),
        signed by this CA (or `ca`). `fresh`: a new one, not the cached one."""
        signer = ca or self
        key = (*names, str(id(signer)))
        if not fresh and key in self._made:
            return self._made[key]
        self._serial += 1
        stem = self.root / f"leaf{self._serial}"
        cert, pkey, csr, ext = (stem.with_suffix(s) for s in (".pem", ".key", ".csr", ".ext"))
        alt = ",".join((f"IP:{n}" if n.replace(".", "").isdigit() else f"DNS:{n}") for n in names)
        ext.write_text(f"subjectAltName={alt}\nbasicConstraints=CA:FALSE\n")
        _run(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(pkey), "-out", str(csr), "-subj", f"/CN={names[0]}",
        )  # fmt: skip
        _run(
            "x509", "-req", "-in", str(csr), "-CA", str(signer.ca), "-CAkey", str(signer.ca_key),
            "-set_serial", str(1000 + self._serial), "-days", "2", "-out", str(cert),
            "-extfile", str(ext),
        )  # fmt: skip
        leaf = Leaf(cert, pkey)
        self._made[key] = leaf
        return leaf


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certs]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI")
    yield Certs(tmp_path_factory.mktemp("pki"))


def client_context(ca: Path | None, **kw: object) -> ssl.SSLContext:
    """A client context trusting `ca` (None: no verification at all)."""
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    for name, value in kw.items():
        setattr(ctx, name, value)
    return ctx
