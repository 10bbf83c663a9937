"""The full-screen ``parlour chat`` (Textual), used when stdin and stdout are a terminal.

Modules: :mod:`.buffers` (the model: scrollbacks, read positions, counts; pure),
:mod:`.viewport` (scroll position; pure), :mod:`.events` (server events -> model; pure),
:mod:`.render` (entries -> screen lines), :mod:`.completion` (Tab; pure), :mod:`.commands`
(the slash-command registry), :mod:`.bars`, :mod:`.widgets` and :mod:`.app`.
Design: docs/design/cli-tui.md; user guide: docs/chat.md.
"""

from __future__ import annotations

import os
import sys
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from parlour.cli.chat import ChatApp
    from parlour.client import Client, Session

__all__ = ["run_tui", "wants_tui"]


def wants_tui(stdin: IO[str], stdout: IO[str], *, plain: bool) -> bool:
    """Full screen when input and output are a terminal that can do it (Textual draws on
    stderr, so that must be the terminal too) and ``--plain`` is not set."""
    if plain:
        return False
    term = os.environ.get("TERM", "")
    if term in ("", "dumb", "unknown"):
        return False
    try:
        return stdin.isatty() and stdout.isatty() and sys.stderr.isatty()
    except (ValueError, OSError):
        return False


async def run_tui(client: Client, session: Session, runner: ChatApp, room: str | None) -> int:
    """Run the full-screen client until the user quits (0) or the server ends the session
    (3); returns the exit status."""
    from .app import ChatTui

    app = ChatTui(client, session, runner, room=room)
    runner.tui_sink = app.on_connection_state
    code = await app.run_async()
    return 0 if code is None else code
