"""Helpers for `parlour chat` end-to-end tests: a real in-process chat server on 127.0.0.1
(port 0, restartable on the same port and data directory) and `parlour chat` subprocesses."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from parlour.core.passwords import Argon2Hasher
from parlour.server.app import ChatServer
from parlour.server.config import Settings

ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "password-123"
#: generous upper bound for one expected line; tests wait on output, never sleep
TIMEOUT = 30.0


class LiveServer:
    """A real `ChatServer` that can be stopped and started again on the same port."""

    def __init__(self, data_dir: Path, **overrides: Any) -> None:
        self.settings = dataclasses.replace(
            # no web listener: a restart reuses the chat port, and port + 1 may be taken
            Settings(port=0, data_dir=data_dir, admin_password=ADMIN_PASSWORD, web=False),
            **overrides,
        )
        self.server: ChatServer | None = None
        self.port = 0

    async def start(self) -> None:
        settings = dataclasses.replace(self.settings, port=self.port)
        self.server = await ChatServer.start(
            settings,
            password_hasher=Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1),
            tick_interval=0.2,
        )
        self.port = self.server.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=2)
            self.server = None


class ChatProcess:
    """`python -m parlour chat ...` with pipes; read its output line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []

    @classmethod
    async def start(
        cls,
        port: int,
        *args: str,
        password: str = PASSWORD,
        extra_env: dict[str, str] | None = None,
    ) -> ChatProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
        env.update(PARLOUR_PASSWORD=password, PYTHONUNBUFFERED="1", **(extra_env or {}))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "parlour", "chat", "--port", str(port), *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )  # fmt: skip
        return cls(proc)

    async def send(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
        await self.proc.stdin.drain()

    async def expect(self, needle: str, *, stream: str = "out") -> str:
        """Read lines from stdout (or stderr) until one contains ``needle``; return it."""
        reader = self.proc.stdout if stream == "out" else self.proc.stderr
        seen = self.out if stream == "out" else self.err
        assert reader is not None
        while True:
            raw = await asyncio.wait_for(reader.readline(), TIMEOUT)
            if not raw:
                raise AssertionError(f"{stream} ended before {needle!r}; got {seen!r}")
            line = raw.decode().rstrip("\n")
            seen.append(line)
            if needle in line:
                return line

    async def expect_all(self, *needles: str) -> None:
        """Read stdout until every needle has appeared, in any order."""
        missing = set(needles)
        while missing:
            line = await self.expect("")
            missing = {n for n in missing if n not in line}

    async def finish(self) -> tuple[int, str, str]:
        """Close stdin (end of input) and collect the rest: (exit code, stdout, stderr)."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        out, err = await asyncio.wait_for(self.proc.communicate(), TIMEOUT)  # bounded
        assert self.proc.returncode is not None
        all_out = "\n".join([*self.out, out.decode()])
        all_err = "\n".join([*self.err, err.decode()])
        return self.proc.returncode, all_out, all_err

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def run_script(
    port: int, script: str | bytes, *args: str, password: str = PASSWORD
) -> tuple[int, str, str]:
    """``printf script | parlour chat args``: (exit code, stdout, stderr)."""
    chat = await ChatProcess.start(port, *args, password=password)
    try:
        assert chat.proc.stdin is not None
        chat.proc.stdin.write(script.encode() if isinstance(script, str) else script)
        return await chat.finish()
    finally:
        chat.kill()


class CuttableProxy:
    """A TCP forwarder on 127.0.0.1:0 in front of the server whose connections the test can
    cut (both sides see the close) and whose door it can keep shut for a while."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = True
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            dst.transport.abort()

    def cut(self) -> None:
        """Drop every connection now and refuse new ones until :meth:`reopen`."""
        self.open = False
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    def reopen(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
