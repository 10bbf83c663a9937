"""Helpers for the packet lab tests: tshark runner, scapy conversions, paths."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

TSHARK = shutil.which("tshark")
EXAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "http_messages.csv"

TsharkFields = Callable[..., list[list[str]]]


def run_tshark_fields(path: Path, *fields: str, extra: tuple[str, ...] = ()) -> list[list[str]]:
    assert TSHARK is not None
    cmd = [
        TSHARK, "-n", "-r", str(path),
        "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
        *extra, "-T", "fields", "-E", "separator=;", "-E", "occurrence=a",
    ]  # fmt: skip
    for f in fields:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return [line.split(";") for line in proc.stdout.splitlines()]


def scapy_options(raw: bytes) -> list[tuple[str, object]]:
    """Our TCP option bytes as the list scapy's TCP(options=...) takes, in the same order."""
    out: list[tuple[str, object]] = []
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 1:
            out.append(("NOP", None))
            i += 1
            continue
        if kind == 0:
            out.append(("EOL", None))
            i += 1
            continue
        length = raw[i + 1]
        body = raw[i + 2 : i + length]
        if kind == 2:
            out.append(("MSS", int.from_bytes(body, "big")))
        elif kind == 3:
            out.append(("WScale", body[0]))
        elif kind == 4:
            out.append(("SAckOK", b""))
        elif kind == 8:
            out.append(
                ("Timestamp", (int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big")))
            )
        elif kind == 5:
            vals = [int.from_bytes(body[j : j + 4], "big") for j in range(0, len(body), 4)]
            out.append(("SAck", tuple(vals)))
        else:
            raise AssertionError(f"unexpected option kind {kind}")
        i += length
    return out
