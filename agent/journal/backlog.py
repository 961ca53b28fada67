"""Records the disk refused, kept in memory until it takes them: nothing is silently lost.

When a write fails (disk full, read-only, I/O error) the journal does not drop
the record. It keeps building the chain in memory (seq, ``prev``, ``ts`` are
those of the moment the record was made) and holds the finished lines here,
in order, up to ``max_bytes``. Past that bound the records are not kept but
counted, by type, with the times of the first and the last; from the first
one counted, every later record is counted too, so the lines held are always
a prefix of what happened and the chain never has a hole.

Once the disk takes the held lines again, the journal writes a ``gap`` record
(what failed, from when to when, how many records were written late, how
many were lost) and, when any were counted, a ``loss`` record with the counts.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

HOLD_BYTES = 16 << 20  # the default bound: about 40,000 typical capture records


@dataclass
class Backlog:
    """Held lines and counted losses of one journal (its lock guards every use)."""

    max_bytes: int = HOLD_BYTES
    since: str | None = None  # when the first write failed; None: nothing is held
    error: str = ""  # why (one clause, e.g. "the disk is full")
    lines: deque[tuple[str, bytes]] = field(default_factory=deque)  # (type, line), oldest first
    size: int = 0
    written_late: int = 0
    lost: Counter[str] = field(default_factory=Counter)
    lost_from: str | None = None
    lost_to: str | None = None

    @property
    def holding(self) -> bool:
        return self.since is not None

    def start(self, ts: str, error: str) -> None:
        if self.since is None:
            self.since, self.error = ts, error

    def fits(self, size: int) -> bool:
        """Whether a line of ``size`` bytes may still be held (never once a record was counted)."""
        return not self.lost and self.size + size <= self.max_bytes

    def hold(self, type: str, line: bytes) -> None:
        self.lines.append((type, line))
        self.size += len(line)

    def count_lost(self, type: str, ts: str) -> None:
        self.lost[type] += 1
        self.lost_from = self.lost_from or ts
        self.lost_to = ts

    def written(self) -> None:
        """The oldest held line is on disk now."""
        _, line = self.lines.popleft()
        self.size -= len(line)
        self.written_late += 1

    def closing_records(self, now: str) -> list[tuple[str, dict]]:
        """The ``gap`` (and ``loss``) records that close a hold, once every held line is written; resets."""
        lost = sum(self.lost.values())
        records: list[tuple[str, dict]] = [("gap", {
            "cause": "disk",
            "from": self.since,
            "to": now,
            "error": self.error,
            "held": self.written_late,
            "lost": lost,
            "detail": (f"The journal could not be written ({self.error}) from {self.since} to {now}; "
                       f"{self.written_late} record(s) were kept in memory and written late"
                       + (f", {lost} could not be kept and are counted in the next record." if lost else ".")),
        })]
        if lost:
            records.append(("loss", {
                "records": lost,
                "by_type": dict(sorted(self.lost.items())),
                "from": self.lost_from,
                "to": self.lost_to,
                "cause": "disk",
                "detail": f"{lost} record(s) made while the journal could not be written were more than "
                          f"the {self.max_bytes // 1024} KiB kept in memory; only their number and types are known.",
            }))
        self.since, self.error = None, ""
        self.written_late = 0
        self.lost = Counter()
        self.lost_from = self.lost_to = None
        return records

    def dropped(self) -> int:
        """How many records a close discards (held and counted), for the log."""
        return len(self.lines) + sum(self.lost.values())
