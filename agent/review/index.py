"""The review's index: SQLite, keyed by each bundle's SHA-256, so a second review only verifies what is new.

Tables: ``bundles`` (digest -> the entry ``examine`` returned, as JSON) and
``files`` (where a digest was last seen: a local path with its size and
modification time, or an S3 object with its ETag), so an unchanged file is
not even hashed again. The database is a cache: deleting it costs one full
review, never a wrong answer (a bundle's entry depends only on its bytes).
Local files are hashed every time (a stamp can be forged by whoever can write
the folder); only an S3 object's ETag is trusted to stand for its bytes.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import orjson

from agent.errors import ChaperoneError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (digest TEXT NOT NULL, variant TEXT NOT NULL, entry TEXT NOT NULL,
                                    version INTEGER NOT NULL, PRIMARY KEY (digest, variant));
CREATE TABLE IF NOT EXISTS files (place TEXT PRIMARY KEY, stamp TEXT NOT NULL, digest TEXT NOT NULL);
"""
#: Bumped when what ``examine`` records changes, so older entries are examined again.
ENTRY_VERSION = 2


def _dumps(entry: dict) -> str:
    """An entry as JSON text: orjson (a first review stores 10,000 in one go, while every core waits), or the
    standard library for what orjson refuses (a lone surrogate from an undecodable name, a huge integer)."""
    try:
        return orjson.dumps(entry).decode("utf-8")
    except (orjson.JSONEncodeError, UnicodeDecodeError):
        return json.dumps(entry, ensure_ascii=True)


class ReviewIndexError(ChaperoneError):
    """The review's index cannot be opened or written."""


class ReviewIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ReviewIndexError(f"Cannot open the review index {path} ({exc}); pass --index with a file you "
                                   "can write, or delete the damaged one.") from None

    def digest_at(self, place: str, stamp: str) -> str | None:
        row = self._db.execute("SELECT digest FROM files WHERE place=? AND stamp=?", (place, stamp)).fetchone()
        return row[0] if row else None

    def places(self) -> dict[str, tuple[str, str]]:
        """Every known place -> (stamp, digest), in one query (a second review of 10,000 files asks once)."""
        return {place: (stamp, digest) for place, stamp, digest in self._db.execute("SELECT * FROM files")}

    def entries(self, digests: list[str], variant: str = "") -> dict[str, dict]:
        """The entries known for ``digests`` when checked the same way (``variant``: the witnesses required)."""
        found: dict[str, dict] = {}
        for start in range(0, len(digests), 500):
            chunk = digests[start:start + 500]
            rows = self._db.execute(
                f"SELECT digest, entry FROM entries WHERE version=? AND variant=? AND digest IN "
                f"({','.join('?' * len(chunk))})", (ENTRY_VERSION, variant, *chunk))
            # json, not orjson: orjson reads an integer beyond 64 bits as a float
            found.update((digest, json.loads(entry)) for digest, entry in rows)
        return found

    def digests(self, variant: str = "") -> frozenset[str]:
        """Every digest the index holds a current entry for, checked the same way (``variant``)."""
        return frozenset(row[0] for row in self._db.execute(
            "SELECT digest FROM entries WHERE version=? AND variant=?", (ENTRY_VERSION, variant)))

    def remember(self, places: list[tuple[str, str, str]], entries: dict[str, dict], variant: str = "") -> None:
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", places)
                self._db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)",
                                     [(d, variant, _dumps(e), ENTRY_VERSION) for d, e in entries.items()])
        except sqlite3.Error as exc:
            raise ReviewIndexError(f"Cannot write the review index {self.path} ({exc}).") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ReviewIndex:  # noqa: PYI034 - a final class
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
