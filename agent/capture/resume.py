"""Capture after a gap: what the journal already says, and what the saved state lets us compare with.

When the agent starts again after being killed (or a session cannot resume and
is closed), :class:`agent.capture.Capture` is made for a session whose
journal already holds records. :func:`read_journal` gives it what it needs
from that journal:

- the ``baseline`` record (phase ``saved``): the SHA-256 of ``baseline.bin``,
  so a baseline changed on disk during the gap is refused, not trusted;
- the ``inventory`` records of phase ``before``: the hashes the saved "before"
  inventory must match;
- the gap: from the last record before the restart to the ``recovery``
  record, and its cause when a ``gap`` record names it;
- what the journal last said of each path (``known``), so that the rescan
  after the gap records only what is not already in it.

The saved "before" inventory (``inventory-before.json``) is written and read
by :func:`save_inventory` and :func:`load_inventory`, in the inventory's own
format (``chaperone-inventory/1``), checked against the journal's hashes.
:func:`processes_since` lists the programs still running that started during
the gap: a program started and ended within the gap cannot be known.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from agent.canonical import canonical_bytes
from agent.capture.inventory.snapshot import Snapshot, is_error
from agent.capture.paths import unescape_path
from agent.capture.redact import redact_cmdline
from agent.clock import parse_rfc3339, rfc3339_from_timestamp
from agent.errors import ChaperoneError
from agent.journal import read_records
from agent.records import RecordType

JOURNAL_NAME = "session.jsonl"  # as Home.journal_path names it, in the session's folder (capture's state_dir)
INVENTORY_FILE = "inventory-before.json"
INVENTORY_FORMAT = "chaperone-inventory/1"
MAX_KNOWN_PATHS = 1_000_000  # beyond this, later paths are not remembered: they may be recorded twice
MAX_INVENTORY_BYTES = 256 << 20


@dataclass
class JournalView:
    """What a session's journal says that capture needs after a gap."""

    resumed: bool = False  # the journal has a `recovery` record: the agent started again during the session
    baseline: dict | None = None  # the last `baseline` record of phase "saved"
    inventory_before: dict[str, dict] = field(default_factory=dict)  # category -> its last "before" record
    inventory_after: bool = False
    gap: dict | None = None  # {"from", "to", "cause"} of the last restart
    known: dict[bytes, str | None] = field(default_factory=dict)
    known_complete: bool = True


def _raw_path(data: dict, key: str) -> bytes | None:
    b64 = data.get(f"{key}_b64")
    if isinstance(b64, str):
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            return None
    text = data.get(key)
    if not isinstance(text, str):
        return None
    try:
        return unescape_path(text)
    except (ValueError, KeyError, IndexError):
        return None


def _after(data: dict) -> str:
    sha = data.get("sha256_after")
    return sha if isinstance(sha, str) else ""


def _note_file(view: JournalView, data: dict) -> None:
    """What a `file` record says of its paths: their hash now, or gone."""
    states: list[tuple[bytes | None, str | None]] = []
    op = data.get("op")
    if op == "deleted":
        states.append((_raw_path(data, "path"), None))
    elif op == "moved":
        states += [(_raw_path(data, "path"), None), (_raw_path(data, "dest"), _after(data))]
    elif op in ("created", "modified"):
        states.append((_raw_path(data, "path"), _after(data)))
        if data.get("replaced_by"):
            states.append((_raw_path(data, "replaced_by"), None))
    for path, state in states:
        if path is None:
            continue
        if path not in view.known and len(view.known) >= MAX_KNOWN_PATHS:
            view.known_complete = False
            continue
        view.known[path] = state


