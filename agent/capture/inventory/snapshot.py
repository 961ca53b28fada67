"""Taking a snapshot: run every collector, bounded in time, never raising.

A snapshot maps a category (``packages``, ``users``, …) to its items: item
key -> details (a dict of strings, ints, bools and lists of strings). Every
item's details name their ``source`` (``dpkg``, ``/etc/passwd``, a file…).

A source that cannot be read becomes an *error entry*: key
``"!error:<source>"``, details ``{"source", "error"}``. The diff ignores
every item of a source that failed on either side (so a failed read never
looks like everything was removed), and the summary reports the errors.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from agent.canonical import canonical_bytes

ERROR_PREFIX = "!error:"
COLLECTOR_TIMEOUT_S = 60.0

Items = dict[str, dict]
Collector = Callable[[], Items]
Snapshot = dict[str, Items]


def error_entry(source: str, error: str) -> tuple[str, dict]:
    """The item that records that ``source`` could not be read."""
    return ERROR_PREFIX + source, {"source": source, "error": error}


def is_error(key: str) -> bool:
    return key.startswith(ERROR_PREFIX)


def _text(value: str) -> str:
    """Text that is valid Unicode: a lone surrogate (from an undecodable name) is written as ``\\udcff``."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _clean(value):
    """Details made fit for canonical JSON: strings, ints, bools, None, lists and dicts."""
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_clean(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    return _text(str(value))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _run(collectors: dict[str, Collector], timeout: float) -> Snapshot:
    results: Snapshot = {}
    lock = threading.Lock()

    def work(category: str, collect: Collector) -> None:
        try:
            items = {_text(k): _clean(v) for k, v in dict(collect()).items()}
        except Exception as exc:  # noqa: BLE001 - a failed collector is recorded, never raised
            items = dict([error_entry(category, _describe(exc))])
        with lock:
            results[category] = items

    threads = []
    for category, collect in collectors.items():
        # Daemon threads: a collector stuck in the kernel (a hung network
        # home) must not keep the agent from stopping.
        t = threading.Thread(target=work, args=(category, collect), name=f"inventory-{category}", daemon=True)
        t.start()
        threads.append(t)
    deadline = time.monotonic() + timeout  # one limit for all: they run side by side
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    with lock:
        snapshot = dict(results)
    for category in collectors:
        if category not in snapshot:
            snapshot[category] = dict([error_entry(category, f"took longer than {timeout:g} s")])
    return {c: snapshot[c] for c in collectors}


def take_snapshot(collectors: dict[str, Collector] | None = None, timeout: float = COLLECTOR_TIMEOUT_S) -> Snapshot:
    """category -> item key -> details; ``collectors`` default to the current OS's."""
    if collectors is None:
        from agent.capture.inventory.registry import default_collectors

        collectors = default_collectors()
    return _run(collectors, timeout)


def summary_records(snapshot: Snapshot, phase: str) -> list[dict]:
    """Data of the ``inventory`` records: one per category, with its errors if any."""
    records = []
    for category in sorted(snapshot):
        items = {k: v for k, v in snapshot[category].items() if not is_error(k)}
        errors = [
            {"source": v.get("source", ""), "error": v.get("error", "")}
            for k, v in sorted(snapshot[category].items())
            if is_error(k)
        ]
        record = {
            "phase": phase,
            "category": category,
            "items": len(items),
            # pairs, not an object: item keys may be non-ASCII, which canonical JSON keys may not
            "sha256": hashlib.sha256(canonical_bytes(sorted(items.items()))).hexdigest(),
        }
        if errors:
            record["errors"] = errors
        records.append(record)
    return records
