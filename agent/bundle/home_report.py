"""The report of a session from the home's own journal (the tray's "Open report"), with the check it made.

The journal is verified against the device's public key (``device_key.pub``)
before the report is written, and the page says what that check found: a
sealed, intact journal; one still being written; or one that is not intact.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from agent.bundle.report import ReportCheck, write_report
from agent.errors import ChaperoneError
from agent.home import Home
from agent.journal.reader import iter_lines
from agent.journal.verify import verify_journal
from agent.sshkeys import KeyFormatError, fingerprint, line_to_blob


def _public_blob(home: Home) -> bytes | None:
    try:
        parts = home.pub_path.read_text(encoding="ascii").split()
        return line_to_blob(" ".join(parts[:2]))
    except (OSError, UnicodeDecodeError, KeyFormatError, IndexError):
        return None


def check_home_journal(home: Home, journal: Path) -> ReportCheck | None:
    """What verifying ``journal`` with the home's device key finds; None when there is no key to check with."""
    blob = _public_blob(home)
    if blob is None:
        return None
    result = verify_journal(journal, blob, name=journal.name)
    fp = fingerprint(blob)
    if result.ok:
        return ReportCheck(True, f"The journal in {home.path} is intact: {result.records:,} records, chained, "
                                 f"checkpointed and sealed by this device's key.", fp, True)
    if result.chain_ok:
        return ReportCheck(False, f"The journal in {home.path} is intact up to its {result.records:,} records but not "
                                  "sealed yet: the session may still be running.", fp, True, sealed=False)
    return ReportCheck(False, result.reason, fp, True)


def write_home_report(home: Home, session: dict, out: Path) -> ReportCheck | None:
    """Write the report of ``session`` (a History row) from the home's journal to ``out`` (mode 0600)."""
    session_id = str(session.get("id") or "")
    journal = Path(session["journal"]) if session.get("journal") else home.journal_path(session_id)
    if not journal.is_file():
        raise ChaperoneError(f"There is no journal for session {session_id}; nothing to report.")
    check = check_home_journal(home, journal)

    def lines() -> Iterator[bytes]:
        with open(journal, "rb") as stream:
            yield from iter_lines(stream)

    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        write_report(stream, lines, check=check, history=session)
    return check
