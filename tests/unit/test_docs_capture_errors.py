"""Every ``capture-error`` kind the code can write is explained in docs/ARCHITECTURE.md (a reader of a
journal looks a kind up there), and the page names no kind the code no longer writes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATTERNS = (
    re.compile(r'(?:CAPTURE_ERROR|"capture-error")\s*,\s*\{\s*"what":\s*"([^"]+)"'),  # a record built in place
    re.compile(r'self\._error\(\s*"([^"]+)"'),  # capture/files.py's helper
    re.compile(r'what = "([^"]+)" if which == "on_session_ended" else "([^"]+)"'),  # the SSH hooks
)


def kinds_in_code() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "agent").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in PATTERNS:
            for match in pattern.finditer(text):
                found.update(g for g in match.groups() if g)
    return found


def kinds_in_docs() -> set[str]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    start = text.index("- `capture-error` `what`:")
    paragraph = text[start:text.index("\n- ", start + 1)]
    return set(re.findall(r"`([a-z][a-z -]*[a-z])`", paragraph)) - {"capture-error", "what"}


def test_every_capture_error_kind_is_documented_and_nothing_more():
    code = kinds_in_code()
    assert len(code) >= 15  # the scan itself works
    assert code - kinds_in_docs() == set(), "document these kinds in docs/ARCHITECTURE.md (Capture)"
    assert kinds_in_docs() - code == set(), "docs/ARCHITECTURE.md names kinds the code no longer writes"
