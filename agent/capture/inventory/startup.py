"""What runs at every login or in every program: PAM rules, ld.so.preload, anacron jobs. Pure parsers."""

from __future__ import annotations

import re

from agent.capture.inventory.accounts import logical_lines
from agent.redact import redact_line

PAM_TYPES = frozenset({"account", "auth", "password", "session"})


def _pam_words(line: str) -> list[str]:
    """Words of a PAM line; ``[a=b c=d]`` (a control, or an argument) is one word, spaces and all."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        start = i
        if line[i] == "[":
            i += 1
            while i < n and line[i] != "]":
                i += 2 if line[i] == "\\" else 1
            i = min(i + 1, n)
        else:
            while i < n and not line[i].isspace():
                i += 1
        words.append(line[start:i])
    return words


def parse_pam(text: str, with_service: bool = False) -> list[dict]:
    """PAM rules: type, control, module, args (secrets redacted), and ``service`` for ``/etc/pam.conf``.

    ``@include other-file`` is a rule of type ``@include`` whose module is
    the included file. A leading ``-`` on the type (skip silently when the
    module is missing) is kept. Lines that are not rules are left out.
    """
    rules = []
    for line in logical_lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        words = _pam_words(stripped)
        service = None
        if with_service:
            if len(words) < 2:
                continue
            service, words = words[0], words[1:]
        if words[0] == "@include":
            if len(words) < 2:
                continue
            rule: dict[str, str | None] = {"type": "@include", "control": "", "module": words[1], "args": ""}
        else:
            if len(words) < 3 or words[0].lstrip("-").lower() not in PAM_TYPES:
                continue
            rule = {"type": words[0], "control": " ".join(words[1].split()), "module": words[2],
                    "args": redact_line(" ".join(words[3:]))}
        if with_service:
            rule["service"] = service
        rules.append(rule)
    return rules


def pam_rule_text(rule: dict) -> str:
    """A rule as one line: ``auth [success=1 default=ignore] pam_unix.so nullok``."""
    parts = [rule["type"], rule["control"], rule["module"], rule["args"]]
    return " ".join(p for p in parts if p)


def parse_ld_so_preload(text: str) -> list[str]:
    """Libraries in ``/etc/ld.so.preload``, in order, each once.

    The dynamic loader splits the file on spaces, tabs, newlines and colons
    and knows no comments, so neither does this: a ``#`` word is an entry.
    """
    return list(dict.fromkeys(w for w in re.split(r"[ :\t\n\r]+", text) if w))


_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")
_PERIOD = re.compile(r"^(?:\d+|@(?:daily|weekly|monthly|yearly|annually))$")


def parse_anacrontab(text: str) -> list[dict]:
    """Jobs of an anacrontab: period, delay, job id and command (secrets redacted)."""
    jobs = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or _ENV.match(line):
            continue
        fields = line.split(None, 3)
        if len(fields) < 4 or not _PERIOD.match(fields[0]) or not fields[1].isdigit():
            continue
        jobs.append({"schedule": fields[0], "delay": fields[1], "job": fields[2], "command": redact_line(fields[3])})
    return jobs
