"""agent.text: hostile text is shown escaped and flagged."""

from __future__ import annotations

import string
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.text import BIDI_CONTROLS, INVISIBLE, UNUSUAL, escape, show

HIDDEN_REASONS = {"control characters", "bidirectional controls", "invisible characters",
                  "invalid characters", "unassigned or private characters"}


def _is_hidden(ch: str) -> bool:
    return (
        ch in BIDI_CONTROLS
        or ch in INVISIBLE
        or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
        or (unicodedata.category(ch) == "Zs" and ch != " ")
    )


@pytest.mark.parametrize(
    "raw, shown, reason",
    [
        ("evil\u202etxt.exe", "evil\\u202etxt.exe", "bidirectional controls"),
        ("\u2067Alice\u2069", "\\u2067Alice\\u2069", "bidirectional controls"),
        ("a\x1b[31mred", "a\\x1b[31mred", "control characters"),
        ("two\nlines", "two\\x0alines", "control characters"),
        ("zero\u200bwidth", "zero\\u200bwidth", "invisible characters"),
        ("bom\ufeff", "bom\\ufeff", "invisible characters"),
        ("\u0410lice", "\\u0410lice", "lookalike letters from another script"),  # Cyrillic A
        ("J\u043ehn", "J\\u043ehn", "lookalike letters from another script"),  # Cyrillic o
        ("\u0440\u0430\u0443\u0440\u0430l Inc", "\\u0440\\u0430\\u0443\\u0440\\u0430l Inc",
         "lookalike letters from another script"),
        ("\U000f0000", "\\U000f0000", "unassigned or private characters"),
        ("\ud800", "\\ud800", "invalid characters"),
        ("e\u0301\u0301\u0301\u0301", "e\u0301\u0301\\u0301\\u0301", "stacked combining marks"),
    ],
)
def test_hostile_text_is_escaped_and_flagged(raw, shown, reason):
    result = show(raw)
    assert result.text == shown
    assert reason in result.reasons
    assert result.flag("technician") == f"technician {UNUSUAL} ({', '.join(result.reasons)})"


def test_fullwidth_lookalikes_are_flagged_not_escaped():
    result = show("\uff21\uff23\uff2d\uff25 IT")  # ＡＣＭＥ
    assert result.text == "\uff21\uff23\uff2d\uff25 IT"
    assert result.reasons == ("compatibility lookalikes",)


@pytest.mark.parametrize(
    "ordinary",
    ["Alice Example", "Zoë Ørsted", "Привет мир", "田中さん", "李小龍 たなか", "José Álvarez-Núñez", "Ticket #4711",
     "Müller & Söhne GmbH", "שלום", "مرحبا"],
)
def test_ordinary_names_are_unchanged_and_unflagged(ordinary):
    result = show(ordinary)
    assert result.text == ordinary
    assert not result.unusual
    assert result.flag("org") is None


def test_backslash_is_doubled_so_escapes_cannot_be_faked():
    assert escape("a\\u202eb") == "a\\\\u202eb"
    assert escape("a\\u202eb") != escape("a\u202eb")


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_escaped_text_never_contains_hidden_characters(text):
    result = show(text)
    assert not any(_is_hidden(ch) for ch in result.text)
    assert not HIDDEN_REASONS & set(show(result.text).reasons)
    if any(_is_hidden(ch) for ch in text):
        assert result.unusual


@given(st.text(), st.text())
@settings(max_examples=300, deadline=None)
def test_different_texts_never_show_the_same(a, b):
    if a != b:
        assert escape(a) != escape(b)


@given(st.text(alphabet=string.ascii_letters + string.digits + string.punctuation.replace("\\", "") + " "))
@settings(deadline=None)
def test_printable_ascii_passes_through(text):
    result = show(text)
    assert result.text == text
    assert not result.unusual


@given(st.text(alphabet=st.characters(codec="utf-8")))
@settings(deadline=None)
def test_show_never_raises_and_always_returns_valid_unicode(text):
    result = show(text)
    result.text.encode("utf-8")  # no lone surrogate survives


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x7F)))
def test_the_ascii_fast_path_agrees_with_the_full_check(text):
    from agent.text import _show_any

    assert show(text) == _show_any(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from([*map(chr, range(0x20, 0x7F)), *"—–·‘’“”«»°×…"])))
def test_the_plain_punctuation_fast_path_agrees_with_the_full_check(text):
    from agent.text import _show_any

    assert show(text) == _show_any(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from([*map(chr, range(0x20, 0x7F)), *"—–·‘’“”«»°×…\\"])) | st.text())
def test_escape_fast_path_gives_the_text_the_full_check_gives(text):
    """``escape`` shows "…" as it is without the full check: the full check only adds a reason for it."""
    from agent.text import _show_any

    assert escape(text) == _show_any(text).text
