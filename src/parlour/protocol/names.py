"""User and room names in any script, the PRECIS way (RFC 8264/8265).

A name is enforced with the ``UsernameCasePreserved`` profile (width mapped, NFC, the Bidi
rule; spaces, controls, invisible and compatibility characters refused) and then kept to
letters, marks and digits of *one* script (Unicode TR 39's "highly restrictive" level: Han may
be mixed with Hiragana/Katakana, Bopomofo or Hangul, and Latin with those) plus ``_``, ``-``
and ``.``; ``pаypal`` with a Cyrillic ``а`` is refused. Two names are the same name when their
``UsernameCaseMapped`` forms are equal (:func:`name_key`).

ASCII names, the common case, take a fast path that gives the same answers without the
libraries; the rest are cached.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import precis_i18n
from confusable_homoglyphs import categories

__all__ = ["MAX_NAME", "NAME_RULE", "InvalidName", "is_valid_name", "name_key", "normalize_name"]

MAX_NAME = 32
#: what a name may be, for error messages and help
NAME_RULE = (
    f"1-{MAX_NAME} letters or digits of one script (any language), '_', '-' or '.'; "
    "no spaces or invisible characters"
)

_ASCII_NAME = re.compile(rf"[A-Za-z0-9_.\-]{{1,{MAX_NAME}}}")
_PUNCTUATION = frozenset("_-.")
_NEUTRAL_SCRIPTS = frozenset({"COMMON", "INHERITED"})
#: script sets a single name may mix (TR 39 section 5.2, "highly restrictive")
_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
_PRESERVED = precis_i18n.get_profile("UsernameCasePreserved")
_MAPPED = precis_i18n.get_profile("UsernameCaseMapped")


class InvalidName(ValueError):
    """A name that cannot be used; the message says why in words a user understands."""


def _describe(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'unnamed character')}"


@lru_cache(maxsize=8192)
def _normalize_unicode(value: str) -> str:
    try:
        name = str(_PRESERVED.enforce(value))
    except UnicodeEncodeError as exc:
        if exc.reason.endswith("/bidi_rule"):
            raise InvalidName(
                "breaks the right-to-left rule: a name in a right-to-left script starts with "
                "a letter of it and has no left-to-right letters"
            ) from None
        if exc.reason.endswith("/empty"):
            raise InvalidName("must not be empty") from None
        bad = value[exc.start] if exc.start < len(value) else ""
        what = f" ({_describe(bad)})" if bad else ""
        raise InvalidName(f"contains a character not allowed in names{what}") from None
    except ValueError:
        raise InvalidName("is empty or not allowed") from None
    if len(name) > MAX_NAME:
        raise InvalidName(f"is longer than {MAX_NAME} characters")
    if unicodedata.category(name[0])[0] == "M":
        raise InvalidName(f"starts with a combining mark ({_describe(name[0])})")
    for char in name:
        kind = unicodedata.category(char)
        if kind[0] not in "LMN" and char not in _PUNCTUATION:
            raise InvalidName(f"contains {_describe(char)}; only letters, digits, '_', '-', '.'")
    scripts = set(categories.unique_aliases(name)) - _NEUTRAL_SCRIPTS
    if len(scripts) > 1 and not any(scripts <= mix for mix in _MIXES):
        shown = " and ".join(sorted(s.title() for s in scripts))
        raise InvalidName(f"mixes scripts ({shown}); use letters of one script")
    return name


def normalize_name(value: object) -> str:
    """The name as it is stored and shown; :class:`InvalidName` says what is wrong."""
    if not isinstance(value, str):
        raise InvalidName("must be a string")
    if value.isascii():
        if _ASCII_NAME.fullmatch(value) is None:
            if not value:
                raise InvalidName("must not be empty")
            if len(value) > MAX_NAME:
                raise InvalidName(f"is longer than {MAX_NAME} characters")
            bad = next(c for c in value if not (c.isalnum() or c in _PUNCTUATION))
            raise InvalidName(f"contains {bad!r}; only letters, digits, '_', '-', '.'")
        return value
    if len(value) > 4 * MAX_NAME:  # before any Unicode work on a long string
        raise InvalidName(f"is longer than {MAX_NAME} characters")
    return _normalize_unicode(value)


def is_valid_name(value: object) -> bool:
    """True when `value` is a valid name already in its normal form."""
    if isinstance(value, str) and value.isascii():
        if len(value) <= MAX_NAME and value.isalnum():
            return True  # the common case, without the regular expression (hot path)
        return _ASCII_NAME.fullmatch(value) is not None
    try:
        return normalize_name(value) == value
    except InvalidName:
        return False


@lru_cache(maxsize=65536)
def _key_unicode(name: str) -> str:
    try:
        return str(_MAPPED.enforce(name))
    except (UnicodeEncodeError, ValueError):
        return name.casefold()  # not a valid name: it cannot collide with one


def name_key(name: str) -> str:
    """The identity of a name: two names are the same user (or room) when their keys are
    equal (case-insensitive the PRECIS way)."""
    if name.isascii():
        return name.lower()
    return _key_unicode(name)
