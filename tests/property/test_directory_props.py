"""`bridge.directory._printable`'s ASCII shortcut answers what the rule by Unicode
category answers, for every text, ASCII or not."""

from __future__ import annotations

import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.directory import _FORBIDDEN_CATEGORIES, _printable


def _by_category(text: str) -> bool:
    return not any(
        char.isspace() or unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in text
    )


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(st.characters(max_codepoint=0x7F)), st.text()))
@example("alice@demo.bubble")
@example("alice @demo.bubble")
@example("alice@demo.bubble\x7f")
@example("alice\x1f@demo.bubble")
@example("alice\u00a0@demo.bubble")
@example("alice\u200b@demo.bubble")
@example("")
def test_the_ascii_shortcut_answers_as_the_categories_do(text: str) -> None:
    assert _printable(text) == _by_category(text)


def test_every_ascii_character_alone() -> None:
    for code in range(0x80):
        assert _printable(chr(code)) == _by_category(chr(code)), code
