"""Token formats anywhere in a line, URL credentials, and long random-looking strings.

The formats are data (``agent.redact.formats``). A line is tried against a
format only when it contains one of the format's keywords: one regex built as
a trie of every keyword finds them all in one pass, so a line with no keyword
(most lines) costs one scan, not 260.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from agent.redact.formats import KEYED, OURS, PREFIXED
from agent.redact.spans import Span

_SEPARATOR = r"""[ \t\w.-]{0,20}[\s'"]{0,3}(?:=|>|:{1,3}=|\|\||:|=>|\?=|,)[\x60'"\s=]{0,5}"""
_TAIL = r"""(?:[\x60'"\s;]|\\[nr]|$)"""
# gitleaks ends a token at a quote, a blank, ";" or a literal \n: here at anything that cannot
# continue it, so that "(token)" and "token," are found too.
_END = r"(?![\w-])"


@dataclass(frozen=True)
class TokenFormat:
    id: str
    family: str
    regex: re.Pattern[str]
    keywords: tuple[str, ...]
    entropy: float | None
    group: int


def _compile() -> tuple[TokenFormat, ...]:
    formats = [TokenFormat(i, f, re.compile(rx.replace(_TAIL, _END)), kw, ent, g)
               for i, f, rx, kw, ent, g in (*PREFIXED, *OURS)]
    for fid, family, key, keywords, value, ent in KEYED:
        rx = re.compile(f"(?i:{key}){_SEPARATOR}((?i:{value})){_END}")
        formats.append(TokenFormat(fid, family, rx, keywords, ent, re.compile(key).groups + 1))
    return tuple(formats)


FORMATS: tuple[TokenFormat, ...] = _compile()


def _trie_regex(words: list[str]) -> str:
    """A regex matching any of ``words``, as a trie: Python's re then branches on each character."""
    trie: dict = {}
    for w in words:
        node = trie
        for c in w:
            node = node.setdefault(c, {})
        node[""] = {}

    def build(node: dict) -> str:
        end = "" in node
        branches = [re.escape(c) + build(child) for c, child in sorted(node.items()) if c]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if end:
            body = f"(?:{body})?"
        return body

    return build(trie)


_KEYWORDS = sorted({k for f in FORMATS for k in f.keywords})
_KEYWORD_RE = re.compile(_trie_regex(_KEYWORDS))  # over the lower-cased line: 5x faster than IGNORECASE
# A keyword found also stands for every keyword inside it ("sk-ant-" holds "sk"):
# the scan finds the longest at each place and does not see those.
_BY_KEYWORD: dict[str, tuple[TokenFormat, ...]] = {
    k: tuple(f for f in FORMATS if any(inner in k for inner in f.keywords)) for k in _KEYWORDS
}


def entropy(s: str) -> float:
    """Shannon entropy of ``s`` in bits per character."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def formats_in(line: str) -> list[TokenFormat]:
    """The formats whose keywords occur in ``line``."""
    found: dict[str, TokenFormat] = {}
    low, pos = line.lower(), 0
    search = _KEYWORD_RE.search
    while (m := search(low, pos)) is not None:  # overlapping: "duffel_test_" holds "duffel_" and "_test_"
        for f in _BY_KEYWORD.get(m.group(0), ()):
            found[f.id] = f
        pos = m.start() + 1
    return list(found.values())


def format_spans(line: str) -> list[tuple[Span, str]]:
    """``((start, end), format id)`` of each known token format in ``line``."""
    spans = []
    for f in formats_in(line):
        for m in f.regex.finditer(line):
            s, e = m.span(f.group)
            if s < 0 or e <= s:
                continue
            if f.entropy is not None and entropy(line[s:e]) < f.entropy:
                continue
            spans.append(((s, e), f.id))
    return spans


_URL_USERINFO = re.compile(r"\b[A-Za-z][\w+.-]*://([^\s:/@\"'<>]*):([^\s@/\"'<>]*)@")
_URL_USER_ONLY = re.compile(r"\b[A-Za-z][\w+.-]*://([^\s:/@\"'<>?#]+)@")
_PLAIN_USER = re.compile(r"[a-z_][a-z0-9._-]{0,31}|[\w.+-]+%40[\w.-]+|[A-Za-z][a-z]+(?:[._-][A-Za-z][a-z]+)*")


def url_spans(line: str) -> list[Span]:
    """Passwords in URLs (``scheme://user:PW@host``) and tokens standing as the user (``https://TOKEN@host``)."""
    spans: list[Span] = []
    if "://" not in line:
        return spans
    for m in _URL_USERINFO.finditer(line):
        if m.end(2) > m.start(2):
            spans.append((m.start(2), m.end(2)))
    for m in _URL_USER_ONLY.finditer(line):
        user = m.group(1)
        if not _PLAIN_USER.fullmatch(user):
            spans.append((m.start(1), m.end(1)))  # not a user name: a token (git clone https://TOKEN@host/…)
    return spans


def token_spans(line: str) -> list[Span]:
    return [span for span, _ in format_spans(line)] + url_spans(line)


_LONG_TOKEN = re.compile(r"(?<![\w+/=-])[A-Za-z0-9+/_-]{40,}={0,2}(?![\w+/=-])")
_SSH_PUBKEY_BEFORE = re.compile(
    r"(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-\S+|sk-\S+@openssh\.com|\S+-cert-v01@openssh\.com)[ \t]+$"
)
_WORD_SHAPE = re.compile(r"[A-Z]?[a-z]+\d*|[A-Z]+\d*|\d+")
_UPPER, _LOWER, _DIGIT = re.compile(r"[A-Z]"), re.compile(r"[a-z]"), re.compile(r"\d")


def looks_random(s: str, min_len: int = 40, min_entropy: float = 4.0) -> bool:
    """Whether ``s`` looks like a key: mixed case and digits, high entropy, not a path, slug or name."""
    if len(s) < min_len or not (_UPPER.search(s) and _LOWER.search(s) and _DIGIT.search(s)):
        return False
    if s.startswith("/") or s.count("/") * 12 > len(s) or s.count("-") * 8 > len(s):
        return False  # a path or a slug
    pieces = [p for p in re.split(r"[_./+-]", s) if p]
    if len(pieces) >= 3 and sum(bool(_WORD_SHAPE.fullmatch(p)) for p in pieces) * 4 >= len(pieces) * 3:
        return False  # Words_Joined_Like_This_CA_2: a name, not a key
    return entropy(s) >= min(min_entropy, math.log2(len(s)) - 0.7)


def high_entropy_spans(line: str) -> list[Span]:
    """Long random-looking strings (keys, secrets) that no other rule named."""
    spans = []
    for m in _LONG_TOKEN.finditer(line):
        word_start = max(line.rfind(" ", 0, m.start()), line.rfind("\t", 0, m.start())) + 1
        if "://" in line[word_start : m.start()]:  # in a URL: judge each path segment alone
            pieces, offset = [], m.start()
            for piece in m.group(0).split("/"):
                pieces.append((offset, piece))
                offset += len(piece) + 1
        else:
            pieces = [(m.start(), m.group(0))]
        for start, s in pieces:
            if looks_random(s) and not _SSH_PUBKEY_BEFORE.search(line[max(0, start - 120) : start]):
                spans.append((start, start + len(s)))
    return spans


_VALUE_TOKEN = re.compile(r"[A-Za-z0-9+/_.~=-]{20,}")


_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def random_value(value: str) -> bool:
    """A value after *any* key that is a key itself: 20+ characters of one token that look random.

    Names written in words (``jdk.G1GarbageCollection``) are long runs of letters;
    a key changes case or class every character or two."""
    value = value.strip().strip("\"'`")
    if _VALUE_TOKEN.fullmatch(value) is None or not looks_random(value.rstrip("="), min_len=20, min_entropy=3.7):
        return False
    runs = _CAMEL.findall(value)
    return not runs or sum(map(len, runs)) / len(runs) < 3.0
