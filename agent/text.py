"""Showing untrusted text safely: escape what could hide or disguise itself.

Names, tickets, reasons and notes come from the technician, who may be
hostile. Before any of it reaches a terminal, a dialog or a report it goes
through :func:`show`, which returns a form that is safe to display and says
why the original was unusual:

- control characters (including newlines and ESC sequences) and other
  invisible format characters, bidirectional overrides and isolates,
  zero-width characters, unassigned and private-use code points and lone
  surrogates become ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``;
- letters that disguise a word written mostly in another script (a Cyrillic
  ``а`` in ``Аlice``), and whole words made only of letters that look Latin in
  text that is otherwise Latin (``раураl``), are escaped the same way;
- compatibility lookalikes (fullwidth ``Ａ``, ligatures) and stacks of
  combining marks are flagged.

A backslash is doubled, so the escaped form is unambiguous: two different
texts never show the same. Everything here is a pure function.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

UNUSUAL = "contains unusual characters"

BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
INVISIBLE = frozenset("\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064"
                      "\u3164\ufeff\uffa0")

# Cyrillic and Greek letters that look like Latin ones (after Unicode's confusables.txt).
LATIN_LOOKALIKES = frozenset(
    "АВЕЅІЈКМНОРСТХУаеорсухіјѕԁԛԝһӏ"  # Cyrillic
    "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧαιονρτυχ"  # Greek
)

# Scripts that are normally written together count as one.
_SCRIPT_FAMILY = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "CJK", "BOPOMOFO": "CJK"}
_MAX_COMBINING_RUN = 2
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Shown:
    """A text made safe for display, and why the original was unusual."""

    text: str
    reasons: tuple[str, ...]

    @property
    def unusual(self) -> bool:
        return bool(self.reasons)

    def flag(self, what: str) -> str | None:
        """The flag for a field, e.g. ``"technician contains unusual characters (bidirectional controls)"``."""
        if not self.reasons:
            return None
        return f"{what} {UNUSUAL} ({', '.join(self.reasons)})"


def _code(ch: str) -> str:
    cp = ord(ch)
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def script_of(ch: str) -> str | None:
    """The script of a letter ("LATIN", "CYRILLIC", "CJK" …), None for anything else."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    if not name:
        return None
    first = name.split(" ", 1)[0]
    return _SCRIPT_FAMILY.get(first, first)


def _hidden_reason(ch: str) -> str | None:
    """Why ``ch`` must never be shown as itself, or None."""
    if ch in BIDI_CONTROLS:
        return "bidirectional controls"
    if ch in INVISIBLE:
        return "invisible characters"
    cat = unicodedata.category(ch)
    if cat == "Cc":
        return "control characters"
    if cat == "Cf" or cat in ("Zl", "Zp") or (cat == "Zs" and ch != " "):
        return "invisible characters"
    if cat == "Cs":
        return "invalid characters"
    if cat in ("Co", "Cn"):
        return "unassigned or private characters"
    return None


def _disguised_positions(text: str) -> set[int]:
    """Positions of letters that disguise themselves as another script."""
    positions: set[int] = set()
    words = [(m.start(), m.group()) for m in _WORD.finditer(text)]
    text_scripts = {script_of(c) for c in text} - {None}
    for start, word in words:
        scripts = [script_of(c) for c in word]
        counts: dict[str, int] = {}
        for s in scripts:
            if s:
                counts[s] = counts.get(s, 0) + 1
        if len(counts) > 1:
            # Keep the word's main script and escape the others. A word whose
            # foreign letters all look Latin is a Latin word in disguise.
            others = [c for c, s in zip(word, scripts) if s not in (None, "LATIN")]
            if "LATIN" in counts and all(c in LATIN_LOOKALIKES for c in others):
                main = "LATIN"
            else:
                main = max(counts, key=lambda s: (counts[s], s == "LATIN"))
            positions.update(start + i for i, s in enumerate(scripts) if s and s != main)
        elif (
            counts
            and "LATIN" not in counts
            and "LATIN" in text_scripts
            and all(c in LATIN_LOOKALIKES for c in word if script_of(c))
        ):
            positions.update(start + i for i, c in enumerate(word) if script_of(c))
    return positions


# ASCII's only characters to hide are its controls; a backslash is doubled so that no text can pass for a code.
_ASCII_SHOWN = {**{cp: _code(chr(cp)) for cp in [*range(0x20), 0x7F]}, ord("\\"): "\\\\"}

# Printable ASCII and punctuation that is no letter, no control and its own NFKC form (not "…": it is "...").
_PLAIN = frozenset(map(chr, range(0x20, 0x7F))) | frozenset("—–·‘’“”«»°×")


def show(text: str) -> Shown:
    """The escaped, display-safe form of ``text`` and the reasons it is unusual."""
    if text.isascii():
        # One script, no lookalikes, no combining marks: only controls to hide and backslashes to
        # double. This matters for bursts of paths and for reports (a test checks that it gives
        # what _show_any gives).
        if text.isprintable():
            return Shown(text.replace("\\", "\\\\"), ())
        return Shown(text.translate(_ASCII_SHOWN), ("control characters",))
    if _PLAIN.issuperset(text):  # printable ASCII and the punctuation our own sentences use: nothing to hide
        return Shown(text.replace("\\", "\\\\"), ())
    return _show_any(text)


def _show_any(text: str) -> Shown:
    reasons: list[str] = []

    def note(reason: str) -> None:
        if reason not in reasons:
            reasons.append(reason)

    disguised = _disguised_positions(text)
    out: list[str] = []
    combining_run = 0
    for i, ch in enumerate(text):
        hidden = _hidden_reason(ch)
        if hidden:
            note(hidden)
            out.append(_code(ch))
            combining_run = 0
            continue
        if i in disguised:
            note("lookalike letters from another script")
            out.append(_code(ch))
            combining_run = 0
            continue
        if unicodedata.combining(ch):
            combining_run += 1
            if combining_run > _MAX_COMBINING_RUN:
                note("stacked combining marks")
                out.append(_code(ch))
                continue
        else:
            combining_run = 0
        if ch == "\\":
            out.append("\\\\")
            continue
        if unicodedata.normalize("NFKC", ch) != ch and not unicodedata.combining(ch):
            note("compatibility lookalikes")
        out.append(ch)
    return Shown("".join(out), tuple(reasons))


# For the text alone, "…" is shown as it is (``show`` only adds a reason for it): a report's labels use it.
_PLAIN_TEXT = _PLAIN | frozenset("…")


def escape(text: str) -> str:
    """Only the display-safe form of ``text``."""
    if not text.isascii() and _PLAIN_TEXT.issuperset(text):
        return text.replace("\\", "\\\\")
    return show(text).text
