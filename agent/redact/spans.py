"""Spans, markers and the state a line leaves open: what every rule of the package shares.

A rule finds the *spans* of a line (``(start, end)``) that hold a secret; the
spans are merged and each merged span becomes one marker. The marker shows
*that* a value is there, and whether it changed, without revealing it:
``[redacted: sha256 1a2b3c4d]``, the first 8 hex digits of an HMAC-SHA256 of
the value under a random key that is never stored. Within one key the same
secret always gets the same marker; a marker cannot be used to test guesses
offline, as a bare hash of a weak password could.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MARKER_RE_TEXT = r"\[redacted: sha256 [0-9a-f]{8}\]"
MAX_LINE = 100_000  # longer lines are hidden whole rather than scanned
# An unclosed quote or tag stops hiding after this many lines: no real secret is
# longer, and a stray quote must not hide the rest of a file.
MAX_OPEN_LINES = 200

Span = tuple[int, int]


class Marker:
    """Keyed markers: ``marker(value)`` is ``[redacted: sha256 xxxxxxxx]`` under this object's key."""

    def __init__(self, key: bytes | None = None):
        self._key = key if key is not None else secrets.token_bytes(32)

    def digest(self, value: str) -> bytes:
        """The full HMAC-SHA256 of ``value`` under the key (what known secrets are remembered by)."""
        return hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def __call__(self, value: str) -> str:
        return f"[redacted: sha256 {self.digest(value).hex()[:8]}]"


@dataclass(frozen=True)
class Open:
    """A secret (or a block) that continues on the following lines."""

    kind: str  # quote | triple | yaml | xml | next-element | pem | putty | heredoc | block
    until: str = ""  # the closing quote, delimiter, tag or here-document word
    indent: int = 0  # yaml: lines indented deeper belong to the block
    lines: int = 0  # lines hidden so far
    hide: bool = True  # heredoc: hide the body (a password reader's input) or scan it


def merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted, non-empty, non-overlapping spans (touching ones joined)."""
    merged: list[Span] = []
    for s, e in sorted(sp for sp in spans if sp[1] > sp[0]):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def apply(line: str, spans: Iterable[Span], marker: Callable[[str], str]) -> tuple[str, list[str]]:
    """``line`` with each merged span replaced by its marker, and the values that were hidden."""
    out, hidden, last = [], [], 0
    for s, e in merge(spans):
        out.append(line[last:s])
        value = line[s:e]
        hidden.append(value)
        out.append(marker(value))
        last = e
    out.append(line[last:])
    return "".join(out), hidden


def shift(spans: Iterable[Span], by: int) -> list[Span]:
    return [(s + by, e + by) for s, e in spans]


def close_quote(line: str, start: int, q: str) -> int:
    """Index of the quote closing one opened just before ``start``, or -1."""
    i = start
    while i < len(line):
        c = line[i]
        if c == "\\" and q != "'":
            i += 2
            continue
        if c == q:
            return i
        i += 1
    return -1


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def whole(line: str) -> list[Span]:
    """The span of a line inside a secret block: all but its indentation and trailing blanks."""
    start, end = indent_of(line), len(line.rstrip())
    return [(start, end)] if end > start else []


def split_lines(text: str) -> list[str]:
    """Lines with their ``\\n``. Only ``\\n`` ends a line: str.splitlines would also split
    at form feeds and other separators that config files treat as ordinary characters,
    and cut a secret in two."""
    lines = text.split("\n")
    last = lines.pop()
    return [line + "\n" for line in lines] + ([last] if last else [])
