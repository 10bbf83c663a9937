"""Tab completion in the interactive line mode: the names it remembers (bounded, most recent
first) and what prompt_toolkit is offered for a line, with the full-screen client's rules."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from parlour.cli import _commands as c
from parlour.cli._completion import LineCompleter
from parlour.cli._vocabulary import Vocabulary


def offered(completer: LineCompleter, line: str) -> list[tuple[str, int]]:
    got = completer.get_completions(
        Document(line, len(line)), CompleteEvent(completion_requested=True)
    )
    return [(x.text, x.start_position) for x in got]


def test_the_vocabulary_keeps_the_most_recent_names_first_and_is_bounded() -> None:
    v = Vocabulary(limit=3)
    v.saw_users("alice", "Bob", "carol")
    v.saw_users("bob")  # seen again: most recent, one entry, the newest spelling
    assert v.users == ["bob", "carol", "alice"]
    v.saw_users("dave")
    assert v.users == ["dave", "bob", "carol"]  # alice, the oldest, went
    v.saw_rooms("general", "random")
    v.forget_room("GENERAL")
    assert v.rooms == ["random"]


def test_commands_rooms_and_people() -> None:
    v = Vocabulary()
    v.saw_rooms("general", "gardening")
    v.saw_users("bob", "bea", "alice")
    lc = LineCompleter(v, list(c.COMMAND_HELP), me="alice")
    assert ("/join ", -3) in offered(lc, "/jo")
    assert [t for t, _ in offered(lc, "/join ga")] == ["gardening "]
    assert [t for t, _ in offered(lc, "#g")] == ["#gardening ", "#general "]
    assert [t for t, _ in offered(lc, "b")] == ["bea: ", "bob: "]  # most recent first
    assert [t for t, _ in offered(lc, "hi @b")] == ["@bea ", "@bob "]
    assert offered(lc, "al") == []  # not yourself
    assert [t for t, _ in offered(lc, "/kick b")] == ["bea ", "bob "]


@given(st.text(max_size=40), st.lists(st.text(min_size=1, max_size=10), max_size=5))
def test_any_line_gets_completions_that_replace_only_the_word_before_the_cursor(
    line: str, names: list[str]
) -> None:
    v = Vocabulary()
    v.saw_users(*names)
    v.saw_rooms(*names)
    lc = LineCompleter(v, list(c.COMMAND_HELP), me=None)
    word = line.split()[-1] if line and not line[-1].isspace() else ""
    for text, start in offered(lc, line):
        assert start == -len(word)
        assert text.casefold().lstrip("/#@").startswith(word.casefold().lstrip("/#@"))
