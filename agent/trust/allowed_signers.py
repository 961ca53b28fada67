"""Parsing OpenSSH's allowed_signers format (ssh-keygen(1), ALLOWED SIGNERS).

Each line: ``principals [options] keytype base64 [comment]``. Principals is
a pattern list (it may be double-quoted). Options, comma-separated and
case-insensitive: ``cert-authority``, ``namespaces="list"``,
``valid-after="time"``, ``valid-before="time"`` with times as
``YYYYMMDD[HHMM[SS]]`` in local time, or UTC with a ``Z`` (or ``UTC``) suffix.
Blank lines and lines starting with ``#`` are comments.

The parser follows OpenSSH's ``sshsig.c``/``misc.c`` token rules. A line it
cannot use becomes a ``LineProblem`` instead of an entry; the store decides
whether that is fatal. Skipping a line can only remove trust, never add it.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import UnsupportedAlgorithm

from agent.errors import KeyFormatError, SignersLineError
from agent.sshkeys import CERT_SUFFIX, KEY_TYPES, blob_type, load_identity

WHITESPACE = " \t\r\n"

# Every type OpenSSH can read, so that a known-but-unsupported type gets its own message.
_OPENSSH_PLAIN_TYPES = KEY_TYPES + (
    "ssh-dss",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ssh-ed25519@openssh.com",
)
_CERT_TYPES = tuple(t.removesuffix("@openssh.com") + CERT_SUFFIX for t in _OPENSSH_PLAIN_TYPES)
OPENSSH_KEY_TYPES = frozenset(_OPENSSH_PLAIN_TYPES + _CERT_TYPES)
SUPPORTED_KEY_TYPES = frozenset(KEY_TYPES + tuple(t + CERT_SUFFIX for t in KEY_TYPES))

_TIME_RE = re.compile(r"\d{8}(?:\d{4}(?:\d{2})?)?")


@dataclass(frozen=True)
class SignerEntry:
    """One usable line of an allowed_signers file."""

    line: int
    principals: str  # the pattern list, as written (quotes removed)
    key_blob: bytes
    cert_authority: bool = False
    namespaces: str | None = None  # pattern list, or None for any namespace
    valid_after: int | None = None  # Unix seconds, inclusive
    valid_before: int | None = None  # Unix seconds, inclusive (as ssh-keygen -Y verify)

    @property
    def key_type(self) -> str:
        return blob_type(self.key_blob)

    def valid_at(self, now: int) -> bool:
        if self.valid_after is not None and now < self.valid_after:
            return False
        if self.valid_before is not None and now > self.valid_before:
            return False
        return True


@dataclass(frozen=True)
class LineProblem:
    line: int
    reason: str

    def describe(self, source: str) -> str:
        return f"{source} line {self.line}: {self.reason}"


def parse(text: str) -> tuple[list[SignerEntry], list[LineProblem]]:
    """All usable entries, and a problem for each line that is not a comment and cannot be used."""
    entries: list[SignerEntry] = []
    problems: list[LineProblem] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.lstrip(WHITESPACE)
        if not line or line.startswith("#"):
            continue
        try:
            entries.append(parse_line(line, number))
        except SignersLineError as exc:
            problems.append(LineProblem(number, str(exc)))
    return entries, problems


def parse_line(line: str, number: int = 0) -> SignerEntry:
    """One non-comment line (leading whitespace already removed)."""
    principals, rest = _split_principals(line)
    rest = rest.lstrip(" \t")
    first = _token(rest)
    if first in OPENSSH_KEY_TYPES:
        options = ""
        key_text = rest
    else:
        options, key_text = _split_options(rest)
        if not key_text:
            raise SignersLineError("the line has no key")
    key_blob = _parse_key(key_text)
    entry = _parse_options(options, number, principals, key_blob)
    if entry.cert_authority and blob_type(key_blob).endswith(CERT_SUFFIX):
        raise SignersLineError("a cert-authority line needs the CA's plain public key, not a certificate")
    return entry


# --- tokens, as OpenSSH splits them --------------------------------------------------------


def _token(text: str) -> str:
    for i, c in enumerate(text):
        if c in " \t":
            return text[:i]
    return text


def _split_principals(line: str) -> tuple[str, str]:
    """``strdelimw``: the first whitespace-delimited field; a double quote starts a quoted part."""
    for i, c in enumerate(line):
        if c == '"':
            end = line.find('"', i + 1)
            if end < 0:
                raise SignersLineError("the principals have an unmatched double quote")
            return line[:i] + line[i + 1 : end], line[end + 1 :].lstrip(WHITESPACE)
        if c in WHITESPACE:
            return line[:i], line[i + 1 :].lstrip(WHITESPACE)
    raise SignersLineError("the line has principals but no key")


def _split_options(text: str) -> tuple[str, str]:
    """``sshkey_advance_past_options``: up to the first unquoted space or tab."""
    quoted = False
    i = 0
    while i < len(text) and (quoted or text[i] not in " \t"):
        if text[i] == "\\" and text[i + 1 : i + 2] == '"':
            i += 1
        elif text[i] == '"':
            quoted = not quoted
        i += 1
    if quoted:
        raise SignersLineError("the options have an unmatched double quote")
    return text[:i], text[i:].lstrip(" \t")


def _parse_key(text: str) -> bytes:
    fields = text.split(None, 2)
    if len(fields) < 2:
        raise SignersLineError("the key is incomplete (expected a key type and its base64)")
    key_type, b64 = fields[0], fields[1]
    if key_type not in OPENSSH_KEY_TYPES:
        raise SignersLineError(f"unknown key type {key_type[:40]!r}")
    if key_type not in SUPPORTED_KEY_TYPES:
        raise SignersLineError(f"key type {key_type} is not supported")
    try:
        blob = base64.b64decode(b64, validate=True)
    except ValueError as exc:
        raise SignersLineError("the key's base64 is invalid") from exc
    try:
        if blob_type(blob) != key_type:
            raise SignersLineError("the key's data does not match its type")
        load_identity(blob)
    except (KeyFormatError, ValueError, TypeError) as exc:
        if isinstance(exc, SignersLineError):
            raise
        raise SignersLineError(f"the {key_type} key is malformed") from exc
    except UnsupportedAlgorithm as exc:
        raise SignersLineError(f"the {key_type} key uses an unsupported algorithm") from exc
    return blob


# --- options -------------------------------------------------------------------------------


def _parse_options(options: str, number: int, principals: str, key_blob: bytes) -> SignerEntry:
    ca = False
    namespaces: str | None = None
    after: int | None = None
    before: int | None = None
    pos = 0
    while pos < len(options):
        if _starts(options, pos, "cert-authority"):
            ca = True
            pos += len("cert-authority")
        elif _starts(options, pos, "namespaces="):
            if namespaces is not None:
                raise SignersLineError('the line has more than one "namespaces" option')
            namespaces, pos = _dequote(options, pos + len("namespaces="))
        elif _starts(options, pos, "valid-after="):
            if after is not None:
                raise SignersLineError('the line has more than one "valid-after" option')
            value, pos = _dequote(options, pos + len("valid-after="))
            after = parse_time(value, "valid-after")
        elif _starts(options, pos, "valid-before="):
            if before is not None:
                raise SignersLineError('the line has more than one "valid-before" option')
            value, pos = _dequote(options, pos + len("valid-before="))
            before = parse_time(value, "valid-before")
        if pos >= len(options):
            break
        if options[pos] != ",":
            raise SignersLineError(f"unknown option {_token(options[pos:]).split(',')[0][:40]!r}")
        pos += 1
        if pos >= len(options):
            raise SignersLineError("the options end with a comma")
    if after is not None and before is not None and before <= after:
        raise SignersLineError('"valid-before" is not after "valid-after"')
    return SignerEntry(number, principals, key_blob, ca, namespaces, after, before)


def _starts(options: str, pos: int, word: str) -> bool:
    return options[pos : pos + len(word)].lower() == word


def _dequote(options: str, pos: int) -> tuple[str, int]:
    """``opt_dequote``: a double-quoted value where ``\\"`` stands for a quote."""
    if options[pos : pos + 1] != '"':
        raise SignersLineError("an option's value must be in double quotes")
    out = []
    pos += 1
    while pos < len(options) and options[pos] != '"':
        if options[pos] == "\\" and options[pos + 1 : pos + 2] == '"':
            pos += 1
        out.append(options[pos])
        pos += 1
    if pos >= len(options):
        raise SignersLineError("an option's value lacks its closing double quote")
    return "".join(out), pos + 1


def parse_time(value: str, name: str = "time") -> int:
    """``parse_absolute_time``: YYYYMMDD[HHMM[SS]] local, or UTC with a Z/UTC suffix."""
    utc = False
    if len(value) > 1 and value[-1] in "zZ":
        utc, value = True, value[:-1]
    elif len(value) > 3 and value[-3:].upper() == "UTC":
        utc, value = True, value[:-3]
    if not _TIME_RE.fullmatch(value):
        raise SignersLineError(f'"{name}" must be YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS')
    digits = [value[0:4], value[4:6], value[6:8], value[8:10], value[10:12], value[12:14]]
    try:
        year, month, day, hour, minute, second = (int(d or 0) for d in digits)
        when = datetime(year, month, day, hour, minute, second)
        seconds = int((when.replace(tzinfo=UTC) if utc else when).timestamp())
    except (ValueError, OverflowError, OSError) as exc:
        raise SignersLineError(f'"{name}" is not a valid date and time') from exc
    if seconds <= 0:
        raise SignersLineError(f'"{name}" must be after 1970')
    return seconds
