"""Capture after a gap: what the journal already says, and what the saved state lets us compare with.

When the agent starts again after being killed (or a session cannot resume and
is closed), :class:`agent.capture.Capture` is made for a session whose
journal already holds records. :func:`read_journal` gives it what it needs
from that journal:

- the ``baseline`` record (phase ``saved``): the SHA-256 of ``baseline.bin``,
  so a baseline changed on disk during the gap is refused, not trusted;
- the gap: from the last record before the restart to the ``recovery``
  record, and its cause when a ``gap`` record names it;
- what the journal last said of each path (``known``), so that the rescan
  after the gap records only what is not already in it.

The saved "before" inventory is the inventory's own business
(``agent.capture.inventory.session_inventory``). :func:`processes_since`
lists the programs still running that started during the gap: a program
started and ended within the gap cannot be known.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from agent.capture.paths import unescape_path
from agent.clock import parse_rfc3339, rfc3339_from_timestamp
from agent.errors import ChaperoneError
from agent.journal import read_records
from agent.records import RecordType
from agent.redact import Redactor

JOURNAL_NAME = "session.jsonl"  # as Home.journal_path names it, in the session's folder (capture's state_dir)
MAX_KNOWN_PATHS = 1_000_000  # beyond this, later paths are not remembered: they may be recorded twice


@dataclass
class JournalView:
    """What a session's journal says that capture needs after a gap."""

    resumed: bool = False  # the journal has a `recovery` record: the agent started again during the session
    baseline: dict | None = None  # the last `baseline` record of phase "saved"
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
            if kind not in (RecordType.RECOVERY, RecordType.CHECKPOINT):
                last_ts = ts
    return view


# --- programs started during the gap ------------------------------------------------------------

def processes_since(since: str | None, gap: dict, redactor: Redactor, own_pids: Iterable[int] = ()) -> list[dict]:
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
            "exe": redactor.hide_known(info.get("exe") or info.get("name") or ""),
            "cmdline": redactor.redact_cmdline(list(info.get("cmdline") or [])),
            "started": rfc3339_from_timestamp(created), "ended": None, "technician": None, "how": "after-gap",
            "gap": gap,
        })
    return records
