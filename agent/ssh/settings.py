"""The ``"ssh"`` object of the home's ``settings.json``.

::

    "ssh": {
      "consent_wait_s": 100,          # how long a login waits for the customer; keep it under
                                      #   sshd's LoginGraceTime (default 120 s)
      "from": "10.0.0.0/8,*.acme.example",  # optional: authorized_keys from= pattern
      "users": ["support"],           # optional: the only accounts technicians may log into
      "on_session_end": "end",        # "end" the live connections, or "warn" the customer
      "duration": "30m",              # optional: session length asked for an SSH login
      "capabilities": ["files", "shell"],
      "watch": ["/etc", "/srv/app"]   # optional: watch paths (else the agent's defaults)
    }

A value of the wrong type is ignored in favour of the default and named in
``problems``, so that a typo never opens the door wider or locks everyone out
silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_WAIT_S = 100.0
MAX_WAIT_S = 3600.0
END_ACTIONS = ("end", "warn")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_FROM = re.compile(r"^[A-Za-z0-9.:*?!/,_-]+$")  # sshd pattern-list characters only: nothing that could close the quote


@dataclass(frozen=True)
class SSHSettings:
    consent_wait_s: float = DEFAULT_WAIT_S
    from_pattern: str | None = None
    users: tuple[str, ...] | None = None
    on_session_end: str = "end"
    duration_s: int | None = None
    capabilities: tuple[str, ...] | None = None
    watch: tuple[str, ...] | None = None
    problems: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_settings(cls, settings: dict) -> "SSHSettings":
        raw = settings.get("ssh") if isinstance(settings, dict) else None
        if raw is None:
            return cls()
        problems: list[str] = []
        if not isinstance(raw, dict):
            return cls(problems=("settings 'ssh' must be an object; using the defaults",))

        def bad(name: str, what: str) -> None:
            problems.append(f"settings ssh.{name} must be {what}; using the default")

        values: dict = {}
        wait = raw.get("consent_wait_s")
        if wait is not None:
            if isinstance(wait, (int, float)) and not isinstance(wait, bool) and 0 < wait <= MAX_WAIT_S:
                values["consent_wait_s"] = float(wait)
            else:
                bad("consent_wait_s", f"a number of seconds between 0 and {MAX_WAIT_S:g}")
        frm = raw.get("from")
        if frm is not None:
            if isinstance(frm, str) and _FROM.match(frm):
                values["from_pattern"] = frm
            else:
                bad("from", "an sshd pattern list such as \"10.0.0.0/8,*.example.com\"")
        users = raw.get("users")
        if users is not None:
            if isinstance(users, list) and all(isinstance(u, str) and u for u in users):
                values["users"] = tuple(users)
            else:
                bad("users", "a list of account names")
        action = raw.get("on_session_end")
        if action is not None:
            if action in END_ACTIONS:
                values["on_session_end"] = action
            else:
                bad("on_session_end", '"end" or "warn"')
        duration = raw.get("duration")
        if duration is not None:
            seconds = _duration_s(duration)
            if seconds:
                values["duration_s"] = seconds
            else:
                bad("duration", 'a duration such as "30m" or "1h30m"')
        for name in ("capabilities", "watch"):
            value = raw.get(name)
            if value is not None:
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    values[name] = tuple(value)
                else:
                    bad(name, "a list of text")
        return cls(problems=tuple(problems), **values)


def _duration_s(value) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if not isinstance(value, str):
        return None
    match = _DURATION.match(value.strip().lower())
    if not value.strip() or not match:
        return None
    h, m, s = (int(g or 0) for g in match.groups())
    return h * 3600 + m * 60 + s or None
