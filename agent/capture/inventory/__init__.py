"""The machine before and after a session: packages, services, scheduled jobs,
autostart entries, users and groups, SSH keys, sudoers and listening ports.

    before = take_snapshot()              # category -> item key -> details
    ...
    after = take_snapshot()
    summary_records(after, "after")       # data of "inventory" records
    diff_snapshots(before, after)         # data of "inventory-change" records

Collectors are per OS (``registry``); parsers are pure functions over text
(one module per kind of source), tested on recorded outputs.
"""

from agent.capture.inventory.diff import diff_snapshots
from agent.capture.inventory.snapshot import ERROR_PREFIX, Collector, Snapshot, summary_records, take_snapshot

__all__ = ["ERROR_PREFIX", "Collector", "Snapshot", "diff_snapshots", "summary_records", "take_snapshot"]
