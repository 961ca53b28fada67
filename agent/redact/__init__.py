"""Redaction: hide secrets in configuration texts, diffs, command lines, notes and records.

Layer "redact": imports nothing from capture, session or service. Use one
:class:`Redactor` per session::

    r = Redactor()                       # its own marker key, its own memory
    r.learn(text, path)                  # remember what a config text holds; emits nothing
    r.redact_line(line) / r.redact_text(text, path=None)
    r.redact_diff(path, before, after)   # None for a secret file (hashes only)
    r.redact_cmdline(argv)               # same number of arguments
    r.redact_note(text) -> RedactedNote(text, hidden)
    r.hide_known(text)                   # known secrets only: paths, names, alarm details
    r.scrub(record_data)                 # known secrets in every string of a record

A hidden value becomes ``[redacted: sha256 1a2b3c4d]``: the first 8 hex
digits of an HMAC-SHA256 of the value under the Redactor's random key, never
stored. Every value hidden is remembered by that keyed digest (never in
clear) and hidden wherever it appears later; a shell word or quoted string
holding one is hidden whole (``agent.redact.known``). The module-level
functions below are thin wrappers over a default Redactor that remembers
nothing (stateless, like the functions they replace), for callers not yet
given a session's Redactor.

How it works: independent rules each find the spans of a line that hold a
secret; the spans are merged and each becomes one marker, so the text around
a secret stays exactly as it was. The rules, one module each:

- ``formats`` (data) and ``tokens``: 260 token formats anywhere in a line
  (keyword prefilter, then the format's regex and entropy floor), URL
  credentials, long random-looking strings.
- ``keys`` and ``assignments``: values after assignment and option syntax when
  the key names a secret; random-looking values after any key.
- ``markup``: XML elements and attributes, plists, OpenVPN inline blocks.
- ``programs`` (data) and ``commands``: the command lines technicians type.
- ``files``: secret files (hashes only), .env files, credential formats.
- ``lines``: constructs that span lines (PEM, PuTTY, YAML blocks, quotes,
  here-documents); ``known``: the memory of hidden values.

Why the token formats are data here and not a dependency. gitleaks' default
rules are the broadest open set (222 rules, MIT licence, maintained, new
rules every few weeks), but they ship inside a Go program: no PyPI package
carries them (``gitleaks-py`` was last released in 2022 and wraps the
binary). detect-secrets (Apache-2.0, on PyPI) was last released in May 2024,
has about 25 detectors written as Python classes rather than data, scans
whole files through its own plugin API, and pulls in requests and PyYAML;
its formats are a subset of gitleaks'. So ``formats.py`` holds gitleaks'
rules translated to Python's regex syntax as data, with gitleaks' MIT notice
and the commit they were taken from, plus the formats we add; refreshing
them is comparing one file. ``tests/unit/test_redact_formats.py`` checks every
format against examples of its documented shape.

The rules err towards hiding: a leaked password is worse than an unreadable
line (see ``agent.redact.keys`` for the few values left visible).

What it cannot promise. Redaction protects the customer against a careless
technician, not against one who sets out to carry a secret out in the log:
a value typed in pieces (``OLD""PASS``), encoded (``base64``, ``rev``) or
shorter than 6 characters is not recognised as a known secret, and a secret
that no rule recognises and that the session never saw hidden is kept. The
commands that did the encoding are in the log, in full.
"""

from __future__ import annotations

from agent.redact.files import is_secret_file, is_text_config
from agent.redact.keys import is_secret_key
from agent.redact.redactor import MARKER_RE, RedactedNote, Redactor

__all__ = [
    "MARKER_RE",
    "RedactedNote",
    "Redactor",
    "default_redactor",
    "is_secret_file",
    "is_secret_key",
    "is_text_config",
    "marker",
    "redact_cmdline",
    "redact_diff",
    "redact_line",
    "redact_note",
    "redact_text",
]

_DEFAULT = Redactor(remember=False)


def default_redactor() -> Redactor:
    """The stateless Redactor behind the module's functions (its key lives as long as the process)."""
    return _DEFAULT


def marker(value: str) -> str:
    return _DEFAULT.marker(value)


def redact_line(line: str) -> str:
    return _DEFAULT.redact_line(line)


def redact_text(text: str, path: str | None = None) -> str:
    return _DEFAULT.redact_text(text, path)


def redact_diff(path: str, before: str | None, after: str | None, context: int = 3) -> str | None:
    return _DEFAULT.redact_diff(path, before, after, context)


def redact_cmdline(argv: list[str]) -> list[str]:
    return _DEFAULT.redact_cmdline(argv)


def redact_note(text: str) -> RedactedNote:
    return _DEFAULT.redact_note(text)
