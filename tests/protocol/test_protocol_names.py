"""User and room names in any script, PRECIS-normalised (RFC 8265) and compared by key."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.protocol import (
    ErrorCode,
    InvalidName,
    ProtocolError,
    is_valid_name,
    name_key,
    normalize_name,
    parse_request,
)


@pytest.mark.parametrize(
    ("given_name", "stored"),
    [
        ("alice", "alice"),
        ("דני", "דני"),  # Hebrew (both Hebrew-speaking source designs)
        ("Ｄａｎｉ", "Dani"),  # full-width letters map to their usual width
        ("e\u0301mile", "émile"),  # NFC: a combining accent composes
        ("漢字ひらがなカタカナ", "漢字ひらがなカタカナ"),  # Han with kana: one writing system
        ("Ωμέγα", "Ωμέγα"),
        ("мама_2", "мама_2"),
        ("محمد", "محمد"),
    ],
)
def test_names_in_any_script_are_normalised(given_name: str, stored: str) -> None:
    assert normalize_name(given_name) == stored
    assert is_valid_name(stored)
    request = parse_request({"id": 1, "type": "signup", "username": given_name, "password": "p"})
    assert request.username == stored  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("pаypal", "mixes scripts (Cyrillic and Latin)"),  # a Cyrillic а among Latin letters
        ("дима_x", "mixes scripts (Cyrillic and Latin)"),
        ("דניx", "right-to-left rule"),  # RFC 5893: no left-to-right letters in it
        ("\u0301a", "starts with a combining mark"),
        ("a\u200db", "ZERO WIDTH JOINER"),  # invisible
        ("a\u200bb", "ZERO WIDTH SPACE"),
        ("a\u202eb", "RIGHT-TO-LEFT OVERRIDE"),  # reorders what others see
        ("a b", "' '"),
        ("a\u00a0b", "NO-BREAK SPACE"),
        ("x@y", "'@'"),
        ("a\u2665", "BLACK HEART SUIT"),
        ("Ⅻ", "ROMAN NUMERAL TWELVE"),  # compatibility characters
        ("", "empty"),
        ("a" * 33, "longer than 32"),
        ("ש" * 33, "longer than 32"),
    ],
)
def test_bad_names_are_refused_with_a_reason(bad: str, why: str) -> None:
    with pytest.raises(InvalidName, match=None) as info:
        normalize_name(bad)
    assert why in str(info.value)
    assert not is_valid_name(bad)
    with pytest.raises(ProtocolError) as err:
        parse_request({"id": 1, "type": "join", "room": bad})
    assert err.value.code is ErrorCode.INVALID_FIELD and why in err.value.message


@pytest.mark.parametrize(
    ("a", "b"),
    [("Alice", "alice"), ("ΣΑΣ", "σας"), ("ÉMILE", "émile"), ("Ｄａｎｉ", "dani")],
)
def test_case_variants_are_the_same_name(a: str, b: str) -> None:
    assert name_key(normalize_name(a)) == name_key(normalize_name(b))


def test_different_names_have_different_keys() -> None:
    assert name_key("dani") != name_key("דני") != name_key("dany")


_LETTERS = st.characters(categories=["Lu", "Ll", "Lo", "Nd", "Mn", "Zs", "Cf", "Po", "So"])


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=_LETTERS, min_size=1, max_size=40))
def test_normalising_is_idempotent_and_keeps_out_invisible_characters(value: str) -> None:
    try:
        name = normalize_name(value)
    except InvalidName as exc:
        assert str(exc)  # every refusal says why
        return
    assert normalize_name(name) == name and is_valid_name(name)
    assert 1 <= len(name) <= 32
    assert all(unicodedata.category(c)[0] in "LMN" or c in "_-." for c in name)
    assert name_key(name_key(name)) == name_key(name)


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9_.\-]{1,32}", fullmatch=True))
def test_ascii_names_are_kept_and_keyed_by_lower_case(name: str) -> None:
    assert normalize_name(name) == name
    assert name_key(name) == name.lower() == name.casefold()
