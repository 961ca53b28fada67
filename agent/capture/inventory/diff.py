"""Comparing two snapshots, and flagging what gives someone a way back in.

Redaction markers (``[redacted: sha256 1a2b3c4d]``) are keyed per run of the
agent, so the same secret has another marker after a restart. Items are
therefore matched with their markers set aside: an item whose key differs
from one on the other side only by its markers is the same item, and two
items that differ only by their markers are equal. The price: a change of
nothing but a secret (a token in a cron job's command) is not an inventory
change; the file recorder still shows it, as a change of markers in a diff.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.capture.inventory.types import ERROR_PREFIX, Snapshot, is_error
from agent.capture.remote_access import tool_for_package
from agent.redact import MARKER_RE

ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "linked", "linked-runtime"})
LOGIN_SHELL_BLOCKERS = ("nologin", "/false", "/sync", "/shutdown", "/halt")
EPHEMERAL_PORTS = range(32768, 61000)  # Linux's default ip_local_port_range

# (op, item, before, after) -> the reason it is a way back in, or None
Rule = Callable[[str, str, dict | None, dict | None], str | None]


def _enabled(d: dict | None) -> bool:
    return d is not None and (d.get("enabled") in ENABLED_STATES or d.get("enabled") is True)


def _packages(op, item, before, after):
    if op != "added":
        return None
    tool = tool_for_package(after.get("name", ""))
    return f"{after.get('name')} was installed: it is a remote-access tool ({tool})" if tool else None


def _services(op, item, before, after):
    if op == "added" and _enabled(after):
        return f"a new service {item} is enabled, so it starts at every boot"
    if op == "added" and after.get("running"):
        return f"a new service {item} is running"
    if op == "changed" and _enabled(after) and not _enabled(before):
        return f"the service {item} was enabled, so it starts at every boot"
    return None


def _scheduled(op, item, before, after):
    kind = "timer" if (after or before or {}).get("kind") == "timer" else "scheduled job"
    if op == "added" and (kind != "timer" or _enabled(after) or after.get("running")):
        return f"a new {kind} runs commands unattended: {item}"
    if op == "changed" and kind == "timer" and _enabled(after) and not _enabled(before):
        return f"the timer {item} was enabled"
    return None


def _autostart(op, item, before, after):
    if op == "added" and after.get("enabled", True):
        return f"a new autostart entry runs {after.get('exec') or 'a program'} at every login"
    if op == "changed" and after.get("enabled", True):
        if before.get("exec") != after.get("exec"):
            return f"an autostart entry now runs {after.get('exec') or 'a different program'}"
        if not before.get("enabled", True):
            return f"the autostart entry {item} was enabled"
    return None


def _can_log_in(d: dict) -> bool:
    shell = d.get("shell") or ""
    return bool(shell) and not shell.endswith(LOGIN_SHELL_BLOCKERS)


def _users(op, item, before, after):
    if op == "added":
        root = " with uid 0 (root)" if after.get("uid") == 0 else ""
        empty = " and no password" if after.get("password") == "none" else ""
        return f"a new user account {item}{root}{empty}"
    if op == "changed":
        if after.get("uid") == 0 and before.get("uid") != 0:
            return f"the user {item} now has uid 0 (root)"
        if _can_log_in(after) and not _can_log_in(before):
            return f"the user {item} can now log in (shell {after.get('shell')})"
        if after.get("password") == "none" and before.get("password") != "none":
            return f"the user {item} now has no password"
        if after.get("password") == "set" and before.get("password") in ("locked", "none"):
            return f"the user {item} now has a password that can be used"
        if after.get("password") == "set" and before.get("password_changed") != after.get("password_changed"):
            return f"the password of {item} was changed"
    return None


def _groups(op, item, before, after):
    if op == "added" and (after.get("admin") or after.get("gid") == 0):
        members = ", ".join(after.get("members") or []) or "no one yet"
        return f"a new administrators' group {item} ({members})"
    if op == "changed" and after.get("admin"):
        gained = sorted(set(after.get("members") or []) - set(before.get("members") or []))
        if gained:
            who = f"{', '.join(gained)} {'was' if len(gained) == 1 else 'were'}"
            return f"{who} added to {item}, which grants administrator rights"
    return None


def _authorized_keys(op, item, before, after):
    if op == "added":
        return f"a new SSH key can log in as {after.get('user') or 'a user'} ({after.get('fingerprint')})"
    if op == "changed":
        return f"the options of an SSH key of {after.get('user') or 'a user'} changed"
    return None


def _sudoers(op, item, before, after):
    if op in ("added", "changed"):
        return f"a new sudo rule: {(after or {}).get('rule', item)}"
    return None


def _listening(op, item, before, after):
    if op != "added":
        return None
    if after.get("proto") == "udp" and after.get("port") in EPHEMERAL_PORTS:
        return None  # most likely a client's reply socket, not a service
    who = f" ({after['process']})" if after.get("process") else ""
    return f"a new port is open to connections: {item}{who}"


def _shell_startup(op, item, before, after):
    who = (after or {}).get("user")
    runs = f"it runs at every login of {who}" if who else "it runs at every login"
    if op == "added" and after.get("skel"):
        return None  # the copy of /etc/skel's that a new account gets: the account is the way back in
    if op == "added":
        return f"a new shell start-up file {item}: {runs}"
    if op == "changed" and before.get("sha256") != after.get("sha256"):
        return f"the shell start-up file {item} changed: {runs}"
    return None


def _pam(op, item, before, after):
    if op not in ("added", "changed"):
        return None
    if "sha256" in after:
        if op == "changed" and before.get("sha256") == after.get("sha256"):
            return None
        what = "is new" if op == "added" else "changed"
        return f"PAM's configuration {item} {what}: it decides who may log in and how"
    rule = " ".join(p for p in (after.get("type"), after.get("control"), after.get("module"), after.get("args")) if p)
    return f"a new PAM rule for {after.get('service') or 'a service'}: {rule}"


def _preload(op, item, before, after):
    if op == "added":
        return f"every program now loads {after.get('library') or item} first (/etc/ld.so.preload)"
    return None


def _remote_access(op, item, before, after):
    if op == "added":
        user = f", user {after['user']}" if after.get("user") else ""
        return f"the remote-access tool {after.get('tool')} is now running ({after.get('process')}{user})"
    return None


RULES: dict[str, Rule] = {
    "packages": _packages,
    "services": _services,
    "scheduled": _scheduled,
    "autostart": _autostart,
    "users": _users,
    "groups": _groups,
    "authorized_keys": _authorized_keys,
    "sudoers": _sudoers,
    "listening": _listening,
    "shell_startup": _shell_startup,
    "pam": _pam,
    "preload": _preload,
    "remote_access": _remote_access,
}


def _failed_sources(*sides: dict[str, dict]) -> set[str]:
    return {key[len(ERROR_PREFIX):] for side in sides for key in side if is_error(key)}


def _unmarked(value):
    """``value`` with every redaction marker made the same."""
    if isinstance(value, str):
        return MARKER_RE.sub(UNMARKED, value)
    if isinstance(value, dict):
        return {k: _unmarked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unmarked(v) for v in value]
    return value


UNMARKED = "[redacted]"


def _pairs(old: dict[str, dict], new: dict[str, dict]) -> list[tuple[str, dict | None, dict | None]]:
    """(key, before, after) of every item on either side, an item whose key differs only by markers paired."""
    pairs: list[tuple[str, dict | None, dict | None]] = [(k, old[k], new[k]) for k in old.keys() & new.keys()]
    lonely_old = {k: v for k, v in old.items() if k not in new}
    waiting: dict[str, list[str]] = {}
    for k in sorted(lonely_old):
        if MARKER_RE.search(k):
            waiting.setdefault(_unmarked(k), []).append(k)
    for k in sorted(new.keys() - old.keys()):
        match = waiting.get(_unmarked(k)) if MARKER_RE.search(k) else None
        if match:
            pairs.append((k, lonely_old.pop(match.pop(0)), new[k]))
        else:
            pairs.append((k, None, new[k]))
    pairs += [(k, v, None) for k, v in lonely_old.items()]
    return sorted(pairs, key=lambda p: p[0])


def diff_category(category: str, old: dict[str, dict], new: dict[str, dict]) -> list[dict]:
    """Data of the ``inventory-change`` records of one category, in a stable order."""
    failed = _failed_sources(old, new)
    if category in failed:
        return []
    rule = RULES.get(category, lambda *_: None)

    def kept(items: dict[str, dict]) -> dict[str, dict]:
        return {k: v for k, v in items.items() if not is_error(k) and v.get("source") not in failed}

    changes = []
    for key, a, b in _pairs(kept(old), kept(new)):
        if a is not None and b is not None and _unmarked(a) == _unmarked(b):
            continue
        op = "added" if a is None else "removed" if b is None else "changed"
        why = rule(op, key, a, b)
        changes.append({
            "category": category,
            "op": op,
            "item": key,
            "detail": b if op == "added" else a if op == "removed" else {"before": a, "after": b},
            "way_back_in": why is not None,
            "why": why,
        })
    return changes


def diff_snapshots(before: Snapshot, after: Snapshot) -> list[dict]:
    """Data of the ``inventory-change`` records, in a stable order.

    Items of a source that failed on either side, and categories missing on
    either side, are left out: an unreadable source must not look like
    everything in it was removed or added.
    """
    changes = []
    for category in sorted(set(before) & set(after)):
        changes += diff_category(category, before[category], after[category])
    return changes
