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
"""

from __future__ import annotations

import fcntl
import logging
import os
from contextlib import contextmanager

from agent.errors import ChaperoneError
from agent.home import Home

log = logging.getLogger(__name__)
SESSION = "unattended"


@contextmanager
def _locked(home: Home):
    path = home.unattended_journal_path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)


def record_attempt(home: Home, *, user: str, key_type: str, fingerprint: str, reason: str,
                   sshd_pid: int | None) -> bool:
    """Journal one refused login; False (and a log line) if it could not be journaled."""
    data = {
        "tool": "ssh",
        "pid": sshd_pid,
        "process": "sshd",
        "connections": [],
        "detail": f"SSH login as {user} refused without a session: {reason}",
        "ssh": {"user": user, "key_type": key_type, "key_fingerprint": fingerprint, "reason": reason},
    }
    try:
        from agent.devicekey import DeviceKey
        from agent.journal import Journal

        key = DeviceKey.load(home)
        with _locked(home) as path:
            if path.exists():
                journal = Journal.open(path, SESSION, key, mark_restart=False)
            else:
                journal = Journal.create(path, SESSION, key)
            try:
                journal.append("alarm", data)
                journal.checkpoint()
            finally:
                journal.close()
        return True
    except (ChaperoneError, OSError, ImportError) as exc:
        log.warning("could not record the refused SSH login of %s (%s): %s", user, fingerprint, exc)
        return False
