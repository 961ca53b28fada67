"""Taking a snapshot: run every collector, bounded in time, never raising.

The collectors are passed in (``registry.default_collectors()`` for this
machine); what a snapshot holds is described in ``types``.
"""

from __future__ import annotations

import hashlib
import threading
import time

from agent.canonical import canonical_bytes
from agent.capture.inventory.types import (
    Collector,
    Items,
    Snapshot,
    error_entry,
    is_error,
)

COLLECTOR_TIMEOUT_S = 60.0


def _text(value: str) -> str:
    """Text that is valid Unicode: a lone surrogate (from an undecodable name) is written as ``\\udcff``."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def clean(value):
    """Details made fit for canonical JSON: strings, ints, bools, None, lists and dicts."""
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [clean(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    return _text(str(value))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def collect_one(category: str, collect: Collector) -> Items:
    """One collector's items, cleaned; a collector that raises is an error entry."""
    try:
        return {_text(k): clean(v) for k, v in dict(collect()).items()}
    except Exception as exc:  # noqa: BLE001 - a failed collector is recorded, never raised
        return dict([error_entry(category, _describe(exc))])


def take_snapshot(collectors: dict[str, Collector], timeout: float = COLLECTOR_TIMEOUT_S) -> Snapshot:
    """category -> item key -> details, every collector at once, all within ``timeout``."""
    results: Snapshot = {}
    lock = threading.Lock()

    def work(category: str, collect: Collector) -> None:
        items = collect_one(category, collect)
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


def category_sha256(items: Items) -> str:
    """The hash an ``inventory`` record gives for a category's items (errors left out)."""
    kept = {k: v for k, v in items.items() if not is_error(k)}
    # pairs, not an object: item keys may be non-ASCII, which canonical JSON keys may not
    return hashlib.sha256(canonical_bytes(sorted(kept.items()))).hexdigest()


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
            "sha256": category_sha256(snapshot[category]),
        }
        if errors:
            record["errors"] = errors
        records.append(record)
    return records
