"""How the full-screen client draws entries (no terminal): times, hanging indent, day and
read-marker lines, edits and deletions in place, mentions, and every user string literal
(no Rich markup, no terminal escapes); Tab completion; the command registry."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.style import Style

from parlour.cli.tui.buffers import Buffer, BufferKind, Target
from parlour.cli.tui.commands import CommandSpec, default_registry
from parlour.cli.tui.completion import Completer, candidates
from parlour.cli.tui.render import LineRenderer, plain_text
from parlour.protocol import MessageRecord as Rec

DAY = time.mktime((2024, 11, 21, 12, 30, 0, 0, 0, -1))


def buffer_with(*records: Rec) -> Buffer:
    buf = Buffer(Target(BufferKind.ROOM, "general"), "alice")
    buf.has_older = False
    for r in records:
        buf.add(r)
    buf.marker_seq = buf.newest_seq or 0  # all read: no marker line unless a test moves it
    return buf


def rec(seq: int, text: str, sender: str = "bob", ts: float = DAY) -> Rec:
    return Rec(room="general", seq=seq, ts=ts, sender=sender, text=text)


def screen(buf: Buffer, width: int = 60) -> list[str]:
    r = LineRenderer("alice")
    marker = buf.marker_index()
    out: list[str] = []
    for i in range(len(buf)):
        out.extend(plain_text(r.entry_lines(buf, i, width, marker)))
    return out


def test_lines_have_time_nick_and_a_hanging_indent() -> None:
    buf = buffer_with(rec(1, "word " * 20))
    lines = screen(buf)
    assert lines[0].strip().startswith("─") and "Thursday 21 November 2024" in lines[0]
    assert lines[1].startswith("12:30") and "bob │ word" in lines[1]
    body_at = lines[1].index("word")
    assert all(line[:body_at].strip() == "" and line[body_at] != " " for line in lines[2:])
    assert all(len(line) == 60 for line in lines)
    assert lines[-1].rstrip().endswith("[1]")


def test_day_changes_and_the_read_marker_get_their_own_line() -> None:
    buf = buffer_with(rec(1, "old", ts=DAY), rec(2, "new", ts=DAY + 86400))
    buf.marker_seq = 1
    lines = screen(buf)
    assert [i for i, line in enumerate(lines) if "November 2024" in line] == [0, 2]
    assert "new messages" in lines[3] and "new" in lines[4]


def test_markup_and_escapes_in_user_strings_are_shown_literally() -> None:
    evil = "[bold red]x[/] [link=https://evil.example]click[/link] \x1b[31mred\x07 \u202eabc"
    buf = buffer_with(rec(1, evil, sender="[blink]eve"))
    r = LineRenderer("alice")
    strips = r.entry_lines(buf, 0, 200, None)
    text = "".join(plain_text(strips))
    assert "[bold red]x[/] [link=https://evil.example]click[/link]" in text
    assert "\\x1b[31mred\\x07 \\u202eabc" in text
    assert "[blink]eve" in text or "[blink]+" in text
    for strip in strips:
        for segment in strip:
            style = segment.style or Style()
            assert style.link is None and not style.blink
            assert "\x1b" not in segment.text and "\x07" not in segment.text


def test_edits_deletions_mentions_and_multiline_text() -> None:
    buf = buffer_with(rec(1, "first"), rec(2, "hey @alice"), rec(3, "line one\nline two"))
    buf.update(Rec(room="general", seq=1, ts=DAY, sender="bob", text="fixed", edited=True))
    lines = screen(buf)
    assert any("fixed (edited) [1]" in line for line in lines)
    r = LineRenderer("alice")
    mention = r.entry_lines(buf, 1, 60, None)[-1]
    assert any(seg.style and seg.style.bgcolor for seg in mention)  # the nick is highlighted
    assert next(line for line in lines if "line two" in line).lstrip().startswith("line two")
    buf.update(Rec(room="general", seq=3, ts=DAY, sender="bob", text=None, deleted=True))
    assert any("(message deleted) [3]" in line for line in screen(buf))


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=300), st.integers(8, 120))
def test_any_text_renders_to_lines_of_exactly_the_width(text: str, width: int) -> None:
    buf = buffer_with(rec(1, text))
    r = LineRenderer("alice")
    for strip in r.entry_lines(buf, 0, width, None):
        assert strip.cell_length == width


# ---------------------------------------------------------------------- completion

COMMANDS = ["join", "leave", "help", "history", "query"]


def test_candidates_by_context() -> None:
    def cands(line: str) -> list[str]:
        start = len(line) - len(line.split(" ")[-1])
        return candidates(
            line, start, line[start:], commands=COMMANDS, rooms=["general", "Gaming"],
            users=["carol", "Carl", "bob"],
        )  # fmt: skip

    assert cands("/h") == ["/help ", "/history "]
    assert cands("/join g") == ["general ", "Gaming "]
    assert cands("see #g") == ["#general ", "#Gaming "]
    assert cands("ca") == ["carol: ", "Carl: "]  # recent speakers first, as given
    assert cands("hi ca") == ["carol ", "Carl "]
    assert cands("ping @b") == ["@bob "]
    assert cands("/query b") == ["bob "]
    assert cands("/help his") == ["history "]
    assert cands("zz") == []


def test_completer_cycles_and_keeps_the_rest_of_the_line() -> None:
    comp = Completer()
    kw = {"commands": COMMANDS, "rooms": ["general"], "users": ["carol", "carl"]}
    first = comp.complete("ca how are you", 2, **kw)
    assert first is not None and first.text == "carol: how are you"
    second = comp.complete(first.text, first.cursor, **kw)
    assert second is not None and second.text == "carl: how are you"
    third = comp.complete(second.text, second.cursor, **kw)
    assert third is not None and third.text == "carol: how are you"
    back = comp.complete(third.text, third.cursor, backwards=True, **kw)
    assert back is not None and back.text == "carl: how are you"
    assert comp.complete("xyz", 3, **kw) is None


# ---------------------------------------------------------------------- registry


def test_registry_has_every_line_mode_command_and_takes_new_ones() -> None:
    from parlour.cli._commands import COMMAND_HELP

    registry = default_registry()
    for name in COMMAND_HELP:
        assert registry.get(name) is not None, name
    assert registry.get("MSG") is registry.get("query")
    help_lines = registry.help("ban")
    assert help_lines is not None and help_lines[0].startswith("/ban <user>")
    assert registry.help("nope") is None

    async def run(host: object, args: str, line: str) -> None:
        return None

    registry.register(CommandSpec("upload", "/upload <path>", "send a file", run))
    assert "upload" in registry.names()


def test_alt_digits_reach_the_app_as_alt_keys() -> None:
    """What Alt+4 sends on a Linux terminal (ESC 4) is ``alt+4`` (Textual would read it as
    "¢", macOS's Option+4), while a typed "£" stays a character."""
    from textual._xterm_parser import XTermParser

    import parlour.cli.tui.app  # noqa: F401  (adjusts Textual's sequence table)

    parser = XTermParser()
    keys = [*parser.feed("\x1b4£x"), *parser.feed(""), *parser.tick()]
    assert [getattr(k, "key", None) for k in keys] == ["alt+4", "pound_sign", "x"]
