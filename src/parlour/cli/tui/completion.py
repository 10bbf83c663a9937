"""Tab completion of the input line: command names, room names and user names (pure).

What is completed depends on the word at the cursor and on the command it belongs to:

* ``/jo`` at the start of the line: command names (``/join``);
* ``#gen``: room names; ``@bo``: user names with their ``@``;
* the argument of a command that takes a room (``/join gen``) or a user (``/kick bo``,
  ``/query bo``, ``/send-file bo``), or a command (``/help jo``), or what the app offers for
  that command's first argument (``arguments``: e.g. the numbers of file offers after
  ``/accept``);
* any other word: user names, the people who spoke recently in the buffer first (most
  recent first), then the other members in name order; at the start of the line the name is
  followed by ``": "`` (addressing someone, irssi/weechat style).

Pressing Tab again cycles through the candidates (Shift+Tab backwards); typing anything
else starts over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["ROOM_ARGS", "USER_ARGS", "Completer", "Completion", "candidates"]

#: commands whose first argument is a room
ROOM_ARGS = frozenset({"join", "leave", "history", "rmroom", "rename", "buffer", "who"})
#: commands whose first argument is a user
USER_ARGS = frozenset(
    {"query", "msg", "kick", "ban", "unban", "block", "unblock", "dm-history", "close"}
) | {"send-file", "sendfile"}


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    cursor: int


def _unique(names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for name in names:
        key = name.casefold()
        if key not in seen:
            seen.add(key)
            out.append(name)
    return out


def candidates(
    line: str,
    start: int,
    word: str,
    *,
    commands: Sequence[str],
    rooms: Sequence[str],
    users: Sequence[str],
    arguments: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """Replacements for ``word`` (which starts at ``start`` in ``line``), best first.
    ``arguments``: command name -> candidates for its first argument."""

    def matching(names: Iterable[str], prefix: str) -> list[str]:
        folded = prefix.casefold()
        return [n for n in _unique(names) if n.casefold().startswith(folded)]

    if word.startswith("/") and start == 0:
        return [f"/{c} " for c in matching(sorted(commands), word[1:])]
    if word.startswith("#"):
        return [f"#{r} " for r in matching(rooms, word[1:])]
    if word.startswith("@"):
        return [f"@{u} " for u in matching(users, word[1:])]
    head = line[:start].split()
    if line.startswith("/") and len(head) == 1:
        command = head[0][1:].lower()
        if command in ("help", "?"):
            return [f"{c} " for c in matching(sorted(commands), word.lstrip("/"))]
        if command in ROOM_ARGS:
            return [f"{r} " for r in matching(rooms, word)]
        if command in USER_ARGS:
            return [f"{u} " for u in matching(users, word)]
        if arguments is not None and command in arguments:
            return [f"{a} " for a in matching(arguments[command], word)]
    suffix = ": " if start == 0 else " "
    return [f"{u}{suffix}" for u in matching(users, word)]


class Completer:
    """Cycles through the candidates while Tab is pressed repeatedly."""

    def __init__(self) -> None:
        self._last: Completion | None = None
        self._options: list[str] = []
        self._choice = 0
        self._start = 0
        self._end = 0  # end of the original word in the original line
        self._line = ""

    def reset(self) -> None:
        self._last = None

    def complete(
        self,
        line: str,
        cursor: int,
        *,
        commands: Sequence[str],
        rooms: Sequence[str],
        users: Sequence[str],
        arguments: Mapping[str, Sequence[str]] | None = None,
        backwards: bool = False,
    ) -> Completion | None:
        """The line after one Tab (``backwards``: Shift+Tab), or None if nothing matches."""
        if self._last is not None and self._last == Completion(line, cursor) and self._options:
            step = -1 if backwards else 1
            self._choice = (self._choice + step) % len(self._options)
            return self._apply()
        cursor = max(0, min(cursor, len(line)))
        start = cursor
        while start > 0 and not line[start - 1].isspace():
            start -= 1
        word = line[start:cursor]
        options = candidates(
            line, start, word, commands=commands, rooms=rooms, users=users, arguments=arguments
        )
        if not options:
            self._last = None
            return None
        self._options, self._choice = options, (len(options) - 1 if backwards else 0)
        self._line, self._start, self._end = line, start, cursor
        return self._apply()

    def _apply(self) -> Completion:
        option = self._options[self._choice]
        rest = self._line[self._end :]
        if rest.startswith(" ") and option.endswith(" "):
            option = option[:-1]
        text = self._line[: self._start] + option + rest
        self._last = Completion(text, self._start + len(option))
        return self._last
