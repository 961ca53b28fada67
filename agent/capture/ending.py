"""Ending a set of processes that may fight back: frozen first, so none can fork away, then killed.

A technician's detached loop can fork faster than a kill pass walks a list.
:func:`end_processes` stops every member with SIGSTOP (a stopped process
cannot fork), asking for the members again until a pass finds no new one;
then sends SIGTERM and SIGCONT so each can end cleanly; after the grace
period, whatever is left (and whatever it forked meanwhile) is frozen the
same way and killed. Signals go through a pidfd whose process is checked
against the start time, so a pid that was reused is never signalled.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from agent.capture import procfs

FREEZE_PASSES = 100
KILL_PASSES = 5


class ProcessRef(NamedTuple):
    """One process for good: its pid and its start time in clock ticks since boot."""

    pid: int
    start_ticks: int


@dataclass
class EndResult:
    """What was ended (each process described before it was signalled) and what is still alive."""

    ended: list[dict] = field(default_factory=list)
    survivors: list[dict] = field(default_factory=list)


def send(ref: ProcessRef, sig: int) -> bool:
    """Send ``sig`` to exactly that process (a pidfd opened, then its start time checked)."""
    try:
        fd = os.pidfd_open(ref.pid)
    except OSError:
        return False
    try:
        stat = procfs.read_stat(ref.pid)
        if stat is None or abs(stat.start_ticks - ref.start_ticks) > 1:
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def end_processes(living: Callable[[], list[ProcessRef]], describe: Callable[[ProcessRef], dict], *,
                  grace_s: float = 3.0, poll_s: float = 0.05) -> EndResult:
    """End every process ``living()`` names (asked again and again: it is the set as it is now)."""
    seen: dict[ProcessRef, dict] = {}
    for ref in _freeze(living, describe, seen):
        send(ref, signal.SIGTERM)
        send(ref, signal.SIGCONT)
    _wait_empty(living, grace_s, poll_s)
    for _ in range(KILL_PASSES):
        left = _freeze(living, describe, seen)
        if not left:
            break
        for ref in left:
            send(ref, signal.SIGKILL)
        _wait_empty(living, 1.0, poll_s)
    alive = set(living())
    return EndResult(ended=[d for ref, d in seen.items() if ref not in alive],
                     survivors=[seen.get(ref) or {"pid": ref.pid} for ref in alive])


def _wait_empty(living: Callable[[], list[ProcessRef]], seconds: float, poll_s: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and living():
        time.sleep(poll_s)


def _freeze(living: Callable[[], list[ProcessRef]], describe: Callable[[ProcessRef], dict],
            seen: dict[ProcessRef, dict]) -> list[ProcessRef]:
    stopped: set[ProcessRef] = set()
    for _ in range(FREEZE_PASSES):
        members = [ref for ref in living() if ref not in stopped]
        if not members:
            break
        for ref in members:
            if ref not in seen:
                seen[ref] = describe(ref)
            send(ref, signal.SIGSTOP)
            stopped.add(ref)
    return sorted(stopped)
