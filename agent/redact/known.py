"""Known secrets: every value hidden once is found again wherever it appears, without being kept in clear.

What is kept, in memory only: for each value, its HMAC-SHA256 under the
Redactor's marker key (the same keyed digest its marker is cut from), its
length, and one bit in a 65,536-bit table for a keyed 16-bit fingerprint
of its first ``ANCHOR`` characters. Finding the values in a text then costs
one fingerprint per character; only where a bit is set are the digests of
the substrings of each remembered length computed and looked up. The table
tells little about a value (16 bits of its first four characters, shared by
thousands of others); the digests are as strong as the markers.

A value shorter than ``MIN_CHARS`` is not remembered: ``pw`` or ``root``
would hide every word that contains them.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Callable

from agent.redact.spans import Span

MIN_CHARS = 6
MAX_VALUES = 20_000  # past this, new values are counted in ``refused``, not remembered
ANCHOR = 4
_BITS = 1 << 16


class KnownSecrets:
    """A set of secret values, remembered by keyed digest, found again in any text."""

    def __init__(self, digest: Callable[[str], bytes], *, min_chars: int = MIN_CHARS, max_values: int = MAX_VALUES):
        self._digest = digest
        self._salt = secrets.randbits(64)
        self._digests: set[bytes] = set()
        self._lengths: Counter[int] = Counter()
        self._sorted_lengths: list[int] = []
        self._table = bytearray(_BITS // 8)
        self.min_chars = min_chars
        self.max_values = max_values
        self.refused = 0  # values not remembered because the memory was full

    def __len__(self) -> int:
        return len(self._digests)

    def _fingerprint(self, anchor: str) -> int:
        # str hashes are SipHash under the interpreter's random key; the salt makes them ours
        return ((hash(anchor) ^ self._salt) * 0x9E3779B97F4A7C15 >> 48) & (_BITS - 1)

    def add(self, value: str) -> bool:
        """Remember ``value``; False if it is too short, already known, or the memory is full."""
        if len(value) < self.min_chars or not value.strip() or value != value.strip():
            return False
        d = self._digest(value)
        if d in self._digests:
            return False
        if len(self._digests) >= self.max_values:
            self.refused += 1
            return False
        self._digests.add(d)
        if self._lengths[len(value)] == 0:
            self._sorted_lengths = sorted({*self._sorted_lengths, len(value)}, reverse=True)
        self._lengths[len(value)] += 1
        f = self._fingerprint(value[:ANCHOR])
        self._table[f >> 3] |= 1 << (f & 7)
        return True

    def holds_any(self, text: str) -> bool:
        """Whether any remembered value occurs in ``text`` (the quick test before hiding)."""
        return bool(self._digests) and len(text) >= self.min_chars and bool(self.find(text))

    def __contains__(self, value: str) -> bool:
        return bool(self._digests) and self._digest(value) in self._digests

    def find(self, text: str) -> list[Span]:
        """Where remembered values occur in ``text`` (longest first at each place; overlaps allowed)."""
        if not self._digests or len(text) < self.min_chars:
            return []
        spans: list[Span] = []
        table, lengths, n, salt = self._table, self._sorted_lengths, len(text), self._salt
        digest, digests = self._digest, self._digests
        for i in range(n - self.min_chars + 1):
            f = ((hash(text[i : i + ANCHOR]) ^ salt) * 0x9E3779B97F4A7C15 >> 48) & 0xFFFF  # _fingerprint, inlined
            if not table[f >> 3] & (1 << (f & 7)):
                continue
            for length in lengths:
                if i + length <= n and digest(text[i : i + length]) in digests:
                    spans.append((i, i + length))
                    break
        return spans


# What a known secret inside a longer piece of text takes with it: the shell word
# or quoted string around it (s/OLDPASSWORD/NEWPASSWORD/ hides NEWPASSWORD too).
_QUOTED = re.compile(r"""'[^'\n]*'|"(?:[^"\\\n]|\\.)*"|`[^`\n]*`""")
_WORD_STOP = re.compile(r"""[\s'"`;|&<>()]""")
_ASSIGNMENT_HEAD = re.compile(r"[A-Za-z_][\w.-]*=")
PIECES = re.compile(r"[^/|,:#@=;\s'\"`]+")


def enclosing(text: str, span: Span) -> Span:
    """The quoted string (its content) or the shell word around ``span``; for ``NAME=value``, the value."""
    s, e = span
    for m in _QUOTED.finditer(text):
        if m.start() >= e:
            break
        if m.start() + 1 <= s and e <= m.end() - 1:
            return m.start() + 1, m.end() - 1
    start = s
    while start > 0 and not _WORD_STOP.match(text, start - 1):
        start -= 1
    stop = _WORD_STOP.search(text, e)
    end = stop.start() if stop else len(text)
    head = _ASSIGNMENT_HEAD.match(text, start)
    if head and head.end() <= s:
        start = head.end()
    return start, end
