"""The report's escaping: its fast path for plain text gives exactly what the full path gives."""

from __future__ import annotations

import html

from hypothesis import given, settings
from hypothesis import strategies as st

from agent import text as display
from agent.bundle.report.markup import esc


def _slow(value: str, limit: int | None) -> str:
    shown = display.escape(value)
    if limit is not None and len(shown) > limit:
        return html.escape(shown[:limit]) + f"<span class=muted>… ({len(shown) - limit:,} more characters)</span>"
    return html.escape(shown)


@settings(max_examples=500, deadline=None)
@given(value=st.text(st.characters(max_codepoint=0x7F)) | st.text(), limit=st.none() | st.integers(0, 40))
def test_plain_text_is_escaped_as_the_full_path_escapes_it(value, limit):
    assert esc(value, limit) == _slow(value, limit)


def test_every_ascii_character_between_letters():
    for code in range(0x80):
        value = f"a{chr(code)}b"
        assert esc(value) == _slow(value, None), repr(chr(code))
    assert esc('<script>"x"&\\') == "&lt;script&gt;&quot;x&quot;&amp;\\\\"
    assert esc(None) == "" and esc(42) == "42"
