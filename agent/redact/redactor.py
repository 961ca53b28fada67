"""The Redactor: one per session, with its own marker key and its memory of the secrets it hid.

Every value a Redactor hides (in configuration texts, diffs, command lines,
notes) is remembered (``agent.redact.known``: keyed digests, never the value)
and hidden wherever it appears later in that session: command lines, notes,
paths, alarms, diffs. A shell word or quoted string that contains a known
secret is hidden whole, so ``sed -i 's/OLDPASSWORD/NEWPASSWORD/' f`` hides
NEWPASSWORD too once OLDPASSWORD is known, and NEWPASSWORD is then known
as well. ``learn(text)`` remembers what a text would hide without producing
anything (capture feeds it the baseline's configuration files).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
import threading
from dataclasses import dataclass
from typing import Any

from agent.redact.assignments import auth_header_spans, kv_spans, random_value_spans
from agent.redact.commands import argv_spans, shell_spans
from agent.redact.files import credentials_in, env_spans, is_secret_file, profile_of
from agent.redact.known import PIECES, KnownSecrets, enclosing
from agent.redact.lines import scan_line, scan_text
from agent.redact.markup import xml_spans
from agent.redact.spans import (
    MARKER_RE_TEXT,
    MAX_LINE,
    Marker,
    Span,
    apply,
    merge,
    split_lines,
)
from agent.redact.tokens import high_entropy_spans, token_spans

MARKER_RE = re.compile(MARKER_RE_TEXT)
CLEAN_CACHE = 50_000
_KEY_AFTER = re.compile(r"[ \t]*[=:]")  # names remembered as clean, at most
# In a note (prose), "the password is X", "new token: X", "pw to X" name their value.
_NOTE_SECRET = re.compile(
    r"(?i)\b(?:new[ \t]+|old[ \t]+|the[ \t]+|admin[ \t]+|root[ \t]+)?"
    r"(?:password|passwort|passwd|passphrase|pass|pw|pwd|pin|secret|token|api[ \t_-]?key|key)s?"
    r"[ \t]+(?:is|was|to|now|=|:|->|→|set[ \t]+to|changed[ \t]+to|reset[ \t]+to)[ \t]+[\"'`]?([^\s\"'`]+)"
)
_NOT_A_NOTE_SECRET = frozenset({
    "the", "a", "an", "it", "its", "that", "this", "now", "set", "changed", "reset", "correct", "wrong",
    "required", "expired", "empty", "unchanged", "same", "new", "old", "fine", "ok", "okay", "valid", "invalid",
    "in", "on", "at", "for", "from", "by", "with", "be", "been", "stored", "saved", "removed", "rotated",
})


@dataclass(frozen=True)
class RedactedNote:
    """A technician's note as it may be journaled, and how many values were hidden in it."""

    text: str
    hidden: int

    @property
    def changed(self) -> bool:
        return self.hidden > 0


