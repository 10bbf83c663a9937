"""`parlour proxy`: run the reverse proxy / load balancer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import secrets
import signal
import socket
import sys
from typing import Any

import click

from parlour.proxy.balancing import ALGORITHMS
from parlour.proxy.config import ConfigError, ProxyConfig, load_config, parse_backend
from parlour.proxy.control import ControlError

__all__ = ["proxy", "run_worker"]

log = logging.getLogger("parlour.proxy")

GC_THRESHOLD_GEN0 = 20_000  # (CPython's default is 700)


def _open_store(cfg: ProxyConfig) -> Any:
    if cfg.store is None:
        return None
    from parlour.proxy.stats_store import StatsStore

    return StatsStore(cfg.store)


async def _serve(cfg: ProxyConfig, worker: int, run_id: str | None) -> None:
    from parlour.proxy.runtime import ProxyRuntime

    store = _open_store(cfg)
    runtime = ProxyRuntime(
        cfg, store=store, admin=worker == 0, persist=worker == 0, worker=worker, run_id=run_id
    )
    await runtime.start()
    # Everything built so far lives as long as the process: keep it out of the cyclic
    # collector's scans, and collect the young generation less often (the relay
    # allocates a few short-lived objects per request, almost none in cycles).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD_GEN0, 20, 100)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_hup() -> None:
        async def do() -> None:
            try:
                await runtime.reload()
            except ControlError as exc:
                log.error("reload failed: %s", exc.message)

        runtime.upstreams.spawn(do())

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    # (after the handlers: a SIGHUP from now on reloads rather than ends the process)
    if cfg.workers > 1:
        log.info("worker %d (pid %d) ready", worker, os.getpid())
    else:
        log.info("ready (pid %d): SIGHUP reloads, SIGTERM or SIGINT stops", os.getpid())
    try:
        await stop.wait()
        log.info("shutting down: draining connections")
        await runtime.stop()
    finally:
        if runtime.store is not None:
            runtime.store.close()


def _check_tls(cfg: ProxyConfig) -> None:
    """Load every certificate, key and CA file once before any worker starts, so a bad
    one is a one-line error rather than a worker failing later."""
    from parlour.proxy.tls import ServerTls, TlsError, admin_context, backend_context

    try:
        if cfg.tls is not None:
            ServerTls(cfg.tls)
        if cfg.backend_tls is not None:
            backend_context(cfg.backend_tls)
        if cfg.admin_port is not None and cfg.admin_tls_cert and cfg.admin_tls_key:
            admin_context(cfg.admin_tls_cert, cfg.admin_tls_key)
    except TlsError as exc:
        raise click.ClickException(str(exc)) from None


def run_worker(cfg: ProxyConfig, worker: int = 0, run_id: str | None = None) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(_serve(cfg, worker, run_id))
    else:
        uvloop.run(_serve(cfg, worker, run_id))


def _reserve_port(cfg: ProxyConfig) -> tuple[ProxyConfig, socket.socket | None]:
    """With `listen_port = 0`, pick the port once in the parent so every worker binds the
    same one. The reserving socket (SO_REUSEPORT, bound, never listening) takes no
    connections and keeps the port ours until the workers exit."""
    if cfg.listen_port != 0:
        return cfg, None
    infos = socket.getaddrinfo(cfg.listen_host, 0, type=socket.SOCK_STREAM)
    sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(infos[0][4])
    return dataclasses.replace(cfg, listen_port=sock.getsockname()[1]), sock


def _run_workers(cfg: ProxyConfig) -> None:
    """Fork `workers` processes sharing the port with SO_REUSEPORT; forward signals."""
    cfg, _reserved = _reserve_port(cfg)
    run_id = secrets.token_hex(8)  # the workers' statistics rows of this run
    children: list[int] = []
    for i in range(cfg.workers):
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                run_worker(cfg, i, run_id)
            except OSError as exc:
                log.error("worker %d cannot start the proxy: %s", i, exc)
                code = 1
            except BaseException:
                log.exception("worker %d crashed", i)
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    status = 0
    alive = set(children)
    while alive:
        try:
            pid, code = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            break
        alive.discard(pid)
        exit_code = os.waitstatus_to_exitcode(code)
        if exit_code != 0 and not status:
            # one worker failed (it logged why): stop the others rather than run on
            # with part of the capacity and, for worker 0, no admin listener
            log.error("a worker exited with status %d: stopping the others", exit_code)
            for other in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(other, signal.SIGTERM)
        status = status or exit_code
    sys.exit(status)


@click.command(name="proxy")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="TOML file.")
@click.option("--mode", type=click.Choice(["http", "tcp"]), help="L7 HTTP or L4 TCP.")
@click.option("--listen-host", help="Address to listen on (default 127.0.0.1).")
@click.option("--listen-port", "--port", type=int, help="Port to listen on (default 8080).")
@click.option("--backlog", type=int, help="listen() backlog.")
@click.option("--workers", type=int, help="Worker processes sharing the port (SO_REUSEPORT).")
@click.option(
    "-b", "--backend", "backend_list", multiple=True, help="host:port[:weight[:max_conns]]"
)
@click.option("--algorithm", type=click.Choice(ALGORITHMS), help="Balancing algorithm.")
@click.option("--selection-mode", type=click.Choice(["per_connection", "interval"]))
@click.option("--interval", "interval_s", type=float, help="Seconds per choice (interval mode).")
@click.option("--hash-header", help="Header for header_hash.")
@click.option("--retry-limit", type=int)
@click.option("--buffer-size", type=int, help="Per-connection buffer / write high-water mark.")
@click.option("--connect-timeout", "connect_timeout_s", type=float)
@click.option("--client-timeout", "client_timeout_s", type=float)
@click.option("--server-timeout", "server_timeout_s", type=float)
@click.option("--tunnel-timeout", "tunnel_timeout_s", type=float)
@click.option("--idle-timeout", "idle_timeout_s", type=float)
@click.option("--queue-timeout", "queue_timeout_s", type=float)
@click.option("--health-kind", type=click.Choice(["tcp", "http"]))
@click.option("--health-path")
@click.option("--health-interval", "health_interval_s", type=float)
@click.option("--health-timeout", "health_timeout_s", type=float)
@click.option("--rise", "health_rise", type=int)
@click.option("--fall", "health_fall", type=int)
@click.option("--max-connections", type=int)
@click.option("--trust-forwarded/--no-trust-forwarded", default=None)
@click.option(
    "--fast-lane/--no-fast-lane",
    default=None,
    help="Relay plain requests natively (http mode; default on when built).",
)
@click.option("--proxy-protocol", type=click.Choice(["v1", "v2"]), help="TCP mode only.")
@click.option("--tls-cert", help="TLS on the listener: certificate chain (PEM).")
@click.option("--tls-key", help="TLS on the listener: private key (PEM).")
@click.option("--tls-min-version", type=click.Choice(["1.2", "1.3"]), help="Default 1.2.")
@click.option(
    "--backend-tls/--no-backend-tls", default=None, help="TLS on connections to backends."
)
@click.option("--backend-ca", help="Verify backends against this CA file (PEM).")
@click.option(
    "--backend-no-verify",
    "backend_verify",
    flag_value=False,
    default=None,
    help="TLS to backends without verifying their certificates.",
)
@click.option("--admin-tls-cert", help="HTTPS for the admin listener: certificate (PEM).")
@click.option("--admin-tls-key", help="HTTPS for the admin listener: private key (PEM).")
@click.option("--store", help="SQLite file for backends, settings and statistics.")
@click.option("--load-from", type=click.Choice(["previous", "config"]))
@click.option("--admin-host")
@click.option("--admin-port", type=int)
@click.option("--no-admin", is_flag=True, help="Do not start the admin API / dashboard.")
@click.option("-v", "--verbose", is_flag=True)
def proxy(
    config_path: str | None,
    backend_list: tuple[str, ...],
    no_admin: bool,
    verbose: bool,
    **options: Any,
) -> None:
    """Reverse proxy / load balancer (HTTP/1.1, WebSocket, TCP) with health checks,
    live management, persistent statistics and a web dashboard."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # the dashboard polls every second: keep its access log out
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        backends = [parse_backend(b) for b in backend_list]
        cfg = load_config(config_path, backends=backends, **options)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if no_admin:
        cfg = dataclasses.replace(cfg, admin_port=None)
    token = cfg.admin_token or os.environ.get("PARLOUR_PROXY_TOKEN") or None
    if cfg.admin_port is not None and token is not None and len(token) < 8:
        raise click.ClickException(
            "the admin token ([admin] token or PARLOUR_PROXY_TOKEN) must be at least 8 "
            "characters; leave it unset to have one generated"
        )
    _check_tls(cfg)
    if cfg.store is not None:  # open (and migrate) once, before any worker starts
        from parlour.proxy.stats_store import StatsStore, StoreError

        try:
            StatsStore(cfg.store).close()
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
    if cfg.workers > 1:
        _run_workers(cfg)
        return
    try:
        run_worker(cfg)
    except OSError as exc:  # the listen or admin address is taken, not permitted, ...
        raise click.ClickException(f"cannot start the proxy: {exc}") from None
