"""XDG autostart entries: a pure parser over ``.desktop`` files."""

from __future__ import annotations

from agent.redact import redact_line


def parse_desktop_entry(text: str) -> dict:
    """name, exec (secrets redacted) and enabled of a ``[Desktop Entry]``."""
    fields: dict[str, str] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section == "Desktop Entry" and "=" in line:
            key, value = line.split("=", 1)
            fields.setdefault(key.strip(), value.strip())
    hidden = fields.get("Hidden", "").lower() == "true"
    disabled = fields.get("X-GNOME-Autostart-enabled", "").lower() == "false"
    return {
        "name": fields.get("Name", ""),
        "exec": redact_line(fields.get("Exec", "")),
        "enabled": not (hidden or disabled),
    }
