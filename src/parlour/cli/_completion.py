"""Tab completion for the interactive line mode (``parlour chat --plain`` on a terminal).

The rules are the full-screen client's (:func:`parlour.cli.tui.completion.candidates`):
``/jo`` completes command names, ``#gen`` rooms, ``@bo`` users, the argument of ``/join``,
``/kick``, ``/help``... what that command takes, and any other word the people who spoke
recently (most recent first). The names come from what the line mode has seen: the rooms of
the session and of the events it printed, the senders of the messages it printed (each table
bounded: :class:`parlour.cli._vocabulary.Vocabulary`). prompt_toolkit shows the candidates
under the line; Tab and Shift+Tab move through them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from parlour.cli._vocabulary import Vocabulary
from parlour.cli.tui.completion import candidates

__all__ = ["LineCompleter"]


class LineCompleter(Completer):
    """prompt_toolkit's view of the shared completion rules."""

    def __init__(self, vocabulary: Vocabulary, commands: Sequence[str], me: str | None) -> None:
        self.vocabulary = vocabulary
        self.commands = sorted(commands)
        self.me = me

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        line = document.text_before_cursor
        start = len(line)
        while start > 0 and not line[start - 1].isspace():
            start -= 1
        word = line[start:]
        me = (self.me or "").casefold()
        users = [u for u in self.vocabulary.users if u.casefold() != me]
        options = candidates(
            line, start, word, commands=self.commands, rooms=self.vocabulary.rooms, users=users
        )
        for option in options:
            yield Completion(option, start_position=-len(word), display=option.rstrip(": "))