class Redactor:
    """Hides secrets in lines, texts, diffs, command lines, notes and records; remembers what it hid.

    Thread-safe (capture's threads and the session share one). ``remember=False``
    makes a stateless redactor (the module's functions use one).
    """

    def __init__(self, *, remember: bool = True, key: bytes | None = None):
        self._marker = Marker(key)
        self.remember = remember
        self._known = KnownSecrets(self._marker.digest)
        self._lock = threading.Lock()
        self._clean_names: set[str] = set()  # names (parts of paths) known to hold no known secret
        self._clean_for = 0  # how many secrets were known when they were checked

    # -- markers and memory -----------------------------------------------------------
    def marker(self, value: str) -> str:
        """The marker that stands for ``value`` under this redactor's key."""
        return self._marker(value)

    @property
    def known(self) -> int:
        """How many distinct secret values are remembered."""
        return len(self._known)

    @property
    def refused(self) -> int:
        """Values not remembered because the memory was full."""
        return self._known.refused

    def knows(self, value: str) -> bool:
        return value in self._known

    def _remember(self, values: list[str]) -> None:
        """Remember ``values`` (what was hidden)."""
        if not self.remember:
            return
        with self._lock:
            for v in values:
                v = v.strip().strip("\"'`")
                if not MARKER_RE.fullmatch(v):
                    self._known.add(v)

    def _remember_parts(self, line: str, spans: list[Span]) -> None:
        """Remember the parts of spans that held a known secret (``s/OLD/NEW/`` -> ``NEW``), except
        the parts that are keys (``password`` in ``password=NEW``: followed by ``=`` or ``:`` in the line)."""
        if not self.remember or not spans:
            return
        with self._lock:
            for s, e in spans:
                for m in PIECES.finditer(line, s, e):
                    if not _KEY_AFTER.match(line, m.end()) and not MARKER_RE.fullmatch(m.group(0)):
                        self._known.add(m.group(0))

    def _known_spans(self, line: str, spans: list[Span]) -> tuple[list[Span], list[Span]]:
        """Known secrets in ``line``: (those outside ``spans``, widened to their word or quoted string;
        the merged rule spans that hold one, whose other parts are then remembered too)."""
        if not self.remember or not len(self._known):
            return [], []
        with self._lock:
            found = self._known.find(line)
        if not found:
            return [], []
        covered = merge(spans)
        markers = [m.span() for m in MARKER_RE.finditer(line)]
        widened, holding = [], []
        for s, e in found:
            if any(ms <= s < me for ms, me in markers):
                continue
            around = next(((cs, ce) for cs, ce in covered if cs <= s and e <= ce), None)
            if around is not None:
                holding.append(around)
            else:
                widened.append(enclosing(line, (s, e)))
        return widened, holding

    def _hide(self, line: str, spans: list[Span], public: bool = False) -> str:
        """``line`` with ``spans`` and every known secret hidden; what was hidden is remembered
        (unless ``public``: a certificate's body is hidden but is no secret)."""
        widened, holding = self._known_spans(line, spans)
        if not spans and not widened:
            return line
        out, hidden = apply(line, spans + widened, self._marker)
        if public:
            return out
        self._remember(hidden + [line[s:e] for s, e in spans + widened])
        self._remember_parts(line, widened + holding)
        return out

    def learn(self, text: str, path: str | None = None) -> int:
        """Remember every value ``text`` would have hidden (nothing is produced); how many were new.

        For a secret file whose format is known (``passwd.client``, ``.pgpass``,
        ``sasl_passwd``, ``.netrc``, an OpenVPN ``auth-user-pass`` file…), its
        passwords are remembered instead."""
        if not self.remember:
            return 0
        before = len(self._known)
        if path is not None and is_secret_file(path):
            self._remember(credentials_in(path, text))
        else:
            env = profile_of(path) == "env"
            values = []
            for content, _, spans, public in scan_text(text):
                if public:
                    continue
                if env:
                    spans = spans + env_spans(content)
                values += [content[s:e] for s, e in merge(spans)]
            self._remember(values)
        return len(self._known) - before

    # -- text -----------------------------------------------------------------------------
    def redact_line(self, line: str) -> str:
        """One line of configuration, environment, INI, YAML, JSON, TOML, XML or shell, secrets hidden."""
        if "\n" in line:
            return self.redact_text(line)
        return self._hide(line, scan_line(line)[0])

    def redact_text(self, text: str, path: str | None = None) -> str:
        """Many lines, secrets hidden; line structure and line endings are kept.

        ``path`` (optional) names the file: a ``.env`` file's values are then
        judged by their shape whatever their key's name."""
        env = profile_of(path) == "env"
        out = []
        for content, ending, spans, public in scan_text(text):
            if env:
                spans = spans + env_spans(content)
            out.append(self._hide(content, spans, public) + ending)
        return "".join(out)

    def hide_known(self, text: str) -> str:
        """Only the known secrets of ``text`` hidden (for paths, names, alarm details): no rule is applied."""
        if not self.remember or not len(self._known) or not text:
            return text
        return "".join(self._hide(line, []) if line.strip() else line for line in re.split(r"(\n)", text))

    def redact_note(self, text: str) -> RedactedNote:
        """A technician's note with secrets hidden, and whether anything was (to tell the technician)."""
        extra_by_line = []
        for content, _, _, _ in scan_text(text):
            extra = []
            for m in _NOTE_SECRET.finditer(content):
                value = m.group(1).rstrip(".,;:!?)")
                if value.lower() not in _NOT_A_NOTE_SECRET and not MARKER_RE.fullmatch(value):
                    extra.append((m.start(1), m.start(1) + len(value)))
            extra_by_line.append(extra)
        out = []
        for (content, ending, spans, public), extra in zip(scan_text(text), extra_by_line, strict=True):
            out.append(self._hide(content, spans + extra + high_entropy_spans(content), public) + ending)
        result = "".join(out)
        return RedactedNote(result, len(MARKER_RE.findall(result)) - len(MARKER_RE.findall(text)))

    # -- command lines and diffs ------------------------------------------------------------
    def redact_cmdline(self, argv: list[str]) -> list[str]:
        """A command line with secret arguments hidden, argument by argument (the count is kept)."""
        argv = [str(a) for a in argv]
        per_arg: dict[int, list[Span]] = {}
        for i, s, e in argv_spans(argv):
            per_arg.setdefault(i, []).append((s, e))
        out = []
        for i, arg in enumerate(argv):
            if len(arg) > MAX_LINE:
                out.append(self._hide(arg, [(0, len(arg))]))
                continue
            if "\n" in arg:  # a script passed as one argument
                spans = per_arg.get(i)
                out.append(self._hide(arg, spans) if spans else self.redact_text(arg))
                continue
            kv, _ = kv_spans(arg)
            xml, _ = xml_spans(arg)
            spans = per_arg.get(i, []) + kv + xml + auth_header_spans(arg) + token_spans(arg)
            spans += high_entropy_spans(arg) + random_value_spans(arg) + shell_spans(arg)
            out.append(self._hide(arg, spans))
        return out

    def redact_diff(self, path: str, before: str | None, after: str | None, context: int = 3) -> str | None:
        """A unified diff of the redacted texts, or None for a file that is a secret as a whole.

        ``None`` for ``before`` means the file was created, for ``after`` that it
        was deleted. Identical texts give an empty string. The path in the
        header has known secrets hidden."""
        if is_secret_file(path):
            return None
        shown = self.hide_known(path)
        a = _diff_lines(None if before is None else self.redact_text(before, path))
        b = _diff_lines(None if after is None else self.redact_text(after, path))
        diff = difflib.unified_diff(
            a, b,
            fromfile=shown if before is not None else "/dev/null",
            tofile=shown if after is not None else "/dev/null",
            n=context,
        )
        return "".join(line if line.endswith("\n") else line + "\n" for line in diff)

    # -- records ----------------------------------------------------------------------------
    def scrub(self, value: Any) -> Any:
        """``value`` (a record's data: dicts, lists, strings) with known secrets hidden in every string.

        ``*_b64`` fields (raw names that are not UTF-8) are decoded, checked and
        re-encoded. Keys are left as they are; other types pass through."""
        if not self.remember or not len(self._known):
            return value
        return self._scrub(value, "")

    def _scrub(self, value: Any, key: str) -> Any:
        if isinstance(value, str):
            if key.endswith("_b64"):
                return self._scrub_b64(value)
            if key.startswith("sha256") or key.endswith("_sha256"):
                return value  # our own digests
            return value if self._clean(value) else self.hide_known(value)
        if isinstance(value, dict):
            return {k: self._scrub(v, k if isinstance(k, str) else "") for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrub(v, key) for v in value]
        if isinstance(value, tuple):
            return tuple(self._scrub(v, key) for v in value)
        return value

    def _clean(self, value: str) -> bool:
        """Whether ``value`` holds no known secret. A path is checked name by name, and names found clean
        are remembered until the next secret is learned: the folders of a burst are checked once."""
        with self._lock:
            if self._clean_for != len(self._known) or len(self._clean_names) > CLEAN_CACHE:
                self._clean_names.clear()
                self._clean_for = len(self._known)
            parts = value.split("/") if value.startswith("/") and "\n" not in value else [value]
            for part in parts:
                if part in self._clean_names:
                    continue
                if self._known.holds_any(part):
                    return False
                self._clean_names.add(part)
            return True

    def _scrub_b64(self, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return self.hide_known(value)
        text = raw.decode("utf-8", "surrogateescape")
        hidden = self.hide_known(text)
        if hidden == text:
            return value
        return base64.b64encode(hidden.encode("utf-8", "surrogateescape")).decode("ascii")


def _diff_lines(text: str | None) -> list[str]:
    if text is None:
        return []
    lines = split_lines(text)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines
