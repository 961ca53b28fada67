"""Users, groups and sudoers: pure parsers over the files' text."""

from __future__ import annotations

import re

from agent.redact import redact_line

ADMIN_GROUPS = frozenset({"sudo", "wheel", "admin"})


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 16 else None


def parse_passwd(text: str) -> dict[str, dict]:
    """``/etc/passwd``: name -> uid, gid, home, shell (never a password field)."""
    users = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 7 or not fields[0] or line.startswith(("#", "+", "-")):
            continue
        name, _pw, uid, gid, _gecos, home, shell = fields[:7]
        users[name] = {"uid": _int(uid), "gid": _int(gid), "home": home, "shell": shell}
    return users


def parse_shadow(text: str) -> dict[str, dict]:
    """``/etc/shadow``: name -> password (``set``, ``locked`` or ``none``) and the day it last changed.

    Never the hash itself: only whether there is one that can be used (a
    hash starting ``!`` or ``*`` cannot), and shadow's "last changed" day
    (days since 1970), which ``passwd`` and ``chpasswd`` move to today.
    """
    entries = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 3 or not fields[0] or line.startswith(("#", "+", "-")):
            continue
        hashed = fields[1]
        state = "none" if hashed == "" else "locked" if hashed.startswith(("!", "*")) else "set"
        entries[fields[0]] = {"password": state, "password_changed": _int(fields[2])}
    return entries


def parse_group(text: str) -> dict[str, dict]:
    """``/etc/group``: name -> gid, members (sorted), admin (a sudo/wheel/admin group)."""
    groups = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or not fields[0] or line.startswith(("#", "+", "-")):
            continue
        name, _pw, gid, members = fields[:4]
        groups[name] = {
            "gid": _int(gid),
            "members": sorted({m.strip() for m in members.split(",") if m.strip()}),
            "admin": name in ADMIN_GROUPS,
        }
    return groups


def admin_groups_of(users: dict[str, dict], groups: dict[str, dict]) -> dict[str, list[str]]:
    """user -> the administrators' groups they belong to, as a member or by primary group."""
    result: dict[str, set[str]] = {name: set() for name in users}
    for gname, g in groups.items():
        if not g["admin"]:
            continue
        for member in g["members"]:
            if member in result:
                result[member].add(gname)
        for uname, u in users.items():
            if u["gid"] is not None and u["gid"] == g["gid"]:
                result[uname].add(gname)
    return {name: sorted(gs) for name, gs in result.items()}


_INCLUDE = re.compile(r"^[#@](include|includedir)\s+(.+?)\s*$")


def logical_lines(text: str) -> list[str]:
    """Lines with a trailing backslash joined to the next (sudoers, PAM)."""
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            current += raw[:-1] + " "
            continue
        lines.append(current + raw)
        current = ""
    if current:
        lines.append(current)
    return lines


def _strip_comment(line: str) -> str:
    """Drop a ``#`` comment; ``#1000`` (a uid) is not one."""
    for m in re.finditer(r"#", line):
        if not re.match(r"#\d", line[m.start():]):
            return line[: m.start()]
    return line


_TAG = re.compile(r"\b((?:NO)?(?:PASSWD|EXEC|SETENV|LOG_INPUT|LOG_OUTPUT|MAIL|FOLLOW|INTERCEPT)):")


def _redact_rule(rule: str) -> str:
    """A rule with secrets redacted; sudo's tags (``NOPASSWD:``) are not secrets but kept as they are."""
    parts = _TAG.split(rule)
    return "".join(p + ":" if i % 2 else redact_line(p) for i, p in enumerate(parts))


def parse_sudoers(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(rules with secrets redacted and spaces normalised, include directives as (kind, path))."""
    rules, includes = [], []
    for line in logical_lines(text):
        stripped = line.strip()
        inc = _INCLUDE.match(stripped)
        if inc:
            includes.append((inc.group(1), inc.group(2).strip('"')))
            continue
        rule = " ".join(_strip_comment(stripped).split())
        if rule:
            rules.append(_redact_rule(rule))
    return rules, includes
