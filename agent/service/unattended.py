"""While no session is active: the remote-access monitor and the unattended journal.

``RemoteAccessMonitor`` (agent.capture) scans for remote-access tools while
no session runs; each ``alarm`` it raises is appended to the home's
unattended journal and sent to subscribers as an ``alarm`` event. The
journal is shared with ssh-authorize processes: every write goes through
agent.journal.shared, which holds the journal's lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.capture.remote_access import RemoteAccessMonitor
from agent.home import Home
from agent.journal.shared import append_shared
from agent.journal.writer import LineHook
from agent.records import RecordType

log = logging.getLogger("chaperone.agent")

SESSION = "unattended"


class UnattendedSink:
    """A capture sink (thread-safe) writing to the unattended journal."""

    def __init__(self, home: Home, device_key, publish_threadsafe: Callable[[str, dict], None],
                 on_line: LineHook | None = None):
        self.home = home
        self.device_key = device_key
        self._publish = publish_threadsafe
        self._on_line = on_line  # its checkpoints, seals and alarms go to the device ledger

    def emit(self, type: str, data: dict) -> int:
        seq = append_shared(self.home.unattended_journal_path, SESSION, self.device_key, type, data,
                            on_line=self._on_line)
        if type == RecordType.ALARM:
            self._publish("alarm", data)
        return seq


def start_monitor(sink: UnattendedSink, interval: float, session_active: Callable[[], bool]):
    """The running RemoteAccessMonitor, or None when turned off (interval 0)."""
    if interval <= 0:
        return None
    monitor = RemoteAccessMonitor(sink, interval=interval, session_active=session_active)
    monitor.start()
    return monitor
