"""The publish spool: what waits to leave the machine, kept in the home so it survives restarts and outages.

``HOME/publish/spool.sqlite3`` holds one row per object (its name in the store,
the spooled file, its SHA-256, attempts, when to try next, the last error,
and once done, when it was published and its version id); the files wait in
``HOME/publish/files/`` (0700) and are removed once published. A row is never
dropped before it is published: a store that is down for a day only means
more attempts, spaced further apart.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from agent.clock import rfc3339, utc_now
from agent.errors import ChaperoneError
from agent.home import Home

#: Seconds before the n-th retry: 5 s doubling to at most 15 minutes, with 20 % jitter.
FIRST_DELAY, MAX_DELAY = 5.0, 900.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    name TEXT PRIMARY KEY, kind TEXT NOT NULL, session TEXT, file TEXT NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, added TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL,
    last_error TEXT, published TEXT, version TEXT
);
CREATE INDEX IF NOT EXISTS items_due ON items (published, next_try);
"""


class SpoolError(ChaperoneError):
    """The spool cannot be read or written."""


@dataclass(frozen=True)
class Item:
    name: str
    kind: str
    session: str | None
    file: str
    sha256: str
    size: int
    added: str
    attempts: int
    next_try: float
    last_error: str | None
    published: str | None
    version: str | None


def delay(attempts: int) -> float:
    base = min(MAX_DELAY, FIRST_DELAY * (2 ** min(attempts, 20)))
    return base * random.uniform(0.8, 1.2)


class Spool:
    def __init__(self, home: Home) -> None:
        self.folder = home.path / "publish"
        self.files = self.folder / "files"
        try:
            self.files.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.folder, 0o700)
            self._db = sqlite3.connect(self.folder / "spool.sqlite3", isolation_level=None, timeout=30,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"Cannot open the publish spool in {self.folder} ({exc}).") from None

    def close(self) -> None:
        self._db.close()

    def _rows(self, sql: str, args: tuple = ()) -> list[Item]:
        try:
            return [Item(*row) for row in self._db.execute(
                "SELECT name, kind, session, file, sha256, size, added, attempts, next_try, last_error, published, "
                f"version FROM items {sql}", args)]
        except sqlite3.Error as exc:
            raise SpoolError(f"Cannot read the publish spool ({exc}).") from None

    def has(self, name: str) -> bool:
        return bool(self._rows("WHERE name=?", (name,)))

    def add_file(self, name: str, kind: str, source: Path, session: str | None = None) -> bool:
        """Spool a copy of ``source`` as ``name`` (False when ``name`` is spooled or published already)."""
        if self.has(name):
            return False
        target = self.files / (hashlib.sha256(name.encode()).hexdigest()[:32] + source.suffix)
        temp = target.with_name(target.name + ".tmp")
        try:
            shutil.copyfile(source, temp)
            os.chmod(temp, 0o600)
            with open(temp, "rb") as stream:
                digest = hashlib.file_digest(stream, "sha256").hexdigest()
            os.replace(temp, target)
            self._insert(name, kind, session, target, digest, target.stat().st_size)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise SpoolError(f"Cannot spool {name} in {self.files}: {exc.strerror or exc}.") from None
        return True

    def add_bytes(self, name: str, kind: str, data: bytes, session: str | None = None) -> bool:
        if self.has(name):
            return False
        target = self.files / hashlib.sha256(name.encode()).hexdigest()[:32]
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            self._insert(name, kind, session, target, hashlib.sha256(data).hexdigest(), len(data))
        except OSError as exc:
            raise SpoolError(f"Cannot spool {name} in {self.files}: {exc.strerror or exc}.") from None
        return True

    def _insert(self, name: str, kind: str, session: str | None, file: Path, sha256: str, size: int) -> None:
        try:
            self._db.execute("INSERT OR IGNORE INTO items (name, kind, session, file, sha256, size, added, next_try) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, 0)", (name, kind, session, str(file), sha256, size,
                                                                 rfc3339(utc_now())))
        except sqlite3.Error as exc:
            raise SpoolError(f"Cannot write the publish spool ({exc}).") from None

    def all_items(self) -> list[Item]:
        return self._rows("ORDER BY added")

    def waiting(self) -> list[Item]:
        return self._rows("WHERE published IS NULL ORDER BY added")

    def due(self, now: float | None = None) -> list[Item]:
        return self._rows("WHERE published IS NULL AND next_try <= ? ORDER BY added", (now or time.time(),))

    def published_items(self) -> list[Item]:
        return self._rows("WHERE published IS NOT NULL ORDER BY published")

    def is_published(self, name: str) -> bool:
        return bool(self._rows("WHERE name=? AND published IS NOT NULL", (name,)))

    def session_published(self, session: str) -> bool:
        """Every object spooled for ``session`` is published (and there is at least one)."""
        rows = self._rows("WHERE session=?", (session,))
        return bool(rows) and all(r.published for r in rows)

    def done(self, item: Item, version: str) -> None:
        try:
            self._db.execute("UPDATE items SET published=?, version=?, last_error=NULL WHERE name=?",
                             (rfc3339(utc_now()), version, item.name))
        except sqlite3.Error as exc:
            raise SpoolError(f"Cannot write the publish spool ({exc}).") from None
        Path(item.file).unlink(missing_ok=True)

    def failed(self, item: Item, error: str) -> None:
        try:
            self._db.execute("UPDATE items SET attempts=attempts+1, next_try=?, last_error=? WHERE name=?",
                             (time.time() + delay(item.attempts), error[:500], item.name))
        except sqlite3.Error as exc:
            raise SpoolError(f"Cannot write the publish spool ({exc}).") from None

    def retry_now(self) -> None:
        self._db.execute("UPDATE items SET next_try=0 WHERE published IS NULL")

    def forget(self, names: list[str]) -> None:
        """Drop published rows (retention); an unpublished row is never dropped."""
        self._db.executemany("DELETE FROM items WHERE name=? AND published IS NOT NULL", [(n,) for n in names])
