"""Token formats: every format of agent/redact/formats.py, recognised in every context of the corpus.

tests/data/redact/tokens.tsv holds one example per format and context, drawn
from the format's own regex by make_tokens.py (no live secret). Each row's
secret must not survive ``redact_line``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from agent.redact import formats, redact_line
from agent.redact.tokens import FORMATS, entropy, format_spans, formats_in

CORPUS = Path(__file__).resolve().parents[1] / "data" / "redact" / "tokens.tsv"
ROWS = [line.rstrip("\n").split("\t") for line in CORPUS.read_text().splitlines() if not line.startswith("#")]


@pytest.mark.parametrize(("fid", "family", "context", "line", "secret"), ROWS, ids=[f"{r[0]}-{r[2]}" for r in ROWS])
def test_no_secret_of_the_corpus_survives(fid, family, context, line, secret):
    out = redact_line(line)
    assert secret not in out
    assert "[redacted: sha256 " in out


def test_the_corpus_covers_every_format_in_every_context():
    ids = Counter(r[0] for r in ROWS)
    assert set(ids) == {f.id for f in FORMATS}
    assert all(n >= 2 for n in ids.values())
    assert len(FORMATS) >= 250 and len({f.family for f in FORMATS}) >= 100


def test_each_example_is_recognised_by_its_own_format():
    """Not only by some other rule: the format itself matches its example (or a KEYED one, its line)."""
    by_id = {f.id: f for f in FORMATS}
    checked = 0
    for fid, _family, _context, line, secret in ROWS:
        if not any(k in line.lower() for k in by_id[fid].keywords):
            continue  # gitleaks' rule wants its keyword nearby (facebook-access-token); other rules hid it
        checked += 1
        found = [span for span, which in format_spans(line) if which == fid]
        assert any(line[s:e] == secret or secret in line[s:e] for s, e in found), (fid, line)
    assert checked >= len(ROWS) * 0.95


def test_the_keyword_prefilter_loses_nothing():
    """The one-pass keyword scan finds every format whose keyword is in the line, as a substring test would."""
    for _fid, _family, _context, line, _secret in ROWS:
        low = line.lower()
        expected = {f.id for f in FORMATS if any(k in low for k in f.keywords)}
        assert {f.id for f in formats_in(line)} >= expected


def test_formats_are_data_with_gitleaks_notice():
    text = Path(formats.__file__).read_text()
    assert "Copyright (c) 2019 Zachary Rice" in text and "MIT License" in text
    assert "def " not in text.split('"""', 2)[2]  # data only
    assert len(formats.PREFIXED) + len(formats.KEYED) + len(formats.EXCLUDED) >= 222
    for fid, why in formats.EXCLUDED.items():
        assert why, fid


def test_entropy_floors_keep_placeholders_visible():
    for line in ("token ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "AKIAAAAAAAAAAAAAAAAA"):
        assert all(which not in ("github-pat", "aws-access-token") for _, which in format_spans(line))
    assert entropy("aaaa") == 0 and round(entropy("abcd"), 3) == 2


def test_known_prefix_tokens_standing_alone_are_hidden():
    alone = [r for r in ROWS if r[2] == "alone"]
    assert len(alone) >= 150
    assert all(r[4] not in redact_line(r[3]) for r in alone)


def test_recall_by_family_is_total_on_the_corpus():
    missed = Counter(r[1] for r in ROWS if r[4] in redact_line(r[3]))
    assert missed == Counter()


def test_documented_vendor_examples():
    for line, secret in [
        ("aws_access_key_id=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY here", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ("stripe sk_test_4eC39HqLyjWDarjtT1zdp7dc", "sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
        ("curl -H 'X: xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy'", "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"),
        ("https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX", "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
        ("GH=github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab",
         "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab"),
    ]:
        assert secret not in redact_line(line), line


def test_every_regex_is_python_syntax_without_global_flags_in_the_middle():
    for f in FORMATS:
        assert "(?i)" not in f.regex.pattern[1:] or f.regex.pattern.startswith("(?i)"), f.id
        assert re.compile(f.regex.pattern)


HARMLESS = [line for line in (Path(__file__).resolve().parents[1] / "data" / "redact" / "harmless.txt").read_text()
            .splitlines() if line.strip() and not line.startswith("# Lines")]


@pytest.mark.parametrize("line", HARMLESS)
def test_harmless_lines_stay_unchanged(line):
    assert redact_line(line) == line
