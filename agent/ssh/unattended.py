"""Refused SSH logins, recorded in the home's unattended journal.

A key that is unknown, not trusted for the account, malformed or of a type we
do not know, and a trusted key that could not be put to the customer (the
agent is not running) are each an *unattended access attempt*: an ``alarm``
record (``tool`` ``"ssh"``) in ``home.unattended_journal_path``, the
hash-chained, signed journal that holds what happens while no session is
active.

Several ssh-authorize processes may record at once, so each one holds an
``flock`` on ``unattended.jsonl.lock`` while it opens, appends to and closes
the journal. Anything else that writes this journal must hold the same lock.

A server on the internet sees a steady stream of keys it does not know. So
that this cannot flood the journal (or the disk), at most ``RATE_MAX``
attempts are journaled per ``RATE_WINDOW_S``; the rest are counted, and the
next journaled attempt says how many were left out (``not_journaled``).
"""

from __future__ import annotations

import json
import logging
import time

from agent.devicekey import DeviceKey
from agent.errors import ChaperoneError
from agent.home import Home
from agent.journal.shared import append_locked, locked
from agent.records import RecordType

log = logging.getLogger(__name__)
SESSION = "unattended"
RATE_WINDOW_S = 60
RATE_MAX = 30


def _admit(rate_path, now: float) -> tuple[bool, int]:
    """Whether this attempt may be journaled, and how many were left out before it (under the lock)."""
    try:
        rate = json.loads(rate_path.read_text(encoding="utf-8"))
        start, count, left_out = float(rate["start"]), int(rate["count"]), int(rate["left_out"])
    except (OSError, ValueError, KeyError, TypeError):
        start, count, left_out = now, 0, 0
    if not 0 <= now - start < RATE_WINDOW_S:
        start, count = now, 0
    admitted = count < RATE_MAX
    if admitted:
        count += 1
        reported, left_out = left_out, 0
    else:
        left_out += 1
        reported = 0
    rate_path.write_text(json.dumps({"start": start, "count": count, "left_out": left_out}), encoding="utf-8")
    return admitted, reported


def record_attempt(home: Home, *, user: str, key_type: str, fingerprint: str, reason: str,
                   sshd_pid: int | None, now: float | None = None) -> bool:
    """Journal one refused login; False if it was only counted (rate limit) or could not be journaled."""
    data: dict[str, object] = {
        "tool": "ssh",
        "pid": sshd_pid,
        "process": "sshd",
        "connections": [],
        "detail": f"SSH login as {user} refused without a session: {reason}",
        "ssh": {"user": user, "key_type": key_type, "key_fingerprint": fingerprint, "reason": reason},
    }
    try:
        key = DeviceKey.load(home)
        with locked(home.unattended_journal_path) as path:
            admitted, left_out = _admit(path.with_name("ssh-rate.json"), time.time() if now is None else now)
            if not admitted:
                return False
            if left_out:
                data["not_journaled"] = left_out
            append_locked(path, SESSION, key, RecordType.ALARM, data)
        return True
    except (ChaperoneError, OSError) as exc:
        log.warning("could not record the refused SSH login of %s (%s): %s", user, fingerprint, exc)
        return False
