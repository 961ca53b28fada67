"""SessionSink: where a running session's records go (capture, SSH hooks, notes).

``emit`` is thread-safe: it appends to the session's journal at once, and
forwards the record to subscribers as ``activity`` events batched every
~100 ms. Beyond ``ACTIVITY_BATCH_CAP`` records in a batch, records are
counted in ``coalesced`` instead of sent; all of them are in the journal.
``alarm`` records are also sent at once as ``alarm`` events.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from agent.clock import rfc3339, utc_now
from agent.records import RecordType
from agent.redact import Redactor

ACTIVITY_INTERVAL = 0.1
ACTIVITY_BATCH_CAP = 200

Publish = Callable[[str, dict], None]


class SessionSink:
    """Capture's ``Sink`` for one session; ``publish`` is called on the loop thread only."""

    def __init__(self, journal, loop: asyncio.AbstractEventLoop, publish: Publish, state_dir: Path,
                 redactor: Redactor | None = None):
        self.journal = journal
        self.redactor = redactor
        self.state_dir = state_dir
        self._loop = loop
        self._publish = publish
        self._lock = threading.Lock()
        self._items: list[dict] = []
        self._coalesced = 0
        self._scheduled = False

    def emit(self, type: str, data: dict) -> int:
        if self.redactor is not None:  # a secret the session knows is hidden in every record (paths, alarms…)
            data = self.redactor.scrub(data)
        seq = self.journal.append(type, data)
        if type == RecordType.ALARM:  # alarms are not batched: the customer hears at once
            self._call_soon(self._publish, "alarm", data)
        item = {**data, "type": type, "ts": rfc3339(utc_now()), "seq": seq}
        with self._lock:
            if len(self._items) < ACTIVITY_BATCH_CAP:
                self._items.append(item)
            else:
                self._coalesced += 1
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._call_soon(self._loop.call_later, ACTIVITY_INTERVAL, self.flush)
        return seq

    def _call_soon(self, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(*args)
        except RuntimeError:  # the loop is closed: the records are journaled, nobody listens
            pass

    def flush(self) -> None:
        with self._lock:
            items, coalesced = self._items, self._coalesced
            self._items, self._coalesced, self._scheduled = [], 0, False
        if items or coalesced:
            self._publish("activity", {"items": items, "coalesced": coalesced})
