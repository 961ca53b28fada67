"""The inventory of one session, from its "before" to its "after": what ``Capture`` drives.

    inv = SessionInventory(sink, state_dir=session_folder, journal_path=journal)
    inv.begin()    # the "before" (or the saved one, after an agent restart), then the live watcher
    ...
    inv.end()      # the watcher stopped, the "after", the before -> after changes; the saved "before" removed

``begin`` on a fresh session takes the "before", records its ``inventory``
records and saves it in the session's folder (``persist``). After an agent
restart the saved file is there: ``begin`` loads it, checks it against the
``inventory`` records (phase ``before``) that the session's journal holds,
signed, and starts the live watcher with the gap (from the last record
before the restart's ``recovery`` record to that record), so that whatever
was done while the agent was down is found at once and marked as such. A
saved file that is missing its journal's match is not trusted: it is a
``capture-error`` (``what: "inventory-before"``) and a new "before" is
taken, which cannot see the gap.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from agent.capture.inventory.live import LiveInventory
from agent.capture.inventory.persist import FILE_NAME, load_snapshot, save_snapshot
from agent.capture.inventory.registry import default_categories
from agent.capture.inventory.snapshot import summary_records, take_snapshot
from agent.capture.inventory.summary import journal_records
from agent.capture.inventory.types import Categories, Snapshot, collectors_of
from agent.errors import InventoryFileError
from agent.records import RecordType


def _records(journal_path: Path | None) -> Iterator[dict]:
    if journal_path is None:
        return
    try:
        yield from journal_records(journal_path)
    except OSError:
        return


def journal_before_and_gap(journal_path: Path | None) -> tuple[list[dict], dict | None]:
    """The data of the journal's ``inventory`` records of phase ``before``, and the last restart's gap
    (``{"from", "to", "gap_s"}``: the last record before the ``recovery`` record, and that record)."""
    before: list[dict] = []
    gap = None
    last_ts = None
    for record in _records(journal_path):
        data = record.get("data") or {}
        if record.get("type") == RecordType.INVENTORY and data.get("phase") == "before":
            before.append(data)
        elif record.get("type") == RecordType.RECOVERY:
            gap = {"from": last_ts, "to": record.get("ts")}
            if isinstance(data.get("gap_s"), int):
                gap["gap_s"] = data["gap_s"]
        last_ts = record.get("ts")
    return before, gap


class SessionInventory:
    """The "before", the live watcher and the "after" of one session."""

    def __init__(self, sink, *, state_dir: Path | None = None, journal_path: Path | None = None,
                 categories: Categories | None = None, root: str = "/"):
        self._sink = sink
        self._path = Path(state_dir) / FILE_NAME if state_dir is not None else None
        self._journal_path = Path(journal_path) if journal_path is not None else None
        self._categories = categories if categories is not None else default_categories(root=root)
        self._root = root
        self.before: Snapshot | None = None
        self.live: LiveInventory | None = None

    def _error(self, error: str) -> None:
        self._sink.emit(RecordType.CAPTURE_ERROR, {"what": "inventory-before",
                                                   "path": str(self._path) if self._path else None, "error": error})

    def _saved(self) -> tuple[Snapshot | None, dict | None]:
        """The saved "before" and the gap, after a restart; (None, None) on a fresh session."""
        if self._path is None or not os.path.lexists(self._path):
            return None, None
        records, gap = journal_before_and_gap(self._journal_path)
        try:
            return load_snapshot(self._path, records), gap or {"from": None, "to": None}
        except InventoryFileError as exc:
            self._error(f"{exc} A new one is taken: changes made while the agent was down cannot be told apart.")
            return None, None

    def begin(self) -> None:
        before, gap = self._saved()
        if before is None:
            before = take_snapshot(collectors_of(self._categories))
            for record in summary_records(before, "before"):
                self._sink.emit(RecordType.INVENTORY, record)
            if self._path is not None:
                try:
                    save_snapshot(self._path, before)
                except OSError as exc:
                    self._error(f"The inventory before the session could not be saved ({exc.strerror or exc}); "
                                "after an agent restart it would be taken again.")
        self.before = before
        self.live = LiveInventory(self._sink, before, self._categories, root=self._root)
        self.live.start(gap=gap)

    def end(self) -> None:
        """Stop the watcher, take the "after", record the session's changes. Safe without ``begin``."""
        if self.live is not None:
            self.live.stop()
        if self.before is None or self.live is None:
            return
        after = take_snapshot(collectors_of({n: c for n, c in self._categories.items() if n in self.before}))
        for record in summary_records(after, "after"):
            self._sink.emit(RecordType.INVENTORY, record)
        for change in self.live.final_changes(after):
            self._sink.emit(RecordType.INVENTORY_CHANGE, change)
        if self._path is not None:
            try:
                self._path.unlink(missing_ok=True)
            except OSError:
                pass  # the session's folder keeps it: it holds only redacted summaries
