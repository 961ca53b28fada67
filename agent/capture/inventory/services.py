"""Services and timers from systemctl's output, or from the unit folders when systemd is not running."""

from __future__ import annotations

UNIT_SUFFIXES = (".service", ".socket", ".timer")


def parse_systemctl_list_unit_files(text: str) -> dict[str, str]:
    """``systemctl list-unit-files --no-legend --no-pager``: unit -> state (enabled, disabled, static…)."""
    units = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].endswith(UNIT_SUFFIXES):
            units[fields[0]] = fields[1]
    return units


def parse_systemctl_list_units(text: str) -> dict[str, dict]:
    """``systemctl list-units --all --plain --no-legend --no-pager``: unit -> load, active, sub."""
    units = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] in ("●", "*"):
            fields = fields[1:]
        if len(fields) >= 4 and fields[0].endswith(UNIT_SUFFIXES):
            units[fields[0]] = {"load": fields[1], "active": fields[2], "sub": fields[3]}
    return units


def merge_units(unit_files: dict[str, str], loaded: dict[str, dict], source: str) -> dict[str, dict]:
    """unit -> enabled (the unit-file state or None), running; only units enabled or active."""
    items = {}
    for unit in sorted(set(unit_files) | set(loaded)):
        state = unit_files.get(unit)
        active = loaded.get(unit, {}).get("active")
        if state in ("enabled", "enabled-runtime", "linked", "linked-runtime") or active == "active":
            items[unit] = {"source": source, "enabled": state, "running": active == "active" if loaded else None}
    return items
