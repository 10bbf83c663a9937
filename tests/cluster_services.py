"""PostgreSQL and Redis for the scale-out tests (and bench/cluster.py).

The shared services of the machine (started by the session, or by `.ci/run`):

* ``PARLOUR_TEST_POSTGRES`` — a DSN of a role that may create databases (default
  ``postgresql://postgres@127.0.0.1:5432/test``); every test run makes its own databases
  (`fresh_database`) and drops them afterwards;
* ``PARLOUR_TEST_REDIS`` — a Redis URL (default ``redis://127.0.0.1:6379/0``); every test run
  uses its own key and channel prefix (`fresh_prefix`).

A test that needs one calls `require_postgres()` / `require_redis()`: skipped, saying why,
when the service does not answer (or the `cluster` extra is not installed).

Tests that restart the database or Redis under load never touch the shared services (other
work on the machine uses them): `PrivatePostgres` and `PrivateRedis` run throw-away
instances on ephemeral ports in a temporary directory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from parlour.core.ports import StoreUnavailable
from parlour.storage.memory import MemoryStore

PG_DSN = os.environ.get("PARLOUR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PARLOUR_TEST_REDIS", "redis://127.0.0.1:6379/0")

__all__ = [
    "PG_DSN",
    "REDIS_URL",
    "FlakyStore",
    "PrivatePostgres",
    "PrivateRedis",
    "fresh_database",
    "fresh_prefix",
    "require_postgres",
    "require_redis",
]


class FlakyStore(MemoryStore):
    """A memory store whose next `down` commits fail as if PostgreSQL were down."""

    def __init__(self) -> None:
        super().__init__()
        self.down = 0

    def apply_assigning(self, writes: Any) -> Any:
        if self.down and writes:
            self.down -= 1
            raise StoreUnavailable("PostgreSQL unavailable: connection refused")
        return super().apply_assigning(writes)


def _skip_or_fail(reason: str) -> None:
    # In CI the services are started by .ci/run: a missing one there is a failure.
    if os.environ.get("PARLOUR_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _run(coro_fn: Callable[[], Any]) -> Any:
    """Run a coroutine to completion on a loop of its own, in a thread of its own (works
    inside a running loop too: the fixtures are asynchronous)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn())).result()


def require_postgres() -> None:
    try:
        import asyncpg
    except ImportError:
        _skip_or_fail("asyncpg is not installed (pip install 'parlour[cluster]')")
        return

    async def probe() -> None:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        await conn.close()

    try:
        _run(probe)
    except Exception as exc:
        _skip_or_fail(f"PostgreSQL at {PG_DSN} does not answer ({exc}); set PARLOUR_TEST_POSTGRES")


def require_redis() -> None:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        _skip_or_fail("redis is not installed (pip install 'parlour[cluster]')")
        return

    async def probe() -> None:
        client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        _run(probe)
    except Exception as exc:
        _skip_or_fail(f"Redis at {REDIS_URL} does not answer ({exc}); set PARLOUR_TEST_REDIS")


def _with_database(dsn: str, name: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


@contextlib.contextmanager
def fresh_database(admin_dsn: str | None = None) -> Iterator[Callable[[], str]]:
    """A function making a new empty database (returns its DSN); all of them are dropped
    when the block ends."""
    require_postgres()
    import asyncpg

    admin = admin_dsn or PG_DSN
    made: list[str] = []

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def make() -> str:
        name = "parlour_t_" + secrets.token_hex(6)
        _run(lambda: execute(f"CREATE DATABASE {name}"))
        made.append(name)
        return _with_database(admin, name)

    try:
        yield make
    finally:
        for name in made:
            with contextlib.suppress(Exception):
                _run(lambda name=name: execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def fresh_prefix() -> str:
    """A Redis key and channel prefix of its own for one test run."""
    return "parlour-t-" + secrets.token_hex(4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)  # polling a port that a child process opens: nothing to wait on
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def _pg_bin() -> Path | None:
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / "initdb").exists():
            return base
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PrivatePostgres:
    """A throw-away PostgreSQL server (initdb in a temporary directory, an ephemeral port,
    trust authentication), run as the ``postgres`` system user when started as root (the
    server refuses to run as root). `stop(fast=False)` is a crash (SIGKILL of the postmaster
    and every backend), `start()` brings it back on the same port with its data."""

    def __init__(self) -> None:
        bindir = _pg_bin()
        if bindir is None:
            pytest.skip("PostgreSQL's initdb is not installed (Debian: postgresql)")
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="parlour-pg-"))
        self.data = self.dir / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root, and there is no postgres user to run a server as")
            self._user = "postgres"
            shutil.chown(self.dir, "postgres")
        self._as_user(
            [str(bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "--no-sync", "-E", "UTF8"],
        )  # fmt: skip
        conf = self.data / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\nfsync = on\n"
                "max_connections = 100\nshared_buffers = 32MB\n"
            )
        self.start()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_user(self, cmd: list[str]) -> None:
        if self._user is not None:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data)]
        if self._user is not None:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        with (self.dir / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        _wait_port(self.port, 60, self.proc)
        # the port opens before the server accepts sessions: wait until one works
        import asyncpg

        async def ready() -> None:
            deadline = time.monotonic() + 60
            while True:
                try:
                    conn = await asyncpg.connect(self.dsn, timeout=5)
                    await conn.close()
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    # a separate postgres process: no event to wait on, poll until deadline
                    await asyncio.sleep(0.1)

        _run(ready)

    def stop(self, fast: bool = True) -> None:
        """Stop the server: a fast shutdown (SIGINT), or a crash (SIGKILL to the whole group)."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if fast:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # backends of a killed postmaster exit on their own; the port must be free again
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    pass
            except OSError:
                break
            # the killed postmaster's backends (not our children) free the port: poll
            time.sleep(0.05)
        pid_file = self.data / "postmaster.pid"
        if not fast:
            with contextlib.suppress(FileNotFoundError):
                pid_file.unlink()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A throw-away Redis server on an ephemeral port (nothing kept on disk)."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (Debian: redis-server)")
        self.exe = exe
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port, 30, self.proc)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        self.stop()
