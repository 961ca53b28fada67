"""Cron jobs: a pure parser over crontab files."""

from __future__ import annotations

import re

from agent.redact import redact_line

_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")
_SPECIAL = re.compile(r"^@(reboot|yearly|annually|monthly|weekly|daily|midnight|hourly)\s+(.*)$")


def parse_crontab(text: str, system: bool) -> list[dict]:
    """Jobs of a crontab: schedule, user (system crontabs only), command (secrets redacted).

    ``system`` crontabs (``/etc/crontab``, ``/etc/cron.d/*``) have a user
    field after the schedule; per-user crontabs do not.
    """
    jobs = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or _ENV.match(line):
            continue
        special = _SPECIAL.match(line)
        if special:
            schedule, rest = "@" + special.group(1), special.group(2)
        else:
            fields = line.split(None, 5)
            if len(fields) < 6:
                continue
            schedule, rest = " ".join(fields[:5]), fields[5]
        user = None
        if system:
            parts = rest.split(None, 1)
            if len(parts) < 2:
                continue
            user, rest = parts
        command = rest.strip()
        if not command:
            continue
        job: dict[str, str | None] = {"schedule": schedule, "command": redact_line(command)}
        if system:
            job["user"] = user
        jobs.append(job)
    return jobs
