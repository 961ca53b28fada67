"""The journal's record types, by name, and the ``Sink`` every recorder writes through.

A record type is a ``RecordType`` (a ``str``, so it compares and serialises as
its name): writing ``RecordType.ALARM`` instead of ``"alarm"`` lets a reader
find every writer and reader of a type, and a typo fail at import. The data of
each type is documented in docs/ARCHITECTURE.md ("Record types").
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol


class RecordType(StrEnum):
    # the journal itself
    JOURNAL_START = "journal-start"
    CHECKPOINT = "checkpoint"
    SEAL = "seal"
    RECOVERY = "recovery"
    # consent and the session's life
    REQUEST = "request"
    DECISION = "decision"
    SESSION_START = "session-start"
    TIME_WARNING = "time-warning"
    NOTE = "note"
    SESSION_END = "session-end"
    SSH_CONNECTIONS = "ssh-connections"
    ACCESS = "access"  # a right given or taken back at the door (sudo for admin)
    TECHNICIAN_PROCESSES = "technician-processes"  # the technician's lineage ended with the session
    # what capture saw
    FILE = "file"
    FILE_BURST = "file-burst"
    OVERFLOW = "overflow"
    WATCH_LIMIT = "watch-limit"
    PROCESS = "process"
    PROCESS_SUMMARY = "process-summary"
    FILE_META = "file-meta"
    MOUNT = "mount"
    INVENTORY = "inventory"
    INVENTORY_CHANGE = "inventory-change"
    ALARM = "alarm"
    CAPTURE_ERROR = "capture-error"
    # when recording stops (agent/journal/backlog.py, agent/session/failclosed.py, agent/capture/resume.py)
    GAP = "gap"
    LOSS = "loss"
    FAIL_CLOSED = "fail-closed"
    BASELINE = "baseline"
    # the device ledger's witnesses, from the agent (agent.service.ledger_link)
    WITNESS = "witness"


# Written and synced at once (not in the journal's group commit): they are consent's evidence.
SYNCED_AT_ONCE = frozenset({
    RecordType.JOURNAL_START, RecordType.REQUEST, RecordType.DECISION, RecordType.SESSION_START,
    RecordType.SESSION_END, RecordType.RECOVERY, RecordType.CHECKPOINT, RecordType.SEAL,
})


class Sink(Protocol):
    """Where a recorder's records go: ``emit`` journals the record (thread-safe) and forwards it live.

    Returns the record's sequence number in its journal."""

    def emit(self, type: str, data: dict[str, Any]) -> Any: ...
