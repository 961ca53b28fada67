"""Comparing two snapshots, and flagging what gives someone a way back in."""

from __future__ import annotations

from collections.abc import Callable

from agent.capture.inventory.snapshot import ERROR_PREFIX, Snapshot, is_error

ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "linked", "linked-runtime"})
LOGIN_SHELL_BLOCKERS = ("nologin", "/false", "/sync", "/shutdown", "/halt")
EPHEMERAL_PORTS = range(32768, 61000)  # Linux's default ip_local_port_range

# (op, item, before, after) -> the reason it is a way back in, or None
Rule = Callable[[str, str, dict | None, dict | None], str | None]


def _enabled(d: dict | None) -> bool:
    return bool(d) and (d.get("enabled") in ENABLED_STATES or d.get("enabled") is True)


def _packages(op, item, before, after):
    if op != "added":
        return None
    from agent.capture.remote_access import tool_for_package

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
        return f"a new user account {item}" + (" with uid 0 (root)" if after.get("uid") == 0 else "")
    if op == "changed":
        if after.get("uid") == 0 and before.get("uid") != 0:
            return f"the user {item} now has uid 0 (root)"
        if _can_log_in(after) and not _can_log_in(before):
            return f"the user {item} can now log in (shell {after.get('shell')})"
    return None


def _groups(op, item, before, after):
    if op == "added" and (after.get("admin") or after.get("gid") == 0):
        members = ", ".join(after.get("members") or []) or "no one yet"
        return f"a new administrators' group {item} ({members})"
    if op == "changed" and after.get("admin"):
        gained = sorted(set(after.get("members") or []) - set(before.get("members") or []))
        if gained:
            return f"{', '.join(gained)} {'was' if len(gained) == 1 else 'were'} added to {item}, which grants administrator rights"
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
}


def _failed_sources(*sides: dict[str, dict]) -> set[str]:
    return {key[len(ERROR_PREFIX):] for side in sides for key in side if is_error(key)}


def diff_snapshots(before: Snapshot, after: Snapshot) -> list[dict]:
    """Data of the ``inventory-change`` records, in a stable order.

    Items of a source that failed on either side, and categories missing on
    either side, are left out: an unreadable source must not look like
    everything in it was removed or added.
    """
    changes = []
    for category in sorted(set(before) & set(after)):
        old, new = before[category], after[category]
        failed = _failed_sources(old, new)
        if category in failed:
            continue
        rule = RULES.get(category, lambda *_: None)

        def kept(items: dict[str, dict], failed: set = failed) -> dict[str, dict]:
            return {k: v for k, v in items.items() if not is_error(k) and v.get("source") not in failed}

        old, new = kept(old), kept(new)
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key), new.get(key)
            if a == b:
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
