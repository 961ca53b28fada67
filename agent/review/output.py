"""The review as JSON (the contract) and CSV (a spreadsheet), and the known devices from allowed_signers."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TextIO

from agent.errors import UsageError
from agent.review.run import BUNDLE_FIELDS, Review
from agent.sshkeys import fingerprint
from agent.text import escape
from agent.trust.allowed_signers import parse

CSV_FIELDS = (*BUNDLE_FIELDS, "reason", "gaps", "config_changes", "file_changes", "commands", "decided_by",
              "problems")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def write_json(out: TextIO, review: Review) -> None:
    out.write(json.dumps(review.public(), ensure_ascii=True) + "\n")  # one C encoding, not a write per token


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: never a formula (a ticket named '=HYPERLINK(…)' stays text)."""
    text = "" if value is None else ("yes" if value is True else "no" if value is False else str(value))
    text = escape(text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(out: TextIO, review: Review) -> None:
    by_file: dict[str, list[str]] = {}
    for p in review.problems:
        by_file.setdefault(p.get("file") or "", []).append(p["kind"])
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for b in review.bundles:
        row = {**b, "problems": " ".join(by_file.get(b["file"], []))}
        writer.writerow([_cell(row.get(name)) for name in CSV_FIELDS])


def load_devices(path: Path) -> dict[str, str]:
    """Fingerprint -> name of each key in an allowed_signers file (the devices the client pinned)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"There is no devices file {path}; give an allowed_signers file with one line per "
                         "device.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read the devices file {path} ({exc}).") from None
    entries, problems = parse(text)
    if problems:
        raise UsageError(f"{problems[0].describe(str(path))}; fix it (allowed_signers format: "
                         "'<name> namespaces=\"chaperone-session\" ssh-ed25519 AAAA…').")
    if not entries:
        raise UsageError(f"The devices file {path} lists no key.")
    return {fingerprint(e.key_blob): e.principals for e in entries}