def read_journal(path: Path) -> JournalView:
    """Read ``path`` (a session journal, perhaps still being written) for :class:`JournalView`."""
    view = JournalView()
    last_ts = None
    try:
        stream = open(path, "rb")
    except OSError:
        return view
    with stream:
        for record in read_records(stream):
            if not isinstance(record, dict):
                continue  # a torn or partly written line
            kind, data, ts = record.get("type"), record.get("data") or {}, record.get("ts")
            if kind == RecordType.FILE:
                _note_file(view, data)
            elif kind == RecordType.RECOVERY:
                view.resumed = True
                view.gap = {"from": data.get("last_ts") or last_ts, "to": ts, "cause": "unknown"}
            elif kind == RecordType.GAP and view.gap is not None and data.get("cause") != "disk":
                view.gap["cause"] = data.get("cause", "unknown")
                view.gap["from"] = data.get("from") or view.gap["from"]
            elif kind == RecordType.BASELINE and data.get("phase") == "saved":
                view.baseline = data
            elif kind == RecordType.INVENTORY:
                if data.get("phase") == "before" and isinstance(data.get("category"), str):
                    view.inventory_before[data["category"]] = data
                elif data.get("phase") == "after":
                    view.inventory_after = True
            if kind not in (RecordType.RECOVERY, RecordType.CHECKPOINT):
                last_ts = ts
    return view


# --- the "before" inventory on disk ---------------------------------------------------------------

def _category_sha256(items: dict) -> str:
    """The hash an `inventory` record holds for a category (agent.capture.inventory.summary_records)."""
    kept = {k: v for k, v in items.items() if not is_error(k)}
    return hashlib.sha256(canonical_bytes(sorted(kept.items()))).hexdigest()


def save_inventory(state_dir: Path, snapshot: Snapshot) -> None:
    """Keep the "before" inventory for the session (0600, atomically). Summaries only, as the snapshot
    holds them (redacted when collected): never a file's content or a password hash."""
    path = state_dir / INVENTORY_FILE
    body = {"format": INVENTORY_FORMAT,
            "snapshot": [[c, [[k, v] for k, v in items.items()]] for c, items in snapshot.items()]}
    data = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


def load_inventory(state_dir: Path, before_records: Iterable[dict]) -> Snapshot:
    """The saved "before", if it is the one the journal's `inventory` records describe; ValueError
    (a clause saying why) otherwise."""
    path = state_dir / INVENTORY_FILE
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_INVENTORY_BYTES + 1)
        body = json.loads(raw)
        if len(raw) > MAX_INVENTORY_BYTES or body.get("format") != INVENTORY_FORMAT:
            raise ValueError
        snapshot: Snapshot = {str(c): {str(k): dict(v) for k, v in items} for c, items in body["snapshot"]}
    except FileNotFoundError:
        raise ValueError("the saved inventory is missing") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        raise ValueError("the saved inventory cannot be read or is damaged") from None
    expected = {r["category"]: r.get("sha256") for r in before_records if "category" in r}
    bad = sorted(set(expected) ^ set(snapshot))
    bad += sorted(c for c in set(expected) & set(snapshot) if _category_sha256(snapshot[c]) != expected[c])
    if not expected or bad:
        raise ValueError("the saved inventory is not the one the journal recorded"
                         + (f" (categories: {', '.join(bad[:8])})" if bad else ""))
    return snapshot


# --- programs started during the gap ------------------------------------------------------------

def processes_since(since: str | None, gap: dict, own_pids: Iterable[int] = ()) -> list[dict]:
    """`process` records for the programs running now that started at or after ``since``."""
    if not since:
        return []
    try:
        start = parse_rfc3339(since).timestamp()
    except ChaperoneError:
        return []
    skip = set(own_pids) | {os.getpid()}
    records = []
    for proc in psutil.process_iter(["pid", "ppid", "create_time", "username", "exe", "cmdline", "name"]):
        info = proc.info
        created = info.get("create_time")
        if info["pid"] in skip or not created or created < start:
            continue
        records.append({
            "op": "started", "pid": info["pid"], "ppid": info.get("ppid"), "user": info.get("username"),
            "exe": info.get("exe") or info.get("name"), "cmdline": redact_cmdline(list(info.get("cmdline") or [])),
            "started": rfc3339_from_timestamp(created), "ended": None, "technician": None, "how": "after-gap",
            "gap": gap,
        })
    return records
