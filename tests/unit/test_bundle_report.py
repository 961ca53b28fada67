"""The report survives any journal content, and stays bounded for big sessions."""

from __future__ import annotations

import io
import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.bundle import render_report
from agent.bundle.report import SECTION_LIMIT, write_report
from agent.canonical import canonical_bytes

TYPES = ["journal-start", "request", "decision", "session-start", "session-end", "seal", "recovery", "file",
         "file-burst", "overflow", "process", "inventory-change", "alarm", "note", "capture-error", "odd-type"]
KEYS = ["by", "granted", "set_aside", "verification", "flags", "cmdline", "path", "dest", "diff", "attribution",
        "way_back_in", "technician", "email", "reason", "capabilities", "watch", "sha256_after", "text"]
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    max_leaves=6,
)


def record(seq: int, type_: str, data: dict) -> bytes:
    return canonical_bytes({"v": 1, "seq": seq, "ts": "2026-11-22T03:04:05.000000Z", "session": "s",
                            "type": type_, "data": data, "prev": "0" * 64}) + b"\n"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TYPES), st.dictionaries(st.sampled_from(KEYS), values, max_size=6)),
                max_size=8),
       st.lists(st.binary(max_size=30), max_size=2))
def test_any_content_renders_without_error_and_escaped(records, junk):
    lines = [record(i, t, d) for i, (t, d) in enumerate(records)] + junk
    html = render_report(lines, verified=False, verification="<b>x</b>")
    assert html.startswith("<!DOCTYPE html>") and html.endswith("</html>\n")
    assert not re.search(r"<(script|img|iframe|a |object|link)", html)
    assert html.count("<tr") >= len(lines)


def test_sections_are_capped_but_the_full_table_has_every_record():
    notes = [record(i, "note", {"author": "t", "text": f"n{i}"}) for i in range(SECTION_LIMIT + 7)]
    calls = []

    def read_lines():
        calls.append(1)
        return iter(notes)

    out = io.StringIO()
    write_report(out, read_lines)
    html = out.getvalue()
    assert len(calls) == 2  # streamed twice, never held whole
    notes_section = html.split("<h2>Notes")[1].split("<h2")[0]
    assert notes_section.count("<tr>") == 1 + SECTION_LIMIT
    assert f"all {SECTION_LIMIT + 7} are in the table of all records" in notes_section
    assert html.split("<h2 id=records>")[1].count("<tr>") == 1 + SECTION_LIMIT + 7
    assert json.dumps(f"n{SECTION_LIMIT + 6}")[1:-1] in html
