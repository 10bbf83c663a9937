"""Click options shared by the `parlour packets` commands that write captures."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def capture_format_options(f: F) -> F:
    """``--format pcap|pcapng`` (default from the output suffix) and ``--nanosecond``."""
    f = click.option("--nanosecond", is_flag=True, help="Nanosecond timestamps.")(f)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["pcap", "pcapng"]),
        help="Capture format (default: from the output suffix).",
    )(f)
