"""engine.core.text: the edge check for names, keys and notes, and the escape for printing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core import text
from engine.core.errors import BeastError

UNSAFE = [
    "\ud800",  # lone high surrogate: legal JSON, not encodable as UTF-8
    "\udfff",
    "\x00",
    "\n",
    "\r",
    "\t",
    "\x1b[2J",
    "\x7f",
    "\x85",  # C1 next line
    "\u2028",
    "\u202e",  # right-to-left override
    "\u2066",
    "\u200f",
]


@pytest.mark.parametrize("bad", UNSAFE)
def test_check_refuses_unsafe_characters_naming_field_and_position(bad: str) -> None:
    with pytest.raises(text.TextRefused) as caught:
        text.check("key", f"repo{bad}42", limit=100)
    message = str(caught.value)
    assert message.startswith("key: ")
    assert "at position 4" in message
    assert f"U+{ord(bad[0]):04X}" in message
    # The refusal itself must be printable and encodable (it goes to a terminal and to JSON).
    assert text.escape(message) == message
    message.encode("utf-8")
    assert isinstance(caught.value, BeastError)
    assert caught.value.http_status == 422


def test_check_refuses_over_long_text_and_accepts_the_limit() -> None:
    assert text.check("note", "x" * 10, limit=10) == "x" * 10
    with pytest.raises(text.TextRefused, match="note: is longer than 10 characters"):
        text.check("note", "x" * 11, limit=10)


@pytest.mark.parametrize(
    "good", ["repo-42", "ünïcödé ✓", "日本語", "emoji 🚀", "a b", "path/with\\backslash"]
)
def test_check_accepts_printable_unicode(good: str) -> None:
    assert text.check("key", good, limit=100) == good
    assert text.escape(good) == good


def test_check_optional_passes_none() -> None:
    assert text.check_optional("note", None, limit=5) is None
    with pytest.raises(text.TextRefused):
        text.check_optional("note", "\x00", limit=5)


def test_escape_shows_each_unsafe_character() -> None:
    assert text.escape("a\nb") == "a\\nb"
    assert text.escape("\x1b[2J") == "\\x1b[2J"
    assert text.escape("x\u202ey") == "x\\u202ey"
    assert text.escape("\udcff") == "\\udcff"  # an undecodable file-name byte (surrogateescape)


@given(st.text())
def test_escape_is_always_safe_to_print_and_encode(value: str) -> None:
    shown = text.escape(value)
    assert text.problem(shown, limit=10**9) is None
    shown.encode("utf-8")
    assert "\n" not in shown
