"""The "before" inventory of a session, kept in a file so that it survives an agent restart.

After a restart the "after" comparison and the live watcher must use the
real "before", not a snapshot taken after the gap (which would hide what was
done while the agent was down). The file holds only what a snapshot holds:
summaries whose texts were redacted when they were collected (cron
commands, sudo rules, autostart commands, key comments, PAM arguments),
hashes of shell start-up files, never a file's content or a password hash.
It is written atomically with mode 0600.

The journal already holds, signed, the SHA-256 of each category of the
"before" (the ``inventory`` records of phase ``before``): :func:`load_snapshot`
checks the file against them when given, so a file altered on disk (by a
technician during the gap) is refused rather than trusted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from agent.atomic import replace_file
from agent.capture.inventory.snapshot import category_sha256
from agent.capture.inventory.types import Snapshot
from agent.errors import InventoryFileError

FORMAT = "chaperone-inventory/1"
FILE_NAME = "inventory-before.json"
MAX_BYTES = 256 << 20


def save_snapshot(path: str | os.PathLike, snapshot: Snapshot) -> None:
    """Write ``snapshot`` to ``path`` (0600, atomically: a crash leaves the old file or the new one)."""
    path = Path(path)
    # pairs, not objects: item keys are any text, and the order is kept as taken
    body = {"format": FORMAT, "snapshot": [[c, [[k, v] for k, v in items.items()]] for c, items in snapshot.items()]}
    replace_file(path, json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii"))


def _parse(data: bytes) -> Snapshot:
    body = json.loads(data)
    if not isinstance(body, dict) or body.get("format") != FORMAT or not isinstance(body.get("snapshot"), list):
        raise ValueError("not a saved inventory")
    snapshot: Snapshot = {}
    for entry in body["snapshot"]:
        category, items = entry
        if not isinstance(category, str) or not isinstance(items, list):
            raise TypeError("a category is malformed")
        snapshot[category] = {}
        for key, details in items:
            if not isinstance(key, str) or not isinstance(details, dict):
                raise TypeError("an item is malformed")
            snapshot[category][key] = details
    return snapshot


def check_snapshot(snapshot: Snapshot, before_records: Iterable[dict]) -> list[str]:
    """Categories whose items do not hash to what the journal's ``inventory`` records (phase
    ``before``) say, or that one side lacks. Empty when the file is the "before" the journal signed."""
    expected = {r["category"]: r["sha256"] for r in before_records
                if r.get("phase") == "before" and "category" in r and "sha256" in r}
    bad = sorted(set(expected) ^ set(snapshot))
    bad += sorted(c for c in set(expected) & set(snapshot) if category_sha256(snapshot[c]) != expected[c])
    return bad


def load_snapshot(path: str | os.PathLike, before_records: Iterable[dict] | None = None) -> Snapshot:
    """The snapshot saved at ``path``; with ``before_records`` (the data of the session's ``inventory``
    records), only if it matches them. InventoryFileError when it cannot be used."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError as exc:
        raise InventoryFileError(f"The saved inventory {path} is missing; the session's changes to the machine "
                                 "can only be compared with a new snapshot.") from exc
    except OSError as exc:
        raise InventoryFileError(f"The saved inventory {path} cannot be read ({exc.strerror or exc}).") from exc
    try:
        if len(data) > MAX_BYTES:
            raise ValueError("too large")
        snapshot = _parse(data)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InventoryFileError(f"The saved inventory {path} is damaged ({exc}); it cannot be used.") from exc
    if before_records is not None:
        bad = check_snapshot(snapshot, before_records)
        if bad:
            raise InventoryFileError(
                f"The saved inventory {path} is not the one the journal recorded (categories: {', '.join(bad)}); "
                "it was changed after it was saved, and is not used.")
    return snapshot
