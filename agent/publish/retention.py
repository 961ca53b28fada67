"""Retention: sessions older than ``retention.keep_days`` leave the home, each prune on the record.

A session is due when it is finished (sealed, refused or expired: never one
that is running) and its end (else its request) is older than ``keep_days``.
With publishing on, it is pruned only once every object spooled for it is
published; with publishing off, when due. A prune removes the session's
journal folder, its History row and its published spool rows, and first
appends a ``prune`` record to the home's signed prune journal
(``HOME/prunes/prunes.jsonl``: the session, when it ended, the SHA-256 of
its journal and of its seal line, the policy), so a pruned session reads
"pruned by policy", never "missing". That line is what the device ledger
takes as the prune's entry (``ledger_hook``).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from agent.clock import parse_rfc3339, rfc3339, utc_now
from agent.devicekey import DeviceKey
from agent.errors import ChaperoneError, UsageError
from agent.history import History
from agent.home import Home
from agent.journal.shared import append_shared
from agent.publish.spool import Spool

log = logging.getLogger("chaperone.retention")
PRUNE_SESSION = "prunes"
FINISHED = frozenset({"sealed", "refused", "expired"})


def prune_journal_path(home: Home) -> Path:
    return home.path / "prunes" / "prunes.jsonl"


@dataclass(frozen=True)
class Due:
    session: str
    ended: str
    state: str
    journal: Path
    why_kept: str | None  # None: it goes; else why it stays (not published yet)


def _seal_digest(journal: Path) -> tuple[str | None, str | None]:
    """(SHA-256 of the journal, SHA-256 of its last line), or Nones when it cannot be read."""
    try:
        whole = hashlib.sha256()
        last = b""
        with open(journal, "rb") as stream:
            for line in stream:
                whole.update(line)
                last = line
        return whole.hexdigest(), hashlib.sha256(last.rstrip(b"\n")).hexdigest() if last else None
    except OSError:
        return None, None


class Retention:
    """The home's retention policy; ``due()`` says what would go, ``prune()`` does it."""

    def __init__(self, home: Home, keep_days: int | None = None, publishing: bool | None = None,
                 ledger_hook: Callable[[bytes], object] | None = None) -> None:
        settings = home.settings()
        self.home = home
        self.keep_days = keep_days if keep_days is not None else settings.retention.keep_days
        self.publishing = publishing if publishing is not None else bool(settings.publish.url)
        self.ledger_hook = ledger_hook

    def due(self) -> list[Due]:
        cutoff = utc_now() - timedelta(days=self.keep_days)
        spool = Spool(self.home) if self.publishing else None
        out = []
        try:
            with History(self.home, readonly=True) as history:
                rows = history.list()
            for row in reversed(rows):
                state = row.get("state") or ""
                when = row.get("ended") or row.get("decided") or row.get("requested")
                if state not in FINISHED or not when:
                    continue
                try:
                    if parse_rfc3339(when) >= cutoff:
                        continue
                except UsageError:
                    continue
                journal = Path(row["journal"]) if row.get("journal") else self.home.journal_path(row["id"])
                kept = None
                if spool is not None and not spool.session_published(row["id"]):
                    kept = "not published yet"
                out.append(Due(row["id"], when, state, journal, kept))
        finally:
            if spool is not None:
                spool.close()
        return out

    def prune(self, *, dry_run: bool = False) -> list[Due]:
        """Prune what is due (``dry_run``: only say what would go); the sessions pruned (or that would be)."""
        due = [d for d in self.due() if d.why_kept is None]
        if dry_run or not due:
            return due
        key = DeviceKey.load(self.home)
        spool = Spool(self.home)
        try:
            with History(self.home) as history:
                for item in due:
                    digest, seal = _seal_digest(item.journal)
                    record = {"session": item.session, "ended": item.ended, "state": item.state,
                              "journal_sha256": digest, "seal_sha256": seal, "reason": "retention",
                              "keep_days": self.keep_days, "published": self.publishing, "at": rfc3339(utc_now())}
                    path = prune_journal_path(self.home)
                    path.parent.mkdir(mode=0o700, exist_ok=True)
                    append_shared(path, PRUNE_SESSION, key, "prune", record)
                    if self.ledger_hook is not None:
                        self.ledger_hook(_last_prune_line(path))
                    folder = self.home.session_dir(item.session)
                    if folder.is_dir() and folder.parent == self.home.sessions_dir:
                        shutil.rmtree(folder)
                    elif item.journal.is_file() and self.home.path in item.journal.parents:
                        item.journal.unlink()
                    history.delete(item.session)
                    spool.forget([i.name for i in spool.published_items() if i.session == item.session])
        except OSError as exc:
            raise ChaperoneError(f"Cannot prune in {self.home.path}: {exc.strerror or exc}.") from None
        finally:
            spool.close()
        return due


def _last_prune_line(path: Path) -> bytes:
    """The ``prune`` line just written (its bytes without the newline), for the ledger."""
    with open(path, "rb") as stream:
        lines = [line for line in stream if b'"type":"prune"' in line]
    return lines[-1].rstrip(b"\n")


class RetentionWorker:
    """Prunes every ``interval`` seconds (default 6 hours) on its own thread."""

    def __init__(self, make: Callable[[], Retention], interval: float = 6 * 3600.0) -> None:
        self._make = make
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        wait = 60.0  # the first pass a minute after the start, then every interval
        while not self._stop.wait(wait):
            wait = self._interval
            try:
                pruned = self._make().prune()
                if pruned:
                    log.info("retention: pruned %d session(s) older than the policy", len(pruned))
            except ChaperoneError as exc:
                log.warning("retention: %s", exc)
            except Exception:  # the worker must not die silently: log it and try again later
                log.exception("retention failed unexpectedly; it will be tried again")
