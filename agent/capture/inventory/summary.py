"""What the customer is shown when a session ends: what changed, and every way back in.

:func:`session_summary` is a pure function over the session's records (each
``{"type", "data", …}`` as the journal holds them, or as the ``activity``
events carry them: ``{**data, "type"}``). It returns plain data the tray's
notification (or a report) can show:

    {
      "headline": "2 ways back in (1 unexplained), 14 files changed, 3 other changes to the machine",
      "ways_back_in": [{"category", "op", "item", "why", "origin", "origin_detail",
                        "still_there": bool, "seen_live": bool, "after_gap": bool}, …],  # unexplained first
      "unexplained": 1, "from_packages": 1,
      "machine": {"users": {"added": 1}, …},        # inventory changes by category and op, ways back in included
      "files": {"created": 3, "modified": 10, "deleted": 1, "moved": 0},
      "alarms": 1,                                   # remote-access alarms (not the ways back in)
      "complete": bool,                              # False when the end-of-session comparison is missing
    }

Which records count: the end-of-session comparison (``inventory-change``
with ``live`` false or absent) says what is different at the end; the live
records add the ways back in that came and went during the session (``still_there``
false). When the session ended without its end comparison (a crash), the
live records are all there is, and ``complete`` says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from agent.journal import read_records
from agent.records import RecordType

FILE_OPS = ("created", "modified", "deleted", "moved")


def _type_and_data(record: dict) -> tuple[str | None, dict]:
    data = record.get("data")
    if isinstance(data, dict):
        return record.get("type"), data
    return record.get("type"), {k: v for k, v in record.items() if k not in ("type", "ts", "seq")}


def _way(change: dict, still_there: bool) -> dict:
    return {
        "category": change.get("category"),
        "op": change.get("op"),
        "item": change.get("item"),
        "why": change.get("why"),
        "origin": change.get("origin") or "unexplained",
        "origin_detail": change.get("origin_detail"),
        "still_there": still_there,
        "seen_live": bool(change.get("live")),
        "after_gap": bool(change.get("gap")),
    }


def _counted(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def session_summary(records: Iterable[dict]) -> dict:
    """The end-of-session summary (see the module's docstring) of a session's records."""
    final: list[dict] = []
    live: list[dict] = []
    files = dict.fromkeys(FILE_OPS, 0)
    alarms = 0
    for record in records:
        kind, data = _type_and_data(record)
        if kind == RecordType.INVENTORY_CHANGE:
            (live if data.get("live") else final).append(data)
        elif kind == RecordType.FILE and data.get("op") in files and data.get("via") != "creation-write":
            files[data["op"]] += 1
        elif kind == RecordType.FILE_BURST:
            for op, n in (data.get("counts") or {}).items():
                if op in files and isinstance(n, int):
                    files[op] += n
        elif kind == RecordType.ALARM and data.get("kind") != "way-back-in":
            alarms += 1
    complete = bool(final) or not live
    basis = final if complete else live
    ways: dict[tuple, dict] = {}
    for change in basis:
        if change.get("way_back_in"):
            ways[(change.get("category"), change.get("item"))] = _way(change, still_there=True)
    final_keys = {(c.get("category"), c.get("item")) for c in final}
    for change in live:
        key = (change.get("category"), change.get("item"))
        if not change.get("way_back_in"):
            continue
        if key in ways:
            ways[key]["seen_live"] = True
            ways[key]["after_gap"] = ways[key]["after_gap"] or bool(change.get("gap"))
        elif complete and key not in final_keys:
            ways[key] = _way(change, still_there=False)
    machine: dict[str, dict[str, int]] = {}
    for change in basis:
        per = machine.setdefault(str(change.get("category")), {})
        per[str(change.get("op"))] = per.get(str(change.get("op")), 0) + 1
    listed = sorted(ways.values(), key=lambda w: (w["origin"] != "unexplained", not w["still_there"],
                                                  str(w["category"]), str(w["item"])))
    unexplained = sum(1 for w in listed if w["origin"] == "unexplained")
    others = sum(machine_n for per in machine.values() for machine_n in per.values()) - sum(
        1 for c in basis if c.get("way_back_in"))
    parts = [_counted(len(listed), "way back in", "ways back in") + (f" ({unexplained} unexplained)" if listed else "")]
    changed_files = sum(files.values())
    if changed_files:
        parts.append(_counted(changed_files, "file changed", "files changed"))
    if others:
        parts.append(_counted(others, "other change to the machine", "other changes to the machine"))
    return {
        "headline": ", ".join(parts),
        "ways_back_in": listed,
        "unexplained": unexplained,
        "from_packages": len(listed) - unexplained,
        "machine": machine,
        "files": files,
        "alarms": alarms,
        "complete": complete,
    }


def journal_records(path: str | os.PathLike) -> Iterator[dict]:
    """The records of a journal file, its unreadable lines left out. OSError when it cannot be opened."""
    with open(path, "rb") as f:
        for record in read_records(f):
            if isinstance(record, dict):
                yield record


def journal_summary(path: str | os.PathLike | None) -> dict | None:
    """:func:`session_summary` over a session's journal file (its unreadable lines left out);
    None when there is no file or it cannot be read."""
    if path is None:
        return None
    try:
        return session_summary(journal_records(path))
    except OSError:
        return None
