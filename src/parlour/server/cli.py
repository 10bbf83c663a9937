"""`parlour serve`: run the chat server until SIGINT/SIGTERM/SIGHUP, then shut down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from parlour.server.config import SETTINGS, ConfigError, Settings, load_settings, redact
from parlour.server.logs import configure_logging

__all__ = ["serve"]

# Flags offered on the command line; every setting can also come from TOML or PARLOUR_* env.
_FLAG_TYPES: dict[str, Any] = {
    "host": str,
    "port": int,
    "data_dir": click.Path(file_okay=False, path_type=Path),
    "store": str,
    "bus": str,
    "node_name": str,
    "tls_cert": click.Path(dir_okay=False, path_type=Path),
    "tls_key": click.Path(dir_okay=False, path_type=Path),
    "proxy_port": int,
    "trusted_proxies": str,
    "web": click.BOOL,
    "web_host": str,
    "web_port": int,
    "public_url": str,
    "max_connections": int,
    "idle_timeout": float,
    "rate": float,
    "burst": int,
    "duplicate_login": click.Choice(["replace", "reject", "allow"]),
    "log_level": click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    "log_format": click.Choice(["text", "json"]),
    "uploads": click.BOOL,
    "files_dir": click.Path(file_okay=False, path_type=Path),
    "max_file_size": int,
    "user_quota": int,
    "max_concurrent_uploads": int,
    "upload_expiry": float,
}


def _options(func: Any) -> Any:
    for spec in reversed(SETTINGS):
        if spec.name in _FLAG_TYPES:
            func = click.option(
                spec.option,
                spec.name,
                type=_FLAG_TYPES[spec.name],
                default=None,
                help=f"{spec.help} [env {spec.env}]",
            )(func)
    return func


@click.command("serve")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML settings file (flags > PARLOUR_* env vars > file > defaults).",
)
@_options
def serve(config_file: Path | None, **flags: Any) -> None:
    """Run the chat server (see docs/configuration.md for every setting)."""
    try:
        settings = load_settings(config_file=config_file, flags=flags)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(settings.log_level, settings.log_format)
    code = _run(_serve(settings))
    sys.exit(code)


def _run(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def _serve(settings: Settings) -> int:
    from parlour.core.ports import StoreUnavailable
    from parlour.server.app import ChatServer

    try:
        server = await ChatServer.start(settings)
    except (OSError, ValueError, StoreUnavailable) as exc:
        click.echo(f"parlour serve: cannot start: {exc}", err=True)
        return 1
    scheme = "tls" if settings.tls_enabled else "tcp"
    for host, port in server.addresses:
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"Parlour chat server listening on {scheme}://{shown}:{port}")
    for host, port in server.listener.proxy_addresses:
        shown = f"[{host}]" if ":" in host else host
        trusted = ", ".join(settings.trusted_proxies)
        click.echo(f"PROXY protocol port {scheme}://{shown}:{port} (for {trusted})")
    if server.relay is not None:
        host, port = server.relay.address
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"File-transfer relay on udp://{shown}:{port}")
    if server.web is not None:
        click.echo(f"Web client: {server.web.url}  (open it in a browser)")
    if settings.store == "sqlite":
        click.echo(f"Data directory: {settings.data_dir.resolve()}")
    elif settings.postgres:
        click.echo(f"Store: PostgreSQL {redact(settings.store)}")
        bus = redact(settings.bus) if settings.redis else "in-process (this node alone)"
        click.echo(f"Bus: {bus}; node {server.node}")
    else:
        click.echo("Store: memory (nothing is kept after exit)")
    if server.generated_admin_password is not None:
        click.echo("First start: created the administrator account.")
        click.echo("  username: admin")
        click.echo(f"  password: {server.generated_admin_password}")
        click.echo("  (shown only this once; change it with /passwd)")
    click.echo("Press Ctrl+C to stop.")
    sys.stdout.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP (the terminal went away, or a stray `kill -HUP`) stops gracefully too: settings are
    # read at start only, so there is nothing to reload, and dying abruptly would be worse.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
        click.echo("Parlour chat server stopped.")
    return 0
