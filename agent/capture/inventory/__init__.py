"""The machine before, during and after a session: packages, services, scheduled jobs, autostart
entries, users and groups, SSH keys, sudoers, shell start-up files, PAM, ``ld.so.preload``,
listening ports and remote-access tools running.

    categories = default_categories()                # the table for this OS (registry)
    before = take_snapshot(collectors_of(categories))   # category -> item key -> details
    save_snapshot(path, before)                      # the "before" survives a restart (persist)
    live = LiveInventory(sink, before, categories)   # ways back in while the session runs (live)
    live.start() ... live.stop()
    after = take_snapshot(collectors_of(categories))
    summary_records(after, "after")                  # data of "inventory" records
    live.final_changes(after)                        # data of "inventory-change" records, attributed
    session_summary(records)                         # what the customer is shown at the end (summary)

Shared types are in ``types``; collectors read the machine through
``machine.Machine`` (a root folder, ``/`` but in tests); parsers are pure
functions over text (one module per kind of source), tested on recorded
outputs.
"""

from agent.capture.inventory.diff import diff_snapshots
from agent.capture.inventory.live import LiveInventory
from agent.capture.inventory.persist import (
    FILE_NAME,
    check_snapshot,
    load_snapshot,
    save_snapshot,
)
from agent.capture.inventory.registry import default_categories, default_collectors
from agent.capture.inventory.snapshot import summary_records, take_snapshot
from agent.capture.inventory.summary import session_summary
from agent.capture.inventory.types import (
    ERROR_PREFIX,
    Categories,
    Category,
    Collector,
    Snapshot,
    collectors_of,
)

__all__ = [
    "ERROR_PREFIX", "FILE_NAME", "Categories", "Category", "Collector", "LiveInventory", "Snapshot",
    "check_snapshot", "collectors_of", "default_categories", "default_collectors", "diff_snapshots",
    "load_snapshot", "save_snapshot", "session_summary", "summary_records", "take_snapshot",
]
