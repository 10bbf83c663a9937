"""`parlour serve` as a real process: first start output, graceful shutdown on SIGTERM/SIGINT,
and durability across `kill -9` (acknowledged = stored; resume delivers exactly what was
missed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from e2e_helpers import TIMEOUT, Wire

ADMIN_PASSWORD = "process-admin-pw"
PASSWORD = "password-123"


class ServerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, banner: list[str]) -> None:
        self.proc = proc
        self.port = port
        self.banner = banner

    @classmethod
    async def start(
        cls,
        data_dir: Path,
        *args: str,
        admin_env: bool = True,
        log_level: str = "WARNING",
        stderr: Path | None = None,
    ) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
        # cheap Argon2id: these tests are about the process, not the hash (tested elsewhere)
        env["PARLOUR_ARGON2_TIME_COST"] = "1"
        env["PARLOUR_ARGON2_MEMORY_KIB"] = "64"
        if admin_env:
            env["PARLOUR_ADMIN_PASSWORD"] = ADMIN_PASSWORD
        with contextlib.ExitStack() as files:
            err = files.enter_context(stderr.open("ab")) if stderr is not None else None
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "parlour", "serve", "--port", "0",
                "--data-dir", str(data_dir), "--log-level", log_level, *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=err if err is not None else asyncio.subprocess.DEVNULL,
                env=env,
            )  # fmt: skip
        assert proc.stdout is not None
        banner: list[str] = []
        port = None
        while port is None:
            line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
            if not line:
                raise AssertionError(f"server exited early: {banner}")
            text = line.decode()
            banner.append(text)
            found = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", text)
            if found:
                port = int(found.group(1))
        while not banner[-1].startswith("Press Ctrl+C"):
            banner.append((await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode())
        return cls(proc, port, banner)

    async def rest_of_output(self) -> str:
        assert self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.read(), TIMEOUT)).decode()

    async def wait(self) -> int:
        return await asyncio.wait_for(self.proc.wait(), TIMEOUT)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


@pytest.fixture
async def processes() -> AsyncIterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for p in started:
        p.kill()
        await p.proc.wait()


@pytest.fixture
async def wires() -> AsyncIterator[list[Wire]]:
    opened: list[Wire] = []
    yield opened
    for w in opened:
        await w.close()


async def test_first_start_prints_admin_password_once(
    tmp_path: Path, processes: list[ServerProcess], wires: list[Wire]
) -> None:
    log = tmp_path / "stderr.log"
    first = await ServerProcess.start(
        tmp_path / "data", admin_env=False, log_level="DEBUG", stderr=log
    )
    processes.append(first)
    text = "".join(first.banner)
    found = re.search(r"password: (\S+)", text)
    assert found, text
    password = found.group(1)
    c = await Wire.connect(first.port)
    wires.append(c)
    assert (await c.login("admin", password))["role"] == "admin"
    rooms = (await c.ok("rooms"))["rooms"]
    assert sorted(r["name"] for r in rooms) == ["general", "help", "random"]
    await c.ok("passwd", old_password=password, new_password="changed-admin-pw")
    first.proc.send_signal(signal.SIGTERM)
    assert await first.wait() == 0
    assert password not in await first.rest_of_output()  # printed once only

    second = await ServerProcess.start(tmp_path / "data", admin_env=False, stderr=log)
    processes.append(second)
    assert "password:" not in "".join(second.banner)
    d = await Wire.connect(second.port)
    wires.append(d)
    await d.login("admin", "changed-admin-pw")
    second.proc.send_signal(signal.SIGTERM)
    assert await second.wait() == 0
    logged = log.read_text()
    assert "login" in logged  # the DEBUG log was written ...
    assert password not in logged and "changed-admin-pw" not in logged  # ... without secrets


async def test_admin_password_from_the_environment_and_a_config_file(
    tmp_path: Path, processes: list[ServerProcess], wires: list[Wire]
) -> None:
    config = tmp_path / "parlour.toml"
    config.write_text('[server]\ndefault_rooms = ["lobby", "dev"]\nmax_message = 50\n')
    server = await ServerProcess.start(
        tmp_path / "data",
        "--host", "127.0.0.1", "--config", str(config),
        stderr=tmp_path / "stderr.log",
    )  # fmt: skip
    processes.append(server)
    assert "password:" not in "".join(server.banner)
    c = await Wire.connect(server.port)
    wires.append(c)
    assert (await c.login("admin", ADMIN_PASSWORD))["role"] == "admin"
    assert sorted(r["name"] for r in (await c.ok("rooms"))["rooms"]) == ["dev", "lobby"]
    await c.ok("join", room="lobby")
    err = await c.error("send", room="lobby", text="x" * 51, client_id="long")
    assert err["code"] == "text_too_long" and err["max_text"] == 50
    server.proc.send_signal(signal.SIGTERM)
    assert await server.wait() == 0
    assert ADMIN_PASSWORD not in (tmp_path / "stderr.log").read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
async def test_graceful_shutdown_tells_clients_and_exits_0(
    tmp_path: Path, processes: list[ServerProcess], wires: list[Wire], sig: signal.Signals
) -> None:
    server = await ServerProcess.start(tmp_path / "data", "--rate", "10000", "--burst", "1000")
    processes.append(server)
    c = await Wire.connect(server.port)
    wires.append(c)
    await c.signup("alice", PASSWORD)
    await c.ok("join", room="general")
    await c.ok("send", room="general", text="before shutdown", client_id="s1")
    # requests in flight when the signal arrives: each is answered (and then durable) or
    # never answered; none is lost after an ok
    futures, _ = c.send_many(
        [("send", {"room": "general", "text": f"f{i}", "client_id": f"f{i}"}) for i in range(50)]
    )
    server.proc.send_signal(sig)
    bye = await c.event("disconnect")
    assert bye["code"] == "shutting_down" and bye["reason"]
    await c.wait_closed()
    assert await server.wait() == 0
    assert "stopped" in await server.rest_of_output()
    acked = [f.result()["data"]["seq"] for f in futures if not f.exception()]

    again = await ServerProcess.start(tmp_path / "data")
    processes.append(again)
    d = await Wire.connect(again.port)
    wires.append(d)
    await d.login("alice", PASSWORD)
    stored = [m["seq"] for m in (await d.ok("history", room="general", limit=100))["messages"]]
    assert stored[0] == 1 and set(acked) <= set(stored)


async def test_kill_9_loses_nothing_acknowledged_and_resume_is_exact(
    tmp_path: Path, processes: list[ServerProcess], wires: list[Wire]
) -> None:
    data = tmp_path / "data"
    server = await ServerProcess.start(data, "--rate", "10000", "--burst", "1000")
    processes.append(server)
    alice, bob = await Wire.connect(server.port), await Wire.connect(server.port)
    wires += [alice, bob]
    await alice.signup("alice", PASSWORD)
    await bob.signup("bob", PASSWORD)
    await alice.ok("join", room="general")
    await bob.ok("join", room="general")
    for i in range(5):
        await alice.ok("send", room="general", text=f"seen {i}", client_id=f"a{i}")
    seen = [await bob.event("message") for _ in range(5)]
    last_seen = seen[-1]["seq"]
    await bob.close()  # bob goes away having seen 1..5

    missed = await asyncio.gather(
        *(
            alice.send("send", room="general", text=f"missed {i}", client_id=f"m{i}")
            for i in range(40)
        ),
        alice.send("dm", to="bob", text="offline dm", client_id="dm1"),
    )
    assert all(r["type"] == "ok" for r in missed), [r for r in missed if r["type"] != "ok"]
    server.kill()  # SIGKILL right after the acks: no shutdown, no flush
    await server.proc.wait()
    await alice.wait_closed()

    restarted = await ServerProcess.start(data)
    processes.append(restarted)
    bob2 = await Wire.connect(restarted.port)
    wires.append(bob2)
    await bob2.login("bob", PASSWORD, resume={"rooms": {"general": last_seen}, "dms": {}})
    await bob2.roundtrip()
    got = bob2.drain_events("message")
    expected = sorted(r["data"]["seq"] for r in missed[:-1])
    assert [e["seq"] for e in got] == expected == list(range(last_seen + 1, last_seen + 41))
    assert [e["text"] for e in got] == [f"missed {i}" for i in range(40)]
    assert [e["text"] for e in bob2.drain_events("dm")] == ["offline dm"]

    # a resend of an acknowledged message after the crash is recognised, not stored twice
    alice2 = await Wire.connect(restarted.port)
    wires.append(alice2)
    await alice2.login("alice", PASSWORD)
    again = await alice2.ok("send", room="general", text="missed 39", client_id="m39")
    assert again["duplicate"] is True
    assert again["seq"] == missed[39]["data"]["seq"]
