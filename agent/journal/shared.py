"""A journal that several processes append to: the home's unattended journal.

The agent (remote-access alarms) and ssh-authorize processes (refused logins)
both write ``home.unattended_journal_path``. Each write holds an ``flock`` on
``<journal>.lock`` while it opens the journal, appends, checkpoints and
closes, so the chain never forks and every record is signed before the lock
is let go.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.devicekey import DeviceKey
from agent.journal.writer import LEDGER_TYPES, Journal, LineHook

#: The unattended journal's lines that go to the device ledger: its alarms too.
SHARED_LEDGER_TYPES = LEDGER_TYPES | {"alarm"}


@contextmanager
def locked(path: Path) -> Iterator[Path]:
    """Hold the journal's lock file (made 0600 beside it) for the ``with`` block."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)


def append_locked(path: Path, session: str, device_key: DeviceKey, type: str, data: dict, *,
                  on_line: LineHook | None = None) -> int:
    """Append one record and a checkpoint; the caller already holds ``locked(path)``. ``on_line`` gets the
    lines that go to the device ledger (checkpoints, seals and alarms), as ``Journal`` says."""
    if path.exists():
        journal = Journal.open(path, session, device_key, mark_restart=False, on_line=on_line,
                               ledger_types=SHARED_LEDGER_TYPES)
    else:
        journal = Journal.create(path, session, device_key, on_line=on_line, ledger_types=SHARED_LEDGER_TYPES)
    try:
        seq = journal.append(type, data)
        journal.checkpoint()
    finally:
        journal.close()
    return seq


def append_shared(path: Path, session: str, device_key: DeviceKey, type: str, data: dict, *,
                  on_line: LineHook | None = None) -> int:
    """Lock, append one record with a checkpoint, unlock. Returns the record's seq."""
    with locked(path):
        return append_locked(path, session, device_key, type, data, on_line=on_line)
