"""parse_line: the sans-I/O command parser of `parlour chat`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.cli import _commands as c


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", c.Empty()),
        ("   \n", c.Empty()),
        ("hello there", c.Say("hello there")),
        ("//not a command", c.Say("/not a command")),
        ("@bob hi bob", c.Direct("bob", "hi bob")),
        ("/join general", c.Join("general")),
        ("/join #general", c.Join("general")),
        ("/leave", c.Leave(None)),
        ("/leave random", c.Leave("random")),
        ("/rooms", c.Rooms()),
        ("/who", c.Who()),
        ("/who general", c.Who("general")),
        ("/who --since 1h", c.Who(None, 3600.0)),
        ("/who --since 30m general", c.Who("general", 1800.0)),
        ("/history", c.History()),
        ("/history 20", c.History(None, 20)),
        ("/history general 5", c.History("general", 5)),
        ("/dm-history bob", c.DmHistory("bob")),
        ("/dm-history bob 3", c.DmHistory("bob", 3)),
        ("/since 10m", c.Since(ago=600.0)),
        ("/since 1h30m", c.Since(ago=5400.0)),
        ("/edit 12 new text here", c.Edit(12, "new text here")),
        ("/edit @bob 3 fixed", c.Edit(3, "fixed", "bob")),
        ("/delete 12", c.Delete(12)),
        ("/delete @bob 3", c.Delete(3, "bob")),
        ("/block mallory", c.ToggleBlock("mallory", True)),
        ("/unblock mallory", c.ToggleBlock("mallory", False)),
        ("/blocks", c.Blocks()),
        ("/kick bob", c.Kick("bob")),
        ("/kick bob too loud", c.Kick("bob", None, "too loud")),
        ("/kick bob #general off topic", c.Kick("bob", "general", "off topic")),
        ("/ban bob", c.Ban("bob")),
        ("/ban bob 1h", c.Ban("bob", 3600.0)),
        ("/ban bob 2d spam and abuse", c.Ban("bob", 172800.0, "spam and abuse")),
        ("/ban bob spam", c.Ban("bob", None, "spam")),
        ("/unban bob", c.Unban("bob")),
        ("/bans", c.Bans()),
        ("/audit", c.Audit()),
        ("/audit 10", c.Audit(10)),
        ("/broadcast restart at 10", c.Broadcast("restart at 10")),
        ("/mkroom ops", c.RoomCreate("ops")),
        ("/rename ops operations", c.RoomRename("ops", "operations")),
        ("/rmroom ops", c.RoomDelete("ops")),
        ("/passwd", c.Passwd()),
        ("/passwd old-one new-one", c.Passwd("old-one", "new-one")),
        ("/quit", c.Quit()),
        ("/QUIT", c.Quit()),
        ("/help", c.Help()),
        ("/help ban", c.Help("ban")),
    ],
)
def test_examples(line: str, expected: c.Command) -> None:
    assert c.parse_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "/join",
        "/join two words",
        "/join bad!name",
        "@",
        "@bob",
        "@bad!name hi",
        "/edit x text",
        "/edit 3",
        "/delete",
        "/delete 0",
        "/who --since",
        "/who --since soon",
        "/history a b",
        "/since",
        "/since yesterday-ish",
        "/ban",
        "/ban bob 3 strikes",
        "/ban bob 3600",
        "/rename onlyone",
        "/audit many",
        "/passwd onlyone",
        "/frobnicate",
    ],
)
def test_invalid_input_explains(line: str) -> None:
    result = c.parse_line(line)
    assert isinstance(result, c.Invalid)
    assert result.message


def test_since_iso_time() -> None:
    result = c.parse_line("/since 2024-11-21T20:00:00+00:00")
    assert result == c.Since(at=1732219200.0)


def test_durations() -> None:
    assert c.parse_duration("90") == 90.0
    assert c.parse_duration("1w") == 604800.0
    assert c.parse_duration("0") is None
    assert c.parse_duration("-5") is None
    assert c.parse_duration("5x") is None
    assert c.parse_duration("inf") is None
    assert c.parse_duration("") is None


def test_every_command_has_help() -> None:
    for name in c.COMMAND_HELP:
        result = c.parse_line(f"/help {name}")
        assert result == c.Help(name)


@settings(deadline=None, max_examples=500)
@given(st.text(max_size=80))
def test_parse_line_is_total(line: str) -> None:
    result = c.parse_line(line)
    assert isinstance(result, c.Command)  # type: ignore[misc,arg-type]


@settings(deadline=None)
@given(st.text(min_size=1, max_size=80).filter(lambda s: s.strip() and s[0] not in "/@"))
def test_plain_text_is_said_verbatim(text: str) -> None:
    text = text.replace("\n", " ").replace("\r", " ")
    if not text.strip():
        return
    assert c.parse_line(text) == c.Say(text)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/edit last better text", c.Edit(None, "better text")),
        ("/edit @bob last  two  spaces", c.Edit(None, "two  spaces", "bob")),
        ("/delete last", c.Delete(None)),
        ("/delete @bob last", c.Delete(None, "bob")),
        ("/history @bob", c.DmHistory("bob")),
        ("/history @bob 7", c.DmHistory("bob", 7)),
        ("/history #123", c.History("123")),
        ("@bob   spaced out", c.Direct("bob", "spaced out")),
        ("/Join General", c.Join("General")),
    ],
)
def test_more_examples(line: str, expected: c.Command) -> None:
    assert c.parse_line(line) == expected


@pytest.mark.parametrize(
    "line", ["/edit ² x", "/history ²", "/audit ²", "/delete 1 2", "/edit @bob", "/delete @x!"]
)
def test_odd_digits_and_leftovers_are_usage_errors(line: str) -> None:
    assert isinstance(c.parse_line(line), c.Invalid)


@settings(deadline=None)
@given(
    st.sampled_from(sorted(c.COMMAND_HELP)),
    st.lists(st.text(min_size=1, max_size=12).filter(lambda s: not s.isspace()), max_size=4),
)
def test_every_command_with_random_arguments_is_total(name: str, args: list[str]) -> None:
    result = c.parse_line(f"/{name} " + " ".join(args))
    assert isinstance(result, c.Command)  # type: ignore[misc,arg-type]
    if isinstance(result, c.Invalid):
        assert result.message.startswith(("usage:", "not a", "unknown", "nothing")), result
