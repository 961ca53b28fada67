"""The allowed_signers parser and OpenSSH pattern lists."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import SignersLineError, TrustError
from agent.trust import TrustStore
from agent.trust.allowed_signers import parse, parse_line, parse_time
from agent.trust.patterns import MATCH, NEGATED, NO_MATCH, literal_names, match_pattern, match_pattern_list

# A real Ed25519 public key (made by ssh-keygen), so lines parse without running it.
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINRCWuCSbEENzDa2yM1VXxH7NYiRIUqi/ajNDL9DILVA"


# --- patterns --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, pattern, expected", [
    ("alice@acme.example", "alice@acme.example", True),
    ("alice@acme.example", "*@acme.example", True),
    ("alice@acme.example", "*@ACME.example", False),  # case-sensitive, like allowed_signers
    ("alice@acme.example", "?lice@*", True),
    ("lice@acme.example", "?lice@*", False),
    ("", "*", True),
    ("", "", True),
    ("a", "", False),
    ("abcabc", "*b*c", True),
    ("abcab", "*b*c", False),
    ("a[b]", "a[b]", True),  # brackets are literal in OpenSSH patterns
    ("ab", "a[b]", False),
])
def test_match_pattern(text, pattern, expected):
    assert match_pattern(text, pattern) is expected


@pytest.mark.parametrize("text, patterns, expected", [
    ("alice@acme.example", "bob@acme.example,alice@acme.example", MATCH),
    ("mallory@acme.example", "*@acme.example,!mallory@acme.example", NEGATED),
    ("alice@acme.example", "*@acme.example,!mallory@acme.example", MATCH),
    ("alice@acme.example", "!mallory@acme.example", NO_MATCH),  # a negation alone admits no one
    ("eve@evil.example", "*@acme.example", NO_MATCH),
])
def test_match_pattern_list(text, patterns, expected):
    assert match_pattern_list(text, patterns) == expected


def test_literal_names_skip_wildcards_and_negations():
    assert literal_names("*@acme.example,!bob@acme.example,alice@acme.example,a?c") == ["alice@acme.example"]


def _regex_match(text: str, pattern: str) -> bool:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, text, re.DOTALL) is not None


@given(st.text(alphabet="ab*?", max_size=10), st.text(alphabet="ab", max_size=12))
def test_match_pattern_agrees_with_a_reference_glob(pattern, text):
    assert match_pattern(text, pattern) == _regex_match(text, pattern)


def test_match_pattern_is_not_exponential():
    # a*a*a*…b against a long run of a's: a naive backtracking matcher never finishes
    assert match_pattern("a" * 5000, "a*" * 40 + "b") is False


# --- lines -----------------------------------------------------------------------------------

def test_plain_line():
    entry = parse_line(f"alice@acme.example {KEY} alice's laptop", 7)
    assert (entry.line, entry.principals, entry.cert_authority, entry.namespaces) == (7, "alice@acme.example", False, None)
    assert entry.key_type == "ssh-ed25519"


def test_all_options_case_insensitive_and_quoted():
    entry = parse_line(
        f'*@acme.example CERT-Authority,Namespaces="chaperone-*,file",'
        f'valid-after="20260101Z",VALID-BEFORE="20270101120000Z" {KEY}'
    )
    assert entry.cert_authority
    assert entry.namespaces == "chaperone-*,file"
    assert entry.valid_after == int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    assert entry.valid_before == int(datetime(2027, 1, 1, 12, tzinfo=UTC).timestamp())


def test_quoted_principals_and_escaped_quote_in_option():
    entry = parse_line(f'"alice@acme.example,bob@acme.example" namespaces="a\\"b" {KEY}')
    assert entry.principals == "alice@acme.example,bob@acme.example"
    assert entry.namespaces == 'a"b'


def test_comments_blank_lines_crlf_and_indent():
    text = f"# a comment\n\n   \t\n  alice@acme.example {KEY}\r\n#bob {KEY}\n"
    entries, problems = parse(text)
    assert problems == []
    assert [(e.line, e.principals) for e in entries] == [(4, "alice@acme.example")]


@pytest.mark.parametrize("line, reason", [
    ("alice@acme.example", "no key"),
    (f"alice@acme.example frobnicate {KEY}", "unknown option"),
    (f"alice@acme.example namespaces=file {KEY}", "double quotes"),
    (f'alice@acme.example namespaces="file {KEY}', "unmatched double quote"),
    (f'alice@acme.example namespaces="a",namespaces="b" {KEY}', "more than one"),
    (f'alice@acme.example valid-after="2026" {KEY}', "YYYYMMDD"),
    (f'alice@acme.example valid-after="20261341" {KEY}', "not a valid date"),
    (f'alice@acme.example valid-after="20270101Z",valid-before="20260101Z" {KEY}', "not after"),
    (f"alice@acme.example cert-authority, {KEY}", "end with a comma"),
    ("alice@acme.example cert-authority", "no key"),
    ("alice@acme.example ssh-ed25519", "incomplete"),
    ("alice@acme.example ssh-ed25519 !!!notbase64", "base64"),
    ("alice@acme.example ssh-rsa " + KEY.split()[1], "does not match its type"),
    ("alice@acme.example ssh-dss AAAAB3NzaC1kc3MAAACBAP", "not supported"),
    ('"alice@acme.example ' + KEY, "unmatched double quote"),
])
def test_malformed_lines_say_why(line, reason):
    with pytest.raises(SignersLineError, match=reason):
        parse_line(line, 1)


def test_local_and_utc_times():
    assert parse_time("20260101Z") == parse_time("20260101UTC") == 1767225600
    local = int(datetime(2026, 1, 1, 10, 30).timestamp())
    assert parse_time("202601011030") == local


# --- the store's handling of bad lines ---------------------------------------------------------

def test_bad_lines_are_skipped_with_a_warning_naming_the_line():
    store = TrustStore.parse(f"# header\nalice@acme.example bogus {KEY}\nbob@acme.example {KEY}\n")
    assert [e.principals for e in store.entries] == ["bob@acme.example"]
    assert store.warnings == ("trusted_technicians line 2: unknown option 'bogus'",)


def test_strict_load_raises_naming_the_line(tmp_path):
    path = tmp_path / "trusted_technicians"
    path.write_text(f"alice@acme.example {KEY}\nbob@acme.example namespaces=x {KEY}\n")
    with pytest.raises(TrustError, match=r"^trusted_technicians line 2: .*; fix or remove that line\.$"):
        TrustStore.load(path, strict=True)
    assert len(TrustStore.load(path)) == 1


def test_missing_file_is_an_empty_store(tmp_path):
    store = TrustStore.load(tmp_path / "nope")
    assert len(store) == 0 and store.warnings == ()


def test_a_folder_is_refused_in_one_sentence(tmp_path):
    with pytest.raises(TrustError, match=r"is a folder"):
        TrustStore.load(tmp_path)


def test_invalid_utf8_does_not_break_other_lines(tmp_path):
    path = tmp_path / "trusted_technicians"
    path.write_bytes(b"\xff\xfe@x " + KEY.encode() + b"\nalice@acme.example " + KEY.encode() + b"\n")
    store = TrustStore.load(path)
    assert [e.principals for e in store.entries] == ["\ufffd\ufffd@x", "alice@acme.example"]


# --- never crash -------------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from([
    "alice@acme.example", "*@acme.example", "!bob", '"', '\\"', ",", " ", "\t", "\n", "\r\n", "#",
    "cert-authority", "namespaces=", "valid-after=", "valid-before=", '"20260101Z"', '"2026"',
    "ssh-ed25519", "ssh-rsa", "ssh-ed25519-cert-v01@openssh.com", "sk-ssh-ed25519@openssh.com",
    KEY, KEY.split()[1], KEY.split()[1][:20], "AAAA", "=", "\x00", "\u202e", "é",
])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=400), st.lists(_FRAGMENTS, max_size=30).map("".join)))
def test_parser_never_crashes(text):
    store = TrustStore.parse(text)
    assert len(store.entries) + len(store.warnings) <= text.count("\n") + 1
    try:
        TrustStore.parse(text, strict=True)
    except TrustError as exc:
        assert str(exc).startswith("trusted_technicians line ")
        assert "\n" not in str(exc)
