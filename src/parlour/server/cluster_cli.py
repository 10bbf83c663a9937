"""`parlour cluster`: N `parlour serve` nodes on one PostgreSQL and one Redis, with
`parlour proxy` in front — TCP mode for the chat port, HTTP (WebSocket) mode for the web
port, health checks on every node. For a machine of one's own (`make cluster`), for the
scale-out tests and for `bench/cluster.py`; a real deployment runs the same commands under
its service manager, one node per machine (docs/operations.md, "Scale-out").

`LocalCluster` is the part the tests and the benchmark use: it starts and stops the
processes, kills a node with SIGKILL and brings it back on the same ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import sys
import urllib.parse
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import click

__all__ = ["LocalCluster", "Proc", "cluster", "ensure_database"]

_LISTENING = re.compile(r"listening on (?:tcp|tls)://\[?([^\]\s]+?)\]?:(\d+)")
_PROXY_LISTENING = re.compile(r"listening on ([\d.]+|\[[^\]]+\]):(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """One child process whose output goes to a log file; `ready` resolves with the port it
    says it listens on."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    pattern: re.Pattern[str]
    process: asyncio.subprocess.Process | None = None
    ready: asyncio.Future[int] | None = None
    _reader: asyncio.Task[None] | None = None
    _log: IO[str] | None = None
    #: the last lines it printed (said in the error when it exits before listening)
    _tail: deque[str] = field(default_factory=lambda: deque(maxlen=6))

    async def start(self, timeout: float = 60.0) -> int:
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future()
        self._log = self.log_path.open("a", encoding="utf-8")
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        self._reader = loop.create_task(self._read(self.process, self.ready))
        try:
            return await asyncio.wait_for(asyncio.shield(self.ready), timeout)
        except BaseException:
            await self.kill()
            raise

    async def _read(self, process: asyncio.subprocess.Process, ready: asyncio.Future[int]) -> None:
        assert process.stdout is not None and self._log is not None
        log = self._log
        while True:
            line = await process.stdout.readline()
            if not line:
                break
            text = line.decode(errors="replace")
            log.write(text)
            log.flush()
            self._tail.append(text.rstrip()[:300])
            if not ready.done():
                found = self.pattern.search(text)
                if found:
                    ready.set_result(int(found.group(2)))
        if not ready.done():
            code = await process.wait()
            last = " | ".join(self._tail)
            ready.set_exception(
                RuntimeError(
                    f"{self.name} exited with {code} before listening ({last}); see {self.log_path}"
                )
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def kill(self) -> None:
        """SIGKILL: no goodbye, no flush (a crash)."""
        await self._end(signal.SIGKILL, 10)

    async def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: a graceful shutdown (SIGKILL after `timeout`)."""
        await self._end(signal.SIGTERM, timeout)

    async def _end(self, sig: signal.Signals, timeout: float) -> None:
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.process = None


@dataclass
class LocalCluster:
    """N chat nodes and the proxies in front of them, as child processes."""

    store: str
    bus: str
    nodes: int = 3
    prefix: str = "parlour"
    work_dir: Path = field(default_factory=lambda: Path("cluster"))
    #: the proxies' ports (0: any free one); the nodes take free ports of their own
    chat_port: int = 0
    web_port: int | None = 0
    web: bool = True
    admin_password: str | None = None
    #: signs file tokens: the same on every node, so an upload may reach any of them
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    #: more `parlour serve` options (`--rate 1000`...) and environment
    serve_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    health_interval: float = 0.5
    node_procs: list[Proc] = field(default_factory=list)
    node_ports: list[int] = field(default_factory=list)
    node_web_ports: list[int] = field(default_factory=list)
    node_proxy_ports: list[int] = field(default_factory=list)
    proxies: list[Proc] = field(default_factory=list)
    proxy_port: int = 0
    web_proxy_port: int | None = None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOUR_")}
        env.update(self.env)
        if self.admin_password is not None:
            env["PARLOUR_ADMIN_PASSWORD"] = self.admin_password
        env["PARLOUR_SECRET_KEY"] = self.secret_key
        if self.web and self.web_port:
            # what users open: `hello` sends clients of the chat port there for files too
            env.setdefault("PARLOUR_PUBLIC_URL", f"http://127.0.0.1:{self.web_port}/")
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def _node(self, i: int) -> Proc:
        argv = [
            sys.executable, "-m", "parlour", "serve",
            "--port", str(self.node_ports[i]),
            # the chat proxy connects here and names each client in a PROXY header, so
            # per-address limits and lockouts count clients, not the proxy
            "--proxy-port", str(self.node_proxy_ports[i]), "--trusted-proxies", "127.0.0.1",
            "--store", self.store, "--bus", self.bus,
            "--node-name", f"node{i + 1}",
            "--data-dir", str(self.work_dir / f"node{i + 1}"),
            "--files-dir", str(self.work_dir / "files"),  # uploads: one directory for all
        ]  # fmt: skip
        env = self._env()
        env["PARLOUR_BUS_PREFIX"] = self.prefix
        if self.web:
            argv += ["--web", "true", "--web-port", str(self.node_web_ports[i])]
        else:
            argv += ["--web", "false"]
        argv += list(self.serve_args)
        return Proc(f"node{i + 1}", argv, env, self.work_dir / f"node{i + 1}.log", _LISTENING)

    async def start(self) -> None:
        """The first node (it creates the administrator on an empty database), then the
        others at once, then the proxies."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.node_ports = [free_port() for _ in range(self.nodes)]
        self.node_web_ports = [free_port() for _ in range(self.nodes)]
        self.node_proxy_ports = [free_port() for _ in range(self.nodes)]
        self.node_procs = [self._node(i) for i in range(self.nodes)]
        await self._start_node(0)
        await asyncio.gather(*(self._start_node(i) for i in range(1, self.nodes)))
        self.proxy_port = await self._proxy(
            "chat-proxy", "tcp", self.node_proxy_ports, self.chat_port
        )
        if self.web and self.web_port is not None:
            self.web_proxy_port = await self._proxy(
                "web-proxy", "http", self.node_web_ports, self.web_port
            )

    async def _start_node(self, i: int, attempts: int = 3) -> None:
        """Start node i; a node that exits before it listens is tried again on fresh ports
        (a port picked free may be taken by the time the node binds it)."""
        for attempt in range(1, attempts + 1):
            try:
                await self.node_procs[i].start()
                return
            except RuntimeError as exc:
                if attempt == attempts:
                    raise
                print(f"parlour cluster: {exc}; trying again on other ports", file=sys.stderr)
                self.node_ports[i] = free_port()
                self.node_web_ports[i] = free_port()
                self.node_proxy_ports[i] = free_port()
                self.node_procs[i] = self._node(i)

    async def _proxy(self, name: str, mode: str, ports: list[int], listen: int) -> int:
        argv = [
            sys.executable, "-m", "parlour", "proxy", "--mode", mode,
            "--listen-port", str(listen), "--no-admin",
            "--health-interval", str(self.health_interval), "--health-timeout", "1",
            "--rise", "1", "--fall", "1", "--connect-timeout", "1", "--retry-limit", "3",
        ]  # fmt: skip
        if mode == "http":
            argv += ["--health-kind", "http", "--health-path", "/"]
        else:
            argv += ["--proxy-protocol", "v2"]
        for port in ports:
            argv += ["-b", f"127.0.0.1:{port}"]
        proc = Proc(name, argv, self._env(), self.work_dir / f"{name}.log", _PROXY_LISTENING)
        port = await proc.start()
        self.proxies.append(proc)
        return port

    async def kill(self, i: int) -> None:
        """Node i dies at once (SIGKILL)."""
        await self.node_procs[i].kill()

    async def restart(self, i: int) -> None:
        """Node i comes back on its ports (a new node id for the others)."""
        await self.node_procs[i].kill()
        self.node_procs[i] = self._node(i)
        await self.node_procs[i].start()

    async def stop(self) -> None:
        for proc in self.proxies:
            await proc.stop()
        await asyncio.gather(*(p.stop() for p in self.node_procs))


async def ensure_database(dsn: str) -> bool:
    """Create the database of `dsn` when it does not exist (connecting to the server's
    `postgres` database); True when it was created."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    parts = urllib.parse.urlsplit(dsn)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise click.ClickException(f"cannot create a database named {name!r}; create it first")
    admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return True


@click.command(
    "cluster",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option("--nodes", "-n", default=3, show_default=True, help="Chat nodes to start.")
@click.option(
    "--store",
    default=lambda: os.environ.get("PARLOUR_STORE", "postgresql://postgres@127.0.0.1:5432/parlour"),
    show_default="$PARLOUR_STORE or postgresql://postgres@127.0.0.1:5432/parlour",
    help="PostgreSQL database shared by the nodes (created when missing).",
)
@click.option(
    "--bus",
    default=lambda: os.environ.get("PARLOUR_BUS", "redis://127.0.0.1:6379/0"),
    show_default="$PARLOUR_BUS or redis://127.0.0.1:6379/0",
    help="Redis the nodes talk through.",
)
@click.option("--prefix", default="parlour", show_default=True, help="Redis key prefix.")
@click.option("--port", default=7878, show_default=True, help="Chat port of the TCP proxy.")
@click.option("--web-port", default=8080, show_default=True, help="Port of the HTTP proxy.")
@click.option("--no-web", is_flag=True, help="Chat port only (no web listeners, no HTTP proxy).")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("cluster"),
    show_default=True,
    help="Where the logs go.",
)
@click.argument("serve_args", nargs=-1, type=click.UNPROCESSED)
def cluster(
    nodes: int,
    store: str,
    bus: str,
    prefix: str,
    port: int,
    web_port: int,
    no_web: bool,
    work_dir: Path,
    serve_args: tuple[str, ...],
) -> None:
    """Run N chat nodes on PostgreSQL + Redis behind `parlour proxy` until Ctrl+C.

    Extra arguments go to every `parlour serve` (e.g. `-- --duplicate-login replace`)."""
    from parlour.server.config import is_postgres, is_redis, redact

    if nodes < 1:
        raise click.ClickException("--nodes: at least 1")
    if not is_postgres(store) or not is_redis(bus):
        raise click.ClickException("--store must be postgresql://… and --bus redis://…")
    from parlour.core.passwords import generate_password

    local = LocalCluster(
        store=store,
        bus=bus,
        nodes=nodes,
        prefix=prefix,
        work_dir=work_dir,
        chat_port=port,
        web_port=None if no_web else web_port,
        web=not no_web,
        admin_password=os.environ.get("PARLOUR_ADMIN_PASSWORD"),
        secret_key=os.environ.get("PARLOUR_SECRET_KEY") or secrets.token_urlsafe(32),
        serve_args=serve_args,
        # (per-address limits and lockouts stay on: the proxies name each client to the
        # nodes, by the PROXY protocol and X-Forwarded-For)
    )

    async def main() -> None:
        try:
            if await ensure_database(store):
                click.echo(f"created the database {redact(store)}")
                if local.admin_password is None:  # shown here, once; never written down
                    local.admin_password = generate_password()
                    click.echo(f"administrator: admin / {local.admin_password}")
        except OSError as exc:
            raise click.ClickException(f"PostgreSQL at {redact(store)}: {exc}") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await local.start()
            click.echo(
                f"{nodes} node(s) on {redact(store)} and {redact(bus)} (logs in {work_dir}/)"
            )
            for i, (p, pp) in enumerate(zip(local.node_ports, local.node_proxy_ports, strict=True)):
                click.echo(f"  node{i + 1}: chat 127.0.0.1:{p}, from the proxy 127.0.0.1:{pp}")
            click.echo(f"chat (TCP proxy): 127.0.0.1:{local.proxy_port}")
            if local.web_proxy_port is not None:
                click.echo(f"web (HTTP proxy): http://127.0.0.1:{local.web_proxy_port}/")
            click.echo("Press Ctrl+C to stop.")
            await stop.wait()
        finally:
            await local.stop()
            click.echo("cluster stopped")

    try:
        asyncio.run(main())
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
