"""The `parlour` command: one group whose subcommands are imported only when used.

Each part of Parlour owns its subcommand module; this file only maps names to them, so
starting `parlour packets` never imports the chat server and vice versa.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from parlour import __version__

__all__ = ["EXTRAS", "SUBCOMMANDS", "cli", "main"]

#: subcommands that need an optional extra (``pip install 'parlour[extra]'``): the extra's
#: name and the modules it provides
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "proxy": ("proxy", ("httptools", "prometheus_client")),
    "packets": ("packets", ("matplotlib",)),
    "cluster": ("cluster,proxy", ("asyncpg", "redis", "httptools", "prometheus_client")),
}


def _missing(modules: tuple[str, ...]) -> list[str]:
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: blocked in sys.modules
            found = False
        if not found:
            missing.append(name)
    return missing


#: subcommand name -> (module, attribute, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("parlour.server.cli", "serve", "Run the chat server."),
    "chat": ("parlour.cli.chat", "chat", "Terminal chat client."),
    "proxy": ("parlour.proxy.cli", "proxy", "Reverse proxy / load balancer."),
    "packets": ("parlour.packets.cli", "packets", "Packet lab: build, capture, analyse."),
    "cluster": (
        "parlour.server.cluster_cli",
        "cluster",
        "Run N chat nodes on PostgreSQL + Redis behind `parlour proxy`.",
    ),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr, _ = entry
        if cmd_name in EXTRAS:
            extra, modules = EXTRAS[cmd_name]
            missing = _missing(modules)
            if missing:
                return _needs_extra(cmd_name, extra, ", ".join(missing))
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # part not built yet, or an extra not installed
            if exc.name is not None and module_name.startswith(exc.name):
                return _unavailable(cmd_name)
            raise
        command = getattr(module, attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{attr} is not a click command")
        return command


def _unavailable(name: str) -> click.Command:
    @click.command(name=name, help=f"{SUBCOMMANDS[name][2]} (not available in this build)")
    def _cmd() -> None:
        raise click.ClickException(f"'parlour {name}' is not available in this build")

    return _cmd


def _needs_extra(name: str, extra: str, missing: str) -> click.Command:
    @click.command(
        name=name,
        help=f"{SUBCOMMANDS[name][2]} (needs: pip install 'parlour[{extra}]')",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def _cmd() -> None:
        raise click.ClickException(
            f"'parlour {name}' needs the optional '{extra}' dependencies, which are not"
            f" installed (missing: {missing}); install them with: pip install 'parlour[{extra}]'"
        )

    return _cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="parlour")
def cli() -> None:
    """Parlour: chat server and client, reverse proxy, packet lab."""


def main() -> None:
    cli(prog_name="parlour")
