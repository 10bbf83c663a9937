"""Two clients on two namespaced hosts with a NAT (nftables masquerade) between them.

    ns A (192.168.77.2) -- NAT router (192.168.77.1 | 203.0.113.1) -- ns B (203.0.113.2)

B and the relay are on the public side; A is behind the NAT, so B can only reach A at the
address the NAT gives it, which A learns from the relay. Everything stays inside namespaces
this test makes (documentation address ranges) and is removed at the end. Skipped, with the
reason, where root, ``ip netns`` or ``nft`` is missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from parlour.p2p.relay import ticket_for

HELPER = Path(__file__).with_name("netns_peer.py")
SECRET = b"netns-relay-secret-0123456789abc"
WAIT = 60.0


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def _nft(ns: str, ruleset: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input=ruleset.encode(), check=True, capture_output=True, timeout=30,
    )  # fmt: skip


@pytest.fixture
def topology() -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs the {tool} command (nftables for the NAT)")
    tag = f"p2p{os.getpid() % 100000}"
    ns = {"a": f"{tag}a", "nat": f"{tag}n", "b": f"{tag}b"}
    try:
        for name in ns.values():
            _sh("ip", "netns", "add", name)
    except (subprocess.CalledProcessError, OSError) as exc:
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        pytest.skip(f"cannot make network namespaces here: {exc}")
    try:
        a, nat, b = ns["a"], ns["nat"], ns["b"]
        _sh(
            "ip",
            "link",
            "add",
            f"{tag}a0",
            "netns",
            a,
            "type",
            "veth",
            "peer",
            f"{tag}a1",
            "netns",
            nat,
        )
        _sh(
            "ip",
            "link",
            "add",
            f"{tag}b0",
            "netns",
            b,
            "type",
            "veth",
            "peer",
            f"{tag}b1",
            "netns",
            nat,
        )
        for where, dev, addr in (
            (a, f"{tag}a0", "192.168.77.2/24"),
            (nat, f"{tag}a1", "192.168.77.1/24"),
            (nat, f"{tag}b1", "203.0.113.1/24"),
            (b, f"{tag}b0", "203.0.113.2/24"),
        ):
            _sh("ip", "-n", where, "addr", "add", addr, "dev", dev)
            _sh("ip", "-n", where, "link", "set", dev, "up")
        for where in ns.values():
            _sh("ip", "-n", where, "link", "set", "lo", "up")
        _sh("ip", "-n", a, "route", "add", "default", "via", "192.168.77.1")
        _sh("ip", "netns", "exec", nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _nft(
            nat,
            f"table ip nat {{\n chain post {{\n  type nat hook postrouting priority 100;\n"
            f'  oifname "{tag}b1" masquerade;\n }}\n}}\n',
        )
        yield ns | {"tag": tag}
    finally:
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), WAIT)
        if not line:
            err = await self.proc.stderr.read() if self.proc.stderr else b""
            raise AssertionError(f"helper ended: {err.decode()[-2000:]}")
        out: dict[str, Any] = json.loads(line)
        return out

    def write(self, obj: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")


@pytest.fixture
async def spawn() -> AsyncIterator[Any]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(ns: str, *args: str) -> Proc:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns, sys.executable, str(HELPER), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        procs.append(proc)
        return Proc(proc)

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _transfer(
    topology: dict[str, str], spawn: Any, tmp_path: Path, *, block_direct: bool
) -> tuple[dict[str, Any], dict[str, Any], bytes, Path]:
    data = os.urandom(3_000_000)
    src = tmp_path / "from-a.bin"
    src.write_bytes(data)
    dest = tmp_path / "b-inbox"
    dest.mkdir()
    relay = await spawn(topology["b"], "relay", SECRET.hex(), "203.0.113.2")
    relay_addr = (await relay.read())["relay"]
    a = await spawn(topology["a"], "peer")
    b = await spawn(topology["b"], "peer")
    a_port = (await a.read())["address"][1]
    b_port = (await b.read())["address"][1]
    if block_direct:  # the NAT lets A reach the relay but nothing else on B
        _nft(
            topology["nat"],
            "table ip filter {\n chain block {\n  type filter hook forward priority 0;\n"
            f"  udp dport {b_port} drop;\n  udp sport {b_port} drop;\n }}\n}}\n",
        )
    tid, key = os.urandom(8), os.urandom(32)
    common = {
        "tid": tid.hex(), "key": key.hex(), "name": src.name, "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "relay": relay_addr,
    }  # fmt: skip
    a_ticket, b_ticket = ticket_for(SECRET, tid, 0).hex(), ticket_for(SECRET, tid, 1).hex()
    a.write(
        common
        | {"role": "send", "path": str(src), "ticket": a_ticket, "peers": [["203.0.113.2", b_port]]}
    )
    observed = (await a.read())["observed"]  # A's address as the relay (the "server") saw it
    assert observed[0] == "203.0.113.1", "A must be seen behind the NAT"
    assert a_port > 0
    b.write(
        common | {"role": "receive", "path": str(dest), "ticket": b_ticket, "peers": [observed]}
    )
    assert "observed" in await b.read()
    ra = (await a.read())["result"]
    rb = (await b.read())["result"]
    return ra, rb, data, dest


@pytest.mark.root
async def test_direct_transfer_through_a_nat(
    topology: dict[str, str], spawn: Any, tmp_path: Path
) -> None:
    ra, rb, data, dest = await _transfer(topology, spawn, tmp_path, block_direct=False)
    assert ra["ok"] and rb["ok"], (ra, rb)
    assert not ra["via_relay"] and not rb["via_relay"]
    assert rb["path"][0] == "203.0.113.1"  # B reached A at its NAT address
    assert ra["path"][0] == "203.0.113.2"
    assert Path(rb["file"]).read_bytes() == data and Path(rb["file"]).parent == dest


@pytest.mark.root
async def test_relay_fallback_through_a_nat_that_blocks_the_direct_path(
    topology: dict[str, str], spawn: Any, tmp_path: Path
) -> None:
    ra, rb, data, _ = await _transfer(topology, spawn, tmp_path, block_direct=True)
    assert ra["ok"] and rb["ok"], (ra, rb)
    assert ra["via_relay"] and rb["via_relay"]
    assert Path(rb["file"]).read_bytes() == data
