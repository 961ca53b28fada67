"""The two small files through which the agent and its guard talk about a session, in its folder.

- ``access.json`` (written by the agent, read by the guard): the technician's
  processes the agent knows of (pid and start time), kept current while the
  session runs. If recording stops, the guard ends these, their descendants,
  and the SSH logins that ssh-authorize let in for the session
  (``HOME/ssh/logins.json``), so the guard needs nothing from the stalled
  agent but this.
- ``guard-<n>.json`` (written by the guard, read by the agent): one report
  each time the guard ended the technician's access: why (``killed``,
  ``stopped``, ``hung``), the last heartbeat, when it acted, what it ended.
  The agent journals each as a ``gap`` record when it runs again, then
  removes the file.

Both are written atomically, mode 0600, in the session's 0700 folder.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from agent.atomic import replace_file

ACCESS_FILE = "access.json"
REPORT_PREFIX = "guard-"
MAX_FILE_BYTES = 1 << 20
MAX_REPORTS = 64


def _write_private(path: Path, body: dict) -> None:
    replace_file(path, json.dumps(body, ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode("ascii"))


def _read(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        body = json.loads(data)
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) and len(data) <= MAX_FILE_BYTES else None


# --- access.json ----------------------------------------------------------------------------------

def write_access(state_dir: Path, session_id: str, processes: list[tuple[int, float]]) -> None:
    """Record the technician's processes ``(pid, start time as psutil gives it)``; OSError if the disk
    refuses (the guard then ends what the last file named, and the SSH logins)."""
    _write_private(state_dir / ACCESS_FILE, {"v": 1, "session": session_id, "updated": time.time(),
                                             "processes": [[int(pid), float(start)] for pid, start in processes]})


def read_access(state_dir: Path, session_id: str) -> list[tuple[int, float]]:
    """The processes ``access.json`` names for ``session_id`` (empty when it is missing or damaged)."""
    body = _read(state_dir / ACCESS_FILE)
    if body is None or body.get("session") != session_id:
        return []
    out = []
    for item in body.get("processes") or []:
        try:
            pid, start = item
            out.append((int(pid), float(start)))
        except (TypeError, ValueError):
            continue
    return out


# --- the guard's reports --------------------------------------------------------------------------

def write_report(state_dir: Path, report: dict) -> Path:
    """Leave a report for the agent (``guard-<nanoseconds>.json``)."""
    path = state_dir / f"{REPORT_PREFIX}{time.time_ns()}.json"
    _write_private(path, report)
    return path


def read_reports(state_dir: Path) -> list[tuple[Path, dict]]:
    """The guard's reports in this folder, oldest first (a damaged one reads as ``{}``)."""
    try:
        names = sorted(n for n in os.listdir(state_dir) if n.startswith(REPORT_PREFIX) and n.endswith(".json"))
    except OSError:
        return []
    return [(state_dir / n, _read(state_dir / n) or {}) for n in names[:MAX_REPORTS]]
